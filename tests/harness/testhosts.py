# Copyright: (c) 2026, llmops contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-host harness: real Debian 11/12/13 hosts with systemd as PID 1, made with systemd-nspawn.

Each host is an overlayfs copy of a cached debootstrap rootfs of its Debian release (bookworm unless
asked otherwise), booted by ``systemd-nspawn --boot``
inside its own network namespace, reachable from the controller at ``10.231.<k>.2`` (controller side
``10.231.<k>.1``), with sshd, a user ``ansible`` (passwordless sudo, an ed25519 key made in the state
directory) and NAT so apt/pip inside the host reach the package registries.

CLI (as root)::

    testhosts.py create  --state DIR [--count N] [--prefix NAME] [--release CODENAME[,CODENAME...]]
    testhosts.py build   [--release CODENAME[,CODENAME...]|all]
    testhosts.py destroy --state DIR
    testhosts.py gc
    testhosts.py exec    --state DIR HOST -- CMD...
    testhosts.py ip      --state DIR HOST
    testhosts.py list    --state DIR

Python API: ``create()``, ``destroy()``, ``gc()``, ``exec_in()``, ``copy_in()``, ``load_state()``,
``ensure_rootfs()``, ``ensure_rootfses()``.

Releases (``RELEASES``): bullseye (Debian 11, python3 3.9: older than vLLM's ``Requires-Python``,
like Ubuntu 22.04's 3.10), bookworm (12, 3.11, the default) and trixie (13, 3.13). ``--release``
with one codename gives ``--count`` hosts of it; a list gives one host per codename, in that
order. The inventory carries each host's release: host vars ``testhost_release`` and
``testhost_debian_version``, and a group ``testhosts_<codename>`` per release (children of
``testhosts``). Each release's rootfs is built once per machine (debootstrap from the Debian
archive, about a minute, in parallel when several are missing) and cached as
``CACHE_DIR/<codename>-rootfs``; ``build`` makes them ahead of time.

Stdlib only; runs with any python3 >= 3.9. Flags of systemd-nspawn and why:

* ``--register=no --keep-unit``: PID 1 of this machine is not systemd; without them nspawn asks
  systemd-machined/systemd over D-Bus and fails ("Failed to open system bus").
* ``--network-namespace-path``: the host's own netns (veth + address) made by this harness.
* ``--resolv-conf=copy-host``: the host resolves names like the controller does.
* ``--bind-ro=/etc/ssl/certs``: the registries are reached through a TLS proxy whose CA only the
  controller's bundle trusts; without it pip inside the host fails with CERTIFICATE_VERIFY_FAILED.
* ``--console=read-only``: the boot log goes to ``hosts/NAME/console.log`` in the state dir.
* trixie only, environment ``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1``: this machine's /sys/fs/cgroup
  is cgroup v1 (a tmpfs of v1 hierarchies), which nspawn passes on to the host as a hybrid
  layout (v1 hierarchies read-only, a cgroup2 at /sys/fs/cgroup/unified). systemd 256 and later
  call v1/hybrid obsolete (258 refuses it); trixie's 257 still boots in it (measured, with "Failed
  to attach 1 to compat systemd cgroup"), but with the variable it gets a plain cgroup2 at
  /sys/fs/cgroup, the layout of the real targets (Ubuntu 22.04/24.04 boot cgroup v2 only). That
  cgroup2 has no controllers (the machine binds them to its v1 hierarchies), so, as on the other
  releases, no cgroup limits or device policies are enforced inside the host. The machine's own
  hierarchies are never made writable.

Copy per host: overlayfs (the cached rootfs as lowerdir, the host's changes in
``hosts/NAME/upper``) mounts in milliseconds; ``cp -a`` of the 331 MB rootfs took 9 s cold and 2 s
warm on these machines (ext4 has no reflinks), so overlayfs it is. Measured here (2 cores): create
of 2 hosts about 1 s to systemd "running" and sshd answering, destroy about 2 s.

Subnet numbers ``<k>`` are allocated round robin under ``flock`` in ``/run/llmops-testhosts/``
(registry.json), skipping any ``10.231.<k>.0/24`` already in use on the machine; a just-freed
``<k>`` is not reused at once, so a stale ssh ControlPersist master cannot meet a new host.
``ip_forward`` is switched on and left on (other users rely on it).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

CACHE_DIR = os.environ.get("LLMOPS_TESTHOST_CACHE", "/var/cache/llmops-testhosts")
# Debian releases a host can run: codename -> Debian version, its python3, and whether its systemd
# gets a plain cgroup2 hierarchy (see the module docstring).
RELEASES = {
    "bullseye": {"version": "11", "python": "3.9", "systemd": 247, "unified_cgroup": False},
    "bookworm": {"version": "12", "python": "3.11", "systemd": 252, "unified_cgroup": False},
    "trixie": {"version": "13", "python": "3.13", "systemd": 257, "unified_cgroup": True},
}
DEFAULT_RELEASE = "bookworm"
RUN_DIR = os.environ.get("LLMOPS_TESTHOST_RUN", "/run/llmops-testhosts")
NET_PREFIX = "10.231"
DEBOOTSTRAP_INCLUDE = ("systemd,systemd-sysv,dbus,openssh-server,python3,python3-venv,sudo,"
                       "iproute2,ca-certificates")
