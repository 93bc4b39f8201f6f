"""The first minutes of a new VM (issue 14, part 3), acted out on the converged test host.

A test host boots from a cached rootfs in a second: no cloud-init, no guest agent, no apt-daily. Each test
puts back one thing a fresh GCE VM has and checks that configure.yml waits for it, says so while it waits,
and converges (or fails saying why):

- a process holding /var/lib/dpkg/lock-frontend as apt does (fcntl write lock) for ~90 s, named like
  unattended-upgrades' process, while configure must install a package;
- a cloud-init (tests/standin/cloud-init, a stand-in) still running for ~30 s and ending with an error;
- the login's key installed only ~30 s after the host is up (the guest agent's delay), and never.

A package the host lacks (`tree`) is removed first and asked for through gpu_host_extra_packages, so that
configure really runs apt (an already installed package never takes the lock).
"""

from __future__ import annotations

import re
import shlex
import threading
import time

from tests.reliability import lib

STANDIN_CLOUD_INIT = lib.ROOT / "tests" / "standin" / "cloud-init"
PACKAGE = "tree"
LOCK = "/var/lib/dpkg/lock-frontend"
KEYS = "/home/ansible/.ssh/authorized_keys"
HOLD_UNIT = "llmops-test-dpkg-lock-holder"
# A write lock on the dpkg front-end lock, taken the way apt takes it (fcntl F_SETLK), by a process whose
# command name is the one apt prints for unattended-upgrades ("held by process N (unattended-upgr)").
HOLD_LOCK = (
    "import ctypes, fcntl, os, sys, time; "
    "ctypes.CDLL(None).prctl(15, b'unattended-upgr', 0, 0, 0); "
    "fd = os.open(%r, os.O_RDWR | os.O_CREAT, 0o640); "
    "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); "
    "print('locked', flush=True); time.sleep(float(sys.argv[1]))" % LOCK)


def _without_package(host):
    host.sh("dpkg -s %s >/dev/null 2>&1 && apt-get remove -y -q %s >/dev/null || true" % (PACKAGE, PACKAGE), timeout=120)


def _installed_at(host):
    """Epoch seconds of dpkg's 'install tree' in /var/log/dpkg.log (the last one), or None."""
    out = host.sh("grep -h ' install %s:' /var/log/dpkg.log | tail -n 1 | cut -c1-19" % PACKAGE, check=False).stdout.strip()
    if not out:
        return None
    return float(host.sh("date -d %s +%%s" % shlex.quote(out)).stdout.strip())


def _host_now(host):
    return float(host.sh("date +%s.%N").stdout.strip())


def test_dpkg_lock_held_for_90s_configure_waits_and_converges(converged):
    host = converged.host
    _without_package(host)
    hold = 90
    host.sh("systemctl reset-failed %s 2>/dev/null; systemd-run --quiet --unit=%s --collect python3 -c %s %d"
            % (HOLD_UNIT, HOLD_UNIT, shlex.quote(HOLD_LOCK), hold))
    try:
        t_locked = _host_now(host)
        holder = host.props(HOLD_UNIT, "MainPID")["MainPID"]
        res = converged.configure({"gpu_host_extra_packages": [PACKAGE]}, name="dpkg-lock-held")
        installed = _installed_at(host)
    finally:
        host.sh("systemctl stop %s 2>/dev/null || true" % HOLD_UNIT)
    released = t_locked + hold
    waits = re.findall(r"waiting for the apt/dpkg lock: %s held by PID (\d+) \(([^):]+)" % re.escape(LOCK), res.out)
    named = bool(waits) and waits[0] == (holder, "unattended-upgr")
    after = installed is not None and installed >= released - 1
    ok = res.rc == 0 and named and after
    lib.record("faults", stage="first boot", fault="apt/dpkg lock held on first boot",
               injected="a process named unattended-upgr holds a write lock (fcntl, as apt) on %s for %d s while "
                        "configure must install a package" % (LOCK, hold),
               expected="configure waits, naming the holder, installs after the lock is free, converges",
               observed="rc=%d after %.0f s; progress lines naming PID %s (unattended-upgr): %d; %s installed %s"
                        % (res.rc, res.seconds, holder, len(waits), PACKAGE,
                           "%.0f s after the lock was released" % (installed - released) if installed else "never"),
               survived=ok, figure="configure %.0f s (lock held %d s)" % (res.seconds, hold))
    assert res.rc == 0, res.tail()
    assert named, "no progress line names the lock holder:\n" + res.tail()
    assert after, "%s installed at %s, the lock was released at %s" % (PACKAGE, installed, released)


