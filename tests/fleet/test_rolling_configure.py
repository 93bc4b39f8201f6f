"""The rolling configure (issue 11) on real systemd test hosts: playbooks/configure.yml, serial 1, behind HAProxy.

One balancer host (role load_balancer) and two backends running the real roles (gpu_host, vllm_server with the
vLLM stand-in wheel, ai_server with the example app), as the reliability suite deploys one. Two clients of the AI
server's chat route, through the balancer, bounded in count and time, run while configure.yml changes
vllm_server_max_model_len on both: 0 failed requests, each host's vLLM restarted exactly once, one host at a time
(the other UP in the balancer meanwhile), every host back UP at the end. A rerun with nothing to change drains
nothing and restarts nothing. The balancer's own view of each host, polled every 0.2 s, is the timeline saved to
results/fleet/rolling_configure.json.
"""
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.harness import testhosts  # noqa: E402

WHEEL_ON_HOST = "/opt/standin/vllm_standin-0.33.0-py3-none-any.whl"
RESULTS = {"suite": "fleet/rolling_configure", "plays": [], "timeline": []}
T0 = time.monotonic()


def _now():
    return round(time.monotonic() - T0, 2)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the test-host harness needs root")
    work = tmp_path_factory.mktemp("roll")
    work.chmod(0o700)
    state = work / "hosts"
    try:
        testhosts.create(str(state), count=3, prefix="roll")
        inv = yaml.safe_load((state / "inventory.yml").read_text())
        hosts = inv["testhosts"]["hosts"]
        names = sorted(hosts)
        balancer, backends = names[0], names[1:]
        wheel = subprocess.run([sys.executable, str(ROOT / "tests/standin/build_wheel.py"), str(work / "wheel")],
                               capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        empty = work / "empty"
        empty.write_bytes(b"")
        for name in backends:   # what the accelerator image carries and cannot exist here
            testhosts.copy_in(str(state), name, str(ROOT / "tests/standin/nvidia-smi"), "/usr/bin/nvidia-smi", mode="0755")
            testhosts.copy_in(str(state), name, str(empty), "/usr/lib/x86_64-linux-gnu/libcuda.so.1")
            testhosts.copy_in(str(state), name, wheel, WHEEL_ON_HOST)
        groups = work / "groups.yml"
        groups.write_text(yaml.safe_dump({"all": {"children": {
            "ai_server": {"hosts": {n: None for n in backends}},
            "load_balancer": {"hosts": {balancer: None}}}}}))
        key = secrets.token_urlsafe(16)
        good = work / "vars.yml"   # like a vault file: 0600, never on a command line
        good.write_text(yaml.safe_dump({
            "gce_vllm_hosts": "ai_server", "gce_vllm_connect_timeout": 60,
            "vllm_server_api_key": "vk-" + secrets.token_urlsafe(16),
            "ai_server_backend_internal_token": "bt-" + secrets.token_urlsafe(16),
            "ai_server_api_key": key, "ai_server_backend_callback_base_url": "http://127.0.0.1:9/api",
            "vllm_server_pip_spec": WHEEL_ON_HOST, "vllm_server_extra_env": {"VLLM_STANDIN_STARTUP_DELAY": "2"},
            "vllm_server_health_timeout": 60,
            "load_balancer_check_interval": 1, "load_balancer_check_timeout": 1,
            "load_balancer_unhealthy_threshold": 2, "load_balancer_healthy_threshold": 2}))
        good.chmod(0o600)
        yield {"state": state, "work": work, "inventories": [state / "inventory.yml", groups], "vars": good,
               "key": key, "balancer": balancer, "backends": backends,
               "addr": {n: hosts[n]["ansible_host"] for n in names}}
    finally:
        out = ROOT / "results" / "fleet"
        out.mkdir(parents=True, exist_ok=True)
        (out / "rolling_configure.json").write_text(json.dumps(RESULTS, indent=1))
        testhosts.destroy(str(state))


def _play(fleet, playbook, name, **extra):
    argv = [str(Path(sys.executable).parent / "ansible-playbook")]
    for inv in fleet["inventories"]:
        argv += ["-i", str(inv)]
    argv += ["-e", "@%s" % fleet["vars"]]
    if extra:
        f = fleet["work"] / ("%s.json" % name)
        f.write_text(json.dumps(extra))
        argv += ["-e", "@%s" % f]
    argv.append(str(playbook))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    t = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=900)
    RESULTS["plays"].append({"name": name, "rc": proc.returncode, "start": round(t - T0, 2), "end": _now(), "vars": extra})
    (fleet["work"] / ("%s.log" % name)).write_text(proc.stdout + proc.stderr)
    return proc


