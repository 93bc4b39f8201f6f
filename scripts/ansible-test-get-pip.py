"""Offline stand-in for ansible-test's get-pip bootstrap script.

ansible-test bootstraps pip into each sanity virtualenv by downloading get-pip.py from
ci-files.testing.ansible.com, which these machines cannot reach (only package registries are).
scripts/sanity saves this file as ansible-test's cached bootstrap script. Like get-pip.py it installs
pip (from the interpreter's bundled ensurepip wheel) and then the requested packages from the
package registry. Arguments are get-pip's: pip options and requirement specifiers.
"""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q"] + args)
