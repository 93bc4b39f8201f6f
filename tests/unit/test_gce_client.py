"""Unit tests of plugins/module_utils/gce.py (the Compute REST client) against the local Compute API."""
import json
import os
import sys
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.compute_api.testing import PROJECT, ComputeApiServer, service_account_key  # noqa: E402

from ansible_collections.llmops.gce_vllm.plugins.module_utils import gce  # noqa: E402

ZONE = "asia-northeast3-a"


@pytest.fixture
def server():
    srv = ComputeApiServer(op_polls=2).start()
    yield srv
    srv.stop()


class Sleeps(list):
    """Records the client's backoff sleeps instead of sleeping."""

    def __call__(self, seconds):
        self.append(seconds)


def client_for(server, **kw):
    kw.setdefault("sleep", Sleeps())
    return gce.GceClient(PROJECT, auth_kind="accesstoken", access_token="tok", api_endpoint=server.endpoint, **kw)


def firewall_body(name, **extra):
    body = {"name": name, "network": "global/networks/default", "sourceRanges": ["10.0.0.0/8"],
            "allowed": [{"IPProtocol": "tcp", "ports": ["8000"]}]}
    body.update(extra)
    return body


# ------------------------------------------------------------------------------ pagination
def test_list_follows_next_page_token(server):
    c = client_for(server)
    for i in range(5):
        c.mutate("POST", c.project_path("global/firewalls"), body=firewall_body("fw-%d" % i))
    server.clear_requests()
    names = [fw["name"] for fw in c.list(c.project_path("global/firewalls"), {"maxResults": 2})]
    assert names == ["fw-0", "fw-1", "fw-2", "fw-3", "fw-4"]
    calls = server.requests("/global/firewalls$")
    assert len(calls) == 3
    assert "pageToken" not in calls[0]["query"] and "pageToken" in calls[1]["query"]


def test_aggregated_list_one_call_per_page(server):
    server.api.seed(1234, zones=7)
    c = client_for(server)
    server.clear_requests()
    items = list(c.aggregated_list("instances"))
    assert len(items) == 1234
    assert len({item["name"] for _scope, item in items}) == 1234
    assert all(scope == "zones/" + gce.basename(item["zone"]) for scope, item in items)
    calls = server.requests()
    assert [r["path"] for r in calls] == ["/compute/v1/projects/%s/aggregated/instances" % PROJECT] * 3
    assert all("maxResults=500" in r["query"] for r in calls)


def test_aggregated_list_of_5000_instances_is_fast(server):
    server.api.seed(5000, zones=20)
    c = client_for(server)
    server.clear_requests()
    assert sum(1 for _item in c.aggregated_list("instances")) == 5000
    calls = server.requests()
    assert len(calls) == 10
    assert sum(r["ms"] for r in calls) < 1000, calls


# ------------------------------------------------------------------------------ retries
def test_429_burst_is_retried_with_backoff(server):
    c = client_for(server, backoff=0.5)
    server.add_faults({"kind": "status", "status": 429, "count": 3})
    assert c.get(c.project_path("zones", ZONE))["name"] == ZONE
    assert c.calls == 4
    assert len(c._sleep) == 3
    # exponential with jitter: 0.25-0.5, 0.5-1, 1-2
    for i, s in enumerate(c._sleep):
        assert 0.5 * 2 ** i / 2 <= s <= 0.5 * 2 ** i


def test_retry_after_is_respected(server):
    c = client_for(server)
    server.add_faults({"kind": "status", "status": 503, "count": 1, "retry_after": 7})
    c.get(c.project_path("zones", ZONE))
    assert c._sleep == [7.0]


def test_retries_run_out(server):
    c = client_for(server, retries=2, backoff=0.01)
    server.add_faults({"kind": "status", "status": 503, "count": 10})
    with pytest.raises(gce.GceApiError) as e:
        c.get(c.project_path("zones", ZONE))
    assert e.value.status == 503 and c.calls == 3


