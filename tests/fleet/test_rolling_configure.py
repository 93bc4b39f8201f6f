"""The rolling configure (issue 11) on real systemd test hosts: playbooks/configure.yml, serial 1, behind HAProxy.

The fleet suite's host set (conftest.py): the balancer and three backends running the real roles. Constant, bounded
load (three clients of the AI server's chat route through the balancer) runs through each play:

1. idle: the load alone, the latency baseline;
2. the roll: vllm_server_max_model_len AND the adapter list change on all three (an adapter directory added): 0 failed
   requests, each host's vLLM started exactly once, one host at a time out of the rotation (DOWN in the balancer
   before its vLLM stops, no session sent to it until it is UP again), every adapter served afterwards;
3. the no-op rerun: nothing drained, nothing restarted;
4. a roll in which the second host's new vLLM dies at start (CUDA out of memory, the stand-in's knob on that host
   only): the roll stops there, the third host is untouched and serves, the broken host stays drained and the
   balancer never sends it a session, no request fails;
5. the rerun with the fault gone finishes the roll: the second and third hosts restarted to the new configuration,
   the first untouched, 0 failed requests.

Each run's requests, the balancer's view and the play's own step timings go to results/fleet/fleet.json.
"""
import re
import time

import yaml

from tests.fleet.conftest import EXTRA_ADAPTER, ROOT, STANDIN_ENV, T0, Traffic

DEFAULT_ADAPTERS = yaml.safe_load((ROOT / "roles/vllm_server/defaults/main.yml").read_text())["vllm_server_lora_adapters"]
ADAPTERS = DEFAULT_ADAPTERS + [EXTRA_ADAPTER]
ROLL = {"vllm_server_max_model_len": 4096, "vllm_server_lora_adapters": ADAPTERS}
ROLL2 = {"vllm_server_max_model_len": 6144, "vllm_server_lora_adapters": ADAPTERS}


def _units(fleet, unit="vllm"):
    return {h: fleet.unit(h, unit) for h in fleet.backends}


def _max_len(fleet, host):
    """The --max-model-len of the unit file on the host."""
    unit = fleet.sh(host, ["cat", "/etc/systemd/system/vllm.service"])
    return int(re.search(r"--max-model-len[\s\\']+(\d+)", unit).group(1))


def _drained(fleet, host):
    return fleet.sh(host, ["sh", "-c", "cat /var/lib/llmops/drain 2>/dev/null || echo '(none)'"]).strip()


def _never_all_out(changes, hosts):
    """At every change of the balancer's view at least one host is in the rotation ("UP", or "UP 1/2": going down
    but still sent requests)."""
    now = {}
    for c in changes:
        now[c["host"]] = c["status"]
        if len(now) == len(hosts):
            assert any((v or "").startswith("UP") for v in now.values()), (c, changes)


def _configure_under_load(fleet, *args, **kwargs):
    """fleet.configure(*args, **kwargs) with the bounded load and the balancer's view running around it."""
    traffic = Traffic(fleet)
    try:
        proc = fleet.configure(*args, **kwargs)
    finally:
        traffic.stop()
    return traffic, proc


def _out_interval(changes, host, at):
    """The balancer's DOWN of host that began last before the instant at (its restart) and the first UP after
    at: the time the roll had it out of the rotation. (None, None) where not seen."""
    down = [c["t"] for c in changes if c["host"] == host and c["status"] == "DOWN" and c["t"] <= at]
    up = [c["t"] for c in changes if c["host"] == host and c["status"] == "UP" and c["t"] > at]
    return (down[-1] if down else None), (up[0] if up else None)


def _flaps(changes, hooks):
    """DOWN statuses outside the play's own drained-until-UP window of that host (hooks: Play.hooks()): a health
    check that timed out on the busy machine, not the roll. Recorded in the json, shown in make bench."""
    def ours(c):
        h = hooks.get(c["host"], {})
        return "drained" in h and h["drained"][0] <= c["t"] and ("lb_up" not in h or c["t"] <= h["lb_up"][1])
    return [c for c in changes if (c["status"] or "").startswith("DOWN") and not ours(c)]


