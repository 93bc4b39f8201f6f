"""Faults of the Compute API (tests/compute_api injects them): bursts of 429/503 and of 403 rate limits
(rateLimitExceeded/userRateLimitExceeded), a 10-minute operation outlasting 2-minute waits, dropped connections, an
answer lost after the write took effect, an operation ending in error, a non-retryable error, a rate limit
that never ends, and a firewall rule changed behind our back (drift).

Each runs the real module (llmops.gce_vllm.gce_firewall, as provision.yml uses it) with `ansible` ad hoc.
The access token travels in the environment (GCP_ACCESS_TOKEN), never on a command line.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from tests.reliability import lib

RULE = {"name": "allow-ai-server-ports", "network": "default", "direction": "INGRESS", "priority": 1000,
        "allowed": [{"ip_protocol": "tcp", "ports": ["8000", "8001"]}], "source_ranges": ["10.231.0.0/16"],
        "target_tags": ["ai-server"], "description": "AI server and vLLM ports (managed by llmops.gce_vllm)"}
# The client's documented backoff (module_utils/gce.py): 0.5 s * 2^n for retry n, with jitter in [50 %, 100 %].
MIN_GAPS = [0.5 * (2 ** n) * 0.5 for n in range(3)]


class _Stamped(list):
    """The API's request log, with the monotonic time at which each answer was ready."""

    def append(self, item):
        item["t"] = time.monotonic()
        super().append(item)


@pytest.fixture
def fresh(api):
    api.clear()
    lib.http_status(api.endpoint + "projects/%s/global/firewalls" % api.project, headers={"Authorization": "Bearer x"})
    with api.api.lock:
        api.api.requests = _Stamped()
    return api


def _firewall(api, secrets_, **over) -> lib.Run:
    args = dict(RULE, project=api.project, auth_kind="accesstoken", state="present")
    args.update(over)
    env = lib.ansible_env(GCP_ACCESS_TOKEN=secrets_["gce_access_token"], GCE_API_ENDPOINT=api.endpoint)
    return lib.run([lib.VENV_BIN / "ansible", "-i", "localhost,", "-c", "local", "localhost",
                    "-e", "ansible_python_interpreter=%s" % sys.executable,
                    "-m", "llmops.gce_vllm.gce_firewall", "-a", json.dumps(args)], env=env, timeout=180)


def _fw_requests(api, method):
    return [r for r in api.requests(r"/global/firewalls") if r["method"] == method]


def _rules(api):
    return api.api.summary().get(api.project, {}).get("firewalls", [])


def _record(fault, injected, expected, observed, survived, figure=""):
    lib.record("faults", fault=fault, injected=injected, expected=expected, observed=observed, survived=survived,
               figure=figure)


@pytest.mark.parametrize(("status", "method", "reason"), [
    (429, "POST", None), (503, "GET", None), (403, "POST", "rateLimitExceeded"), (403, "GET", "userRateLimitExceeded")])
def test_bursts_of_429_503_are_retried_with_backoff(fresh, secrets_, status, method, reason):
    """403 rateLimitExceeded/userRateLimitExceeded is how Compute answers most exceeded rate quotas."""
    fresh.srv.add_faults({"kind": "status", "status": status, "count": 3, "method": method, "path": "/global/firewalls",
                          "reason": reason})
    res = _firewall(fresh, secrets_)
    reqs = _fw_requests(fresh, method)
    statuses = [r["status"] for r in reqs]
    gaps = [round(b["t"] - a["t"], 2) for a, b in zip(reqs[:3], reqs[1:4])]
    same_id = len({r["query"] for r in reqs}) == 1
    backoff = len(gaps) == 3 and all(g >= m * 0.95 for g, m in zip(gaps, MIN_GAPS)) and gaps == sorted(gaps)
    ok = (res.rc == 0 and statuses[:3] == [status] * 3 and statuses[3] < 500 and _rules(fresh) == [RULE["name"]]
          and backoff and (method != "POST" or same_id))
    id_note = " one requestId for every attempt: %s;" % same_id if method == "POST" else ""
    _record("Compute API: a burst of 3 x HTTP %d%s on %s" % (status, " " + reason if reason else "", method),
            "fault rule status=%d%s count=3" % (status, " reason=%s" % reason if reason else ""), "retried with growing backoff; the rule is created once",
            "rc=%d; %s statuses %s;%s rules: %s" % (res.rc, method, statuses, id_note, _rules(fresh)), ok,
            "gaps between attempts %s s (client minimum %s s)" % (gaps, MIN_GAPS))
    assert res.rc == 0, res.tail()
    assert statuses[:3] == [status] * 3 and statuses[3] < 500, statuses
    assert _rules(fresh) == [RULE["name"]]
    assert backoff, "no growing backoff between the retries: gaps %s, minimum %s" % (gaps, MIN_GAPS)
    if method == "POST":
        assert same_id, "the retried insert changed its requestId: %s" % [r["query"] for r in reqs]