DEBIAN_MIRROR = os.environ.get("LLMOPS_TESTHOST_MIRROR", "http://deb.debian.org/debian")
NAT_COMMENT = "llmops-testhost"
BOOT_TIMEOUT = float(os.environ.get("LLMOPS_TESTHOST_BOOT_TIMEOUT", "90"))
STOP_TIMEOUT = 15.0
REQUIRED_TOOLS = ("systemd-nspawn", "nsenter", "ip", "iptables", "ssh-keygen", "mount", "umount",
                  "chroot", "debootstrap")
DEFAULT_PREFIX = "testhost"
K_MIN, K_MAX = 1, 249   # 250..254 are left for hand-made hosts (shared/notes/test-hosts.md)


class HarnessError(Exception):
    """A failure with a message meant for the user."""


# --------------------------------------------------------------------------- small helpers

def _log(msg: str) -> None:
    sys.stderr.write("testhosts: %s\n" % msg)
    sys.stderr.flush()


def _run(cmd, check=True, input=None, timeout=120):
    proc = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise HarnessError("command failed (rc=%d): %s\n%s" % (
            proc.returncode, " ".join(cmd), proc.stderr.decode(errors="replace").strip()))
    return proc


def _check_env() -> None:
    if os.geteuid() != 0:
        raise HarnessError("must run as root: systemd-nspawn, network namespaces, overlay mounts "
                           "and iptables need it (try: sudo %s)" % " ".join(sys.argv))
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise HarnessError("missing tools: %s; install them with scripts/host-deps "
                           "(systemd-container, debootstrap, iptables, iproute2, openssh-client)"
                           % ", ".join(missing))


