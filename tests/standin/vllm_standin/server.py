"""HTTP side of vllm_standin (stand-in for vLLM 0.33.0, tests only): the OpenAI-compatible API shapes."""
import hmac
import json
import os
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from vllm_standin import __version__

HTTP_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                405: "Method Not Allowed", 500: "Internal Server Error"}
GUARDED_PREFIXES = ("/v1", "/v2", "/inference")
# vLLM 0.32's finish reasons, each a sample of vllm:request_success_total (zero until one happens)
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
# vLLM's histogram buckets (vllm/v1/metrics/loggers.py) of the two latency histograms the stand-in carries
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
                80.0, 160.0, 640.0, 2560.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
               960.0, 1920.0, 7680.0)
METRICS_CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"   # prometheus_client's, as vLLM 0.32 serves it
# Routes the stand-in serves (also listed by its /openapi.json, which vLLM serves without a key too)
OPENAPI_PATHS = {
    "/health": ["get"], "/ping": ["get", "post"], "/version": ["get"], "/load": ["get"], "/metrics": ["get"],
    "/tokenize": ["post"], "/detokenize": ["post"], "/invocations": ["post"], "/v1/models": ["get"],
    "/v1/chat/completions": ["post"], "/v1/completions": ["post"],
}
DOCS_HTML = ("<!DOCTYPE html><html><head><title>FastAPI - Swagger UI</title></head>"
             "<body><div id=\"swagger-ui\"></div></body></html>")


def runtime_lora_updating():
    """vLLM's envs.VLLM_ALLOW_RUNTIME_LORA_UPDATING: true for "1" or "true", any case."""
    return os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "0").strip().lower() in ("1", "true")


def sanitize_message(message):
    """vLLM's error-message sanitiser (entrypoints/serve/exception_handling/utils.py): paths become <path>."""
    message = re.sub(r" at 0x[0-9a-fA-F]+>", ">", message)
    message = re.sub(r"/(?:home|usr|opt|var|tmp|root|lib|mnt|srv)(?:/[\w.\-]+)+", "<path>", message)
    message = re.sub(r"(?:/[\w\-]+)+/[\w\-]+\.\w+", "<path>", message)
    return message.strip()


def _hexid():
    return uuid.uuid4().hex[:16]   # vLLM's ids: a prefix and 16 hex digits


def _truthy(value):
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def adapter_dir(lora_path):
    """Where vLLM 0.32 reads an adapter (vllm/lora/utils.py get_adapter_absolute_path): an absolute path as it is (present
    or not), ~ expanded, a relative path that exists; anything else is a hub repo id, huggingface_hub.snapshot_download
    (refs/main of HF_HOME's hub cache). Offline (HF_HUB_OFFLINE) a repo id not in the cache stays as given, and the load
    then finds no adapter. Online there is no hub here: the stand-in takes an uncached repo id as downloaded (None)."""
    if os.path.isabs(lora_path):
        return lora_path
    if lora_path.startswith("~"):
        return os.path.expanduser(lora_path)
    if os.path.exists(lora_path):
        return os.path.abspath(lora_path)
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    storage = os.path.join(home, "hub", "models--" + lora_path.replace("/", "--"))
    try:
        with open(os.path.join(storage, "refs", "main")) as ref:
            return os.path.join(storage, "snapshots", ref.read())
    except OSError:
        return lora_path if _truthy(os.environ.get("HF_HUB_OFFLINE")) else None