def test_dropped_connections_are_retried(fresh, secrets_):
    fresh.srv.add_faults({"kind": "drop", "count": 2, "path": "/global/firewalls"})
    res = _firewall(fresh, secrets_)
    n = len(fresh.requests(r"/global/firewalls"))
    ok = res.rc == 0 and _rules(fresh) == [RULE["name"]]
    _record("Compute API: 2 connections dropped without an answer", "fault rule drop count=2",
            "retried; the rule is created", "rc=%d; %d requests to firewalls; rules %s" % (res.rc, n, _rules(fresh)), ok)
    assert ok, res.tail()


def test_answer_lost_after_the_write_is_not_applied_twice(fresh, secrets_):
    """The insert takes effect but its answer is lost: the retry carries the same requestId, so the API
    returns the first operation instead of inserting again (no 409, no second rule)."""
    fresh.srv.add_faults({"kind": "drop_after", "count": 1, "method": "POST", "path": "/global/firewalls$"})
    res = _firewall(fresh, secrets_)
    posts = _fw_requests(fresh, "POST")
    ok = res.rc == 0 and _rules(fresh) == [RULE["name"]] and "alreadyExists" not in res.out
    _record("Compute API: insert applied, answer lost (connection dropped after the write)",
            "fault rule drop_after count=1 on POST firewalls", "retried with the same requestId: one rule, no error",
            "rc=%d; %d POSTs; rules %s" % (res.rc, len(posts), _rules(fresh)), ok)
    assert ok, res.tail()
    assert len({p["query"] for p in posts}) == 1, "the retry used a new requestId: %s" % posts


def test_operation_ending_in_error_is_surfaced_verbatim(fresh, secrets_):
    message = "The zone does not have enough resources available to fulfil the request (fault %d)." % time.time_ns()
    fresh.srv.add_faults({"kind": "operation_error", "count": 1, "operation_type": "insert",
                          "code": "RESOURCE_POOL_EXHAUSTED_TEST", "message": message})
    res = _firewall(fresh, secrets_)
    posts = _fw_requests(fresh, "POST")
    verbatim = message in res.flat and "RESOURCE_POOL_EXHAUSTED_TEST" in res.out
    ok = res.rc != 0 and verbatim and len(posts) == 1 and _rules(fresh) == []
    _record("Compute API: the insert operation ends DONE with an error", "fault rule operation_error on insert",
            "not retried (a failed operation is an answer); the API's error shown verbatim",
            "rc=%d; error code and message verbatim: %s; POSTs %d; rules %s" % (res.rc, verbatim, len(posts), _rules(fresh)),
            ok)
    assert res.rc != 0
    assert verbatim, res.tail()
    assert len(posts) == 1, "a failed operation was retried: %s" % posts


def test_non_retryable_error_fails_at_once_verbatim(fresh, secrets_):
    message = "Required 'compute.firewalls.create' permission for 'projects/%s' (fault %d)" % (fresh.project, time.time_ns())
    fresh.srv.add_faults({"kind": "status", "status": 403, "count": 1, "method": "GET", "message": message})
    t0 = time.monotonic()
    res = _firewall(fresh, secrets_)
    n = len(fresh.requests())
    ok = res.rc != 0 and message in res.flat and n == 1
    _record("Compute API: HTTP 403 (permission denied)", "fault rule status=403 count=1",
            "not retried; the API's message verbatim", "rc=%d; %d request(s); message verbatim: %s"
            % (res.rc, n, message in res.flat), ok, "failed after %.1f s" % (time.monotonic() - t0))
    assert res.rc != 0 and message in res.flat, res.tail()
    assert n == 1, "a 403 was retried: %s" % fresh.requests()


