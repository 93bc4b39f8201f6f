"""The vLLM stand-in (tests/standin/vllm_standin): its wheel, its CLI validation and its HTTP API."""
import base64
import csv
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile

import pytest

from module_helpers import STANDIN_DIR, Standin, free_port, get, post_json, run_vllm

sys.path.insert(0, STANDIN_DIR)
import build_wheel  # noqa: E402  pylint: disable=wrong-import-position
from vllm_standin import cli  # noqa: E402  pylint: disable=wrong-import-position

MODEL = "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct"
LORA_EASY = ('{"name": "easycontract", "path": "temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1", '
             '"base_model_name": "%s"}' % MODEL)
LORA_CHECK = '{"name": "checklist", "path": "imyj1013/exaone-qlora-checklist-adapter"}'
KEY = "k3y-Fr0m-Vault-0123456789"
SERVE_ARGS = [MODEL, "--gpu-memory-utilization", "0.85", "--max-model-len", "8192", "--dtype", "bfloat16",
              "--trust-remote-code", "--enable-lora", "--lora-modules", LORA_EASY, LORA_CHECK, "--max-lora-rank", "16"]


# --- the wheel ------------------------------------------------------------------------------------------
def test_wheel_is_valid_reproducible_and_installs_a_vllm_console_script(tmp_path):
    first = build_wheel.build(str(tmp_path / "a"))
    second = build_wheel.build(str(tmp_path / "b"))
    assert os.path.basename(first) == "vllm_standin-0.33.0-py3-none-any.whl"
    with open(first, "rb") as one, open(second, "rb") as two:
        assert one.read() == two.read(), "the wheel must be byte-for-byte reproducible"
    with zipfile.ZipFile(first) as wheel:
        names = wheel.namelist()
        record = wheel.read("vllm_standin-0.33.0.dist-info/RECORD").decode()
        rows = list(csv.reader(io.StringIO(record)))
        assert sorted(row[0] for row in rows) == sorted(names)
        for name, digest, size in rows:
            if name.endswith("RECORD"):
                assert digest == "" and size == ""
                continue
            data = wheel.read(name)
            expected = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == expected and int(size) == len(data), name
        assert "vllm = vllm_standin.cli:main" in wheel.read("vllm_standin-0.33.0.dist-info/entry_points.txt").decode()
        metadata = wheel.read("vllm_standin-0.33.0.dist-info/METADATA").decode()
        assert "Name: vllm_standin" in metadata and "Version: 0.33.0" in metadata and "tests only" in metadata
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                          "--disable-pip-version-check", "--target", str(target), first],
                         capture_output=True, text=True, check=False)
    assert pip.returncode == 0, pip.stderr
    script = target / "bin" / "vllm"
    assert script.exists()
    env = dict(os.environ, PYTHONPATH=str(target))
    version = subprocess.run([str(script), "--version"], env=env, capture_output=True, text=True, check=False)
    assert version.returncode == 0 and version.stdout.strip() == "0.33.0"


# --- command line ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, rc, message", [
    (["--max-lora-rank", "24"], 2, "argument --max-lora-rank: invalid choice: 24 (choose from 1, 8, 16, 32, 64, 128, 256, 320, 512)"),
    (["--enable-lora", "--lora-modules", '{"name": "a", "path": "/p", "rank": 8}'], 2,
     "Invalid fields for --lora-modules: {\"name\": \"a\", \"path\": \"/p\", \"rank\": 8} - "
     "LoRAModulePath.__init__() got an unexpected keyword argument 'rank'"),
    (["--enable-lora", "--lora-modules", '{"name": "a", "path": "/p"'], 2, "Invalid JSON format for --lora-modules"),
    (["--enable-lora", "--lora-modules", '{"name": "a"}'], 2, "missing 1 required positional argument: 'path'"),
    (["--enable-lora", "--lora-modules"], 2, "argument --lora-modules: expected at least one argument"),
    (["--dtype", "fp8"], 2, "argument --dtype: invalid choice: 'fp8'"),
    (["--max-model-len", "lots"], 2, "argument --max-model-len"),
    (["--port", "http"], 2, "argument --port: invalid int value: 'http'"),
    (["--bogus-flag"], 2, "unrecognized arguments: --bogus-flag"),
    (["--gpu-memory-utilization", "1.5"], 1, "gpu_memory_utilization"),
    (["--gpu-memory-utilization", "0"], 1, "gpu_memory_utilization"),
    (["--max-model-len", "65536"], 1, "User-specified max_model_len (65536) is greater than the derived max_model_len"),
    (["--lora-modules", "easy=/p"], 1, "LoRA is not enabled. Use --enable-lora"),
    (["--enable-lora", "--lora-modules", "a=/p", "a=/q"], 1, "'a' has already been loaded"),
])
def test_bad_arguments_fail_like_vllm(args, rc, message):
    proc = run_vllm(["serve", MODEL] + args)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert message in proc.stderr
    if rc == 2:
        assert "usage: vllm" in proc.stderr