def _stats(fleet):
    """The balancer's own view, read on its host (loopback only): {server: status}."""
    out = testhosts.exec_in(str(fleet["state"]), fleet["balancer"], [
        "python3", "-c", "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8404/stats;csv').read().decode())"])
    rows = [r.split(",") for r in out.stdout.decode().splitlines() if r and not r.startswith("#")]
    return {r[1]: r[17] for r in rows if len(r) > 17 and r[1] not in ("FRONTEND", "BACKEND")}


def _wait_up(fleet, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = _stats(fleet)
        if all(stats.get(n) == "UP" for n in fleet["backends"]):
            return
        time.sleep(0.3)
    raise AssertionError("not all UP: %s" % _stats(fleet))


def _unit(fleet, host, unit):
    out = testhosts.exec_in(str(fleet["state"]), host, [
        "systemctl", "show", "-p", "InvocationID", "-p", "NRestarts", "-p", "ActiveState", unit]).stdout.decode()
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _stopping_at(fleet, host, unit, since_epoch):
    """When systemd began to stop the unit (wall clock), the first time since since_epoch."""
    out = testhosts.exec_in(str(fleet["state"]), host, [
        "journalctl", "-u", unit, "--since=@%d" % since_epoch, "-o", "short-unix", "--no-pager"]).stdout.decode()
    return min(float(ln.split()[0]) for ln in out.splitlines() if "Stopping " in ln)


def _starts_since(fleet, host, unit, since_epoch):
    out = testhosts.exec_in(str(fleet["state"]), host, [
        "journalctl", "-u", unit, "--since=@%d" % since_epoch, "-o", "cat", "--no-pager"]).stdout.decode()
    return len([ln for ln in out.splitlines() if ln.startswith("Started ")])


class Watch:
    """Load through the balancer (2 clients of the chat route, bounded in time) and the balancer's view."""

    def __init__(self, fleet, seconds=400, clients=2):
        self.fleet, self.results, self.states = fleet, [], []
        self.stop_at, self._stop = time.monotonic() + seconds, threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _c in range(clients)]
        self.threads.append(threading.Thread(target=self._watch, daemon=True))
        for t in self.threads:
            t.start()

    def _client(self):
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
        url = "http://%s:8000/v1/chat" % self.fleet["addr"][self.fleet["balancer"]]
        while not self._stop.is_set() and time.monotonic() < self.stop_at:
            t = time.monotonic()
            req = urllib.request.Request(url, data=body, method="POST", headers={
                "Content-Type": "application/json", "Authorization": "Bearer " + self.fleet["key"]})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    status = resp.status
                    resp.read()
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError as exc:
                status = repr(exc)
            self.results.append((round(t - T0, 3), round(time.monotonic() - t, 4), status))

    def _watch(self):
        last = {}
        while not self._stop.is_set() and time.monotonic() < self.stop_at:
            try:
                now = _stats(self.fleet)
            except Exception:  # noqa: BLE001  (a missed poll; the next one reads again)
                now = last
            for host in self.fleet["backends"]:
                if now.get(host) != last.get(host):
                    self.states.append({"t": _now(), "wall": time.time(), "host": host, "balancer": now.get(host)})
            last = now
            time.sleep(0.2)

    def stop(self):
        self._stop.set()
        for t in self.threads:
            t.join(35)
        return self.results


