"""Shared pieces of the reliability suite: running playbooks, one real test host, the local Compute API,
snapshots for "changed nothing", and the results that docs/reliability.md is written from.

Everything here drives the real programs: ansible-playbook / ansible / ansible-inventory as users run
them, a systemd test host from tests/harness, the local Compute API from tests/compute_api.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
HARNESS = ROOT / "tests" / "harness" / "testhosts.py"
PREPARE = ROOT / "molecule" / "default" / "prepare.yml"
CONFIGURE = ROOT / "playbooks" / "configure.yml"
PROVISION = ROOT / "playbooks" / "provision.yml"
VERIFY = ROOT / "playbooks" / "verify.yml"
STANDIN_WHEEL_ON_HOST = "/opt/standin/vllm_standin-0.33.0-py3-none-any.whl"
RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

# --------------------------------------------------------------------------------------------------
# Results: every test records what it tried and measured here; conftest writes them out at the end.

SECRETS: dict = {}   # this run's secrets (set by the secrets_ fixture), to check what the suite itself writes
RESULTS: dict = {"bad_inputs": [], "faults": [], "secrets": [], "hardening": [], "notes": []}
_RESULTS_LOCK = threading.Lock()


def record(section: str, **entry):
    with _RESULTS_LOCK:
        RESULTS[section].append(entry)
    return entry


# --------------------------------------------------------------------------------------------------
# Processes


@dataclass
class Run:
    cmd: list
    rc: int
    out: str
    seconds: float
    killed: bool = False

    @property
    def flat(self) -> str:
        return " ".join(self.out.split())

    def recap(self) -> dict:
        """{host: (ok, changed, unreachable, failed)} of the last PLAY RECAP."""
        tail = self.out.rsplit("PLAY RECAP", 1)
        if len(tail) != 2:
            return {}
        return {h: tuple(int(x) for x in rest) for h, *rest in RECAP_RE.findall(tail[1])}

    def changed(self) -> int:
        return sum(v[1] for v in self.recap().values())

    def tail(self, n=4000) -> str:
        return self.out[-n:]


def ansible_env(**extra) -> dict:
    env = dict(os.environ)
    env["PATH"] = "%s:%s" % (VENV_BIN, env.get("PATH", ""))
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_DEPRECATION_WARNINGS"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(cmd, timeout=600, env=None, cwd=ROOT, log: Path | None = None) -> Run:
    t0 = time.monotonic()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or ansible_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)
    out = proc.stdout + proc.stderr
    if log:
        log.write_text(out)
        log.chmod(0o600)
    return Run([str(c) for c in cmd], proc.returncode, out, time.monotonic() - t0)


def run_streamed(cmd, on_line, timeout=600, env=None, cwd=ROOT, log: Path | None = None) -> Run:
    """Run cmd in its own process group, calling on_line(line, proc) for each line of its output as it is
    printed (stdout and stderr together): a test that acts on what the run says while it runs."""
    t0 = time.monotonic()
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env or ansible_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        on_line(line, proc)
        if time.monotonic() - t0 > timeout:
            _kill_group(proc)
            break
    rc = proc.wait()
    out = "".join(lines)
    if log:
        log.write_text(out)
        log.chmod(0o600)
    return Run([str(c) for c in cmd], rc, out, time.monotonic() - t0)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_until(cmd, marker: str, delay: float, timeout=600, env=None, log: Path | None = None) -> Run:
    """Start cmd in its own process group; once a line containing `marker` is printed, wait `delay`
    seconds and SIGKILL the whole group (ansible-playbook and its ssh children): a controller that dies."""
    timers = []

    def on_line(line, proc):
        if not timers and marker in line:
            timers.append(threading.Timer(delay, _kill_group, (proc,)))
            timers[0].start()

    res = run_streamed(cmd, on_line, timeout=timeout, env=env, log=log)
    for timer in timers:
        timer.join()
    res.killed = bool(timers) and res.rc == -signal.SIGKILL
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, timeout=1.0, headers=None) -> int | None:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (test-host addresses only)
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def wait_http(url: str, want=200, timeout=60.0, interval=0.1) -> float | None:
    """Seconds until url answers `want`, or None after timeout. Polls on the monotonic clock."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if http_status(url, timeout=min(1.0, interval * 5)) == want:
            return time.monotonic() - t0
        time.sleep(interval)
    return None


def new_secret(prefix: str) -> str:
    """A unique random secret: grepping for it anywhere is meaningful."""
    return prefix + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")


# --------------------------------------------------------------------------------------------------
# The test host