def test_dropped_connection_is_retried(server):
    c = client_for(server, backoff=0.01)
    server.add_faults({"kind": "drop", "count": 2})
    assert c.get(c.project_path("zones", ZONE))["name"] == ZONE
    assert c.calls == 3


@pytest.mark.parametrize("status", [400, 403, 409])
def test_other_4xx_are_never_retried(server, status):
    c = client_for(server)
    server.add_faults({"kind": "status", "status": status, "count": 5, "message": "nope"})
    with pytest.raises(gce.GceApiError) as e:
        c.request("GET", c.project_path("zones", ZONE))
    assert e.value.status == status and e.value.message == "nope"
    assert c.calls == 1 and c._sleep == []


def test_404_is_none_for_get_and_an_error_for_request(server):
    c = client_for(server)
    assert c.get(c.project_path("global/firewalls/nope")) is None
    with pytest.raises(gce.GceApiError) as e:
        c.request("GET", c.project_path("global/firewalls/nope"))
    assert e.value.status == 404 and e.value.reason == "notFound"
    assert "projects/%s/global/firewalls/nope" % PROJECT in str(e.value)
    assert c.calls == 2


def test_write_retried_after_a_lost_answer_is_applied_once(server):
    """The insert took effect but its answer was lost: the retry carries the same requestId, so the API
    returns the first operation instead of failing with 409 alreadyExists (or acting twice)."""
    c = client_for(server, backoff=0.01)
    server.add_faults({"kind": "drop_after", "count": 1, "method": "POST", "path": "firewalls$"})
    op = c.mutate("POST", c.project_path("global/firewalls"), body=firewall_body("once"))
    assert op["status"] == "DONE" and op["operationType"] == "insert"
    posts = [r for r in server.requests("firewalls$") if r["method"] == "POST"]
    assert len(posts) == 2 and posts[0]["status"] == 0  # 0 = dropped
    assert len({r["query"] for r in posts}) == 1  # both attempts carried the same requestId
    assert server.api.summary()[PROJECT]["firewalls"] == ["once"]


def test_without_request_id_a_lost_answer_would_conflict(server):
    """The counter-check: the same lost answer without a requestId makes the retry fail with 409."""
    c = client_for(server, backoff=0.01)
    server.add_faults({"kind": "drop_after", "count": 1, "method": "POST", "path": "firewalls$"})
    with pytest.raises(gce.GceApiError) as e:
        c.request("POST", c.project_path("global/firewalls"), body=firewall_body("twice"))
    assert e.value.status == 409


# ------------------------------------------------------------------------------ operations
def test_get_polls_go_pending_running_done_and_wait_holds_until_done(server):
    server.api.op_polls = 3
    c = client_for(server)
    op = c.request("POST", c.project_path("global/firewalls"), body=firewall_body("w"))
    assert op["status"] == "PENDING" and op["kind"] == "compute#operation"
    seen = [op["status"]]
    path = c.operation_path(op)
    for _attempt in range(3):
        seen.append(c.request("GET", path)["status"])
    assert seen == ["PENDING", "RUNNING", "RUNNING", "DONE"]
    server.api.wait_early_every = 0
    op2 = c.request("POST", c.project_path("global/firewalls"), body=firewall_body("w2"))
    assert c.request("POST", c.operation_path(op2) + "/wait")["status"] == "DONE"  # held until DONE
    assert c.wait(op2)["status"] == "DONE"


# The API's clock runs SCALE times faster than the real one (tests/compute_api: clock_scale): its 2-minute wait
# hold lasts 1.2 real seconds, a 10-minute operation 6. The client's 30 s HTTP read timeout is scaled the same way
# (0.3 s), so the client meets exactly the ratios of the real API.
SCALE = 100.0