@pytest.mark.parametrize("text, value", [("8192", 8192), ("4096", 4096), ("8k", 8000), ("8K", 8192),
                                         ("25.6k", 25600), ("1m", 1000000), ("1M", 1048576)])
def test_max_model_len_accepts_vllm_human_readable_forms(text, value):
    assert cli.human_readable_int(text) == value


def test_lora_modules_accepts_json_and_name_path_forms():
    args = cli.build_parser().parse_args(["serve", MODEL, "--enable-lora", "--lora-modules", LORA_EASY, "checklist=/a/b"])
    assert [(m.name, m.path, m.base_model_name) for m in args.lora_modules] == [
        ("easycontract", "temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1", MODEL), ("checklist", "/a/b", None)]


def test_version_and_unknown_subcommand():
    proc = run_vllm(["--version"])
    assert proc.returncode == 0 and proc.stdout.strip() == "0.33.0"
    assert run_vllm(["bench"]).returncode == 2


# --- the server -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served():
    server = Standin(SERVE_ARGS + ["--api-key", KEY]).wait_healthy()
    yield server
    assert server.stop() == 0


def test_api_key_guards_v1_but_not_health(served):
    assert get(served.base + "/health")[0] == 200
    assert get(served.base + "/version") == (200, b'{"version":"0.33.0"}')   # compact JSON, as FastAPI writes it
    status, body = get(served.base + "/v1/models")
    assert status == 401 and body == b'{"error":"Unauthorized"}'   # vLLM 0.32's exact body (tests/real_engine)
    assert get(served.base + "/v1/models", {"Authorization": "Bearer wrong"})[0] == 401
    assert get(served.base + "/v1/models", {"Authorization": KEY})[0] == 401
    assert get(served.base + "/v1/models", {"Authorization": "Bearer " + KEY})[0] == 200