@pytest.fixture(scope="module")
def deployed(fleet):
    proc = _play(fleet, ROOT / "playbooks" / "configure.yml", "first-configure")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    lb = fleet["work"] / "lb.yml"
    lb.write_text(yaml.safe_dump([{"name": "The load balancer", "hosts": "load_balancer", "become": True,
                                   "gather_facts": False, "roles": [{"role": "llmops.gce_vllm.load_balancer"}]}]))
    proc = _play(fleet, lb, "load-balancer")
    assert proc.returncode == 0, proc.stdout[-4000:]
    _wait_up(fleet)
    return fleet


def test_a_roll_that_changes_max_model_len_fails_no_request_and_restarts_each_host_once(deployed):
    fleet = deployed
    before = {h: _unit(fleet, h, "vllm") for h in fleet["backends"]}
    since = int(time.time()) - 1
    watch = Watch(fleet)
    time.sleep(2)
    proc = _play(fleet, ROOT / "playbooks" / "configure.yml", "roll", vllm_server_max_model_len=4096)
    time.sleep(1)
    results = watch.stop()
    RESULTS["timeline"] += watch.states
    failed = [r for r in results if r[2] != 200]
    RESULTS["roll"] = {"requests": len(results), "failed": len(failed),
                       "latencies_s": sorted(r[1] for r in results if r[2] == 200)}
    assert proc.returncode == 0, proc.stdout[-5000:]
    after = {h: _unit(fleet, h, "vllm") for h in fleet["backends"]}
    for host in fleet["backends"]:
        assert after[host]["InvocationID"] != before[host]["InvocationID"], host
        assert after[host]["ActiveState"] == "active" and after[host]["NRestarts"] == "0", after[host]
        assert _starts_since(fleet, host, "vllm.service", since) == 1, host
        cfg = testhosts.exec_in(str(fleet["state"]), host, ["cat", "/etc/systemd/system/vllm.service"]).stdout.decode()
        assert "4096" in cfg, cfg
    assert results and not failed, failed[:5]
    # one host at a time: never both out of the balancer's rotation
    out = set()
    for s in watch.states:
        (out.discard if s["balancer"] == "UP" else out.add)(s["host"])
        assert len(out) < 2, watch.states
    # each host left the rotation (DOWN) before its vLLM began to stop, and came back (UP)
    for host in fleet["backends"]:
        seen = [s["balancer"] for s in watch.states if s["host"] == host]
        assert "DOWN" in seen and seen[-1] == "UP", (host, watch.states)
        down = min(s["wall"] for s in watch.states if s["host"] == host and s["balancer"] == "DOWN")
        stopping = _stopping_at(fleet, host, "vllm.service", since)
        RESULTS.setdefault("down_before_stop_s", {})[host] = round(stopping - down, 2)
        assert down < stopping, (host, down, stopping)


def test_a_rerun_with_nothing_to_change_drains_nothing_and_restarts_nothing(deployed):
    fleet = deployed
    before = {h: (_unit(fleet, h, "vllm"), _unit(fleet, h, "ai-server")) for h in fleet["backends"]}
    watch = Watch(fleet, seconds=300)
    proc = _play(fleet, ROOT / "playbooks" / "configure.yml", "noop", vllm_server_max_model_len=4096)
    results = watch.stop()
    RESULTS["noop"] = {"requests": len(results), "failed": len([r for r in results if r[2] != 200]),
                       "balancer_changes": watch.states[len(fleet["backends"]):]}
    assert proc.returncode == 0, proc.stdout[-5000:]
    after = {h: (_unit(fleet, h, "vllm"), _unit(fleet, h, "ai-server")) for h in fleet["backends"]}
    assert after == before
    assert "Drain this host (create the drain file)" not in proc.stdout
    # never out of the rotation (a single slow check under load reads "UP 1/2": still in it)
    assert all(s["balancer"].startswith("UP") for s in watch.states), watch.states
    assert results and all(r[2] == 200 for r in results)
