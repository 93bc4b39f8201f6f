"""The first minutes of a new VM (issue 14, part 3), acted out on the converged test host.

A test host boots from a cached rootfs in a second: no cloud-init, no guest agent, no apt-daily. Each test
puts back one thing a fresh GCE VM has and checks that configure.yml waits for it, says so while it waits,
and converges (or fails saying why):

- a process holding /var/lib/dpkg/lock-frontend as apt does (fcntl write lock), named like
  unattended-upgrades' process, while configure must install a package;
- a cloud-init (tests/standin/cloud-init, a stand-in) still running and then ending with an error;
- the login's key installed only after the host is up (the guest agent's delay), and never.

Each condition is released by the test, not by a clock: it holds until configure has printed that it waits
for it, and then some seconds more (several of the wait's polls), so that the run is seen to wait through it
(the role's own "free after N s" / "logged in after N s" count at least that) without a fixed 30-90 s hold.
A cap ends the condition anyway if the run never says it waits (then the test fails).

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


class ReleaseOnSight:
    """An on_line callback for Deployment.configure_watched: once a line of the run matches `pattern`, wait
    `hold` seconds and call `release` (which returns the host's time of the release)."""

    def __init__(self, pattern: str, hold: float, release):
        self.pattern, self.hold, self._release = re.compile(pattern), hold, release
        self.seen_at = self.released_mono = self.released_at = None
        self.timer = None

    def __call__(self, line, _proc):
        if self.timer is None and self.pattern.search(line):
            self.seen_at = time.monotonic()
            self.timer = threading.Timer(self.hold, self._fire)
            self.timer.start()

    def _fire(self):
        self.released_at = self._release()
        self.released_mono = time.monotonic()

    def join(self):
        if self.timer is not None:
            self.timer.join()

    @property
    def held(self) -> float | None:
        """Seconds between the run saying it waits and the release."""
        return None if self.released_mono is None else self.released_mono - self.seen_at


CAP = 120      # seconds a condition lasts at most when the run never says it waits for it
LOCK_HELD = 10  # the lock stays taken this long after configure says it waits (its polls are 5 s apart)


def test_dpkg_lock_held_configure_waits_and_converges(converged):
    host = converged.host
    _without_package(host)
    host.sh("systemctl reset-failed %s 2>/dev/null; systemd-run --quiet --unit=%s --collect python3 -c %s %d"
            % (HOLD_UNIT, HOLD_UNIT, shlex.quote(HOLD_LOCK), CAP))

    def release():
        host.sh("systemctl stop %s" % HOLD_UNIT)   # returns once the holder has exited: the lock is free
        return _host_now(host)

    gate = ReleaseOnSight(r"waiting for the apt/dpkg lock: %s held by PID" % re.escape(LOCK), LOCK_HELD, release)
    try:
        holder = host.props(HOLD_UNIT, "MainPID")["MainPID"]
        res = converged.configure_watched(gate, {"gpu_host_extra_packages": [PACKAGE]}, name="dpkg-lock-held")
        gate.join()
        installed = _installed_at(host)
    finally:
        gate.join()
        host.sh("systemctl stop %s 2>/dev/null || true" % HOLD_UNIT)
    released = gate.released_at
    waits = re.findall(r"waiting for the apt/dpkg lock: %s held by PID (\d+) \(([^):]+)" % re.escape(LOCK), res.out)
    named = bool(waits) and waits[0] == (holder, "unattended-upgr")
    free = re.search(r"the apt/dpkg locks are free after (\d+) s", res.out)
    waited = int(free.group(1)) if free else None
    after = installed is not None and released is not None and installed >= released - 1
    ok = res.rc == 0 and named and after and waited is not None and waited >= LOCK_HELD - 1
    held = gate.held
    lib.record("faults", stage="first boot", fault="apt/dpkg lock held on first boot",
               injected="a process named unattended-upgr holds a write lock (fcntl, as apt) on %s while configure must "
                        "install a package, until %d s after configure says it waits" % (LOCK, LOCK_HELD),
               expected="configure waits, naming the holder, installs after the lock is free, converges",
               observed="rc=%d after %.0f s; progress lines naming PID %s (unattended-upgr): %d; locks free after %s s "
                        "(said by the role); %s installed %s"
                        % (res.rc, res.seconds, holder, len(waits), waited, PACKAGE,
                           "%.0f s after the lock was released" % (installed - released) if installed and released
                           else "never" if not installed else "with the lock never released"),
               survived=ok, figure="configure %.0f s (lock held %s s after the first progress line)"
                                   % (res.seconds, "%.0f" % held if held is not None else "-"))
    assert res.rc == 0, res.tail()
    assert named, "no progress line names the lock holder:\n" + res.tail()
    assert released is not None, "the lock was never released (configure never said it waits for it):\n" + res.tail()
    assert after, "%s installed at %s, the lock was released at %s" % (PACKAGE, installed, released)
    assert waited is not None and waited >= LOCK_HELD - 1, \
        "the role did not wait the %d s the lock stayed taken:\n%s" % (LOCK_HELD, res.tail())


CLOUD_INIT_RUNNING = 6   # cloud-init keeps running this long after configure says it waits for it


def _cloud_init_conf(host, finish_at):
    conf = '{"finish_at": %.3f, "result": "error", "errors": ["(\'scripts_user\', RuntimeError(\'runparts: 1 failed\'))"]}' \
        % finish_at
    # replaced in one rename: the stand-in reads it at each `cloud-init status` call
    host.sh("cat > /etc/cloud-init-standin.json.new && mv /etc/cloud-init-standin.json.new /etc/cloud-init-standin.json",
            input=conf)


def test_cloud_init_still_running_configure_waits_and_reports_its_error(converged):
    host = converged.host
    _without_package(host)
    _copy_in(host, STANDIN_CLOUD_INIT, "/usr/bin/cloud-init", "0755")
    _cloud_init_conf(host, _host_now(host) + CAP)

    def release():
        finish_at = _host_now(host)
        _cloud_init_conf(host, finish_at)
        return finish_at

    gate = ReleaseOnSight(r"waiting for cloud-init to finish \(status: running\)", CLOUD_INIT_RUNNING, release)
    try:
        res = converged.configure_watched(gate, {"gpu_host_extra_packages": [PACKAGE]}, name="cloud-init-running")
        gate.join()
        installed = _installed_at(host)
    finally:
        gate.join()
        host.sh("rm -f /usr/bin/cloud-init /etc/cloud-init-standin.json")
    finish_at = gate.released_at
    progress = re.findall(r"waiting for cloud-init to finish \(status: running\): (\d+) s", res.out)
    finished = re.search(r"cloud-init finished \(status: error\) after (\d+) s", res.out)
    waited = int(finished.group(1)) if finished else None
    warned = "cloud-init finished with an error (exit 1)" in res.flat and "scripts_user" in res.flat
    after = installed is not None and finish_at is not None and installed >= finish_at - 1
    ok = res.rc == 0 and bool(progress) and warned and after and waited is not None and waited >= CLOUD_INIT_RUNNING - 1
    held = gate.held
    lib.record("faults", stage="first boot", fault="cloud-init still running on first boot, then fails",
               injected="tests/standin/cloud-init: `status --wait` blocks until %d s after configure says it waits, "
                        "then status: error (exit 1)" % CLOUD_INIT_RUNNING,
               expected="configure waits before touching packages, reports cloud-init's error as a warning, converges",
               observed="rc=%d after %.0f s; progress lines: %d; finished after %s s (said by the role); error reported: "
                        "%s; %s installed %s"
                        % (res.rc, res.seconds, len(progress), waited, warned, PACKAGE,
                           "%.0f s after cloud-init finished" % (installed - finish_at) if installed and finish_at
                           else "never" if not installed else "with cloud-init never finished"),
               survived=ok, figure="configure %.0f s (cloud-init running %s s after the first progress line)"
                                   % (res.seconds, "%.0f" % held if held is not None else "-"))
    assert res.rc == 0, res.tail()
    assert progress, "no progress line for cloud-init:\n" + res.tail()
    assert warned, "cloud-init's error is not reported:\n" + res.tail()
    assert finish_at is not None, "cloud-init was never finished (configure never said it waits for it):\n" + res.tail()
    assert after, "%s installed at %s, before cloud-init finished at %s" % (PACKAGE, installed, finish_at)
    assert waited is not None and waited >= CLOUD_INIT_RUNNING - 1, \
        "the role did not wait the %d s cloud-init kept running:\n%s" % (CLOUD_INIT_RUNNING, res.tail())


def _copy_in(host, src, dest, mode):
    from tests.harness import testhosts

    testhosts.copy_in(str(host.state), host.name, str(src), dest, mode=mode)


KEY_LATE = 8   # the key is put back this long after the SSH wait says it is refused


def test_login_key_installed_late_configure_waits_and_converges(converged):
    host = converged.host
    host.sh("mv %s %s.later" % (KEYS, KEYS))

    def release():
        host.sh("mv %s.later %s" % (KEYS, KEYS))
        return _host_now(host)

    gate = ReleaseOnSight(r"waiting for the SSH login \S+: SSH answers, the key is refused", KEY_LATE, release)
    t0 = time.monotonic()
    try:
        res = converged.configure_watched(gate, name="key-late")
    finally:
        gate.join()
        host.sh("test -f %s || mv %s.later %s" % (KEYS, KEYS, KEYS))
    refused = re.findall(r"waiting for the SSH login \S+: SSH answers, the key is refused: (\d+) s", res.out)
    m = re.search(r"logged in as \S+ after (\d+) s", res.out)
    waited = int(m.group(1)) if m else None
    # the wait began before its first "refused" line: it logged in no sooner than the key's delay after that line
    late = gate.held
    ok = res.rc == 0 and bool(refused) and waited is not None and late is not None and waited >= int(late) - 1
    lib.record("faults", stage="first boot", fault="login key installed after the host is up",
               injected="authorized_keys of the login user moved away, put back %d s after the SSH wait says the key "
                        "is refused (sshd answers: Permission denied (publickey), as before GCE's guest agent made "
                        "the user)" % KEY_LATE,
               expected="the SSH wait keeps waiting, says the key is refused, logs in once the key is there, converges",
               observed="rc=%d after %.0f s; 'key is refused' progress lines: %d; key back %s s after the first; "
                        "logged in after %s s" % (res.rc, time.monotonic() - t0, len(refused),
                                                  "%.0f" % late if late is not None else "never", waited),
               survived=ok, figure="login after %s s" % waited)
    assert res.rc == 0, res.tail()
    assert refused, "no progress line says the key is refused:\n" + res.tail()
    assert late is not None, "the key was never put back (the wait never said it was refused):\n" + res.tail()
    assert waited is not None and waited >= int(late) - 1, (waited, late, res.tail())


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