def _proc_starttime(pid):
    """Start time (clock ticks since boot) of a process, or None when it does not exist."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            data = fh.read()
    except (OSError, TypeError):
        return None
    fields = data.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):   # a zombie (not yet reaped by its parent) is gone
        return None
    return int(fields[19])


def _alive(pid, starttime=None) -> bool:
    if not pid:
        return False
    st = _proc_starttime(pid)
    if st is None:
        return False
    return starttime is None or st == starttime


def _children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as fh:
                out.extend(int(x) for x in fh.read().split())
    except OSError:
        pass
    return out


def _mounted(path) -> bool:
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                mp = line.split()[4].replace("\\040", " ")
                if mp == path:
                    return True
    except OSError:
        pass
    return False


def _mount_source(k):
    return "llmops-testhost-k%d" % k


def _our_mounts():
    """{k: [mount points]} of the overlay mounts this harness made (by their source name)."""
    found = {}
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                pre, _sep, post = line.partition(" - ")
                fstype, source = (post.split() + ["", ""])[:2]
                m = re.match(r"^llmops-testhost-k(\d+)$", source)
                if fstype == "overlay" and m:
                    mp = pre.split()[4].replace("\\040", " ")
                    found.setdefault(int(m.group(1)), []).append(mp)
    except OSError:
        pass
    return found


def _umount(path):
    if _run(["umount", path], check=False).returncode != 0:
        time.sleep(0.5)
        if _run(["umount", path], check=False).returncode != 0:
            _run(["umount", "-l", path], check=False)
    return not _mounted(path)


def _default_iface() -> str:
    out = _run(["ip", "-4", "route", "show", "default"]).stdout.decode()
    m = re.search(r"\bdev (\S+)", out)
    if not m:
        raise HarnessError("no default IPv4 route on the controller: the hosts cannot reach the "
                           "package registries")
    return m.group(1)


@contextlib.contextmanager
def _flock(path):
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_atomic(path, text, mode=0o644):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- registry of live hosts

REGISTRY = os.path.join(RUN_DIR, "registry.json")
REGISTRY_LOCK = os.path.join(RUN_DIR, "registry.lock")


def _reg_load():
    try:
        with open(REGISTRY) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {"last_k": 0, "hosts": {}}


def _reg_save(reg):
    os.makedirs(RUN_DIR, mode=0o755, exist_ok=True)
    _write_atomic(REGISTRY, json.dumps(reg, indent=1, sort_keys=True), 0o644)


def _k_in_use_by_system():
    """Subnets 10.231.<k>.0/24 already used on this machine (addresses or NAT rules), by anyone."""
    used = set()
    out = _run(["ip", "-o", "-4", "addr", "show"], check=False).stdout.decode()
    for m in re.finditer(r"inet %s\.(\d+)\." % re.escape(NET_PREFIX), out):
        used.add(int(m.group(1)))
    out = _run(["iptables", "-t", "nat", "-S", "POSTROUTING"], check=False).stdout.decode()
    for m in re.finditer(r"-s %s\.(\d+)\.0/24" % re.escape(NET_PREFIX), out):
        used.add(int(m.group(1)))
    netns = set(_run(["ip", "netns", "list"], check=False).stdout.decode().split())
    for k in range(K_MIN, K_MAX + 1):
        if "llt%d" % k in netns:
            used.add(k)
    return used


def _allocate(count, state_dir, names):
    """Reserve `count` free subnet numbers, round robin (a just-freed k is not reused at once)."""
    with _flock(REGISTRY_LOCK):
        reg = _reg_load()
        taken = {int(k) for k in reg["hosts"]} | _k_in_use_by_system()
        free = [k for k in range(K_MIN, K_MAX + 1) if k not in taken]
        if len(free) < count:
            raise HarnessError(
                "only %d free test-host subnets left in %s.%d-%d.0/24; run `testhosts.py gc` or "
                "destroy other hosts" % (len(free), NET_PREFIX, K_MIN, K_MAX))
        last = reg.get("last_k", 0)
        free.sort(key=lambda k: (k <= last, k))
        ks = free[:count]
        for k, name in zip(ks, names):
            reg["hosts"][str(k)] = {"name": name, "state_dir": state_dir, "creator_pid": os.getpid(),
                                    "creator_start": _proc_starttime(os.getpid()),
                                    "nspawn_pid": None, "nspawn_start": None,
                                    "status": "creating", "since": time.time()}
        reg["last_k"] = ks[-1]
        _reg_save(reg)
    return ks


def _reg_update(k, **fields):
    with _flock(REGISTRY_LOCK):
        reg = _reg_load()
        if str(k) in reg["hosts"]:
            reg["hosts"][str(k)].update(fields)
            _reg_save(reg)


def _reg_free(k):
    with _flock(REGISTRY_LOCK):
        reg = _reg_load()
        if reg["hosts"].pop(str(k), None) is not None:
            _reg_save(reg)


# --------------------------------------------------------------------------- rootfs cache

def parse_releases(release):
    """A codename, a comma-separated list of them, or a list -> list of known codenames."""
    if release is None:
        return [DEFAULT_RELEASE]
    items = release.split(",") if isinstance(release, str) else list(release)
    items = [str(r).strip() for r in items]
    bad = [r for r in items if r not in RELEASES]
    if not items or bad:
        raise HarnessError("--release %r: give Debian codenames, comma-separated, from %s" % (
            release if isinstance(release, str) else ",".join(items),
            ", ".join("%s (Debian %s)" % (r, v["version"]) for r, v in RELEASES.items())))
    return items


def rootfs_path(release=DEFAULT_RELEASE):
    return os.path.join(CACHE_DIR, "%s-rootfs" % release)


def ensure_rootfs(release=DEFAULT_RELEASE):
    """Build the cached rootfs of `release` once (debootstrap to a temp dir, renamed atomically,
    under a lock of that release: other releases build at the same time)."""
    parse_releases([release])
    path = rootfs_path(release)
    if os.path.isdir(path):   # complete: only a finished build is renamed to it
        return path
    os.makedirs(CACHE_DIR, mode=0o755, exist_ok=True)
    with _flock(os.path.join(CACHE_DIR, ".build-%s.lock" % release)):
        if os.path.isdir(path):
            return path
        tmp = tempfile.mkdtemp(dir=CACHE_DIR, prefix=".build-%s-" % release)
        _log("building the Debian %s (%s) rootfs once in %s (about a minute)" % (
            RELEASES[release]["version"], release, path))
        try:
            proc = subprocess.run(["debootstrap", "--variant=minbase",
                                   "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg",
                                   "--include=" + DEBOOTSTRAP_INCLUDE, release, tmp,
                                   DEBIAN_MIRROR], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  check=False)
            if proc.returncode != 0:
                raise HarnessError("debootstrap of %s failed (rc=%d):\n%s" % (
                    release, proc.returncode, proc.stdout.decode(errors="replace")[-3000:]))
            os.chmod(tmp, 0o755)   # mkdtemp makes 0700; a host's / must be world-readable
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


def ensure_rootfses(releases):
    """Build every missing rootfs of `releases` at the same time (a thread each; debootstrap mostly
    waits for the archive). Returns {codename: path}; all errors are reported together."""
    wanted = list(dict.fromkeys(parse_releases(releases)))
    paths, errors = {}, []

    def one(release):
        try:
            paths[release] = ensure_rootfs(release)
        except Exception as exc:   # collected, reported together below
            errors.append(str(exc))

    threads = [threading.Thread(target=one, args=(r,)) for r in wanted]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise HarnessError("\n".join(errors))
    return paths


# --------------------------------------------------------------------------- state dir

def _state_file(state_dir):
    return os.path.join(state_dir, "state.json")


def load_state(state_dir):
    try:
        with open(_state_file(state_dir)) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def _save_state(state_dir, state):
    _write_atomic(_state_file(state_dir), json.dumps(state, indent=1, sort_keys=True), 0o600)


def _yaml_str(value):
    return json.dumps(str(value))   # a JSON string is a valid YAML scalar


def _write_inventory(state_dir, state):
    lines = ["# Written by tests/harness/testhosts.py; removed by `testhosts.py destroy`.",
             "testhosts:", "  hosts:"]
    groups = {}
    for h in state["hosts"]:
        release = h.get("release", DEFAULT_RELEASE)
        groups.setdefault(release, []).append(h["name"])
        lines += ["    %s:" % h["name"],
                  "      ansible_host: %s" % _yaml_str(h["ip"]),
                  "      ansible_user: ansible",
                  "      ansible_become: true",
                  "      ansible_ssh_private_key_file: %s" % _yaml_str(state["key"]),
                  "      ansible_python_interpreter: /usr/bin/python3",
                  "      ansible_ssh_common_args: %s" % _yaml_str(
                      "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                      "-o LogLevel=ERROR"),
                  "      testhost_gateway: %s" % _yaml_str(h["gateway"]),
                  "      testhost_release: %s" % _yaml_str(release),
                  "      testhost_debian_version: %s" % _yaml_str(RELEASES[release]["version"])]
    lines.append("  children:")
    for release, names in groups.items():
        lines += ["    testhosts_%s:" % release, "      hosts:"]
        lines += ["        %s:" % n for n in names]
    _write_atomic(os.path.join(state_dir, "inventory.yml"), "\n".join(lines) + "\n", 0o644)


# --------------------------------------------------------------------------- one host

def _host_record(state_dir, k, name, iface, release):
    hostdir = os.path.join(state_dir, "hosts", name)
    return {"name": name, "k": k, "release": release, "ip": "%s.%d.2" % (NET_PREFIX, k),
            "gateway": "%s.%d.1" % (NET_PREFIX, k), "netns": "llt%d" % k,
            "veth_host": "llt%dh" % k, "veth_guest": "llt%dg" % k, "iface": iface,
            "hostdir": hostdir, "root": os.path.join(hostdir, "root"),
            "nspawn_pid": None, "nspawn_start": None}


def _nat_rule(h):
    return ["POSTROUTING", "-s", "%s.%d.0/24" % (NET_PREFIX, h["k"]), "-o", h["iface"], "-j",
            "MASQUERADE", "-m", "comment", "--comment", "%s:%d" % (NAT_COMMENT, h["k"])]


def _prepare_root(h, lower, pubkey):
    hostdir, root = h["hostdir"], h["root"]
    for sub in ("upper", "work", "root"):
        os.makedirs(os.path.join(hostdir, sub), mode=0o755, exist_ok=True)
    # The mount's source names it ours and its <k>: found again even if the dir is renamed.
    _run(["mount", "-t", "overlay", _mount_source(h["k"]), "-o",
          "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, os.path.join(hostdir, "upper"),
                                                  os.path.join(hostdir, "work")), root])
    name = h["name"]
    _write_atomic(os.path.join(root, "etc/hostname"), name + "\n")
    _write_atomic(os.path.join(root, "etc/hosts"),
                  "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                  % name)
    _write_atomic(os.path.join(root, "etc/machine-id"), uuid.uuid4().hex + "\n", 0o444)
    # Per-host SSH host key (the cached rootfs's keys would be shared by every host).
    sshdir = os.path.join(root, "etc/ssh")
    for f in os.listdir(sshdir):
        if f.startswith("ssh_host_"):
            os.unlink(os.path.join(sshdir, f))
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@" + name, "-f",
          os.path.join(sshdir, "ssh_host_ed25519_key")])
    _write_atomic(os.path.join(sshdir, "sshd_config.d/llmops-testhost.conf"),
                  "# test host: one host key, keys only\nHostKey /etc/ssh/ssh_host_ed25519_key\n"
                  "PasswordAuthentication no\nUseDNS no\n")
    _run(["chroot", root, "useradd", "--create-home", "--user-group", "--shell", "/bin/bash",
          "ansible"])
    _write_atomic(os.path.join(root, "etc/sudoers.d/ansible"),
                  "ansible ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440)
    with open(os.path.join(root, "etc/passwd")) as fh:
        ent = [ln.split(":") for ln in fh if ln.startswith("ansible:")][0]
    uid, gid = int(ent[2]), int(ent[3])
    sshd = os.path.join(root, "home/ansible/.ssh")
    os.makedirs(sshd, mode=0o700, exist_ok=True)
    _write_atomic(os.path.join(sshd, "authorized_keys"), pubkey, 0o600)
    for p in (sshd, os.path.join(sshd, "authorized_keys")):
        os.chown(p, uid, gid)


def _setup_net(h):
    ns, vh, vg = h["netns"], h["veth_host"], h["veth_guest"]
    _run(["ip", "netns", "add", ns])
    _run(["ip", "link", "add", vh, "type", "veth", "peer", "name", vg])
    _run(["ip", "link", "set", vg, "netns", ns])
    _run(["ip", "addr", "add", h["gateway"] + "/24", "dev", vh])
    _run(["ip", "link", "set", vh, "up"])
    for cmd in (["ip", "addr", "add", h["ip"] + "/24", "dev", vg], ["ip", "link", "set", vg, "up"],
                ["ip", "link", "set", "lo", "up"],
                ["ip", "route", "add", "default", "via", h["gateway"]]):
        _run(["ip", "netns", "exec", ns] + cmd)
    with open("/proc/sys/net/ipv4/ip_forward", "w") as fh:   # left on: other users rely on it too
        fh.write("1\n")
    if _run(["iptables", "-t", "nat", "-C"] + _nat_rule(h), check=False).returncode != 0:
        _run(["iptables", "-t", "nat", "-A"] + _nat_rule(h))


def _nspawn_env(release):
    """systemd-nspawn's environment for a host of `release` (see the module docstring)."""
    env = dict(os.environ)
    if RELEASES[release]["unified_cgroup"]:
        env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
    else:
        env.pop("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", None)
    return env


