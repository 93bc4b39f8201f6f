"""Unit tests of gce_load_balancer against the local Compute API (tests/compute_api): the resources of a
regional external passthrough Network Load Balancer (health check, per-zone instance groups, backend service,
forwarding rule), created in dependency order, idempotent, reconciled, check mode, and deleted in dependency
order (also after an interrupted teardown); and the stand-in's own rules (in use, zone/network membership,
fingerprints, getHealth from a real probe).
"""
import copy
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.compute_api.server import ApiError  # noqa: E402
from tests.compute_api.testing import ComputeApiServer, auth_args, run_module  # noqa: E402

from ansible_collections.llmops.gce_vllm.plugins.modules import (  # noqa: E402
    gce_firewall,
    gce_instance,
    gce_load_balancer,
    gce_load_balancer_health,
)

PROJECT = "llmops-demo"
VM = {"machine_type": "g2-standard-4", "tags": ["ai-server"],
      "boot_disk": {"image_family": "ubuntu-accelerator-2204-amd64-with-nvidia-580",
                    "image_project": "ubuntu-os-accelerator-images", "size_gb": 200, "type": "pd-ssd"}}
FLEET = [{"name": "lb-a", "zone": "asia-northeast3-a"}, {"name": "lb-b", "zone": "asia-northeast3-b"},
         {"name": "lb-c", "zone": "asia-northeast3-a"}]


@pytest.fixture
def server():
    srv = ComputeApiServer(op_polls=0).start()
    yield srv
    srv.stop()


def make_vms(server, fleet=None):
    for vm in FLEET if fleet is None else fleet:
        r = run_module(gce_instance.main, auth_args(server, name=vm["name"], zone=vm["zone"], **copy.deepcopy(VM)))
        assert not r.get("failed"), r


def lb(server, check_mode=False, diff=False, **kw):
    args = auth_args(server, name="ai-server-lb", instances=copy.deepcopy(FLEET), port=8000,
                     health_check={"request_path": "/ready", "check_interval_sec": 5, "healthy_threshold": 2,
                                   "unhealthy_threshold": 2})
    args.update(kw)
    return run_module(gce_load_balancer.main, args, check_mode=check_mode, diff=diff)


def lb_state(server):
    return server.api.summary()[PROJECT]["load_balancer"]


def test_present_creates_in_order_then_is_idempotent(server):
    make_vms(server)
    server.clear_requests()
    r = lb(server, check_mode=True)
    assert r["changed"] and not r.get("failed"), r
    assert [q for q in server.requests() if q["method"] != "GET" and "listInstances" not in q["path"]] == []
    r = lb(server)
    assert not r.get("failed") and r["changed"], r
    writes = [(q["method"], q["path"].split("/")[-1] if q["method"] == "POST" else q["path"].split("/")[-2])
              for q in server.requests() if q["method"] in ("POST", "PATCH", "DELETE")
              and "/operations/" not in q["path"] and not q["path"].endswith(("/listInstances", "/getHealth"))]
    assert [w[1] for w in writes] == ["healthChecks", "instanceGroups", "addInstances", "instanceGroups",
                                      "addInstances", "backendServices", "forwardingRules"], writes
    assert lb_state(server) == {
        "healthChecks": ["asia-northeast3/ai-server-lb"],
        "instanceGroups": ["asia-northeast3-a/ai-server-lb-asia-northeast3-a",
                           "asia-northeast3-b/ai-server-lb-asia-northeast3-b"],
        "backendServices": ["asia-northeast3/ai-server-lb"], "forwardingRules": ["asia-northeast3/ai-server-lb"]}
    state = server.api.dump()["projects"][PROJECT]
    group_a = state["instanceGroups"]["asia-northeast3-a"]["ai-server-lb-asia-northeast3-a"]
    assert sorted(m.rsplit("/", 1)[1] for m in group_a["_members"]) == ["lb-a", "lb-c"]
    bs = state["backendServices"]["asia-northeast3"]["ai-server-lb"]
    assert bs["connectionDraining"] == {"drainingTimeoutSec": 60} and bs["loadBalancingScheme"] == "EXTERNAL"
    hc = state["healthChecks"]["asia-northeast3"]["ai-server-lb"]
    assert hc["httpHealthCheck"]["requestPath"] == "/ready" and hc["httpHealthCheck"]["port"] == 8000
    assert r["ip_address"] and r["health"] == {"lb-a": "UNHEALTHY", "lb-b": "UNHEALTHY", "lb-c": "UNHEALTHY"}
    r = lb(server)
    assert not r["changed"] and r["actions"] == [], r