def test_wait_outlasts_the_two_minute_hold_for_a_10_minute_operation(server):
    server.api.clock_scale = SCALE
    server.api.wait_early_every = 0
    server.add_faults({"kind": "slow_operation", "seconds": 600, "operation_type": "insert"})
    c = client_for(server, timeout=30 / SCALE)
    op = c.mutate("POST", c.project_path("global/firewalls"), body=firewall_body("slow10"), timeout=900)
    assert op["status"] == "DONE"
    waits = server.requests(r"/operations/.*/wait$")
    assert len(waits) >= 4, waits  # 600 s / 120 s: each wait held for its 2 minutes, answered not DONE
    assert all(r["status"] == 200 for r in waits), waits


def test_not_done_answers_are_normal_and_only_operation_timeout_ends_the_wait(server):
    server.api.clock_scale = SCALE
    server.add_faults({"kind": "slow_operation", "seconds": 10 ** 6, "operation_type": "insert"})
    c = client_for(server, timeout=30 / SCALE, retries=1)
    op = c.request("POST", c.project_path("global/firewalls"), body=firewall_body("never"))
    t0 = time.monotonic()
    with pytest.raises(gce.GceTimeoutError) as e:
        c.wait(op, timeout=3.0, poll_interval=0.05)
    assert time.monotonic() - t0 >= 3.0
    assert "after 3.0s" in str(e.value) or "after 3s" in str(e.value), str(e.value)
    # more waits than the client's retries: a not-DONE answer (early or after the hold) is no failure
    assert len(server.requests(r"/operations/.*/wait$")) > 2


def test_wait_falls_back_to_get_polling(server):
    c = client_for(server)
    op = c.request("POST", c.project_path("global/firewalls"), body=firewall_body("g"))
    server.add_faults({"kind": "status", "status": 404, "count": 1, "path": "/wait$"})
    assert c.wait(op, poll_interval=0)["status"] == "DONE"
    assert server.requests("operations/%s$" % op["name"])


def test_operation_error_is_raised_verbatim(server):
    c = client_for(server)
    errors = [{"code": "ZONE_RESOURCE_POOL_EXHAUSTED", "message": "The zone does not have enough resources."}]
    server.add_faults({"kind": "operation_error", "operation_type": "insert", **errors[0]})
    with pytest.raises(gce.GceOperationError) as e:
        c.mutate("POST", c.project_path("global/firewalls"), body=firewall_body("boom"))
    assert e.value.errors == errors
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in str(e.value)
    assert server.api.summary()[PROJECT]["firewalls"] == []  # rolled back, like a failed insert


def test_operation_timeout(server):
    server.api.op_polls = 1000
    server.api.op_seconds = 1000
    c = client_for(server)
    op = c.request("POST", c.project_path("global/firewalls"), body=firewall_body("slow"))
    with pytest.raises(gce.GceTimeoutError):
        c.wait(op, timeout=0.3)


def test_self_links_are_mapped_onto_the_endpoint(server):
    c = client_for(server)
    link = "https://www.googleapis.com/compute/v1/projects/%s/zones/%s" % (PROJECT, ZONE)
    assert c.url(link) == server.endpoint + "projects/%s/zones/%s" % (PROJECT, ZONE)
    assert c.get(link)["name"] == ZONE
    with pytest.raises(gce.GceError):
        c.url("https://evil.example/steal")


# ------------------------------------------------------------------------------ credentials
def test_missing_credentials_file_fails_before_any_call(server, tmp_path):
    with pytest.raises(gce.GceAuthError) as e:
        gce.GceClient(PROJECT, auth_kind="serviceaccount", service_account_file=str(tmp_path / "nope.json"),
                      api_endpoint=server.endpoint)
    assert "service_account_file %s does not exist" % (tmp_path / "nope.json") in str(e.value)
    assert server.requests() == []


def test_credentials_file_not_json(server, tmp_path):
    f = tmp_path / "key.json"
    f.write_text("this is not json")
    with pytest.raises(gce.GceAuthError) as e:
        gce.GceClient(PROJECT, auth_kind="serviceaccount", service_account_file=str(f), api_endpoint=server.endpoint)
    assert "is not valid JSON" in str(e.value)
    f.write_text(json.dumps({"type": "authorized_user"}))
    with pytest.raises(gce.GceAuthError) as e:
        gce.GceClient(PROJECT, auth_kind="serviceaccount", service_account_file=str(f), api_endpoint=server.endpoint)
    assert "is not a service-account key" in str(e.value)
    assert server.requests() == []


