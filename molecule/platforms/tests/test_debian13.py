"""testinfra checks of the converged Debian 13 host (python3 3.13): every check of the default scenario, there.

The checks are imported from molecule/default/tests/test_default.py (one place for them); testinfra_hosts points
them at this scenario's Debian 13 group only.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "default", "tests"))
from test_default import *  # noqa: E402,F401,F403  pylint: disable=wildcard-import,unused-wildcard-import,wrong-import-position

testinfra_hosts = ["ansible://testhosts_trixie"]


def test_the_venvs_run_the_hosts_python3(host):
    """The roles made their venvs with Debian 13's own python3 (3.13), not another interpreter."""
    for venv in ("/app/vllm-server/venv", "/app/ai-server/.venv"):
        with host.sudo():
            out = host.check_output("%s/bin/python -c 'import sys; print(sys.version_info[:2])'", venv)
        assert out == "(3, 13)", venv
