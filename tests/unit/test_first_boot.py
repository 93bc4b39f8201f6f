"""first_boot_info (cloud-init exit codes, dpkg lock holders) and wait_for_login's classification of SSH errors.

The lock is taken for real (fcntl, as apt does) by a child process; cloud-init is tests/standin/cloud-init.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from module_helpers import STANDIN_DIR, run_module  # first: installs the collection loader
from ansible_collections.llmops.gce_vllm.plugins.action import wait_for_login
from ansible_collections.llmops.gce_vllm.plugins.modules import first_boot_info

HOLD = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o640); "
        "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('locked', flush=True); time.sleep(30)")


@pytest.fixture
def lock_file(tmp_path):
    return str(tmp_path / "lock-frontend")


def test_a_lock_held_as_apt_holds_it_is_reported_with_its_holder(lock_file):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, lock_file], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        failed, res = run_module(first_boot_info, {"lock_files": [lock_file, lock_file + ".absent"]})
        assert not failed and res["busy"] and not res["changed"]
        assert res["locks"] == [{"path": lock_file, "holders": [
            {"pid": holder.pid, "command": os.path.basename(sys.executable)[:15],
             "cmdline": " ".join([sys.executable, "-c", HOLD, lock_file])[:200]}]}]
    finally:
        holder.kill()
        holder.wait()
    failed, res = run_module(first_boot_info, {"lock_files": [lock_file]})
    assert not failed and res["locks"] == [] and not res["busy"]


@pytest.fixture
def cloud_init(tmp_path, monkeypatch):
    """tests/standin/cloud-init on PATH; returns a function that sets when it finishes and how."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(os.path.join(STANDIN_DIR, "cloud-init"), bin_dir / "cloud-init")
    monkeypatch.setenv("PATH", "%s:%s" % (bin_dir, os.environ["PATH"]))
    conf = tmp_path / "cloud-init.json"
    monkeypatch.setenv("CLOUD_INIT_STANDIN_CONFIG", str(conf))

    def configure(in_seconds, result="done"):
        conf.write_text(json.dumps({"finish_at": time.time() + in_seconds, "result": result, "errors": ["boom"]}))
    return configure


@pytest.mark.parametrize("result, rc, status, detail", [
    ("done", 0, "done", False),
    ("error", 1, "error", True),        # finished with an error
    ("degraded", 2, "done", True),      # finished with recoverable errors (23.4+)
])
def test_cloud_init_exit_codes(cloud_init, result, rc, status, detail):
    cloud_init(-1, result)
    failed, res = run_module(first_boot_info, {"lock_files": []})
    ci = res["cloud_init"]
    assert not failed and ci["present"] and not ci["running"] and not res["busy"]
    assert (ci["rc"], ci["status"]) == (rc, status)
    assert bool(ci["detail"]) == detail and (not detail or any("boom" in line for line in ci["detail"]))


def test_cloud_init_running_is_busy_and_the_wait_is_bounded(cloud_init):
    cloud_init(60)
    failed, res = run_module(first_boot_info, {"lock_files": []})
    assert not failed and res["busy"] and res["cloud_init"]["status"] == "running"
    t0 = time.monotonic()
    failed, res = run_module(first_boot_info, {"lock_files": [], "cloud_init_wait": 1})
    assert time.monotonic() - t0 < 10
    assert not failed and res["cloud_init"]["rc"] == 124 and res["cloud_init"]["running"]


def test_cloud_init_wait_returns_when_it_finishes(cloud_init):
    cloud_init(1)
    failed, res = run_module(first_boot_info, {"lock_files": [], "cloud_init_wait": 20})
    assert not failed and not res["busy"] and res["cloud_init"]["rc"] == 0


def test_no_cloud_init_is_nothing_to_wait_for(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    failed, res = run_module(first_boot_info, {"lock_files": []})
    assert not failed and res["cloud_init"] == {"present": False, "running": False, "status": "absent", "rc": 0,
                                                "detail": []}


@pytest.mark.parametrize("error, kind", [
    ("Failed to connect to the host via ssh: ubuntu@203.0.113.7: Permission denied (publickey).", "key_refused"),
    ("Data could not be sent to remote host \"10.0.0.2\". ansible@10.0.0.2: Permission denied (publickey,password).",
     "key_refused"),
    ("Failed to connect to the host via ssh: ssh: connect to host 203.0.113.7 port 22: Connection timed out", "no_answer"),
    ("Failed to connect to the host via ssh: ssh: connect to host 203.0.113.7 port 22: Connection refused", "port_closed"),
    ("Failed to connect to the host via ssh: Connection timed out during banner exchange", "no_banner"),
    ("Failed to connect to the host via ssh: kex_exchange_identification: read: Connection reset by peer", "no_banner"),
    ("Missing sudo password", "become"),
    ("Host key verification failed.", "host_key"),
    ("something else", "other"),
])
def test_login_errors_are_told_apart(error, kind):
    assert wait_for_login.classify(error)[0] == kind