def _boot(h):
    log = open(os.path.join(h["hostdir"], "console.log"), "ab")
    try:
        proc = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "-D", h["root"], "--boot", "--register=no",
             "--keep-unit", "--machine=" + h["name"],
             "--network-namespace-path=/run/netns/" + h["netns"], "--resolv-conf=copy-host",
             "--bind-ro=/etc/ssl/certs", "--console=read-only"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            close_fds=True, env=_nspawn_env(h.get("release", DEFAULT_RELEASE)))
    finally:
        log.close()
    h["nspawn_pid"] = proc.pid
    h["nspawn_start"] = _proc_starttime(proc.pid)
    # The Popen object is dropped on purpose: the host outlives this process (no zombie
    # is left because create's caller exits, and the API caller's Popen is kept below).
    _POPENS.append(proc)


_POPENS = []


def leader_pid(h):
    """PID (in the controller's namespace) of the host's PID 1, or None."""
    if not _alive(h.get("nspawn_pid"), h.get("nspawn_start")):
        return None
    kids = _children(h["nspawn_pid"])
    return kids[0] if kids else None


def _console_tail(h, n=30):
    try:
        with open(os.path.join(h["hostdir"], "console.log"), "rb") as fh:
            return b"\n".join(fh.read().splitlines()[-n:]).decode(errors="replace")
    except OSError:
        return "(no console log)"


