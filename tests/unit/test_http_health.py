"""llmops.gce_vllm.http_health and module_utils/http_poll.py against real loopback servers."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from module_helpers import Standin, free_port, run_module  # first: installs the collection loader
from ansible_collections.llmops.gce_vllm.plugins.module_utils import http_poll as http_utils
from ansible_collections.llmops.gce_vllm.plugins.modules import http_health

MODEL = "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        return

    def do_GET(self):
        seen = self.server.seen
        seen.append(dict(self.headers))
        if self.path == "/flaky" and len(seen) < 3:
            status, body = 503, b"starting"
        elif self.path == "/json":
            status, body = 200, json.dumps({"status": "ok", "vllm": "reachable"}).encode()
        elif self.path == "/teapot":
            status, body = 418, b"short and stout"
        else:
            status, body = 200, b"fine"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.seen = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv, "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


# --- poll_until on a fake clock -------------------------------------------------------------------------
class FakeClock(object):
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_poll_until_backs_off_to_max_interval_and_never_sleeps_past_the_deadline():
    fake = FakeClock()
    outcome = http_utils.poll_until(lambda remaining: (False, remaining), timeout=10, interval=1, backoff=2,
                                    max_interval=3, clock=fake.clock, sleep=fake.sleep)
    assert not outcome.done
    assert fake.sleeps == [1, 2, 3, 3, 1]
    assert outcome.attempts == 6 and outcome.elapsed == 10
    assert outcome.value == 0


def test_poll_until_returns_at_once_when_done_and_runs_once_with_zero_timeout():
    fake = FakeClock()
    calls = []
    outcome = http_utils.poll_until(lambda r: (len(calls.append(r) or calls) == 3, None), timeout=60,
                                    interval=0.5, clock=fake.clock, sleep=fake.sleep)
    assert outcome.done and outcome.attempts == 3 and fake.sleeps == [0.5, 0.5]
    fake2 = FakeClock()
    outcome = http_utils.poll_until(lambda r: (False, None), timeout=0, clock=fake2.clock, sleep=fake2.sleep)
    assert not outcome.done and outcome.attempts == 1 and fake2.sleeps == []


def test_http_get_classifies_errors_and_keeps_statuses(server):
    _srv, base = server
    assert http_utils.http_get(base + "/teapot").status == 418
    refused = http_utils.http_get("http://127.0.0.1:%d/" % free_port(), timeout=1)
    assert refused.status is None and refused.error_kind == "refused"
    assert "connection refused" in refused.describe()
    assert http_utils.http_get("http://no-such-host.invalid/", timeout=2).error_kind in ("dns", "other")


# --- the module -----------------------------------------------------------------------------------------
def test_healthy_at_once(server):
    srv, base = server
    failed, result = run_module(http_health, {"url": base + "/json", "headers": {"Authorization": "Bearer s3cr3t-v"}})
    assert not failed and result["status"] == 200 and result["attempts"] == 1
    assert result["json"] == {"status": "ok", "vllm": "reachable"} and result["changed"] is False
    assert srv.seen[0]["Authorization"] == "Bearer s3cr3t-v"
    assert "s3cr3t-v" not in json.dumps(result)


def test_retries_until_expected_status(server):
    _srv, base = server
    failed, result = run_module(http_health, {"url": base + "/flaky", "interval": 0.05, "timeout": 5})
    assert not failed and result["attempts"] == 3 and result["status"] == 200


def test_other_status_codes_and_body_contains(server):
    _srv, base = server
    failed, result = run_module(http_health, {"url": base + "/teapot", "status_code": [418], "timeout": 1})
    assert not failed and result["status"] == 418
    failed, result = run_module(http_health, {"url": base + "/json", "body_contains": "nope", "timeout": 0.3,
                                              "interval": 0.1})
    assert failed and "does not contain 'nope'" in result["msg"]


def test_timeout_reports_the_last_error_and_counts():
    url = "http://127.0.0.1:%d/health" % free_port()
    started = time.monotonic()
    failed, result = run_module(http_health, {"url": url, "timeout": 0.6, "interval": 0.1})
    took = time.monotonic() - started
    assert failed
    assert "did not become healthy within 0.6 s" in result["msg"] and "connection refused" in result["msg"]
    assert result["attempts"] >= 2 and result["status"] is None   # it retried (the count itself depends on the CPU)
    assert 0.55 <= result["elapsed"] < 1.5 and took < 2


def test_wrong_status_times_out_with_it(server):
    _srv, base = server
    failed, result = run_module(http_health, {"url": base + "/teapot", "timeout": 0.2, "interval": 0.05})
    assert failed and "HTTP 418 (expected 200)" in result["msg"] and result["status"] == 418


def test_notices_a_starting_vllm_within_the_interval():
    standin = Standin([MODEL], env={"VLLM_STANDIN_STARTUP_DELAY": "1.0"})
    try:
        failed, result = run_module(http_health, {"url": standin.base + "/health", "timeout": 10, "interval": 0.2})
        assert not failed and result["status"] == 200 and result["attempts"] > 1
        assert 0.5 < result["elapsed"] < 5
    finally:
        standin.stop()


def test_check_mode_polls_too(server):
    _srv, base = server
    failed, result = run_module(http_health, {"url": base + "/"}, check_mode=True)
    assert not failed and result["status"] == 200 and result["changed"] is False


@pytest.mark.parametrize("args, message", [
    ({"url": "ftp://127.0.0.1/x"}, "url must be an http:// or https:// URL"),
    ({"url": "127.0.0.1:8001/health"}, "url must be an http:// or https:// URL"),
    ({"url": "http://127.0.0.1/", "interval": 0}, "interval must be > 0"),
    ({"url": "http://127.0.0.1/", "timeout": -1}, "timeout must be >= 0"),
    ({"url": "http://127.0.0.1/", "backoff": 0.5}, "backoff must be >= 1"),
    ({"url": "http://127.0.0.1/", "interval": 5, "max_interval": 1}, "max_interval (1.0) must be >= interval (5.0)"),
    ({"url": "http://127.0.0.1/", "status_code": [700]}, "status_code entries must be HTTP statuses 100-599"),
    ({"url": "http://127.0.0.1/", "status_code": []}, "status_code must list at least one status"),
    ({"url": "http://127.0.0.1/", "request_timeout": 0}, "request_timeout must be > 0"),
])
def test_bad_input_fails_before_any_request(args, message):
    started = time.monotonic()
    failed, result = run_module(http_health, args)
    assert failed and message in result["msg"]
    assert time.monotonic() - started < 1
