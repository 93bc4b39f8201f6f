"""The load_balancer role on real systemd test hosts (issue 11): HAProxy from Debian's packages on its own host.

The fleet suite's host set (conftest.py): the balancer in front of three hosts running the real roles. The balancer
spreads the load (its own per-server session counters), takes a host whose /ready turns 503 (the real readiness
checker, drained by its drain file) out within interval x unhealthy threshold while /health stays 200, puts it back,
fails no request meanwhile, reloads a changed configuration (the same master process) instead of restarting, and
refuses bad inputs before any change.
"""
import time

from tests.fleet.conftest import CHECK, RESULTS, Load, Traffic, now

INTERVAL, FALL, RISE = (CHECK["load_balancer_check_interval"], CHECK["load_balancer_unhealthy_threshold"],
                        CHECK["load_balancer_healthy_threshold"])
DRAIN_FILE = "/var/lib/llmops/drain"


def test_converges_then_changes_nothing(fleet):
    again = fleet.lb("lb-noop")
    assert again.rc == 0, again.tail(3000)
    assert again.recap(fleet.balancer)["changed"] == 0, again.tail(3000)


def test_spreads_the_load_and_listens_on_the_public_port_and_loopback_stats_only(fleet):
    fleet.wait_status("UP")
    before = fleet.stats()
    load = Load(fleet, clients=3, seconds=4)
    for t in load.threads:   # bounded: the clients end after 4 s
        t.join(40)
    results = load.stop()
    after = fleet.stats()
    assert results and all(r[2] == 200 for r in results), [r for r in results if r[2] != 200][:5]
    sent = {h: after[h]["stot"] - before[h]["stot"] for h in fleet.backends}
    assert all(n > 0 for n in sent.values()), sent
    assert sum(sent.values()) >= len(results), (sent, len(results))
    out = fleet.sh(fleet.balancer, ["ss", "-Hltn"])
    local = sorted({line.split()[3] for line in out.splitlines()})
    assert "127.0.0.1:8404" in local and "0.0.0.0:8000" in local, local
    assert [a for a in local if a.endswith(":8404")] == ["127.0.0.1:8404"], local


def test_a_host_whose_readiness_fails_is_taken_out_and_back_with_no_failed_request(fleet):
    drained = fleet.backends[-1]
    fleet.wait_status("UP")
    traffic = Traffic(fleet, seconds=60)
    fleet.sh(drained, ["touch", DRAIN_FILE])
    t_drain = now()
    t_down = fleet.wait_status("DOWN", [drained], INTERVAL * FALL + 5)
    health = fleet.sh(drained, ["python3", "-c", "import urllib.request;print(urllib.request.urlopen("
                                "'http://127.0.0.1:8000/health').status)"]).strip()
    t_back = now()
    fleet.sh(drained, ["rm", "-f", DRAIN_FILE])
    t_up = fleet.wait_status("UP", [drained], INTERVAL * RISE + 5)
    deadline = time.monotonic() + 10   # back in the rotation: wait until it is sent a request again
    while traffic.view.sessions(drained, t_up, now() + 1) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    traffic.stop()
    traffic.record("drain-by-hand", host=drained, drained=t_drain, down=t_down, undrained=t_back, up=t_up)
    assert health == "200", "a drained host is alive: /health answers 200"
    assert traffic.results and not traffic.failed(), traffic.failed()[:5]
    # none sent to the drained host from one health-check round after it went DOWN until it was undrained
    assert traffic.view.sessions(drained, t_down + INTERVAL, t_back) == 0, traffic.view.stot
    assert t_down - t_drain <= INTERVAL * FALL + 2.5, (t_drain, t_down)
    assert traffic.view.sessions(drained, t_up, traffic.end) > 0, "not sent a request after it was UP again"


def test_a_new_configuration_is_reloaded_not_restarted_without_a_failed_request(fleet):
    def master():
        return fleet.sh(fleet.balancer, ["systemctl", "show", "-p", "MainPID", "--value", "llmops-lb"]).strip()
    before = master()
    load = Load(fleet, seconds=120)
    try:
        proc = fleet.lb("lb-reload", {"load_balancer_timeout": 900})
    finally:
        results = load.stop()
    assert proc.rc == 0, proc.tail(3000)
    assert "Reload without dropping a connection" in proc.out and proc.recap(fleet.balancer)["changed"] >= 2
    assert master() == before
    assert results and all(r[2] == 200 for r in results), [r for r in results if r[2] != 200][:5]
    cfg = fleet.sh(fleet.balancer, ["cat", "/etc/haproxy/llmops-lb.cfg"])
    assert "timeout server 900s" in cfg and "inter 1s fall 2 rise 2" in cfg, cfg
    RESULTS["runs"]["lb-reload"] = {"requests_n": len(results), "failed": 0}


def test_bad_inputs_fail_before_any_change_naming_the_variables(fleet):
    cfg = ["sha1sum", "/etc/haproxy/llmops-lb.cfg"]
    before = fleet.sh(fleet.balancer, cfg)
    proc = fleet.lb("lb-bad", {"load_balancer_check_timeout": 9, "load_balancer_backend_group": "no_such_group",
                               "load_balancer_tls_certificate": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----"})
    assert proc.rc != 0
    for name in ("load_balancer_backend_group (no_such_group) has no host", "load_balancer_check_timeout (9)",
                 "load_balancer_tls_certificate and load_balancer_tls_key go together", "Nothing was changed."):
        assert name in proc.out, proc.tail(3000)
    assert proc.recap(fleet.balancer)["changed"] == 0
    assert fleet.sh(fleet.balancer, cfg) == before