def test_rate_limit_that_never_ends_gives_up_clearly(fresh, secrets_):
    fresh.srv.add_faults({"kind": "status", "status": 429, "count": -1, "method": "GET"})
    res = _firewall(fresh, secrets_, retries=2)
    n = len(fresh.requests())
    ok = res.rc != 0 and n == 3 and "429" in res.out and "Rate Limit Exceeded" in res.out
    _record("Compute API: HTTP 429 without end", "fault rule status=429 count=-1, module retries=2",
            "gives up after the retries with the API's error", "rc=%d; %d requests; 429 + message shown: %s"
            % (res.rc, n, "Rate Limit Exceeded" in res.out), ok)
    assert ok, (n, res.tail())


def test_drift_firewall_rule_changed_in_the_api_is_restored(fresh, secrets_):
    assert _firewall(fresh, secrets_).rc == 0
    # someone opens the rule to the world and adds a port, in the console
    rule = fresh.api.state.projects[fresh.project]["firewalls"][RULE["name"]]
    with fresh.api.lock:
        rule["sourceRanges"] = ["0.0.0.0/0"]
        rule["allowed"] = [{"IPProtocol": "tcp", "ports": ["8000", "8001", "22"]}]
    fresh.srv.clear_requests()
    res = _firewall(fresh, secrets_)
    again = _firewall(fresh, secrets_)
    now = fresh.api.state.projects[fresh.project]["firewalls"][RULE["name"]]
    methods = sorted({r["method"] for r in fresh.requests(r"/global/firewalls")})
    ok = (res.rc == 0 and "CHANGED" in res.out and now["sourceRanges"] == RULE["source_ranges"]
          and now["allowed"][0]["ports"] == ["8000", "8001"] and "DELETE" not in methods
          and again.rc == 0 and "SUCCESS" in again.out)
    _record("drift: firewall rule changed in the API (0.0.0.0/0, port 22 added)", "edit of the rule in the API's state",
            "the next run patches it back; a further run changes nothing",
            "rc=%d; sourceRanges %s, ports %s; requests %s" % (res.rc, now["sourceRanges"], now["allowed"][0]["ports"], methods),
            ok)
    assert res.rc == 0, res.tail()
    assert now["sourceRanges"] == RULE["source_ranges"] and now["allowed"][0]["ports"] == ["8000", "8001"], now
    assert "DELETE" not in methods, "the rule was deleted and re-created instead of patched"
    assert "SUCCESS" in again.out and "CHANGED" not in again.out, again.tail()


def test_ten_minute_operation_outlasts_the_two_minute_waits(fresh, secrets_):
    """A GPU VM create/stop/delete can take 10 minutes; operations.wait holds each request up to 2 minutes.

    The local API's clock runs SCALE times faster (clock_scale): its 2-minute hold lasts 6 real seconds and the
    10-minute operation 30. The module's HTTP timeout is scaled the same way (30 s -> 1.5 s), so the client
    meets the real API's ratios: each wait outlasts the module's plain read timeout."""
    scale = 20.0
    api = fresh.api
    saved = (api.clock_scale, api.wait_early_every)
    api.clock_scale, api.wait_early_every = scale, 0
    try:
        fresh.srv.add_faults({"kind": "slow_operation", "seconds": 600, "operation_type": "insert"})
        t0 = time.monotonic()
        res = _firewall(fresh, secrets_, timeout=30 / scale, operation_timeout=900)
        took = time.monotonic() - t0
    finally:
        api.clock_scale, api.wait_early_every = saved
    waits = fresh.requests(r"/operations/.*/wait$")
    ok = res.rc == 0 and _rules(fresh) == [RULE["name"]] and len(waits) >= 4
    _record("Compute API: a 10-minute insert operation (waits held 2 minutes each)",
            "fault rule slow_operation seconds=600; API clock x%d, module timeout 30 s scaled to %.1f s"
            % (scale, 30 / scale), "each wait outlasts the 2-minute hold; the rule exists at the end",
            "rc=%d; %d waits, statuses %s; rules %s"
            % (res.rc, len(waits), sorted({w["status"] for w in waits}), _rules(fresh)), ok,
            "%.1f real s = %.0f API s" % (took, took * scale))
    assert res.rc == 0, res.tail()
    assert _rules(fresh) == [RULE["name"]]
    assert len(waits) >= 4, waits