def _wait_ready(h, deadline, abort=None):
    state = ""
    while time.monotonic() < deadline:
        if abort is not None and abort.is_set():
            raise HarnessError("host %s: creation interrupted" % h["name"])
        if not _alive(h["nspawn_pid"], h["nspawn_start"]):
            raise HarnessError("host %s: systemd-nspawn exited during boot; console:\n%s"
                               % (h["name"], _console_tail(h)))
        leader = leader_pid(h)
        if leader:
            p = subprocess.run(["nsenter", "-t", str(leader), "-a", "systemctl",
                                "is-system-running"], env=_host_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, timeout=20, check=False)
            state = p.stdout.decode().strip()
            if state in ("running", "degraded") and _ssh_banner(h["ip"]):
                return
        time.sleep(0.2)
    raise HarnessError("host %s: not ready after %ds (systemd: %r, sshd on %s:22 %s); console:\n%s"
                       % (h["name"], BOOT_TIMEOUT, state, h["ip"],
                          "answers" if _ssh_banner(h["ip"]) else "silent", _console_tail(h)))


def _ssh_banner(ip):
    try:
        with socket.create_connection((ip, 22), timeout=2) as s:
            s.settimeout(2)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _stop_nspawn(h):
    """Stop the host's systemd-nspawn (clean power-off, then SIGKILL). Returns a list of errors."""
    errors = []
    pid, start = h.get("nspawn_pid"), h.get("nspawn_start")
    if _alive(pid, start):
        leader = leader_pid(h)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)       # nspawn asks the container's systemd to power off
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid, start) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid, start):
            _log("host %s: no clean shutdown in %ds, killing it" % (h.get("name"), STOP_TIMEOUT))
            for p in (leader, pid):
                if p:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.1)
        for p in list(_POPENS):
            if p.pid == pid:
                with contextlib.suppress(Exception):
                    p.wait(timeout=5)
                _POPENS.remove(p)
        if _alive(pid, start):
            errors.append("systemd-nspawn pid %d survived SIGKILL" % pid)
    return errors


def _teardown_host(h):
    """Remove everything one host is made of. Idempotent; works on partial records."""
    errors = _stop_nspawn(h)
    root = h.get("root")
    mounts = _our_mounts().get(h["k"], []) if "k" in h else []
    if root and _mounted(root) and os.path.realpath(root) not in mounts:
        mounts.append(os.path.realpath(root))
    for mp in mounts:   # also found where its directory was moved to
        if not _umount(mp):
            errors.append("%s is still mounted" % mp)
    ns = h.get("netns")
    if ns and os.path.exists("/run/netns/" + ns):
        r = _run(["ip", "netns", "del", ns], check=False)
        if r.returncode != 0:
            errors.append("ip netns del %s: %s" % (ns, r.stderr.decode().strip()))
    vh = h.get("veth_host")
    if vh and os.path.exists("/sys/class/net/" + vh):
        _run(["ip", "link", "del", vh], check=False)
    if "k" in h and h.get("iface"):
        while _run(["iptables", "-t", "nat", "-C"] + _nat_rule(h), check=False).returncode == 0:
            _run(["iptables", "-t", "nat", "-D"] + _nat_rule(h))
    hostdir = h.get("hostdir")
    if hostdir and os.path.isdir(hostdir) and not errors:
        shutil.rmtree(hostdir, ignore_errors=False)
    if errors:
        raise HarnessError("host %s: teardown incomplete: %s" % (h.get("name"), "; ".join(errors)))
    if "k" in h:
        _reg_free(h["k"])


# --------------------------------------------------------------------------- public API

def host_releases(count=None, release=None):
    """The release of each host to create: `count` hosts of one codename, or one host per codename
    of a list (then `count` may be left out or must equal its length)."""
    releases = parse_releases(release)
    if count is None:
        count = 1 if len(releases) == 1 else len(releases)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 32:
        raise HarnessError("--count %r: give a number of hosts from 1 to 32" % (count,))
    if len(releases) == 1:
        return releases * count
    if count != len(releases):
        raise HarnessError("--count %d with --release %s: a list of releases gives one host per "
                           "release; leave out --count or give %d" % (
                               count, ",".join(releases), len(releases)))
    return releases