def test_accesstoken_needs_a_token_and_the_api_needs_auth(server):
    with pytest.raises(gce.GceAuthError) as e:
        gce.GceClient(PROJECT, auth_kind="accesstoken", api_endpoint=server.endpoint)
    assert "access_token" in str(e.value)
    c = client_for(server)
    c._static_token = " "
    with pytest.raises(gce.GceApiError) as e:
        c.get(c.project_path("zones", ZONE))
    assert e.value.status == 401


def test_endpoint_from_environment(monkeypatch, server):
    monkeypatch.setenv("GCE_API_ENDPOINT", server.endpoint.rstrip("/"))
    c = gce.GceClient(PROJECT, auth_kind="accesstoken", access_token="t")
    assert c.api_endpoint == server.endpoint
    monkeypatch.delenv("GCE_API_ENDPOINT")
    assert gce.GceClient(PROJECT, auth_kind="accesstoken", access_token="t").api_endpoint == gce.DEFAULT_API_ENDPOINT


# ------------------------------------------------------------------------------ input checks
@pytest.mark.parametrize("zone,ok", [("asia-northeast3-a", True), ("us-central1-f", True), ("asia-northeast3", False),
                                     ("Asia-northeast3-a", False), ("asia_northeast3_a", False), ("", False)])
def test_check_zone(zone, ok):
    assert (gce.check_zone(zone) is None) == ok


@pytest.mark.parametrize("ports,ok", [(["8000", "8001"], True), (["8000-8001"], True), ([22], True),
                                      (["8001-8000"], False), (["0"], False), (["65536"], False),
                                      (["80,443"], False), (["tcp:80"], False), ("8000", False)])
def test_check_ports(ports, ok):
    assert (gce.check_ports(ports) is None) == ok


@pytest.mark.parametrize("ranges,ok", [(["203.0.113.0/24"], True), (["0.0.0.0/0"], True), (["2001:db8::/32"], True),
                                       (["203.0.113.5"], False), (["10.0.0.1/8"], False), (["10.0.0.0/33"], False)])
def test_check_cidrs(ranges, ok):
    assert (gce.check_cidrs(ranges) is None) == ok


def test_gpu_rules():
    assert gce.check_gpu_setup("g2-standard-4", [{"type": "nvidia-l4", "count": 1}], "TERMINATE",
                               "ubuntu-os-accelerator-images") == []
    [err] = gce.check_gpu_setup("n1-standard-4", [{"type": "nvidia-l4", "count": 1}], "TERMINATE")
    assert "G2" in err and "machine_type" in err
    [err] = gce.check_gpu_setup("g2-standard-4", [], "MIGRATE")
    assert "TERMINATE" in err and "live-migrate" in err
    [err] = gce.check_gpu_setup("n1-standard-4", [{"type": "nvidia-tesla-t4", "count": 1}], "MIGRATE")
    assert "MIGRATE" in err
    [err] = gce.check_gpu_setup("g2-standard-4", [], "TERMINATE", "deeplearning-platform-release")
    assert "Deep Learning VM" in err and "ubuntu-os-accelerator-images" in err
    assert gce.check_gpu_setup("e2-standard-2", [], "MIGRATE", "debian-cloud") == []


