"""llmops.gce_vllm.vllm_models against the vLLM stand-in on loopback."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from module_helpers import Standin, free_port, run_module  # first: installs the collection loader
from ansible_collections.llmops.gce_vllm.plugins.modules import vllm_models

MODEL = "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct"
KEY = "vllm-key-9f8e7d6c5b4a"
LORAS = ['{"name": "easycontract", "path": "temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1"}',
         '{"name": "checklist", "path": "imyj1013/exaone-qlora-checklist-adapter"}']
EXPECTED = [MODEL, "easycontract", "checklist"]


@pytest.fixture(scope="module")
def vllm():
    server = Standin([MODEL, "--max-model-len", "8192", "--enable-lora", "--lora-modules"] + LORAS,
                     env={"VLLM_API_KEY": KEY}).wait_healthy()
    yield server
    server.stop()


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_lists_base_and_adapters(vllm, suffix):
    failed, result = run_module(vllm_models, {"base_url": vllm.base + suffix, "api_key": KEY, "expected": EXPECTED})
    assert not failed, result
    assert result["url"] == vllm.base + "/v1/models"
    assert result["ids"] == EXPECTED and result["missing"] == []
    assert result["base_models"] == [MODEL] and result["adapters"] == ["easycontract", "checklist"]
    assert result["models"][0] == {"id": MODEL, "root": MODEL, "parent": None, "max_model_len": 8192}
    assert result["models"][1] == {"id": "easycontract", "root": "temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1",
                                   "parent": MODEL, "max_model_len": None}
    assert result["attempts"] == 1 and result["changed"] is False
    assert KEY not in json.dumps(result)


def test_missing_adapter_names_what_is_missing_and_what_is_served(vllm):
    failed, result = run_module(vllm_models, {"base_url": vllm.base, "api_key": KEY,
                                              "expected": EXPECTED + ["contracts"], "timeout": 0.3, "interval": 0.1})
    assert failed
    assert "does not serve the expected model(s) contracts" in result["msg"]
    assert "it serves: %s, easycontract, checklist" % MODEL in result["msg"]
    assert result["missing"] == ["contracts"] and result["attempts"] >= 2


def test_wrong_key_fails_at_once_without_echoing_it(vllm):
    started = time.monotonic()
    failed, result = run_module(vllm_models, {"base_url": vllm.base, "api_key": "not-the-key-123",
                                              "expected": EXPECTED, "timeout": 30})
    assert failed and "API key rejected" in result["msg"]
    assert "not-the-key-123" not in json.dumps(result) and KEY not in json.dumps(result)
    assert time.monotonic() - started < 2


def test_no_key_against_a_guarded_server(vllm):
    failed, result = run_module(vllm_models, {"base_url": vllm.base, "timeout": 30})
    assert failed and "requires an API key (HTTP 401) and none was given" in result["msg"]


def test_waits_for_a_starting_server():
    server = Standin([MODEL, "--enable-lora", "--lora-modules", "easycontract=llmops-test/a"],
                     env={"VLLM_STANDIN_STARTUP_DELAY": "0.8", "VLLM_API_KEY": KEY})
    try:
        failed, result = run_module(vllm_models, {"base_url": server.base, "api_key": KEY, "interval": 0.1,
                                                  "expected": [MODEL, "easycontract"], "timeout": 10})
        assert not failed and result["attempts"] > 1 and result["adapters"] == ["easycontract"]
    finally:
        server.stop()


def test_nothing_listening_times_out_with_the_last_error():
    failed, result = run_module(vllm_models, {"base_url": "http://127.0.0.1:%d" % free_port(),
                                              "expected": [MODEL], "timeout": 0.3, "interval": 0.1})
    assert failed and "did not answer with its model list within 0.3 s" in result["msg"]
    assert "connection refused" in result["msg"]


class _NotVllm(BaseHTTPRequestHandler):
    def log_message(self, *args):
        return

    def do_GET(self):
        body = b"<html>hello</html>" if self.path == "/v1/models" else b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_server_that_is_not_vllm_is_named_as_such():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _NotVllm)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        failed, result = run_module(vllm_models, {"base_url": "http://127.0.0.1:%d" % srv.server_address[1],
                                                  "timeout": 5})
        assert failed and "is not JSON" in result["msg"] and "is this a vLLM server?" in result["msg"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_check_mode_reads_too(vllm):
    failed, result = run_module(vllm_models, {"base_url": vllm.base, "api_key": KEY, "expected": EXPECTED},
                                check_mode=True)
    assert not failed and result["ids"] == EXPECTED


@pytest.mark.parametrize("args, message", [
    ({"base_url": "127.0.0.1:8001"}, "base_url must be an http:// or https:// URL"),
    ({"base_url": "http://"}, "base_url must be an http:// or https:// URL"),
    ({"base_url": "http://127.0.0.1:8001", "api_key": ""}, "api_key is empty"),
    ({"base_url": "http://127.0.0.1:8001", "api_key": "a\nb"}, "api_key is empty or contains a line break"),
    ({"base_url": "http://127.0.0.1:8001", "interval": -1}, "interval must be > 0"),
])
def test_bad_input(args, message):
    failed, result = run_module(vllm_models, args)
    assert failed and message in result["msg"]
    assert "a\nb" not in result["msg"]


def test_models_url():
    assert vllm_models.models_url("http://h:8001") == "http://h:8001/v1/models"
    assert vllm_models.models_url("https://h/api/v1/") == "https://h/api/v1/models"
    assert vllm_models.models_url("http://h:8001/v1/models") == "http://h:8001/v1/models"