def test_reconciles_members_zones_and_settings(server):
    make_vms(server)
    assert not lb(server).get("failed")
    smaller = [FLEET[0]]  # lb-c leaves zone a's group; zone b's group goes from the backend service and is deleted
    r = lb(server, instances=smaller, draining_timeout_sec=120, diff=True)
    assert not r.get("failed"), r
    assert r["actions"] == ["removed lb-c from instance group ai-server-lb-asia-northeast3-a",
                            "patched backend service ai-server-lb",
                            "deleted instance group ai-server-lb-asia-northeast3-b"], r["actions"]
    assert r["diff"]["before"]["backend_service"]["drainingTimeoutSec"] == 60
    assert r["diff"]["after"]["backend_service"]["drainingTimeoutSec"] == 120
    assert lb_state(server)["instanceGroups"] == ["asia-northeast3-a/ai-server-lb-asia-northeast3-a"]
    r = lb(server, instances=smaller, draining_timeout_sec=120, health_check={"unhealthy_threshold": 3})
    assert r["actions"] == ["patched health check ai-server-lb"], r


def test_absent_deletes_in_dependency_order_and_an_interrupted_teardown_reruns_clean(server):
    make_vms(server)
    assert not lb(server).get("failed")
    # interrupted: the forwarding rule and the backend service went, the rest is left
    state = server.api.dump()["projects"][PROJECT]
    with server.api.lock:
        server.api.state.projects[PROJECT]["forwardingRules"]["asia-northeast3"].clear()
        server.api.state.projects[PROJECT]["backendServices"]["asia-northeast3"].clear()
    assert state["healthChecks"]
    r = lb(server, state="absent")
    assert not r.get("failed"), r
    assert r["actions"] == ["deleted health check ai-server-lb",
                            "deleted instance group ai-server-lb-asia-northeast3-a",
                            "deleted instance group ai-server-lb-asia-northeast3-b"], r["actions"]
    assert all(v == [] for v in lb_state(server).values()), lb_state(server)
    r = lb(server, state="absent")
    assert not r["changed"], r
    # a whole teardown, in order
    assert not lb(server).get("failed")
    r = lb(server, state="absent")
    assert r["actions"][:2] == ["deleted forwarding rule ai-server-lb", "deleted backend service ai-server-lb"], r


def test_bad_input_fails_before_any_api_call(server):
    fleet = [{"name": "lb-a", "zone": "asia-northeast3-a"}, {"name": "lb-x", "zone": "us-central1-a"}]
    r = lb(server, instances=fleet, health_check={"check_interval_sec": 5, "timeout_sec": 10})
    assert r.get("failed"), r
    assert "regional and its backends must be in its region" in r["msg"]
    assert "health_check.timeout_sec 10 must be at least 1 and at most" in r["msg"]
    assert server.requests() == []


