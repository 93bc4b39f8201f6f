"""gpu_host finds libcuda.so.1 through the dynamic linker (issue 9), on a real systemd test host.

The layout of the lent H200 and H100 machines (tests/fixtures/gpu/h200-2026-12-01): the driver's libcuda.so.1
in a directory of its own, /usr/local/nvidia/lib64, registered with the linker in /etc/ld.so.conf.d, and none
in /usr/lib/x86_64-linux-gnu. The stand-in is a real ELF shared object with the SONAME libcuda.so.1
(tests/standin/libcuda_elf.py), so `ldconfig` registers it and dlopen() loads it. Before this change gpu_host's
GPU check with default settings failed there ("/usr/lib/x86_64-linux-gnu/libcuda.so.1 does not exist").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "standin"
PLAYBOOK = Path(__file__).with_name("gpu_verify.yml")
DRIVER_DIR = "/usr/local/nvidia/lib64"
REAL = DRIVER_DIR + "/libcuda.so.580.159.04"
CONF = "/etc/ld.so.conf.d/nvidia-standin.conf"
# dlopen("libcuda.so.1") as an unprivileged systemd service with no LD_LIBRARY_PATH: where does it come from?
DLOPEN = ("import ctypes, os; ctypes.CDLL('libcuda.so.1'); "
          "print(os.environ.get('LD_LIBRARY_PATH', '-'), [l.split()[-1] for l in open('/proc/self/maps') if 'libcuda' in l][0])")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("test hosts need root")
    sys.path.insert(0, str(ROOT))
    from tests.harness import testhosts as th  # noqa: PLC0415 (imported only when the suite runs)

    state = tmp_path_factory.mktemp("libcuda-hosts")
    lib = tmp_path_factory.mktemp("libcuda") / "libcuda.so.1"
    subprocess.run([sys.executable, str(STANDIN / "libcuda_elf.py"), str(lib)], check=True)
    try:
        th.create(str(state), count=1, prefix="libcuda")
        name = th.load_state(str(state))["hosts"][0]["name"]
        th.copy_in(str(state), name, str(STANDIN / "nvidia-smi"), "/usr/bin/nvidia-smi", mode="0755")
        th.copy_in(str(state), name, str(lib), REAL, mode="0755")
        h = {"th": th, "state": state, "name": name}
        _sh(h, "ln -sfn libcuda.so.580.159.04 %s/libcuda.so.1 && echo %s > %s && ldconfig && "
               "! test -e /usr/lib/x86_64-linux-gnu/libcuda.so.1 && ! test -e /lib/x86_64-linux-gnu/libcuda.so.1"
            % (DRIVER_DIR, DRIVER_DIR, CONF))
        yield h
    finally:
        th.destroy(str(state))


def _sh(host, script: str, check=True) -> subprocess.CompletedProcess:
    res = host["th"].exec_in(str(host["state"]), host["name"], ["sh", "-c", script], check=False)
    if check:
        assert res.returncode == 0, (script, res.stdout, res.stderr)
    return res


def _verify(host, **extra):
    out = host["state"] / "result.json"
    if out.exists():
        out.unlink()
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(host["state"] / "inventory.yml"),
           "-e", json.dumps(dict(extra, gpu_verify_result_file=str(out))), str(PLAYBOOK)]
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    return res, json.loads(out.read_text()) if out.exists() else None


def test_the_host_has_the_h200_layout(host):
    """Precondition, as on the H200: the linker cache lists the driver's directory, nothing in the multiarch dir."""
    listing = _sh(host, "ldconfig -p | grep libcuda").stdout.decode()
    assert "libcuda.so.1 (libc6,x86-64) => %s/libcuda.so.1" % DRIVER_DIR in listing, listing
    assert "x86_64-linux-gnu/libcuda" not in listing


def test_defaults_find_libcuda_through_the_linker(host):
    """FAILED before the change: 'Assert libcuda.so.1 is in gpu_host_cuda_lib_dir' (/usr/lib/x86_64-linux-gnu)."""
    res, result = _verify(host)
    assert res.returncode == 0, res.stdout[-3000:]
    libcuda = result["libcuda"]
    assert (libcuda["path"], libcuda["found_by"], libcuda["cache"]) == (
        DRIVER_DIR + "/libcuda.so.1", "ld.so.cache", [DRIVER_DIR + "/libcuda.so.1"])
    check = result["checks"][1]
    assert check["name"] == "gpu_host_libcuda" and check["ok"] is True
    assert check["check"] == "the dynamic linker finds libcuda.so.1"
    assert check["detail"] == "the linker loads {0}/libcuda.so.1 (ldconfig -p lists {0}/libcuda.so.1)".format(DRIVER_DIR)


def test_a_service_without_ld_library_path_loads_that_libcuda(host):
    """What the vLLM unit relies on when it gets no LD_LIBRARY_PATH: an unprivileged unit's dlopen finds it."""
    res = _sh(host, "systemd-run --quiet --wait --pipe --collect -p User=nobody -p ProtectSystem=strict "
                    "-p PrivateTmp=yes /usr/bin/python3 -c \"%s\"" % DLOPEN)
    assert res.stdout.decode().split() == ["-", REAL], res.stdout


def test_unregistered_directory_fails_naming_the_fix(host):
    """The driver's directory not known to the linker: the check fails and says how to fix it."""
    _sh(host, "mv %s /root/ && ldconfig" % CONF)
    try:
        res, result = _verify(host)
    finally:
        _sh(host, "mv /root/%s %s && ldconfig" % (os.path.basename(CONF), CONF))
    assert res.returncode != 0
    assert result["libcuda"]["path"] is None and result["checks"][1]["ok"] is False
    for words in ("ldconfig -p lists none", "/etc/ld.so.conf.d", "gpu_host_cuda_lib_dir"):
        assert words in res.stdout, (words, res.stdout[-3000:])


def test_a_set_directory_is_required_and_checked_in_the_same_call(host):
    res, result = _verify(host, gpu_host_cuda_lib_dir=DRIVER_DIR)
    assert res.returncode == 0, res.stdout[-3000:]
    assert result["libcuda"]["in_dir"] is True and result["checks"][1]["check"] == "libcuda.so.1 is in " + DRIVER_DIR
    res, result = _verify(host, gpu_host_cuda_lib_dir="/usr/lib/x86_64-linux-gnu")
    assert res.returncode != 0 and result["libcuda"]["in_dir"] is False
    assert "/usr/lib/x86_64-linux-gnu/libcuda.so.1 does not exist (gpu_host_cuda_lib_dir)" in res.stdout
    # one remote call reads the GPUs and the linker: no separate stat task any more
    assert "ansible.builtin.stat" not in (ROOT / "roles" / "gpu_host" / "tasks" / "verify.yml").read_text()