def test_routes_outside_v1_answer_without_a_key_as_vllm_does(served):
    """vLLM 0.32.0's key middleware guards /v1, /v2 and /inference only (measured on the real engine): the stand-in
    is as lenient, so a test against it sees what an unguarded port gives away (POST /invocations: a completion)."""
    for path in ("/ping", "/version", "/load", "/metrics", "/openapi.json", "/docs"):
        assert get(served.base + path)[0] == 200, path
    status, body = post_json(served.base + "/invocations", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    status, body = post_json(served.base + "/invocations", {"model": MODEL, "prompt": "hi"})
    assert status == 200 and body["object"] == "text_completion"
    status, body = post_json(served.base + "/tokenize", {"model": MODEL, "prompt": "two words"})
    assert status == 200 and body["count"] == 2
    assert post_json(served.base + "/detokenize", {"model": MODEL, "tokens": [1, 2]})[0] == 200
    import json
    paths = json.loads(get(served.base + "/openapi.json")[1])["paths"]
    assert "/invocations" in paths and "/v1/chat/completions" in paths


def test_models_list_has_base_then_adapters(served):
    status, body = get(served.base + "/v1/models", {"Authorization": "Bearer " + KEY})
    import json
    payload = json.loads(body)
    assert status == 200 and payload["object"] == "list"
    cards = payload["data"]
    assert [c["id"] for c in cards] == [MODEL, "easycontract", "checklist"]
    assert cards[0]["root"] == MODEL and cards[0]["parent"] is None and cards[0]["max_model_len"] == 8192
    assert cards[1]["root"] == "temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1" and cards[1]["parent"] == MODEL
    assert cards[2]["root"] == "imyj1013/exaone-qlora-checklist-adapter" and cards[2]["parent"] == MODEL
    assert all(c["object"] == "model" and c["owned_by"] == "vllm" for c in cards)


def test_completions_accept_served_ids_only(served):
    auth = {"Authorization": "Bearer " + KEY}
    status, body = post_json(served.base + "/v1/chat/completions",
                             {"model": "checklist", "messages": [{"role": "user", "content": "hello there"}]}, auth)
    assert status == 200 and body["object"] == "chat.completion" and body["model"] == "checklist"
    assert body["choices"][0]["message"]["role"] == "assistant" and "hello there" in body["choices"][0]["message"]["content"]
    status, body = post_json(served.base + "/v1/completions", {"model": MODEL, "prompt": "abc"}, auth)
    assert status == 200 and body["object"] == "text_completion"
    status, body = post_json(served.base + "/v1/chat/completions",
                             {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, auth)
    assert status == 404 and body["error"]["type"] == "NotFoundError" and "`nope` does not exist" in body["error"]["message"]
    assert post_json(served.base + "/v1/chat/completions", {"model": MODEL}, {})[0] == 401


def test_max_tokens_ends_with_length_and_ignore_eos_fills_it(served):
    """vLLM: a completion cut at max_tokens has finish_reason "length"; with ignore_eos it is exactly max_tokens long.
    (tests/real_engine/test_2_fidelity.py compares this against the real engine.)"""
    auth = {"Authorization": "Bearer " + KEY}
    msgs = [{"role": "user", "content": "one two three four five six"}]
    status, body = post_json(served.base + "/v1/chat/completions", {"model": MODEL, "messages": msgs, "max_tokens": 2}, auth)
    assert status == 200 and body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 2
    status, body = post_json(served.base + "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 50,
                                                               "ignore_eos": True}, auth)
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 50
    status, body = post_json(served.base + "/v1/chat/completions", {"model": MODEL, "messages": msgs}, auth)
    usage = body["usage"]
    assert body["choices"][0]["finish_reason"] == "stop" and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_unknown_model_message_names_the_aliases_with_paths_hidden():
    server = Standin(["/srv/models/base"]).wait_healthy()
    try:
        status, body = post_json(server.base + "/v1/completions", {"model": "nope", "prompt": "x"})
    finally:
        assert server.stop() == 0
    assert status == 404 and body == {"error": {"message": "The model `nope` does not exist. Valid aliases: <path>",
                                                "type": "NotFoundError", "param": "model", "code": 404}}


def test_health_and_ping_are_empty_without_content_type(served):
    for method in ("GET", "POST"):
        req = urllib.request.Request(served.base + "/ping", method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=2) as resp:
            assert resp.status == 200 and resp.read() == b"" and resp.headers.get("content-type") is None
    with urllib.request.urlopen(served.base + "/health", timeout=2) as resp:
        assert resp.status == 200 and resp.read() == b"" and resp.headers.get("content-type") is None


def test_metrics_are_prometheus_text(served):
    status, body = get(served.base + "/metrics")
    text = body.decode()
    assert status == 200
    assert "# TYPE vllm:num_requests_running gauge" in text
    assert 'vllm:num_requests_running{engine="0",model_name="%s"} 0.0' % MODEL in text
    # max_lora is --max-loras (default 1), not the number of adapters served (2 here)
    assert 'vllm:lora_requests_info{max_lora="1",' in text
    assert 'vllm:request_success_total{engine="0",finished_reason="length",model_name="%s"}' % MODEL in text
    assert "# TYPE vllm:e2e_request_latency_seconds histogram" in text


def test_key_from_environment_and_never_printed():
    server = Standin([MODEL], env={"VLLM_API_KEY": KEY}).wait_healthy()
    try:
        assert get(server.base + "/v1/models")[0] == 401
        assert get(server.base + "/v1/models", {"Authorization": "Bearer " + KEY})[0] == 200
    finally:
        assert server.stop() == 0
    out = server.output()
    assert "Starting vLLM API server 0 on http://127.0.0.1:%d" % server.port in out
    assert KEY not in out


def test_binds_at_once_but_listens_only_when_ready():
    server = Standin([MODEL], env={"VLLM_STANDIN_STARTUP_DELAY": "1.5"})
    try:
        server.wait_line("Resolved architecture")  # bound by then; the port is taken but refuses connections
        assert get(server.base + "/health", timeout=0.5)[0] is None
        with socket.socket() as other:
            with pytest.raises(OSError):
                other.bind(("127.0.0.1", server.port))
        started = time.monotonic()
        server.wait_healthy(timeout=5)
        assert time.monotonic() - started > 0.5
    finally:
        assert server.stop() == 0


def test_port_in_use_fails_at_start():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = Standin([MODEL], port=port)
        assert server.proc.wait(5) == 1
        assert "Failed to bind" in server.output()


@pytest.mark.parametrize("delay", ["0", "5"])
def test_crash_mode_exits_1_with_cuda_oom(delay):
    server = Standin([MODEL], env={"VLLM_STANDIN_CRASH": "0.5", "VLLM_STANDIN_STARTUP_DELAY": delay})
    assert server.proc.wait(5) == 1
    assert "CUDA out of memory" in server.output()


def test_sigterm_during_startup_exits_cleanly():
    server = Standin([MODEL], env={"VLLM_STANDIN_STARTUP_DELAY": "30"})
    server.wait_line("Resolved architecture")   # in start-up, its SIGTERM handler set (a fixed sleep raced a busy CPU)
    assert server.stop() == 0


# --- graceful stop (--shutdown-timeout, vLLM >= 0.18: vllm#34730) -------------------------------------------------
def _chat_in_thread(base, results):
    import threading  # pylint: disable=import-outside-toplevel

    def run():
        try:
            results.append(post_json(base + "/v1/chat/completions",
                                     {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, timeout=10))
        except OSError as exc:   # the connection cut off (http.client.RemoteDisconnected is one)
            results.append((None, repr(exc)))
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_sigterm_with_shutdown_timeout_lets_the_request_in_flight_finish_and_refuses_new_ones():
    server = Standin([MODEL, "--shutdown-timeout", "10"], env={"VLLM_STANDIN_LATENCY": "1.5"}).wait_healthy()
    results = []
    thread = _chat_in_thread(server.base, results)
    time.sleep(0.5)
    t0 = time.monotonic()
    server.proc.terminate()
    time.sleep(0.3)
    assert get(server.base + "/health", timeout=1)[0] is None   # no new connection once the drain began
    thread.join(10)
    assert server.proc.wait(10) == 0
    assert results and results[0][0] == 200, results
    assert time.monotonic() - t0 < 5   # it exits when the last request is done, not at the timeout
    assert "[shutdown] EngineCore: start mode=drain timeout=10s" in server.output()


def test_sigterm_without_shutdown_timeout_cuts_the_request_in_flight_off():
    server = Standin([MODEL], env={"VLLM_STANDIN_LATENCY": "2"}).wait_healthy()
    results = []
    thread = _chat_in_thread(server.base, results)
    time.sleep(0.5)
    server.proc.terminate()
    thread.join(10)
    assert server.proc.wait(10) == 0
    assert results and results[0][0] != 200, results


def test_a_negative_shutdown_timeout_is_a_usage_error():
    proc = run_vllm(["serve", MODEL, "--shutdown-timeout", "-1"])
    assert proc.returncode == 2 and "--shutdown-timeout" in proc.stderr


def _post_lora(url, payload, headers=None):
    """POST to a runtime LoRA route: (status, text) on success (plain text, as vLLM's PlainTextResponse), else
    (status, the JSON error)."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers=dict({"Content-Type": "application/json"}, **(headers or {})))
    try:
        with urllib.request.urlopen(request, timeout=2.0) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_runtime_lora_routes_only_when_allowed_with_vllms_checks(tmp_path):
    """vLLM 0.32's /v1/load_lora_adapter and /v1/unload_lora_adapter exist only with VLLM_ALLOW_RUNTIME_LORA_UPDATING
    true (else 404), behind the key, with vLLM's checks: both fields, no second load of a name, a directory holding
    adapter_config.json, an unload of a name it serves."""
    auth = {"Authorization": "Bearer " + KEY}
    off = Standin(SERVE_ARGS + ["--api-key", KEY]).wait_healthy()
    try:
        assert _post_lora(off.base + "/v1/unload_lora_adapter", {"lora_name": "checklist"}, auth)[0] == 404
    finally:
        assert off.stop() == 0
    adapter = tmp_path / "extra"
    adapter.mkdir()
    server = Standin(SERVE_ARGS + ["--api-key", KEY], env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}).wait_healthy()
    try:
        load, unload = server.base + "/v1/load_lora_adapter", server.base + "/v1/unload_lora_adapter"
        assert _post_lora(load, {"lora_name": "extra", "lora_path": str(adapter)})[0] == 401
        status, body = _post_lora(load, {"lora_name": "extra", "lora_path": str(adapter)}, auth)
        assert status == 404 and body["error"]["message"] == "Loading lora extra failed: No adapter found for <path>"
        (adapter / "adapter_config.json").write_text("{}")
        assert _post_lora(load, {"lora_name": "extra"}, auth)[0] == 400
        assert _post_lora(load, {"lora_name": "checklist", "lora_path": str(adapter)}, auth)[0] == 400
        assert _post_lora(load, {"lora_name": "extra", "lora_path": str(adapter)}, auth) == (
            200, "Success: LoRA adapter 'extra' added successfully.")
        assert _post_lora(unload, {"lora_name": "checklist"}, auth) == (200, "Success: LoRA adapter 'checklist' removed successfully.")
        assert _post_lora(unload, {"lora_name": "checklist"}, auth)[0] == 404
        ids = [c["id"] for c in json.loads(get(server.base + "/v1/models", auth)[1])["data"]]
        assert ids == [MODEL, "easycontract", "extra"]
    finally:
        assert server.stop() == 0


def test_adapters_load_as_vllm_resolves_them_at_start_and_at_runtime(tmp_path):
    """vLLM loads each --lora-modules adapter at start through the same load as /v1/load_lora_adapter
    (init_static_loras: "Raises if any fail to load") and resolves its path as get_adapter_absolute_path does: a local
    directory must hold adapter_config.json; a repo id is read from HF_HOME's hub cache (refs/main), and offline
    (HF_HUB_OFFLINE=1) one not in the cache fails. Online there is no hub here: an uncached repo id counts as downloaded
    (the default adapters of every stand-in setup), at start and at runtime alike."""
    home = tmp_path / "hf"
    cached = home / "hub" / "models--org--cached" / "snapshots" / "c0ffee"
    cached.mkdir(parents=True)
    (cached / "adapter_config.json").write_text("{}")
    (home / "hub" / "models--org--cached" / "refs").mkdir()
    (home / "hub" / "models--org--cached" / "refs" / "main").write_text("c0ffee")
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["serve", MODEL, "--host", "127.0.0.1", "--enable-lora"]
    env = {"HF_HOME": str(home)}
    for lora, offline, problem in [
            ("a=%s" % empty, "", "Loading lora a failed: No adapter found for %s" % empty),
            ("a=org/not-cached", "1", "Loading lora a failed: No adapter found for org/not-cached")]:
        proc = run_vllm(base + ["--port", str(free_port()), "--lora-modules", lora], env=dict(env, HF_HUB_OFFLINE=offline))
        assert proc.returncode == 1 and "ValueError: " + problem in proc.stderr, proc.stderr[-2000:]
    auth = {"Authorization": "Bearer " + KEY}

    def load(server, name, path):
        return _post_lora(server.base + "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}, auth)[0]

    server = Standin([MODEL, "--api-key", KEY, "--enable-lora", "--lora-modules", "c=org/cached"],
                     env=dict(env, HF_HUB_OFFLINE="1", VLLM_ALLOW_RUNTIME_LORA_UPDATING="1")).wait_healthy()
    try:
        assert load(server, "n", "org/not-cached") == 404 and load(server, "d", str(cached)) == 200
        ids = [c["id"] for c in json.loads(get(server.base + "/v1/models", auth)[1])["data"]]
        assert ids == [MODEL, "c", "d"]
    finally:
        assert server.stop() == 0
    online = Standin([MODEL, "--api-key", KEY, "--enable-lora", "--lora-modules", "c=org/not-cached"],
                     env=dict(env, VLLM_ALLOW_RUNTIME_LORA_UPDATING="1")).wait_healthy()
    try:
        assert load(online, "e", "org/other") == 200
    finally:
        assert online.stop() == 0