def adapter_problem(name, lora_path):
    """vLLM's message when it cannot load the adapter (at start, --lora-modules, or at runtime), else None: the
    directory must hold adapter_config.json (PEFTHelper.from_local_dir)."""
    where = adapter_dir(lora_path)
    if where is None or os.path.isfile(os.path.join(where, "adapter_config.json")):
        return None
    return "Loading lora %s failed: No adapter found for %s" % (name, lora_path)


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 2048  # uvicorn's default backlog

    def __init__(self, sock, state, log):
        # The socket is already bound (like vLLM's run_server); only start listening now.
        ThreadingHTTPServer.__init__(self, sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.address_family = sock.family
        self.server_address = sock.getsockname()
        self.server_activate()
        self.state = state
        self.log = log
        self.lock = threading.Lock()
        self.counters = {"prompt_tokens": 0, "generation_tokens": 0, "finished": dict.fromkeys(FINISH_REASONS, 0),
                         "e2e": []}
        self.in_flight = 0
        self.idle = threading.Condition(self.lock)

    def request_started(self):
        with self.lock:
            self.in_flight += 1

    def request_done(self):
        with self.lock:
            self.in_flight -= 1
            self.idle.notify_all()

    def wait_idle(self, timeout):
        """Wait until no request is in flight (True) or `timeout` seconds passed (False)."""
        with self.lock:
            return self.idle.wait_for(lambda: self.in_flight == 0, timeout)


def make_server(sock, state, log):
    return StandinServer(sock, state, log)


def _tokens(text):
    return max(1, len(str(text).split()))


class Handler(BaseHTTPRequestHandler):
    server_version = "uvicorn"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    # --- plumbing -------------------------------------------------------------------------------------
    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        return

    def _access_log(self, status):
        if self.server.state["access_log"]:
            sys.stdout.write('INFO:     %s:%d - "%s %s %s" %d %s\n' % (
                self.client_address[0], self.client_address[1], self.command, self.path,
                self.request_version, status, HTTP_REASONS.get(status, "")))
            sys.stdout.flush()

    def _send(self, status, body=b"", content_type="application/json", headers=None):
        """content_type None sends none (vLLM's /health and /ping: an empty 200 without one). JSON is compact, as
        FastAPI's JSONResponse and pydantic's model_dump_json write it."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body, separators=(",", ":")).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status, HTTP_REASONS.get(status))
        if content_type:
            self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._access_log(status)

    def _error(self, status, message, err_type, param=None):
        self._send(status, {"error": {"message": sanitize_message(message), "type": err_type, "param": param,
                                      "code": status}})

    def _route(self):
        path = self.path.split("?", 1)[0]
        root = self.server.state["root_path"]
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        return path

    def _authorized(self, path):
        keys = self.server.state["api_keys"]
        if not keys or not path.startswith(GUARDED_PREFIXES):
            return True
        header = self.headers.get("Authorization", "")
        token = header[len("Bearer "):] if header.startswith("Bearer ") else None
        if token is None:
            return False
        return any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)

    def _read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw or b"null")
        except ValueError as exc:
            self._error(400, "JSON decode error: %s" % exc, "BadRequestError")
            return None
        if not isinstance(data, dict):
            self._error(400, "Input should be a valid dictionary or object to extract fields from",
                        "BadRequestError")
            return None
        return data

    # --- dispatch -------------------------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self._route()
        if not self._authorized(path):
            self._send(401, {"error": "Unauthorized"})
            return
        if path in ("/health", "/ping"):
            self._send(200, b"", content_type=None)
        elif path == "/load":
            self._send(200, {"server_load": 0})
        elif path == "/openapi.json":
            self._send(200, {"openapi": "3.1.0", "info": {"title": "FastAPI", "version": "0.1.0"},
                             "paths": {p: {m: {} for m in ms} for p, ms in OPENAPI_PATHS.items()}})
        elif path == "/docs":
            self._send(200, DOCS_HTML, content_type="text/html; charset=utf-8")
        elif path == "/version":
            self._send(200, {"version": __version__})
        elif path == "/v1/models":
            self._send(200, self.models())
        elif path == "/metrics":
            self._send(200, self.metrics(), content_type=METRICS_CONTENT_TYPE)
        elif path in ("/v1/chat/completions", "/v1/completions", "/invocations", "/tokenize", "/detokenize"):
            self._send(405, {"detail": "Method Not Allowed"})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self):
        """A request in flight until its answer is sent (what a drain at SIGTERM waits for)."""
        self.server.request_started()
        try:
            self._post()
        finally:
            self.server.request_done()

    def _post(self):
        path = self._route()
        if not self._authorized(path):
            self._send(401, {"error": "Unauthorized"})
            return
        if path == "/ping":   # POST /ping too, like vLLM's SageMaker routes
            self._send(200, b"", content_type=None)
            return
        if path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter") and runtime_lora_updating():
            data = self._read_json()
            if data is not None:
                self._lora_update(path, data)
            return
        if path not in ("/v1/chat/completions", "/v1/completions", "/invocations", "/tokenize", "/detokenize"):
            if path in ("/health", "/version", "/v1/models", "/metrics", "/load", "/openapi.json", "/docs"):
                self._send(405, {"detail": "Method Not Allowed"})
            else:
                self._send(404, {"detail": "Not Found"})
            return
        data = self._read_json()
        if data is None:
            return
        if path == "/invocations":   # vLLM's SageMaker route: a chat or a completion, by the body (NOT key-guarded)
            path = "/v1/chat/completions" if "messages" in data else "/v1/completions"
        model = data.get("model") or self.server.state["served"]
        if model not in self.served_ids():
            self._error(404, "The model `%s` does not exist. Valid aliases: %s." % (model, self.server.state["served"]),
                        "NotFoundError", "model")
            return
        if path == "/tokenize":   # NOT key-guarded in vLLM either; the stand-in's tokens are words
            text = data.get("prompt") or " ".join(str(m.get("content", "")) for m in data.get("messages") or []
                                                  if isinstance(m, dict))
            tokens = list(range(1, _tokens(text) + 1))
            self._send(200, {"count": len(tokens), "max_model_len": self.server.state["max_model_len"],
                             "tokens": tokens, "token_strs": None})
            return
        if path == "/detokenize":
            self._send(200, {"prompt": " ".join("t%d" % t for t in data.get("tokens") or [])})
            return
        if path == "/v1/chat/completions":
            messages = data.get("messages")
            if not isinstance(messages, list) or not messages:
                self._error(400, "Field required: messages", "BadRequestError", "messages")
                return
            prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
            last = str(messages[-1].get("content", "")) if isinstance(messages[-1], dict) else ""
        else:
            if "prompt" not in data:
                self._error(400, "Field required: prompt", "BadRequestError", "prompt")
                return
            prompt = data["prompt"] if isinstance(data["prompt"], str) else json.dumps(data["prompt"])
            last = prompt
        started = time.time()
        time.sleep(float(os.environ.get("VLLM_STANDIN_LATENCY", "0") or 0))
        words = ("[vllm_standin %s] %s" % (model, last[:200])).split()
        max_tokens = data.get("max_tokens") or data.get("max_completion_tokens")
        finish = "stop"
        if isinstance(max_tokens, int) and max_tokens > 0:
            # vLLM stops at max_tokens with finish_reason "length"; ignore_eos generates exactly max_tokens
            if len(words) >= max_tokens or data.get("ignore_eos"):
                finish = "length"
            words = (words + ["..."] * max_tokens)[:max_tokens] if data.get("ignore_eos") else words[:max_tokens]
        text = " ".join(words)
        # vLLM's usage key order
        usage = {"prompt_tokens": _tokens(prompt), "total_tokens": 0, "completion_tokens": len(words),
                 "prompt_tokens_details": None, "completion_tokens_details": None}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        with self.server.lock:
            self.server.counters["finished"][finish] += 1
            self.server.counters["prompt_tokens"] += usage["prompt_tokens"]
            self.server.counters["generation_tokens"] += usage["completion_tokens"]
            self.server.counters["e2e"].append(time.time() - started)
        created = int(time.time())
        fingerprint = "vllm-%s-standin" % __version__
        if path == "/v1/chat/completions":
            if data.get("stream"):
                self._stream_chat(model, text, created, finish)
                return
            body = {"id": "chatcmpl-" + _hexid(), "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                         "annotations": None, "audio": None, "function_call": None,
                                                         "reasoning": None},
                                 "logprobs": None, "finish_reason": finish, "stop_reason": None, "token_ids": None,
                                 "routed_experts": None}],
                    "service_tier": None, "system_fingerprint": fingerprint, "usage": usage,
                    "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None,
                    "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}
        else:
            body = {"id": "cmpl-" + _hexid(), "object": "text_completion", "created": created, "model": model,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                                 "stop_reason": None, "token_ids": None, "prompt_logprobs": None,
                                 "prompt_token_ids": None, "routed_experts": None}],
                    "service_tier": None, "system_fingerprint": fingerprint, "usage": usage,
                    "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}
        self._send(200, body)

    def _stream_chat(self, model, text, created, finish="stop"):
        cid = "chatcmpl-" + _hexid()
        self.send_response(200, "OK")
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        chunks = [{"role": "assistant", "content": ""}] + [{"content": w + " "} for w in text.split()]
        for i, delta in enumerate(chunks):
            last = i == len(chunks) - 1
            event = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish if last else None}]}
            self.wfile.write(("data: %s\n\n" % json.dumps(event, separators=(",", ":"))).encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self._access_log(200)

    def _lora_update(self, path, data):
        """vLLM 0.32's runtime LoRA routes (serving_models.py), registered only when VLLM_ALLOW_RUNTIME_LORA_UPDATING
        is true: the same checks, status codes and texts; a load needs the adapter's adapter_config.json on disk."""
        loras = self.server.state["loras"]
        name = data.get("lora_name")
        known = [lora for lora in loras if lora["name"] == name]
        if path == "/v1/unload_lora_adapter":
            if not name:
                self._error(400, "'lora_name' needs to be provided to unload a LoRA adapter.", "BadRequestError")
            elif not known:
                self._error(404, "The lora adapter '%s' cannot be found." % name, "NotFoundError")
            else:
                loras.remove(known[0])
                self._send(200, ("Success: LoRA adapter '%s' removed successfully." % name).encode(), "text/plain; charset=utf-8")
            return
        lora_path = data.get("lora_path")
        if not name or not lora_path:
            self._error(400, "Both 'lora_name' and 'lora_path' must be provided.", "BadRequestError")
        elif known and not data.get("load_inplace"):
            self._error(400, "The lora adapter '%s' has already been loaded. If you want to load the adapter in place, "
                             "set 'load_inplace' to True." % name, "BadRequestError")
        else:
            problem = adapter_problem(name, lora_path)
            if problem:
                self._error(404, problem, "NotFoundError")
                return
            for old in known:
                loras.remove(old)
            loras.append({"name": name, "path": lora_path, "base_model_name": data.get("base_model_name")})
            self._send(200, ("Success: LoRA adapter '%s' added successfully." % name).encode(), "text/plain; charset=utf-8")

    # --- payloads -------------------------------------------------------------------------------------
    def served_ids(self):
        state = self.server.state
        return [state["served"]] + [lora["name"] for lora in state["loras"]]

    def models(self):
        state = self.server.state

        def permission():
            return [{"id": "modelperm-" + _hexid(), "object": "model_permission",
                     "created": state["created"], "allow_create_engine": False, "allow_sampling": True,
                     "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                     "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False}]

        cards = [{"id": state["served"], "object": "model", "created": state["created"], "owned_by": "vllm",
                  "root": state["model"], "parent": None, "max_model_len": state["max_model_len"],
                  "permission": permission()}]
        for lora in state["loras"]:
            cards.append({"id": lora["name"], "object": "model", "created": state["created"],
                          "owned_by": "vllm", "root": lora["path"],
                          "parent": lora["base_model_name"] or state["served"], "max_model_len": None,
                          "permission": permission()})
        return {"object": "list", "data": cards}

    def metrics(self):
        """The vllm: families the collection documents, as vLLM 0.32 writes them: labels in sorted order, every
        finish reason of vllm:request_success_total, lora_requests_info's max_lora = --max-loras (how many adapters
        one batch may hold, not how many are served)."""
        state = self.server.state
        with self.server.lock:
            counters = dict(self.server.counters, finished=dict(self.server.counters["finished"]),
                            e2e=list(self.server.counters["e2e"]))
        label = 'engine="0",model_name="%s"' % state["served"]

        def histogram(name, help_text, buckets, values):
            out = ["# HELP %s %s" % (name, help_text), "# TYPE %s histogram" % name]
            for le in buckets:
                out.append('%s_bucket{engine="0",le="%s",model_name="%s"} %.1f'
                           % (name, le, state["served"], sum(1 for v in values if v <= le)))
            out.append('%s_bucket{engine="0",le="+Inf",model_name="%s"} %.1f' % (name, state["served"], len(values)))
            out.append("%s_count{%s} %.1f" % (name, label, len(values)))
            out.append("%s_sum{%s} %r" % (name, label, float(sum(values))))
            return out

        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            "vllm:num_requests_running{%s} 0.0" % label,
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            "vllm:num_requests_waiting{%s} 0.0" % label,
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            "vllm:kv_cache_usage_perc{%s} 0.0" % label,
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            "vllm:prompt_tokens_total{%s} %.1f" % (label, counters["prompt_tokens"]),
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            "vllm:generation_tokens_total{%s} %.1f" % (label, counters["generation_tokens"]),
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
        ]
        lines += ['vllm:request_success_total{engine="0",finished_reason="%s",model_name="%s"} %.1f'
                  % (reason, state["served"], counters["finished"][reason]) for reason in FINISH_REASONS]
        lines += histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                           TTFT_BUCKETS, counters["e2e"])
        lines += histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                           E2E_BUCKETS, counters["e2e"])
        lines += [
            "# HELP vllm:lora_requests_info Running stats on lora requests.",
            "# TYPE vllm:lora_requests_info gauge",
            'vllm:lora_requests_info{max_lora="%d",running_lora_adapters="",waiting_lora_adapters=""} %r'
            % (state["max_loras"], time.time()),
        ]
        return "\n".join(lines) + "\n"