def create(state_dir, count=None, prefix=DEFAULT_PREFIX, release=None):
    """Create hosts (`count` of one release, or one per release of a list; default one bookworm
    host); write DIR/state.json and DIR/inventory.yml; return the state dict."""
    _check_env()
    if not re.match(r"^[a-z][a-z0-9-]{0,30}$", prefix or ""):
        raise HarnessError("--prefix %r: use lowercase letters, digits and '-', starting with a "
                           "letter (max 31 chars)" % prefix)
    releases = host_releases(count, release)
    state_dir = os.path.abspath(state_dir)
    if load_state(state_dir):
        raise HarnessError("%s already holds test hosts; run `testhosts.py destroy --state %s` "
                           "first" % (state_dir, state_dir))
    lowers = ensure_rootfses(releases)
    try:
        return _create(state_dir, releases, prefix, lowers)
    except BaseException:   # failure, Ctrl-C or SIGTERM: nothing made may stay behind
        with contextlib.suppress(Exception):
            destroy(state_dir)
        raise


def _create(state_dir, releases, prefix, lowers):
    os.makedirs(os.path.join(state_dir, "hosts"), mode=0o700, exist_ok=True)
    key = os.path.join(state_dir, "id_ed25519")
    if not os.path.exists(key):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ansible@llmops-testhosts",
              "-f", key])
    with open(key + ".pub") as fh:
        pubkey = fh.read()
    iface = _default_iface()
    names = ["%s%d" % (prefix, i) for i in range(1, len(releases) + 1)]
    ks = _allocate(len(releases), state_dir, names)
    hosts = [_host_record(state_dir, k, n, iface, r) for k, n, r in zip(ks, names, releases)]
    state = {"version": 1, "key": key, "hosts": hosts, "created": time.time()}
    _save_state(state_dir, state)   # before anything is made, so destroy always finds it
    for h in hosts:                 # and so does gc
        _reg_update(h["k"], record=h)
    errors = []

    abort = threading.Event()

    def one(h):
        try:
            for step in (lambda: _prepare_root(h, lowers[h["release"]], pubkey),
                         lambda: _setup_net(h),
                         lambda: _boot(h)):
                if abort.is_set():
                    raise HarnessError("host %s: creation interrupted" % h["name"])
                step()
            _reg_update(h["k"], nspawn_pid=h["nspawn_pid"], nspawn_start=h["nspawn_start"],
                        status="booting", record=h)
            try:
                _wait_ready(h, time.monotonic() + BOOT_TIMEOUT, abort)
            except HarnessError as first:
                # Seen rarely on an overloaded machine: a boot that never brings up sshd. Boot the
                # same host once more before giving up; a second failure is reported as it is.
                if abort.is_set():
                    raise
                _log("%s; booting it once more" % str(first).split("; console:", maxsplit=1)[0])
                stop_errors = _stop_nspawn(h)
                if stop_errors:
                    raise HarnessError("; ".join(stop_errors)) from first
                _boot(h)
                _reg_update(h["k"], nspawn_pid=h["nspawn_pid"], nspawn_start=h["nspawn_start"],
                            status="booting", record=h)
                _wait_ready(h, time.monotonic() + BOOT_TIMEOUT, abort)
            _reg_update(h["k"], status="running", record=h)
        except Exception as exc:   # collected; every host is torn down below
            errors.append(str(exc))
        finally:
            _reg_update(h["k"], record=h)

    threads = [threading.Thread(target=one, args=(h,)) for h in hosts]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except BaseException:   # Ctrl-C / SIGTERM: let the workers stop, then remove what they made
        abort.set()
        for t in threads:
            if t.ident is not None:   # started (perhaps interrupted inside start())
                t.join()
        _save_state(state_dir, state)
        raise
    _save_state(state_dir, state)
    if errors:
        try:
            destroy(state_dir)
            cleanup = "everything made was removed"
        except Exception as exc:   # report both failures
            cleanup = "cleanup failed too (run `testhosts.py gc`): %s" % exc
        raise HarnessError("create failed (%s):\n%s" % (cleanup, "\n".join(errors)))
    _write_inventory(state_dir, state)
    return state


