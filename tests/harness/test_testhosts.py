"""Tests of the test-host harness on real hosts: systemd-nspawn, netns, sshd, sudo, cleanup.

Needs root (like the harness itself). About 10 s.
"""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import testhosts  # noqa: E402  pylint: disable=wrong-import-position

CLI = [sys.executable, os.path.join(HERE, "testhosts.py")]   # no shebang: run by a python

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test-host harness needs root")


def _ssh(state, host, cmd):
    return subprocess.run(
        ["ssh", "-i", state["key"], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
         "ansible@" + host["ip"], cmd],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, check=False)


def _leftovers(hosts):
    """Everything of `hosts` that still exists on the controller (should be empty)."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                           check=True).stdout.decode().split()
    links = os.listdir("/sys/class/net")
    nat = subprocess.run(["iptables", "-t", "nat", "-S", "POSTROUTING"], stdout=subprocess.PIPE,
                         check=True).stdout.decode()
    with open("/proc/self/mountinfo") as fh:
        mounts = fh.read()
    for h in hosts:
        if h["netns"] in netns:
            found.append("netns " + h["netns"])
        found += ["link " + v for v in (h["veth_host"], h["veth_guest"]) if v in links]
        if "10.231.%d.0/24" % h["k"] in nat:
            found.append("nat rule for k=%d" % h["k"])
        if h["root"] in mounts:
            found.append("mount " + h["root"])
        found += ["mount " + mp for mp in testhosts._our_mounts().get(h["k"], [])]  # pylint: disable=protected-access
        if testhosts._alive(h["nspawn_pid"], h["nspawn_start"]):  # pylint: disable=protected-access
            found.append("process %d" % h["nspawn_pid"])
        if os.path.exists(h["hostdir"]):
            found.append("dir " + h["hostdir"])
        if str(h["k"]) in testhosts._reg_load()["hosts"]:  # pylint: disable=protected-access
            found.append("registry k=%d" % h["k"])
    return found


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    state_dir = str(tmp_path_factory.mktemp("hosts"))
    t0 = time.monotonic()
    state = testhosts.create(state_dir, count=2, prefix="pyt")
    state["boot_s"] = time.monotonic() - t0
    yield state_dir, state
    testhosts.destroy(state_dir)


def test_create_writes_inventory_and_state(two_hosts):
    state_dir, state = two_hosts
    assert [h["name"] for h in state["hosts"]] == ["pyt1", "pyt2"]
    ks = [h["k"] for h in state["hosts"]]
    assert len(set(ks)) == 2
    with open(os.path.join(state_dir, "inventory.yml")) as fh:
        inv = fh.read()
    for h in state["hosts"]:
        assert "    %s:\n      ansible_host: \"%s\"\n" % (h["name"], h["ip"]) in inv
    for line in ("ansible_user: ansible", "ansible_become: true",
                 "ansible_python_interpreter: /usr/bin/python3", "StrictHostKeyChecking=no",
                 "UserKnownHostsFile=/dev/null",
                 "ansible_ssh_private_key_file: \"%s/id_ed25519\"" % state_dir):
        assert line in inv
    assert oct(os.stat(state["key"]).st_mode & 0o777) == "0o600"
    reg = testhosts._reg_load()["hosts"]  # pylint: disable=protected-access
    for h in state["hosts"]:
        assert reg[str(h["k"])]["status"] == "running"
        assert reg[str(h["k"])]["state_dir"] == state_dir


def test_systemd_is_pid1(two_hosts):
    state_dir, state = two_hosts
    for h in state["hosts"]:
        comm = testhosts.exec_in(state_dir, h["name"], ["cat", "/proc/1/comm"]).stdout
        assert comm.decode().strip() == "systemd"
        running = testhosts.exec_in(state_dir, h["name"], ["systemctl", "is-system-running"],
                                    check=False).stdout.decode().strip()
        assert running in ("running", "degraded")
        assert testhosts.exec_in(state_dir, h["name"], ["hostname"]).stdout.decode().strip() \
            == h["name"]


def test_hosts_are_distinct(two_hosts):
    state_dir, state = two_hosts
    ids = {testhosts.exec_in(state_dir, h["name"], ["cat", "/etc/machine-id"]).stdout
           for h in state["hosts"]}
    keys = {testhosts.exec_in(state_dir, h["name"],
                              ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.split()[1]
            for h in state["hosts"]}
    assert len(ids) == 2 and len(keys) == 2


def test_ssh_as_ansible_and_sudo(two_hosts):
    state = two_hosts[1]
    for h in state["hosts"]:
        r = _ssh(state, h, "id -un; sudo -n id -u; hostname; ip -4 -o addr show scope global")
        assert r.returncode == 0, r.stderr.decode()
        lines = r.stdout.decode().splitlines()
        assert lines[:3] == ["ansible", "0", h["name"]]
        assert h["ip"] + "/24" in lines[3]


def test_exec_cli_and_copy_in(two_hosts, tmp_path):
    state_dir, state = two_hosts
    name = state["hosts"][0]["name"]
    src = tmp_path / "payload"
    src.write_text("hello from the controller\n")
    testhosts.copy_in(state_dir, name, str(src), "/opt/x/payload", mode="0755")
    r = subprocess.run(CLI + ["exec", "--state", state_dir, name, "--", "stat", "-c", "%a %U",
                              "/opt/x/payload"], stdout=subprocess.PIPE, check=False)
    assert r.returncode == 0 and r.stdout.decode().strip() == "755 root"
    r = subprocess.run(CLI + ["exec", "--state", state_dir, name, "--", "sh", "-c", "exit 7"],
                       check=False)
    assert r.returncode == 7
    env = dict(os.environ, PYTHONPATH="/controller/only", VIRTUAL_ENV="/controller/venv")
    r = subprocess.run(CLI + ["exec", "--state", state_dir, name, "--", "env"], env=env,
                       stdout=subprocess.PIPE, check=True)
    assert b"/controller/" not in r.stdout and b"PATH=/usr/local/sbin:" in r.stdout
    r = subprocess.run(CLI + ["ip", "--state", state_dir, name], stdout=subprocess.PIPE,
                       check=True)
    assert r.stdout.decode().strip() == state["hosts"][0]["ip"]


def test_create_refuses_bad_input(two_hosts, tmp_path):
    state_dir = two_hosts[0]
    with pytest.raises(testhosts.HarnessError, match="already holds test hosts"):
        testhosts.create(state_dir, count=1)
    with pytest.raises(testhosts.HarnessError, match="--count"):
        testhosts.create(str(tmp_path / "a"), count=0)
    with pytest.raises(testhosts.HarnessError, match="--prefix"):
        testhosts.create(str(tmp_path / "b"), count=1, prefix="Bad Name")
    r = subprocess.run(CLI + ["ip", "--state", state_dir, "nosuchhost"], stderr=subprocess.PIPE,
                       check=False)
    assert r.returncode == 2 and b"no host 'nosuchhost'" in r.stderr


def test_not_root_is_a_clear_error(tmp_path):
    # The system python: the venv's interpreter may live where nobody cannot read it.
    # The script goes in on stdin: the checkout may sit in a directory nobody cannot read (a 0700 mktemp -d).
    with open(CLI[1], "rb") as fh:
        script = fh.read()
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "/usr/bin/python3", "-"]
                       + ["create", "--state", str(tmp_path / "x")], input=script, stderr=subprocess.PIPE,
                       stdout=subprocess.DEVNULL, check=False)
    assert r.returncode == 2
    assert b"must run as root" in r.stderr


def test_destroy_leaves_nothing_and_is_idempotent(tmp_path):
    state_dir = str(tmp_path / "d")
    state = testhosts.create(state_dir, count=1, prefix="pyd")
    hosts = state["hosts"]
    assert not _leftovers([]) and len(_leftovers(hosts)) >= 5   # the check can see them
    r = subprocess.run(CLI + ["destroy", "--state", state_dir], check=False)
    assert r.returncode == 0
    assert _leftovers(hosts) == []
    assert not os.path.exists(state_dir)
    r = subprocess.run(CLI + ["destroy", "--state", state_dir], check=False)
    assert r.returncode == 0


def test_gc_removes_hosts_whose_owner_is_gone(tmp_path):
    state_dir = str(tmp_path / "g")
    state = testhosts.create(state_dir, count=1, prefix="pyg")
    hosts = state["hosts"]
    os.unlink(os.path.join(state_dir, "state.json"))   # the owner vanished
    r = subprocess.run(CLI + ["gc"], stdout=subprocess.PIPE, check=False)
    assert r.returncode == 0 and "pyg1" in r.stdout.decode().split()
    assert _leftovers(hosts) == []


def test_gc_keeps_live_hosts(two_hosts):
    state = two_hosts[1]
    subprocess.run(CLI + ["gc"], check=True)
    reg = testhosts._reg_load()["hosts"]  # pylint: disable=protected-access
    assert all(str(h["k"]) in reg for h in state["hosts"])
    assert all(testhosts.leader_pid(h) for h in state["hosts"])


def test_registry_entry_of_a_dead_creator_is_collected():
    # A creator killed right after allocating: registered, nothing made yet.
    child = subprocess.run(
        [sys.executable, "-c", "import sys, json; sys.path.insert(0, %r); import testhosts; "
         "print(json.dumps(testhosts._allocate(1, '/nonexistent/llmops-gc', ['pyz1'])))" % HERE],
        stdout=subprocess.PIPE, check=True)
    k = json.loads(child.stdout)[0]
    assert str(k) in testhosts._reg_load()["hosts"]  # pylint: disable=protected-access
    testhosts.gc()
    assert str(k) not in testhosts._reg_load()["hosts"]  # pylint: disable=protected-access


def test_sigterm_during_create_leaves_nothing(tmp_path):
    state_dir = str(tmp_path / "s")
    proc = subprocess.Popen(CLI + ["create", "--state", state_dir, "--count", "2", "--prefix", "pys"])
    state_file = os.path.join(state_dir, "state.json")
    deadline = time.monotonic() + 20
    while not os.path.exists(state_file) and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(state_file) as fh:   # written once the subnets are allocated, before anything is made
        hosts = json.load(fh)["hosts"]
    proc.terminate()
    assert proc.wait(timeout=60) == 130
    assert _leftovers(hosts) == []
    assert not os.path.exists(state_dir)


def test_gc_after_a_crash_finds_mounts_whose_dir_was_moved(tmp_path):
    # A run killed outright, then its tmp dir renamed (pytest does that to old tmp dirs).
    state_dir = str(tmp_path / "c")
    state = testhosts.create(state_dir, count=1, prefix="pyc")
    hosts = state["hosts"]
    os.kill(hosts[0]["nspawn_pid"], 9)
    os.rename(state_dir, state_dir + "-moved")
    assert testhosts._our_mounts()[hosts[0]["k"]] == [  # pylint: disable=protected-access
        state_dir + "-moved/hosts/pyc1/root"]
    testhosts.gc()
    assert _leftovers(hosts) == []


def test_a_boot_that_never_becomes_ready_is_retried_once(tmp_path, monkeypatch):
    """The first readiness wait fails (as an overloaded machine's boot once did): the harness stops that
    nspawn, boots the host again, and the host then works; nothing of the first boot is left behind."""
    real_wait = testhosts._wait_ready  # pylint: disable=protected-access
    calls = []

    def flaky_wait(h, deadline, abort=None):
        calls.append(h["nspawn_pid"])
        if len(calls) == 1:
            raise testhosts.HarnessError("host %s: not ready (injected)" % h["name"])
        return real_wait(h, deadline, abort)

    monkeypatch.setattr(testhosts, "_wait_ready", flaky_wait)
    state_dir = str(tmp_path / "retry")
    testhosts.create(state_dir, count=1, prefix="retry")
    try:
        state = testhosts.load_state(state_dir)
        host = state["hosts"][0]
        assert len(calls) == 2 and calls[0] != calls[1], calls
        assert not testhosts._alive(calls[0], None)  # pylint: disable=protected-access
        assert _ssh(state, host, "true").returncode == 0
    finally:
        testhosts.destroy(state_dir)
    assert _leftovers([host]) == []


def test_release_choices_are_checked_before_anything_is_made(tmp_path):
    assert testhosts.host_releases() == ["bookworm"]
    assert testhosts.host_releases(3, "trixie") == ["trixie"] * 3
    assert testhosts.host_releases(None, "bullseye,trixie") == ["bullseye", "trixie"]
    assert testhosts.host_releases(2, ["trixie", "bullseye"]) == ["trixie", "bullseye"]
    with pytest.raises(testhosts.HarnessError, match="one host per release"):
        testhosts.host_releases(3, "bullseye,trixie")
    state_dir = tmp_path / "r"
    r = subprocess.run(CLI + ["create", "--state", str(state_dir), "--release", "bookworm,buster"],
                       stderr=subprocess.PIPE, check=False)
    assert r.returncode == 2
    assert b"--release 'bookworm,buster': give Debian codenames" in r.stderr
    assert b"bullseye (Debian 11), bookworm (Debian 12), trixie (Debian 13)" in r.stderr
    assert not state_dir.exists()
    r = subprocess.run(CLI + ["build", "--release", "jammy"], stderr=subprocess.PIPE, check=False)
    assert r.returncode == 2 and b"--release 'jammy'" in r.stderr


def test_missing_roots_are_built_at_the_same_time(monkeypatch):
    """ensure_rootfses runs one build per release concurrently and reports every failure (no debootstrap here:
    each stand-in build waits until all three have started, which only concurrent builds get past)."""
    started = threading.Barrier(3, timeout=10)

    failing = {"bullseye"}

    def build(release):
        started.wait()
        if release in failing:
            raise testhosts.HarnessError("debootstrap of %s failed (injected)" % release)
        return "/cache/%s-rootfs" % release

    monkeypatch.setattr(testhosts, "ensure_rootfs", build)
    with pytest.raises(testhosts.HarnessError, match="bullseye failed"):
        testhosts.ensure_rootfses(["bullseye", "bookworm", "trixie"])
    failing.clear()
    assert testhosts.ensure_rootfses("trixie,bookworm,trixie,bullseye") == {
        r: "/cache/%s-rootfs" % r for r in ("trixie", "bookworm", "bullseye")}


@pytest.fixture(scope="module")
def release_hosts(tmp_path_factory):
    """One host each of Debian 11 and 13 (bookworm is what every other test boots)."""
    state_dir = str(tmp_path_factory.mktemp("releases"))
    state = testhosts.create(state_dir, prefix="pyr", release="bullseye,trixie")
    yield state_dir, state
    testhosts.destroy(state_dir)


def test_hosts_of_other_releases_boot_their_own_debian(release_hosts):
    state_dir, state = release_hosts
    assert [(h["name"], h["release"]) for h in state["hosts"]] == [
        ("pyr1", "bullseye"), ("pyr2", "trixie")]
    for h in state["hosts"]:
        facts = testhosts.RELEASES[h["release"]]
        out = testhosts.exec_in(state_dir, h["name"], ["sh", "-c", (
            ". /etc/os-release; echo $VERSION_CODENAME $VERSION_ID; "
            "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'; "
            "cat /proc/1/comm; systemctl --version | head -n 1; "
            "systemctl is-system-running; systemctl --failed --no-legend --plain")],
            check=False).stdout.decode().splitlines()
        assert out[:3] == ["%s %s" % (h["release"], facts["version"]), facts["python"], "systemd"]
        assert out[3].startswith("systemd %d " % facts["systemd"])
        assert out[4:] == ["running"], out   # nothing failed, trixie's systemd 257 included
        # a real unit, started by that systemd, and the login the roles use
        r = _ssh(state, h, "sudo -n systemd-run --wait --pipe --quiet -p PrivateTmp=yes "
                           "-p DynamicUser=yes id -u")
        assert r.returncode == 0, r.stderr.decode()
        assert 61184 <= int(r.stdout) <= 65519   # systemd's range of dynamic users
    # trixie's systemd 257 gets the cgroup2-only layout of the real targets; bullseye the hybrid one
    fstypes = {h["release"]: testhosts.exec_in(state_dir, h["name"], [
        "stat", "-f", "-c", "%T", "/sys/fs/cgroup"]).stdout.decode().strip()
        for h in state["hosts"]}
    assert fstypes == {"bullseye": "tmpfs", "trixie": "cgroup2fs"}


def test_inventory_carries_each_hosts_release(release_hosts):
    state_dir, _state = release_hosts
    inv = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-inventory"), "-i",
         os.path.join(state_dir, "inventory.yml"), "--list"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    data = json.loads(inv.stdout)
    assert data["testhosts_bullseye"]["hosts"] == ["pyr1"]
    assert data["testhosts_trixie"]["hosts"] == ["pyr2"]
    assert set(data["testhosts"]["children"]) == {"testhosts_bullseye", "testhosts_trixie"}
    hv = data["_meta"]["hostvars"]
    assert (hv["pyr1"]["testhost_release"], hv["pyr1"]["testhost_debian_version"]) == (
        "bullseye", "11")
    assert (hv["pyr2"]["testhost_release"], hv["pyr2"]["testhost_debian_version"]) == (
        "trixie", "13")
    r = subprocess.run(CLI + ["list", "--state", state_dir], stdout=subprocess.PIPE, check=True)
    assert [ln.split("\t")[2:] for ln in r.stdout.decode().splitlines()] == [
        ["bullseye", "running"], ["trixie", "running"]]