def test_idle_load_through_the_balancer(fleet):
    fleet.wait_status("UP")
    idle = Traffic(fleet, seconds=8)
    for t in idle.load.threads:   # bounded: the clients end after 8 s
        t.join(40)
    idle.stop().record("idle")
    assert idle.results and not idle.failed(), idle.failed()[:5]


def test_a_roll_of_max_model_len_and_the_adapters_fails_no_request_and_restarts_each_host_once(fleet):
    before = _units(fleet)
    since = int(time.time()) - 1
    traffic, proc = _configure_under_load(fleet, "roll", ROLL)
    hooks = proc.hooks()
    run = traffic.record("roll", proc, down_before_stop_s={})
    assert proc.rc == 0, proc.tail()
    after = _units(fleet)
    for host in fleet.backends:
        assert after[host]["InvocationID"] != before[host]["InvocationID"], host
        assert after[host]["ActiveState"] == "active" and after[host]["NRestarts"] == "0", after[host]
        assert fleet.starts_since(host, "vllm.service", since) == 1, host
        assert _max_len(fleet, host) == 4096
        # served afterwards, through the host's public vLLM port: the base model and every adapter, the new one too
        models = fleet.models(host)
        assert {a["name"] for a in ADAPTERS} <= set(models), (host, sorted(models))
        assert models[EXTRA_ADAPTER["name"]]["root"] == EXTRA_ADAPTER["path"], models[EXTRA_ADAPTER["name"]]
    assert traffic.results and not traffic.failed(), traffic.failed()[:5]
    _never_all_out(traffic.changes, fleet.backends)
    # one batch at a time: a host is drained only after the previous host was undrained and UP again
    assert all(k in hooks.get(h, {}) for h in fleet.backends for k in ("drained", "restart", "undrained", "lb_up")), hooks
    order = sorted(fleet.backends, key=lambda h: hooks[h]["restart"][0])
    for prev, nxt in zip(order, order[1:]):
        assert hooks[prev]["lb_up"][1] <= hooks[nxt]["drained"][0], hooks
    for host in fleet.backends:
        # the poller's DOWN before the undrain and its UP after; the poller runs every 0.2 s but a loaded machine can
        # starve it for a second or two, so the play's own wait for HAProxy's DOWN (lb_down) bounds the DOWN too
        down, up = _out_interval(traffic.changes, host, hooks[host]["undrained"][0])
        assert down is not None and up is not None, (host, traffic.changes)
        down = min(down, hooks[host]["lb_down"][1])
        assert down >= hooks[host]["drained"][0], (host, down, hooks[host])
        assert fleet.stats()[host]["status"].startswith("UP"), fleet.stats()
        # out of the rotation before its vLLM began to stop, and sent nothing until it was UP again
        stopping = fleet.stopping_at(host, "vllm.service", since) - T0
        run["down_before_stop_s"][host] = round(stopping - down, 2)
        assert down < stopping, (host, down, stopping)
        assert traffic.view.sessions(host, down + 1, up) == 0, (host, down, up)
    run["flaps"] = _flaps(traffic.changes, hooks)


def test_a_rerun_with_nothing_to_change_drains_nothing_and_restarts_nothing(fleet):
    before = (_units(fleet), _units(fleet, "ai-server"))
    traffic, proc = _configure_under_load(fleet, "noop", ROLL)
    run = traffic.record("noop", proc)
    assert proc.rc == 0, proc.tail()
    assert (_units(fleet), _units(fleet, "ai-server")) == before
    assert "Drain this host (create the drain file)" not in proc.out
    assert not proc.hooks() or not any("drained" in h for h in proc.hooks().values()), proc.hooks()
    # nothing taken out by the play; a DOWN here would be a health check that timed out on the busy machine
    # (recorded, and the requests still must not fail)
    run["flaps"] = _flaps(traffic.changes, {})
    _never_all_out(traffic.changes, fleet.backends)
    assert traffic.results and not traffic.failed(), traffic.failed()[:5]


