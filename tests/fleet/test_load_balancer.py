"""The load_balancer role on real systemd test hosts (issue 11): HAProxy from Debian's packages on its own host.

One balancer host and two backend hosts. The backends run tests/fleet/backend_standin.py on port 8000 (what the
balancer meets on an AI server's public port: /ready 200 or 503, /health, a chat route naming the host), so these
tests measure the balancer alone: it spreads the load, takes a host that answers 503 on /ready out within
interval x unhealthy threshold while /health stays 200, puts it back, never fails a request meanwhile, and a
changed configuration is reloaded (the same master process), never restarted. Measurements go to
results/fleet/load_balancer.json.
"""
import json
import os
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

INTERVAL, FALL, RISE = 1, 2, 2
RESULTS = {"suite": "fleet/load_balancer", "events": []}
T0 = time.monotonic()


def _event(what, **kw):
    RESULTS["events"].append(dict(t=round(time.monotonic() - T0, 3), what=what, **kw))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the test-host harness needs root")
    work = tmp_path_factory.mktemp("lb")
    state = work / "hosts"
    try:
        testhosts.create(str(state), count=3, prefix="lb")
        inv = yaml.safe_load((state / "inventory.yml").read_text())
        hosts = inv["testhosts"]["hosts"]
        names = sorted(hosts)
        balancer, backends = names[0], names[1:]
        for name in backends:
            testhosts.copy_in(str(state), name, str(ROOT / "tests/fleet/backend_standin.py"), "/opt/backend_standin.py")
            testhosts.exec_in(str(state), name, ["mkdir", "-p", "/run/backend-standin"])
            testhosts.exec_in(str(state), name, ["systemd-run", "--unit=backend-standin", "/usr/bin/python3",
                                                 "/opt/backend_standin.py"])
        groups = work / "groups.yml"
        groups.write_text(yaml.safe_dump({"all": {"children": {
            "ai_server": {"hosts": {n: None for n in backends}},
            "load_balancer": {"hosts": {balancer: None}}}}}))
        yield {"state": state, "work": work, "inventories": [state / "inventory.yml", groups], "balancer": balancer,
               "backends": backends, "addr": {n: hosts[n]["ansible_host"] for n in names}}
    finally:
        out = ROOT / "results" / "fleet"
        out.mkdir(parents=True, exist_ok=True)
        (out / "load_balancer.json").write_text(json.dumps(RESULTS, indent=1))
        testhosts.destroy(str(state))


def _play(fleet, **extra):
    playbook = fleet["work"] / "lb.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "The load balancer", "hosts": "load_balancer", "become": True, "gather_facts": False,
        "roles": [{"role": "llmops.gce_vllm.load_balancer"}]}]))
    variables = {"load_balancer_check_interval": INTERVAL, "load_balancer_check_timeout": 1,
                 "load_balancer_unhealthy_threshold": FALL, "load_balancer_healthy_threshold": RISE}
    variables.update(extra)
    argv = [str(Path(sys.executable).parent / "ansible-playbook")]
    for inv in fleet["inventories"]:
        argv += ["-i", str(inv)]
    argv += ["-e", json.dumps(variables), str(playbook)]
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    t = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600)
    _event("play", rc=proc.returncode, seconds=round(time.monotonic() - t, 1), vars=extra)
    return proc


def _recap(out, host):
    line = [ln for ln in out.splitlines() if ln.startswith(host) and "ok=" in ln][-1]
    return {k: int(v) for k, v in (f.split("=") for f in line.split(":", 1)[1].split())}


