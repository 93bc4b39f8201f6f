"""testinfra checks of the Debian 11 host (python3 3.9) after the converge was refused: nothing of the roles is there.

converge.yml already compared the host's packages, accounts and files before and after; these checks say the same
from outside, in the terms of what the roles would have made.
"""

import pytest

testinfra_hosts = ["ansible://testhosts_bullseye"]


def test_the_host_is_debian_11_with_python_3_9(host):
    assert host.system_info.distribution == "debian"
    assert host.system_info.release.split(".")[0] == "11"
    assert host.check_output("python3 -c 'import sys; print(sys.version_info[:2])'") == "(3, 9)"


@pytest.mark.parametrize("name", ["vllm", "aiserver"])
def test_no_service_account(host, name):
    assert not host.user(name).exists
    assert not host.group(name).exists


@pytest.mark.parametrize("path", ["/app", "/etc/systemd/system/vllm.service", "/etc/systemd/system/ai-server.service"])
def test_nothing_deployed(host, path):
    assert not host.file(path).exists


@pytest.mark.parametrize("package", ["python3-pip", "acl"])
def test_no_package_of_gpu_host_installed(host, package):
    assert not host.package(package).is_installed
