"""Shared pieces of `make bench` (tests/bench): test hosts, ssh, downtime probes, unit restart counters.

Runs on the controller in .venv (Python >= 3.12). Stdlib + PyYAML (ansible-core's dependency).
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests" / "harness" / "testhosts.py"
SSH_OPTS = [
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
]


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S") + " [bench] " + msg, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def run(cmd, *, env=None, timeout=1800, check=True, stdin=None, log_to=None, cwd=None):
    """Run a command; return (rc, seconds, output). Output also written to log_to when given."""
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=cwd or REPO, stdin=subprocess.DEVNULL if stdin is None else None,
                          input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    secs = time.monotonic() - t0
    out = (proc.stdout or "") + (proc.stderr or "")
    if log_to:
        Path(log_to).parent.mkdir(parents=True, exist_ok=True)
        Path(log_to).write_text("$ " + " ".join(shlex.quote(str(c)) for c in cmd) + "\n" + out, encoding="utf-8")
    if check and proc.returncode != 0:
        raise RuntimeError("command failed (rc=%s, %.1fs): %s\n%s"
                           % (proc.returncode, secs, " ".join(map(str, cmd)), out[-4000:]))
    return proc.returncode, secs, out


MEASURED_PATHS = ["roles", "playbooks", "plugins", "ansible.cfg", "examples"]


def code_state() -> str:
    """Digest of what the bench measures (roles, playbooks, plugins, ansible.cfg, examples): their git trees at
    HEAD plus any uncommitted change to them. Commits to other paths (docs, tests) do not change it."""
    import hashlib  # pylint: disable=import-outside-toplevel
    trees = subprocess.run(["git", "rev-parse"] + ["HEAD:" + p for p in MEASURED_PATHS], cwd=REPO,
                           capture_output=True, check=False).stdout
    diff = subprocess.run(["git", "diff", "HEAD", "--"] + MEASURED_PATHS, cwd=REPO, capture_output=True,
                          check=False).stdout
    return hashlib.sha1(trees).hexdigest()[:10] + ("+" + hashlib.sha1(diff).hexdigest()[:8] if diff else "")


class Hosts:
    """N fresh test hosts from the harness (tests/harness/testhosts.py), destroyed on exit."""

    def __init__(self, state_dir: Path, count: int, prefix: str):
        self.state_dir = Path(state_dir)
        self.count = count
        self.prefix = prefix
        self.hosts: list[dict] = []
        self.key = None

    def __enter__(self):
        for attempt in (1, 2):
            self._create()
            dead = [h for h in self.hosts if not self._answers(h)]
            if not dead:
                return self
            # a fresh host that never answers SSH (seen twice in ~30 creations): keep its console log for the
            # harness's owners, then start again with new hosts once
            self.failed_hosts = getattr(self, "failed_hosts", []) + [h["name"] for h in dead]
            for h in dead:
                console = self.state_dir / "hosts" / h["name"] / "console.log"
                if console.exists():
                    keep = Path("/tmp/llmops-bench-harness-failures")
                    keep.mkdir(exist_ok=True)
                    shutil.copy(console, keep / ("%s-%s-console.log" % (time.strftime("%H%M%S"), h["name"])))
            log("test host(s) %s never answered SSH (attempt %d); recreating" % (
                ", ".join(h["name"] for h in dead), attempt))
            self.__exit__(None, None, None)
        raise RuntimeError("test hosts did not answer SSH twice; see /tmp/llmops-bench-harness-failures/")

    @staticmethod
    def _answers(host: dict, timeout: float = 90.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if run(ssh_cmd(host, "true"), check=False, timeout=30)[0] == 0:
                return True
            time.sleep(1)
        return False

    def _create(self):
        self.hosts = []
        if self.state_dir.exists():
            run([sys.executable, str(HARNESS), "destroy", "--state", str(self.state_dir)], check=False)
        t0 = time.monotonic()
        run([sys.executable, str(HARNESS), "create", "--state", str(self.state_dir), "--count", str(self.count),
             "--prefix", self.prefix], timeout=900)
        self.create_seconds = time.monotonic() - t0
        inv = yaml.safe_load((self.state_dir / "inventory.yml").read_text(encoding="utf-8"))
        found = {}

        def walk(group):
            for name, hv in (group.get("hosts") or {}).items():
                found[name] = dict(found.get(name, {}), **(hv or {}))
            for child in (group.get("children") or {}).values():
                walk(child or {})
        for top in inv.values():
            walk(top or {})
        for name, hv in sorted(found.items()):
            self.hosts.append({"name": name, "ip": hv.get("ansible_host", name), "user": hv.get("ansible_user", "ansible"),
                               "key": hv.get("ansible_ssh_private_key_file"), "hostvars": hv})
        if len(self.hosts) != self.count:
            raise RuntimeError("harness made %d hosts, wanted %d" % (len(self.hosts), self.count))
        log("created %d test host(s) in %.1fs: %s" % (self.count, self.create_seconds,
                                                      ", ".join(h["ip"] for h in self.hosts)))

    def __exit__(self, *exc):
        run([sys.executable, str(HARNESS), "destroy", "--state", str(self.state_dir)], check=False, timeout=300)
        return False

    @property
    def inventory(self) -> Path:
        return self.state_dir / "inventory.yml"


def ssh_cmd(host: dict, command: str) -> list[str]:
    base = ["ssh", *SSH_OPTS]
    if host.get("key"):
        base += ["-i", host["key"]]
    return base + ["%s@%s" % (host["user"], host["ip"]), command]


def ssh(host: dict, command: str, **kw):
    return run(ssh_cmd(host, command), **kw)


def scp(host: dict, sources: list[str], dest: str):
    base = ["scp", "-q", "-r", *SSH_OPTS]
    if host.get("key"):
        base += ["-i", host["key"]]
    return run(base + [str(s) for s in sources] + ["%s@%s:%s" % (host["user"], host["ip"], dest)])


UNIT_PROPS = ["NRestarts", "MainPID", "ExecMainStartTimestampMonotonic", "ActiveState"]


def unit_state(host: dict, units=("vllm", "ai-server")) -> dict:
    props = " ".join("-p " + p for p in UNIT_PROPS)
    out = {}
    for unit in units:
        text = ssh(host, "sudo systemctl show %s %s" % (props, unit), check=False)[2]
        vals = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        out[unit] = vals
    return out


def restarts_between(before: dict, after: dict) -> dict:
    """Restarts of each unit between two unit_state() snapshots (systemd's own counters)."""
    res = {}
    for unit, b in before.items():
        a = after.get(unit, {})
        n = 0
        try:
            n += int(a.get("NRestarts", 0)) - int(b.get("NRestarts", 0))
        except ValueError:
            pass
        started_again = (a.get("ExecMainStartTimestampMonotonic") != b.get("ExecMainStartTimestampMonotonic")
                         or a.get("MainPID") != b.get("MainPID"))
        if started_again and n == 0:
            n = 1
        res[unit] = n
    return res


class Prober:
    """Probes URLs every `interval` s from the controller (one thread per URL); records (t, ok) per URL.

    Downtime of a URL = total time from a failed probe to the next successful one (so a single
    failed probe counts as at least one interval). Connection refused, timeouts (1 s) and any status
    other than 200 are failures.
    """

    def __init__(self, urls: dict[str, str], interval: float = 0.05, timeout: float = 1.0):
        self.urls = urls
        self.interval = interval
        self.timeout = timeout
        self.samples: dict[str, list[tuple[float, bool]]] = {k: [] for k in urls}
        self._stop_evt = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(k, u), daemon=True) for k, u in urls.items()]

    def _probe(self, url: str) -> bool:
        rest = url.split("://", 1)[1]
        hostport, path = (rest.split("/", 1) + [""])[:2]
        host, port = (hostport.split(":", 1) + [""])[:2]
        conn = http.client.HTTPConnection(host, int(port or 80), timeout=self.timeout)
        try:
            conn.request("GET", "/" + path)
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _loop(self, name: str, url: str):
        while not self._stop_evt.is_set():
            t_next = time.monotonic() + self.interval
            ok = self._probe(url)
            self.samples[name].append((time.monotonic(), ok))
            delay = t_next - time.monotonic()
            if delay > 0:
                self._stop_evt.wait(delay)

    def start(self):
        for t in self._threads:
            t.start()

    def stop(self):
        self._stop_evt.set()
        for t in self._threads:
            t.join(timeout=5)

    def result(self) -> dict:
        out = {}
        for name, samples in self.samples.items():
            down = 0.0
            fail_start = None
            failed = 0
            for t, ok in samples:
                if not ok:
                    failed += 1
                    if fail_start is None:
                        fail_start = t
                elif fail_start is not None:
                    down += t - fail_start
                    fail_start = None
            if fail_start is not None and samples:
                down += samples[-1][0] - fail_start + self.interval
            out[name] = {"downtime_s": round(down, 3), "probes": len(samples), "failed_probes": failed,
                         "ok_at_start": bool(samples and samples[0][1])}
        return out


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as fh:
        vals = [float(x) for x in fh.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)
    return sum(vals) - idle, sum(vals)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