def test_standin_refuses_what_the_real_api_refuses(server):
    make_vms(server)
    assert not lb(server).get("failed")
    api = server.api
    p = {"project": PROJECT, "region": "asia-northeast3", "healthCheck": "ai-server-lb", "backendService": "ai-server-lb",
         "zone": "asia-northeast3-a", "instanceGroup": "ai-server-lb-asia-northeast3-a"}
    with api.lock:
        with pytest.raises(ApiError) as e:
            api.m_regionHealthChecks_delete(p, {}, {})
        assert e.value.code == 400 and e.value.reason == "resourceInUseByAnotherResource"
        with pytest.raises(ApiError) as e:
            api.m_regionBackendServices_delete(p, {}, {})   # the forwarding rule uses it
        assert e.value.reason == "resourceInUseByAnotherResource"
        with pytest.raises(ApiError) as e:
            api.m_instanceGroups_delete(p, {}, {})
        assert e.value.reason == "resourceInUseByAnotherResource"
        with pytest.raises(ApiError) as e:   # a VM of another zone
            api.m_instanceGroups_addInstances(p, {}, {"instances": [{"instance": api.link(
                "projects", PROJECT, "zones", "asia-northeast3-b", "instances", "lb-b")}]})
        assert "must be in the zone of the group" in e.value.message
        with pytest.raises(ApiError) as e:   # a stale fingerprint
            api.m_regionBackendServices_patch(p, {}, {"connectionDraining": {"drainingTimeoutSec": 5},
                                                      "fingerprint": "stale"})
        assert e.value.code == 412
    # a deleted VM leaves its group
    r = run_module(gce_instance.main, auth_args(server, name="lb-c", zone="asia-northeast3-a", state="absent"))
    assert not r.get("failed"), r
    group = api.dump()["projects"][PROJECT]["instanceGroups"]["asia-northeast3-a"]["ai-server-lb-asia-northeast3-a"]
    assert [m.rsplit("/", 1)[1] for m in group["_members"]] == ["lb-a"]


class _Ready(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        self.send_response(type(self).status if self.path == "/ready" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_get_health_probes_the_member_only_through_the_health_check_firewall(server):
    """getHealth is a real HTTP probe of the member's address, and only when a firewall rule admits Google's
    health-check ranges of this load balancer type on that port."""
    ready = ThreadingHTTPServer(("127.0.0.2", 0), _Ready)
    threading.Thread(target=ready.serve_forever, daemon=True).start()
    port = ready.server_address[1]
    try:
        server.api.host_pool = ["127.0.0.2"]
        make_vms(server, [FLEET[0]])
        kw = dict(instances=[FLEET[0]], port=port)
        assert lb(server, **kw)["health"] == {"lb-a": "UNHEALTHY"}     # no firewall rule for the probes
        fw = auth_args(server, name="allow-lb-health-checks", allowed=[{"ip_protocol": "tcp", "ports": [str(port)]}],
                       source_ranges=["35.191.0.0/16", "130.211.0.0/22"], target_tags=["ai-server"])
        assert not run_module(gce_firewall.main, fw).get("failed")
        assert lb(server, **kw)["health"] == {"lb-a": "UNHEALTHY"}     # the ranges of the proxy load balancers
        fw["source_ranges"] = ["35.191.0.0/16", "209.85.152.0/22", "209.85.204.0/22"]
        assert not run_module(gce_firewall.main, fw).get("failed")
        assert lb(server, **kw)["health"] == {"lb-a": "HEALTHY"}
        _Ready.status = 503                                              # draining: readiness 503
        assert lb(server, **kw)["health"] == {"lb-a": "UNHEALTHY"}
        # gce_load_balancer_health: read-only, waits for a state (a rolling update's "the balancer stopped sending")
        health = auth_args(server, name="ai-server-lb", instances=[FLEET[0]], sleep=0.1)
        server.clear_requests()
        r = run_module(gce_load_balancer_health.main, dict(health, wait_for={"lb-a": "UNHEALTHY"}))
        assert not r.get("failed") and r["health"] == {"lb-a": "UNHEALTHY"} and not r["changed"], r
        assert all(q["path"].endswith("/getHealth") for q in server.requests() if q["method"] != "GET")
        r = run_module(gce_load_balancer_health.main, dict(health, wait_for={"lb-a": "HEALTHY"}, timeout=1))
        assert r.get("failed") and "still reports lb-a UNHEALTHY (waited for lb-a HEALTHY)" in r["msg"], r
        threading.Timer(0.5, lambda: setattr(_Ready, "status", 200)).start()   # undrained a moment later
        r = run_module(gce_load_balancer_health.main, dict(health, wait_for={"lb-a": "HEALTHY"}, timeout=20))
        assert not r.get("failed") and r["health"] == {"lb-a": "HEALTHY"} and r["elapsed"] > 0, r
        r = run_module(gce_load_balancer_health.main, dict(health, wait_for={"lb-z": "HEALTHY"}))
        assert r.get("failed") and "wait_for names lb-z, which is not in instances" in r["msg"], r
    finally:
        _Ready.status = 200
        ready.shutdown()
        ready.server_close()