# ------------------------------------------------------------------------------ service-account flow
def test_service_account_key_flow_end_to_end(server, tmp_path):
    key = service_account_key(tmp_path, server)
    c = gce.GceClient(PROJECT, auth_kind="serviceaccount", service_account_file=str(key),
                      api_endpoint=server.endpoint)
    assert server.requests() == []  # building the client calls nothing
    assert c.get(c.project_path("zones", ZONE))["name"] == ZONE
    assert c.get(c.project_path("zones", "us-central1-a"))["name"] == "us-central1-a"
    calls = server.requests()
    assert [r["path"] for r in calls] == ["/token", "/compute/v1/projects/%s/zones/%s" % (PROJECT, ZONE),
                                          "/compute/v1/projects/%s/zones/us-central1-a" % PROJECT]
    assert all(r["bearer_issued"] for r in calls[1:])  # the token exchanged once is reused
    [grant] = server.api.issued_tokens.values()
    assert grant == {"iss": "deployer@%s.iam.gserviceaccount.com" % PROJECT,
                     "scope": "https://www.googleapis.com/auth/cloud-platform"}


def test_service_account_key_contents_and_a_refused_token(server, tmp_path):
    key = json.loads(service_account_key(tmp_path, server).read_text())
    c = gce.GceClient(PROJECT, auth_kind="serviceaccount", service_account_contents=json.dumps(key),
                      api_endpoint=server.endpoint)
    assert c.get(c.project_path("zones", ZONE))["name"] == ZONE
    key["token_uri"] = server.url + "token-nope"
    c = gce.GceClient(PROJECT, auth_kind="serviceaccount", service_account_contents=key,
                      api_endpoint=server.endpoint)
    with pytest.raises(gce.GceAuthError) as e:
        c.get(c.project_path("zones", ZONE))
    assert "could not obtain an access token (auth_kind=serviceaccount)" in str(e.value)


def test_application_default_credentials_missing(server, monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "adc.json"))
    with pytest.raises(gce.GceAuthError) as e:
        gce.GceClient(PROJECT, auth_kind="application", api_endpoint=server.endpoint)
    assert "auth_kind=application found no application default credentials" in str(e.value)
    assert server.requests() == []


# ------------------------------------------------------------------------------ 403 rate limits, quotas, permissions
@pytest.mark.parametrize("reason", ["rateLimitExceeded", "userRateLimitExceeded"])
def test_403_rate_limits_are_retried_with_backoff_like_429(server, reason):
    c = client_for(server)
    server.add_faults({"kind": "status", "status": 403, "reason": reason, "count": 3})
    assert c.get(c.project_path("zones", ZONE))["name"] == ZONE
    assert c.calls == 4
    sleeps = c._sleep
    assert len(sleeps) == 3 and all(0.5 * 0.5 * 2 ** n <= t <= 0.5 * 2 ** n for n, t in enumerate(sleeps)), sleeps


def test_403_rate_limit_give_up_says_how_many_attempts_over_how_long(server):
    c = client_for(server, retries=2)
    server.add_faults({"kind": "status", "status": 403, "reason": "rateLimitExceeded", "count": -1})
    with pytest.raises(gce.GceApiError) as e:
        c.get(c.project_path("zones", ZONE))
    assert c.calls == 3
    text = str(e.value)
    assert "rateLimitExceeded" in text and "gave up after 3 attempts over" in text, text
    assert "grant a role" not in text, text  # a rate limit is no IAM problem


def test_403_quota_exceeded_is_final_and_names_the_quota(server):
    c = client_for(server)
    server.add_faults({"kind": "status", "status": 403, "reason": "quotaExceeded", "count": 5})
    with pytest.raises(gce.GceApiError) as e:
        c.request("POST", c.project_path("global/firewalls"), body=firewall_body("q"))
    assert c.calls == 1 and c._sleep == []
    assert "GPUS_ALL_REGIONS" in str(e.value) and "retrying cannot help" in str(e.value), str(e.value)


def test_403_permission_denied_is_final_and_names_the_permission(server):
    c = client_for(server)
    server.add_faults({"kind": "status", "status": 403, "reason": "forbidden", "count": 5})
    with pytest.raises(gce.GceApiError) as e:
        c.get(c.project_path("zones", ZONE))
    assert c.calls == 1
    assert "compute.instances.list" in str(e.value) and "permission denied" in str(e.value), str(e.value)