@dataclass
class TestHost:
    state: Path
    inventory: Path
    name: str
    address: str
    key: Path
    user: str = "ansible"
    facts: dict = field(default_factory=dict)

    def sh(self, script: str, timeout=120, check=True, input: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell script as root inside the host (the harness's exec_in: nsenter)."""
        from tests.harness import testhosts

        data = input.encode() if input is not None else None
        proc = testhosts.exec_in(str(self.state), self.name, ["sh", "-c", script], check=False, timeout=timeout, input=data)
        res = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                          proc.stderr.decode(errors="replace"))
        if check and res.returncode != 0:
            raise AssertionError("on the test host: %s\nexit %d\n%s%s" % (script, res.returncode, res.stdout, res.stderr))
        return res

    def props(self, unit: str, *names: str) -> dict:
        out = self.sh("systemctl show %s --property=%s" % (shlex.quote(unit), ",".join(names))).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def main_pid(self, unit: str) -> int:
        return int(self.props(unit, "MainPID")["MainPID"])

    def read(self, path: str) -> str:
        return self.sh("cat %s" % shlex.quote(path)).stdout

    def url(self, port: int, path: str) -> str:
        return "http://%s:%d%s" % (self.address, port, path)


# What "changed nothing" compares: every file under the deployment's paths (type, mode, owner, size,
# content hash, mtime), accounts, and both units' state including the main PID (a restart changes it).
HOST_SNAPSHOT = r"""
set -u
PRUNE='( -path /app/vllm-server/venv -o -path /app/ai-server/.venv -o -name __pycache__ ) -prune -o'
{
  find /app /etc/systemd/system -xdev $PRUNE -printf '%p %y %m %u %g %s %T@\n' 2>/dev/null
  find /app /etc/systemd/system -xdev $PRUNE -type f -print0 2>/dev/null | xargs -0 -r md5sum
  # the virtual environments: their top level (a reinstall or a new marker shows there)
  find /app/vllm-server/venv /app/ai-server/.venv /opt/llmops-uv -maxdepth 1 -printf '%p %y %m %u %g %s %T@\n' 2>/dev/null
  find /app/vllm-server/venv /app/ai-server/.venv -maxdepth 1 -type f -print0 2>/dev/null | xargs -0 -r md5sum
} | sort
md5sum /etc/passwd /etc/group /etc/shadow
for u in vllm ai-server vllm-proxy ai-server-proxy; do
  echo "$u: $(systemctl show $u --property=LoadState,ActiveState,UnitFileState,MainPID,NRestarts,FragmentPath | tr '\n' ' ')"
done
# the proxies' configurations (root-only, they hold the keys: hashes only) and their workers (a reload forks new ones)
md5sum /etc/haproxy/*-proxy.cfg 2>/dev/null
for u in vllm-proxy ai-server-proxy; do echo "$u workers: $(pgrep -P "$(systemctl show -p MainPID --value $u)" | sort | tr '\n' ' ')"; done
"""


def host_snapshot(host: TestHost) -> str:
    return host.sh(HOST_SNAPSHOT).stdout


def diff_lines(before: str, after: str) -> list:
    b, a = set(before.splitlines()), set(after.splitlines())
    return sorted(["- " + x for x in b - a] + ["+ " + x for x in a - b])


def load_inventory(path: Path) -> tuple:
    inv = yaml.safe_load(path.read_text())
    groups = inv.get("all", {}).get("children", inv)
    hosts = groups["testhosts"]["hosts"]
    name, hv = next(iter(hosts.items()))
    return name, hv


# --------------------------------------------------------------------------------------------------
# The local Compute API (tests/compute_api, in a thread of this process)


class ComputeApi:
    def __init__(self, project: str, host_pool=()):
        from tests.compute_api.server import ComputeApiServer

        self.project = project
        self.srv = ComputeApiServer(host_pool=list(host_pool), op_polls=1, op_seconds=2.0).start()
        self.endpoint = self.srv.endpoint
        # The stand-in materialises a project on its first request (the real API has it already): do that
        # now, so that state comparisons see only what a test did.
        http_status(self.endpoint + "projects/%s/global/firewalls" % project, headers={"Authorization": "Bearer x"})

    @property
    def api(self):
        return self.srv.api

    def state(self) -> str:
        """The whole state (projects: instances, firewalls, disks; operations), as a stable string."""
        return json.dumps(self.api.dump(), sort_keys=True)

    def requests(self, path_re=None) -> list:
        return self.srv.requests(path_re)

    def clear(self):
        self.api.reset()

    def stop(self):
        self.srv.stop()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CmdlineWatch:
    """Samples /proc/*/cmdline of EVERY process on this machine (the test hosts' processes included: their
    PID namespaces are children of this one) in a thread, looking for the secrets. Used while playbooks run.
    Our own process is skipped (it holds the secrets in memory, not in its command line anyway)."""

    def __init__(self, secrets: dict, interval=0.05):
        self.needles = {k: v.encode() for k, v in secrets.items()}
        self.interval = interval
        self.passes = 0
        self.processes_seen: set = set()
        self.hits: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        me = str(os.getpid())
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == me:
                    continue
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                self.processes_seen.add((pid, hash(cmd)))
                for name, needle in self.needles.items():
                    if needle in cmd:
                        self.hits.append((pid, name, cmd.split(b"\0", 1)[0].decode(errors="replace")))
            self.passes += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def whole_suite(config, suite_dir: Path) -> bool:
    """Whether this pytest run is the whole suite of SUITE_DIR (no -k, -m, --deselect, node ids or single files):
    only such a run may write the suite's report into docs/."""
    opt = config.option
    if getattr(opt, "keyword", "") or getattr(opt, "markexpr", "") or getattr(opt, "deselect", None):
        return False
    here = suite_dir.resolve()
    for arg in config.args:
        p = Path(arg.split("::")[0]).resolve()
        if "::" in arg or not p.is_dir() or not (p == here or here.is_relative_to(p)):
            return False
    return True