def test_cloud_init_still_running_configure_waits_and_reports_its_error(converged):
    host = converged.host
    _without_package(host)
    running_for = 30
    _copy_in(host, STANDIN_CLOUD_INIT, "/usr/bin/cloud-init", "0755")
    finish_at = _host_now(host) + running_for
    conf = '{"finish_at": %.0f, "result": "error", "errors": ["(\'scripts_user\', RuntimeError(\'runparts: 1 failed\'))"]}' \
        % finish_at
    host.sh("cat > /etc/cloud-init-standin.json", input=conf)
    try:
        res = converged.configure({"gpu_host_extra_packages": [PACKAGE]}, name="cloud-init-running")
        installed = _installed_at(host)
    finally:
        host.sh("rm -f /usr/bin/cloud-init /etc/cloud-init-standin.json")
    progress = re.findall(r"waiting for cloud-init to finish \(status: running\): (\d+) s", res.out)
    warned = "cloud-init finished with an error (exit 1)" in res.flat and "scripts_user" in res.flat
    after = installed is not None and installed >= finish_at - 1
    ok = res.rc == 0 and bool(progress) and warned and after
    lib.record("faults", stage="first boot", fault="cloud-init still running on first boot, then fails",
               injected="tests/standin/cloud-init: `status --wait` blocks %d s, then status: error (exit 1)" % running_for,
               expected="configure waits before touching packages, reports cloud-init's error as a warning, converges",
               observed="rc=%d after %.0f s; progress lines: %d; error reported: %s; %s installed %s"
                        % (res.rc, res.seconds, len(progress), warned, PACKAGE,
                           "%.0f s after cloud-init finished" % (installed - finish_at) if installed else "never"),
               survived=ok, figure="configure %.0f s (cloud-init running %d s)" % (res.seconds, running_for))
    assert res.rc == 0, res.tail()
    assert progress, "no progress line for cloud-init:\n" + res.tail()
    assert warned, "cloud-init's error is not reported:\n" + res.tail()
    assert after, "%s installed at %s, before cloud-init finished at %s" % (PACKAGE, installed, finish_at)


def _copy_in(host, src, dest, mode):
    from tests.harness import testhosts

    testhosts.copy_in(str(host.state), host.name, str(src), dest, mode=mode)


def test_login_key_installed_30s_late_configure_waits_and_converges(converged):
    host = converged.host
    late = 30
    host.sh("mv %s %s.later" % (KEYS, KEYS))
    timer = threading.Timer(late, lambda: host.sh("mv %s.later %s" % (KEYS, KEYS)))
    t0 = time.monotonic()
    timer.start()
    try:
        res = converged.configure(name="key-late")
    finally:
        timer.join()
        host.sh("test -f %s || mv %s.later %s" % (KEYS, KEYS, KEYS))
    refused = re.findall(r"waiting for the SSH login \S+: SSH answers, the key is refused: (\d+) s", res.out)
    m = re.search(r"logged in as \S+ after (\d+) s", res.out)
    waited = int(m.group(1)) if m else None
    ok = res.rc == 0 and bool(refused) and waited is not None and waited >= late - 5
    lib.record("faults", stage="first boot", fault="login key installed 30 s after the host is up",
               injected="authorized_keys of the login user moved away, put back after %d s (sshd answers: "
                        "Permission denied (publickey), as before GCE's guest agent made the user)" % late,
               expected="the SSH wait keeps waiting, says the key is refused, logs in once the key is there, converges",
               observed="rc=%d after %.0f s; 'key is refused' progress lines: %d; logged in after %s s"
                        % (res.rc, time.monotonic() - t0, len(refused), waited),
               survived=ok, figure="login after %s s" % waited)
    assert res.rc == 0, res.tail()
    assert refused, "no progress line says the key is refused:\n" + res.tail()
    assert waited is not None and waited >= late - 5, res.tail()


def test_login_key_never_installed_fails_saying_the_key_was_refused(converged):
    host = converged.host
    budget = 12
    before = lib.host_snapshot(host)
    host.sh("mv %s %s.later" % (KEYS, KEYS))
    try:
        res = converged.configure({"gce_vllm_connect_timeout": budget}, name="key-never")
        closed = converged.configure({"gce_vllm_connect_timeout": 6, "ansible_port": 1}, name="port-closed")
    finally:
        host.sh("mv %s.later %s" % (KEYS, KEYS))
    unchanged = lib.host_snapshot(host) == before
    said = (bool(re.search(r"answered but the key was refused for 1[2-9] s", res.flat)) and "SSH banner 'SSH-2.0-OpenSSH" in res.flat
            and "gce_vllm_ssh_public_key_file" in res.flat and "ansible@%s:22" % host.address in res.flat)
    said_closed = bool(re.search(r"no SSH answer from ansible@%s:1 within [6-9] s: no answer: port closed"
                                 % re.escape(host.address), closed.flat))
    ok = res.rc != 0 and said and closed.rc != 0 and said_closed and unchanged
    lib.record("faults", stage="first boot", fault="login key never installed (and: SSH port closed)",
               injected="authorized_keys moved away for the whole run, gce_vllm_connect_timeout=%d; then a port "
                        "nothing listens on (ansible_port=1)" % budget,
               expected="fails after the budget saying SSH answered but the key was refused (naming user, address and "
                        "the variables); the closed port: 'no SSH answer'; nothing changed",
               observed="rc=%d, key refused said: %s; closed port rc=%d, no answer said: %s; host unchanged: %s"
                        % (res.rc, said, closed.rc, said_closed, unchanged),
               survived=ok, figure="failed after %.0f s (budget %d s)" % (res.seconds, budget))
    assert res.rc != 0, res.tail()
    assert said, res.tail()
    assert closed.rc != 0 and said_closed, closed.tail()
    assert unchanged