def _lb(fleet, path="/v1/chat", method="POST"):
    req = urllib.request.Request("http://%s:8000%s" % (fleet["addr"][fleet["balancer"]], path), method=method,
                                 data=b"{}" if method == "POST" else None, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError as exc:
        return None, repr(exc)


def _stats(fleet):
    """The balancer's own view, read on its host (loopback only): {server: status}."""
    out = testhosts.exec_in(str(fleet["state"]), fleet["balancer"], [
        "python3", "-c", "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8404/stats;csv').read().decode())"])
    text = out.stdout.decode()
    rows = [r.split(",") for r in text.splitlines() if r and not r.startswith("#")]
    return {r[1]: r[17] for r in rows if r[0].endswith("_servers") and r[1] not in ("FRONTEND", "BACKEND")}


def _wait_status(fleet, server, want, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _stats(fleet).get(server, "")
        if status.split(" ")[0] == want:
            return time.monotonic()
        time.sleep(0.2)
    raise AssertionError("%s not %s within %s s: %s" % (server, want, timeout, _stats(fleet)))


class Load:
    """A few clients of the chat route through the balancer, bounded in count and time."""

    def __init__(self, fleet, clients=2, seconds=60):
        self.fleet, self.results, self.stop_at = fleet, [], time.monotonic() + seconds
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _client in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self):
        while not self._stop.is_set() and time.monotonic() < self.stop_at:
            t = time.monotonic()
            status, body = _lb(self.fleet)
            self.results.append((t - T0, time.monotonic() - t, status, (body or {}).get("host") if status == 200 else body))

    def stop(self):
        self._stop.set()
        for t in self.threads:
            t.join(15)
        return self.results


@pytest.fixture(scope="module")
def converged(fleet):
    proc = _play(fleet)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


def test_converges_then_changes_nothing(fleet, converged):
    again = _play(fleet)
    assert again.returncode == 0, again.stdout[-3000:]
    assert _recap(again.stdout, fleet["balancer"])["changed"] == 0, again.stdout[-3000:]


def test_spreads_the_load_and_listens_on_the_public_port_and_loopback_stats_only(fleet, converged):
    for name in fleet["backends"]:
        _wait_status(fleet, name, "UP", 10)
    seen = {_lb(fleet)[1]["host"] for _request in range(10)}
    assert len(seen) == 2, seen
    out = testhosts.exec_in(str(fleet["state"]), fleet["balancer"], ["ss", "-Hltn"]).stdout.decode()
    local = sorted({line.split()[3] for line in out.splitlines()})
    assert "127.0.0.1:8404" in local and "0.0.0.0:8000" in local, local
    assert [a for a in local if a.endswith(":8404")] == ["127.0.0.1:8404"], local


def test_a_host_whose_readiness_fails_is_taken_out_and_back_with_no_failed_request(fleet, converged):
    drained = fleet["backends"][0]
    for name in fleet["backends"]:
        _wait_status(fleet, name, "UP", 10)
    load = Load(fleet)
    time.sleep(1)
    t_drain = time.monotonic()
    testhosts.exec_in(str(fleet["state"]), drained, ["touch", "/run/backend-standin/notready"])
    _event("drain", host=drained)
    t_down = _wait_status(fleet, drained, "DOWN", INTERVAL * FALL + 5)
    _event("balancer: DOWN", host=drained)
    time.sleep(2)
    t_back = time.monotonic()
    testhosts.exec_in(str(fleet["state"]), drained, ["rm", "-f", "/run/backend-standin/notready"])
    _event("undrain", host=drained)
    t_up = _wait_status(fleet, drained, "UP", INTERVAL * RISE + 5)
    _event("balancer: UP", host=drained)
    time.sleep(1)
    results = load.stop()
    RESULTS["drain"] = {"requests": len(results), "failed": len([r for r in results if r[2] != 200]),
                        "down_after_s": round(t_down - t_drain, 2), "up_after_s": round(t_up - t_back, 2),
                        "latencies_s": sorted(round(r[1], 4) for r in results)}
    assert results and all(r[2] == 200 for r in results), [r for r in results if r[2] != 200][:5]
    # none sent to the drained host from one health-check round after it went DOWN until it was undrained
    assert not [r for r in results if r[3] == drained and t_down - T0 + 0.5 < r[0] < t_back - T0], "sent to a DOWN host"
    assert t_down - t_drain <= INTERVAL * FALL + 2.5


def test_a_new_configuration_is_reloaded_not_restarted_without_a_failed_request(fleet, converged):
    def master():
        return testhosts.exec_in(str(fleet["state"]), fleet["balancer"], [
            "systemctl", "show", "-p", "MainPID", "--value", "llmops-lb"]).stdout.decode().strip()
    before = master()
    load = Load(fleet)
    proc = _play(fleet, load_balancer_check_interval=2, load_balancer_check_timeout=2)
    results = load.stop()
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Reload without dropping a connection" in proc.stdout and _recap(proc.stdout, fleet["balancer"])["changed"] >= 2
    assert master() == before
    assert results and all(r[2] == 200 for r in results), [r for r in results if r[2] != 200][:5]
    cfg = testhosts.exec_in(str(fleet["state"]), fleet["balancer"], ["cat", "/etc/haproxy/llmops-lb.cfg"]).stdout.decode()
    assert "inter 2s fall 2 rise 2" in cfg
    RESULTS["reload"] = {"requests": len(results), "failed": 0}


def test_bad_inputs_fail_before_any_change_naming_the_variables(fleet, converged):
    cfg = ["sha1sum", "/etc/haproxy/llmops-lb.cfg"]
    before = testhosts.exec_in(str(fleet["state"]), fleet["balancer"], cfg).stdout
    proc = _play(fleet, load_balancer_check_timeout=9, load_balancer_backend_group="no_such_group",
                 load_balancer_tls_certificate="-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----")
    assert proc.returncode != 0
    for name in ("load_balancer_backend_group (no_such_group) has no host", "load_balancer_check_timeout (9)",
                 "load_balancer_tls_certificate and load_balancer_tls_key go together", "Nothing was changed."):
        assert name in proc.stdout, proc.stdout[-3000:]
    assert _recap(proc.stdout, fleet["balancer"])["changed"] == 0
    assert testhosts.exec_in(str(fleet["state"]), fleet["balancer"], cfg).stdout == before