def destroy(state_dir):
    """Destroy every host of `state_dir`. Idempotent: nothing there is not an error."""
    _check_env()
    state_dir = os.path.abspath(state_dir)
    state = load_state(state_dir) or {"hosts": []}
    hosts = list(state["hosts"])
    seen = {h.get("k") for h in hosts}
    reg = _reg_load()   # hosts registered for this dir but missing from state.json (crash)
    for k, e in reg["hosts"].items():
        if e.get("state_dir") == state_dir and int(k) not in seen:
            hosts.append(e.get("record") or {"k": int(k), "name": e.get("name")})
    errors = []
    threads = []

    def one(h):
        try:
            _teardown_host(h)
        except Exception as exc:
            errors.append(str(exc))

    for h in hosts:
        threads.append(threading.Thread(target=one, args=(h,)))
        threads[-1].start()
    for t in threads:
        t.join()
    if errors:
        raise HarnessError("destroy of %s incomplete:\n%s" % (state_dir, "\n".join(errors)))
    for f in ("inventory.yml", "id_ed25519", "id_ed25519.pub", "state.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(state_dir, f))
    for d in (os.path.join(state_dir, "hosts"), state_dir):
        with contextlib.suppress(OSError):
            os.rmdir(d)   # only when empty: never remove what we did not make


def gc():
    """Tear down registered hosts whose owner is gone. Returns the names cleaned."""
    _check_env()
    cleaned = []
    for k, e in sorted(_reg_load()["hosts"].items()):
        status = e.get("status")
        if status == "creating" or (status == "booting" and not e.get("nspawn_pid")):
            gone = not _alive(e.get("creator_pid"), e.get("creator_start"))
        else:
            gone = (not _alive(e.get("nspawn_pid"), e.get("nspawn_start"))
                    or not os.path.isfile(_state_file(e.get("state_dir", "/nonexistent"))))
        if gone:
            rec = e.get("record") or {"k": int(k), "name": e.get("name")}
            _log("gc: removing %s (k=%s, state %s)" % (e.get("name"), k, e.get("state_dir")))
            _teardown_host(rec)
            cleaned.append(e.get("name"))
    cleaned.extend(_gc_strays())
    return cleaned


def _gc_strays():
    """Remove llt<k> namespaces, veths and NAT rules that no registry entry owns.

    Safe against a concurrent create: a subnet is registered before anything is made for it,
    and freed only after everything was removed, so an unregistered llt<k> is a leftover.
    """
    cleaned = []
    with _flock(REGISTRY_LOCK):
        owned = {int(k) for k in _reg_load()["hosts"]}
        netns = _run(["ip", "netns", "list"], check=False).stdout.decode().split()
        for ns in netns:
            m = re.match(r"^llt(\d+)$", ns)
            if m and int(m.group(1)) not in owned:
                _run(["ip", "netns", "del", ns], check=False)
                cleaned.append(ns)
        for link in os.listdir("/sys/class/net"):
            m = re.match(r"^llt(\d+)h$", link)
            if m and int(m.group(1)) not in owned:
                _run(["ip", "link", "del", link], check=False)
                cleaned.append(link)
        for k, mps in _our_mounts().items():
            if k not in owned:
                for mp in mps:
                    _umount(mp)
                    cleaned.append("mount:%s" % mp)
        rules = _run(["iptables", "-t", "nat", "-S", "POSTROUTING"], check=False).stdout.decode()
        for line in rules.splitlines():
            m = re.search(r"--comment \"?%s:(\d+)\"?" % NAT_COMMENT, line)
            if m and line.startswith("-A ") and int(m.group(1)) not in owned:
                args = line.split()[1:]
                args = [a.strip('"') for a in args]
                _run(["iptables", "-t", "nat", "-D"] + args, check=False)
                cleaned.append("nat:%s" % m.group(1))
    return cleaned


def _host_env():
    """A clean environment for commands inside a host: nothing of the controller's (venv, PYTHONPATH,
    ANSIBLE_*) leaks in."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "USER": "root", "LOGNAME": "root"}
    if os.environ.get("TERM"):
        env["TERM"] = os.environ["TERM"]
    return env


def _find_host(state_dir, name):
    state = load_state(os.path.abspath(state_dir))
    if not state:
        raise HarnessError("no test hosts in %s (state.json missing)" % state_dir)
    for h in state["hosts"]:
        if h["name"] == name:
            return h
    raise HarnessError("no host %r in %s; hosts: %s" % (
        name, state_dir, ", ".join(h["name"] for h in state["hosts"])))


def host_ip(state_dir, name):
    return _find_host(state_dir, name)["ip"]


def host_netns(state_dir, name):
    """The network namespace (its name under /run/netns) of host `name`."""
    return _find_host(state_dir, name)["netns"]


def enter_netns(netns):
    """Move the calling thread into the network namespace /run/netns/NETNS: setns is per thread, so the sockets this
    thread opens from now on reach that host's own loopback (its loopback-only listeners), with no process started."""
    fd = os.open("/run/netns/%s" % netns, os.O_RDONLY)
    try:
        os.setns(fd, os.CLONE_NEWNET)
    finally:
        os.close(fd)


def in_netns(netns, fn, *args, **kwargs):
    """fn(*args, **kwargs) run in a new thread that entered the network namespace NETNS (enter_netns); its value
    returned, its exception raised in the caller's thread."""
    out = {}

    def run():
        enter_netns(netns)
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def exec_in(state_dir, name, cmd, input=None, check=True, timeout=120):
    """Run `cmd` (list) inside host `name` with nsenter (all its namespaces, as root)."""
    h = _find_host(state_dir, name)
    leader = leader_pid(h)
    if not leader:
        raise HarnessError("host %s is not running" % name)
    proc = subprocess.run(["nsenter", "-t", str(leader), "-a"] + list(cmd), input=input,
                          env=_host_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise HarnessError("in %s: %s exited %d: %s" % (
            name, " ".join(cmd), proc.returncode, proc.stderr.decode(errors="replace").strip()))
    return proc


def diagnose(state_dir, name, timeout=30):
    """What a failed login or converge against host `name` needs to be understood, as text: one verbose ssh login as
    Ansible makes it (ssh's own log, which LogLevel=ERROR hides), the host's journal warnings and sshd/logind lines,
    and memory on both sides. Never raises: it is called when something already went wrong."""
    out = []

    def section(title, fn):
        try:
            text = fn()
        except Exception as exc:  # noqa: BLE001  (a diagnostic must not hide the failure it explains)
            text = "(%s: %s)" % (type(exc).__name__, exc)
        out.append("--- %s\n%s" % (title, text.strip()[-4000:]))

    def ssh_v():
        h, state = _find_host(state_dir, name), load_state(os.path.abspath(state_dir))
        p = subprocess.run(["ssh", "-vv", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ControlMaster=no",
                            "-o", "ControlPath=none", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                            "-i", state["key"], "ansible@%s" % h["ip"], "sudo -n true; echo sudo=$?"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)
        return "rc=%d\n%s%s" % (p.returncode, p.stdout, p.stderr)

    def host(cmd):
        p = exec_in(state_dir, name, ["sh", "-c", cmd], check=False, timeout=timeout)
        return (p.stdout + p.stderr).decode(errors="replace")

    section("ssh -vv ansible@%s (as the controller logs in)" % name, ssh_v)
    section("%s: journal, warnings and worse (last 40)" % name, lambda: host("journalctl -b -p warning -n 40 --no-pager"))
    section("%s: sshd and logind (last 40)" % name,
            lambda: host("journalctl -b -n 40 --no-pager -u ssh -u systemd-logind"))
    section("%s: memory" % name, lambda: host("free -m; cat /sys/fs/cgroup/memory.events 2>/dev/null"))
    section("controller: memory", lambda: subprocess.run(["free", "-m"], capture_output=True, text=True, check=False).stdout)
    return "\n".join(out)


def copy_in(state_dir, name, src, dest, mode="0644", owner="root:root"):
    """Copy controller file `src` to `dest` inside host `name` (parent dirs created)."""
    with open(src, "rb") as fh:
        data = fh.read()
    exec_in(state_dir, name, ["sh", "-c", 'set -e; mkdir -p "$(dirname "$1")"; umask 077; '
                              'cat > "$1.tmp"; chmod "$2" "$1.tmp"; chown "$3" "$1.tmp"; '
                              'mv -f "$1.tmp" "$1"', "sh", dest, mode, owner], input=data)


# --------------------------------------------------------------------------- CLI

def _sigterm(signum, frame):   # pylint: disable=unused-argument
    raise KeyboardInterrupt


def main(argv=None):
    ap = argparse.ArgumentParser(prog="testhosts.py", description=__doc__.split("\n", maxsplit=1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("create", help="create and boot N hosts, write DIR/inventory.yml")
    p.add_argument("--state", required=True)
    p.add_argument("--count", type=int, default=None,
                   help="hosts of the one --release (default 1)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--release", default=DEFAULT_RELEASE,
                   help="Debian codename (%s; default %s), or a comma-separated list: one host "
                   "each" % (", ".join(RELEASES), DEFAULT_RELEASE))
    p = sub.add_parser("build", help="build the missing rootfs caches (in parallel)")
    p.add_argument("--release", default="all",
                   help="codename(s), comma-separated, or all (default)")
    p = sub.add_parser("destroy", help="remove every host of DIR (idempotent)")
    p.add_argument("--state", required=True)
    sub.add_parser("gc", help="remove hosts whose owner is gone")
    p = sub.add_parser("exec", help="run CMD inside HOST (nsenter), exit with its status")
    p.add_argument("--state", required=True)
    p.add_argument("host")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("ip", help="print HOST's address")
    p.add_argument("--state", required=True)
    p.add_argument("host")
    p = sub.add_parser("list", help="print the hosts of DIR")
    p.add_argument("--state", required=True)
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)   # create/destroy clean up on SIGTERM as on Ctrl-C
    try:
        if a.cmd == "create":
            t0 = time.monotonic()
            st = create(a.state, a.count, a.prefix, a.release)
            _log("%d host(s) up in %.1fs: %s; inventory %s" % (
                len(st["hosts"]), time.monotonic() - t0,
                ", ".join("%s=%s (%s)" % (h["name"], h["ip"], h["release"]) for h in st["hosts"]),
                os.path.join(os.path.abspath(a.state), "inventory.yml")))
        elif a.cmd == "build":
            _check_env()
            wanted = list(RELEASES) if a.release == "all" else a.release
            for release, path in sorted(ensure_rootfses(wanted).items()):
                print("%s\t%s" % (release, path))
        elif a.cmd == "destroy":
            destroy(a.state)
        elif a.cmd == "gc":
            for n in gc():
                print(n)
        elif a.cmd == "ip":
            print(host_ip(a.state, a.host))
        elif a.cmd == "list":
            st = load_state(os.path.abspath(a.state)) or {"hosts": []}
            for h in st["hosts"]:
                print("%s\t%s\t%s\t%s" % (h["name"], h["ip"], h.get("release", DEFAULT_RELEASE),
                                          "running" if leader_pid(h) else "stopped"))
        elif a.cmd == "exec":
            cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
            if not cmd:
                raise HarnessError("exec: give a command after --")
            h = _find_host(a.state, a.host)
            leader = leader_pid(h)
            if not leader:
                raise HarnessError("host %s is not running" % a.host)
            return subprocess.call(["nsenter", "-t", str(leader), "-a"] + cmd, env=_host_env())
    except HarnessError as exc:
        _log("ERROR: %s" % exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