def test_a_roll_stops_at_a_host_that_fails_after_its_restart_and_the_balancer_keeps_it_out(fleet):
    first, broken, untouched = fleet.backends
    # the new vLLM on that host only dies at start like a CUDA out-of-memory (a GPU that does not fit the new length)
    fault = fleet.work / "fault.yml"
    fault.write_text(yaml.safe_dump({"all": {"hosts": {broken: {
        "vllm_server_extra_env": dict(STANDIN_ENV, VLLM_STANDIN_CRASH="0.5")}}}}))
    before = _units(fleet)
    traffic, proc = _configure_under_load(fleet, "roll-fails", dict(ROLL2, vllm_server_health_timeout=15), inventories=[fault])
    run = traffic.record("roll-fails", proc, broken=broken)
    after = _units(fleet)
    assert proc.rc != 0, proc.tail()
    assert proc.recap(broken)["failed"] == 1, proc.tail()
    assert "CUDA out of memory" in proc.out, proc.tail()
    assert not [ln for ln in proc.out.splitlines() if ln.startswith(untouched + " ")], "the roll went on past the failure"
    # the first host rolled; the untouched host was not restarted, still runs the old unit and stayed in the rotation
    assert after[first]["InvocationID"] != before[first]["InvocationID"]
    assert _max_len(fleet, first) == 6144
    assert after[untouched] == before[untouched]
    assert _max_len(fleet, untouched) == 4096
    assert traffic.view.sessions(untouched, traffic.start, traffic.end) > 0, "the untouched host did not serve"
    assert _drained(fleet, untouched) == "(none)"
    # the broken host: drained by the roll, DOWN in the balancer before its restart and since, never sent a session
    assert "rolling configure" in _drained(fleet, broken)
    down, up = _out_interval(traffic.changes, broken, run["hooks"][broken]["restart"][0])
    assert down is not None and up is None and fleet.stats()[broken]["status"] == "DOWN", traffic.changes
    assert traffic.view.sessions(broken, down + 1, traffic.end) == 0
    run["flaps"] = _flaps(traffic.changes, run["hooks"])
    _never_all_out(traffic.changes, fleet.backends)
    assert traffic.results and not traffic.failed(), traffic.failed()[:5]


def test_the_rerun_with_the_fault_fixed_finishes_the_roll(fleet):
    first, broken, untouched = fleet.backends
    before = _units(fleet)
    since = int(time.time()) - 1
    traffic, proc = _configure_under_load(fleet, "roll-fixed", ROLL2)
    run = traffic.record("roll-fixed", proc)
    assert proc.rc == 0, proc.tail()
    after = _units(fleet)
    assert after[first] == before[first], "the host the failed roll finished was restarted again"
    for host in (broken, untouched):
        assert after[host]["InvocationID"] != before[host]["InvocationID"], host
        assert after[host]["ActiveState"] == "active", after[host]
    # the broken vLLM kept crashing (Restart=always) until this run; the untouched one started exactly once
    assert fleet.starts_since(untouched, "vllm.service", since) == 1
    for host in fleet.backends:
        assert _max_len(fleet, host) == 6144, host
        assert {a["name"] for a in ADAPTERS} <= set(fleet.models(host)), host
        assert _drained(fleet, host) == "(none)", host
        assert fleet.stats()[host]["status"] == "UP", fleet.stats()
    first_up = next(c["t"] for c in traffic.changes if c["host"] == broken and c["status"] == "UP")
    assert traffic.view.sessions(broken, traffic.start, first_up - 1) == 0, "sent to the broken host before it was UP"
    run["flaps"] = [c for c in _flaps(traffic.changes, run["hooks"]) if c["host"] != broken]
    _never_all_out(traffic.changes, fleet.backends)
    assert traffic.results and not traffic.failed(), traffic.failed()[:5]
