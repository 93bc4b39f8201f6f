"""roles/ai_server/files/ai_ready.py (the readiness checker) against the vLLM stand-in on loopback.

The checker runs as it runs on a host: `python3 ai_ready.py` with its configuration in the environment. The AI
server's liveness is a plain HTTP server here whose /health status the test sets (the app itself is the user's).
"""
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from module_helpers import ROOT, Standin, free_port, get

CHECKER = os.path.join(ROOT, "roles", "ai_server", "files", "ai_ready.py")
MODEL = "base-model"
KEY = "vllm-key-0a1b2c3d4e5f"
LORAS = ['{"name": "easycontract", "path": "llmops-test/easycontract"}', '{"name": "checklist", "path": "llmops-test/checklist"}']


class App:
    """The AI server's /health, answering `status`."""

    def __init__(self):
        self.status = 200
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(app.status if self.path == "/health" else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/health" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def vllm():
    server = Standin([MODEL, "--enable-lora", "--lora-modules"] + LORAS, env={"VLLM_API_KEY": KEY}).wait_healthy()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app():
    a = App()
    yield a
    a.server.shutdown()


class Checker:
    def __init__(self, tmp_path, vllm_base, app_url, models, key=KEY):
        self.port = free_port()
        self.drain = str(tmp_path / "drain")
        self.log = open(tmp_path / "checker.log", "w+", encoding="utf-8")  # pylint: disable=consider-using-with
        env = {"PATH": os.environ["PATH"], "READY_PORT": str(self.port), "READY_DRAIN_FILE": self.drain,
               "READY_APP_HEALTH_URL": app_url, "READY_VLLM_BASE_URL": vllm_base + "/v1",
               "READY_VLLM_API_KEY": key, "READY_MODELS": json.dumps(models), "READY_TIMEOUT": "1"}
        self.proc = subprocess.Popen([sys.executable, CHECKER], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = "http://127.0.0.1:%d/ready" % self.port
        deadline = time.monotonic() + 10
        while get(self.url, timeout=0.5)[0] is None:
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, "the checker did not listen: " + self.output()
            time.sleep(0.05)

    def ready(self):
        status, body = get(self.url)
        return status, json.loads(body)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)
        self.log.close()


@pytest.fixture
def checker(tmp_path, vllm, app):
    made = []

    def make(models=(MODEL, "easycontract", "checklist"), **kw):
        c = Checker(tmp_path, kw.pop("vllm_base", vllm.base), kw.pop("app_url", app.url), list(models), **kw)
        made.append(c)
        return c
    yield make
    app.status = 200
    for c in made:
        c.stop()


def test_ready_when_vllm_serves_every_model_and_the_app_is_alive(checker):
    c = checker()
    assert c.ready() == (200, {"ready": True, "reason": "ready"})
    status, body = get(c.url.replace("/ready", "/health"))
    assert status == 404, body   # /health stays the app's: the proxy sends only /ready here


def test_the_drain_file_turns_readiness_off_and_back_without_a_restart(checker):
    c = checker()
    with open(c.drain, "w", encoding="utf-8"):
        pass
    assert c.ready() == (503, {"ready": False, "reason": "draining"})
    os.unlink(c.drain)
    assert c.ready() == (200, {"ready": True, "reason": "ready"})
    log = c.output()
    assert "not ready: the drain file %s exists" % c.drain in log and log.rstrip().endswith("ready")


def test_an_adapter_vllm_does_not_serve_is_not_ready_and_the_body_names_none(checker):
    c = checker(models=[MODEL, "easycontract", "checklist", "newadapter"])
    status, body = c.ready()
    assert (status, body) == (503, {"ready": False, "reason": "vLLM serves 3 of the 4 configured models"})
    assert "vLLM does not serve newadapter" in c.output()


def test_a_wrong_key_is_not_ready(checker):
    c = checker(key="not-the-key-123")
    assert c.ready() == (503, {"ready": False, "reason": "vLLM does not list its models"})


def test_an_unhealthy_app_is_not_ready(checker, app):
    c = checker()
    app.status = 500
    assert c.ready() == (503, {"ready": False, "reason": "the AI server is not healthy"})
    app.status = 200
    assert c.ready()[0] == 200


def test_a_stopped_or_starting_vllm_is_not_ready(checker):
    starting = Standin([MODEL], env={"VLLM_STANDIN_STARTUP_DELAY": "30"})
    try:
        c = checker(models=[MODEL], vllm_base=starting.base)
        assert c.ready() == (503, {"ready": False, "reason": "vLLM is not healthy"})
    finally:
        starting.stop()
    assert c.ready() == (503, {"ready": False, "reason": "vLLM is not healthy"})


def test_only_the_ready_path_answers(checker):
    c = checker()
    assert get(c.url + "?probe=1")[0] == 200
    assert get(c.url.replace("/ready", "/ready/x"))[0] == 404
