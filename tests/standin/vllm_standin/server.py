"""HTTP side of vllm_standin (stand-in for vLLM 0.33.0, tests only): the OpenAI-compatible API shapes."""
import hmac
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from vllm_standin import __version__

HTTP_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                405: "Method Not Allowed", 500: "Internal Server Error"}
GUARDED_PREFIXES = ("/v1", "/v2", "/inference")


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
        self.counters = {"requests": 0, "prompt_tokens": 0, "generation_tokens": 0}


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
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status, HTTP_REASONS.get(status))
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._access_log(status)

    def _error(self, status, message, err_type, param=None):
        self._send(status, {"error": {"message": message, "type": err_type, "param": param, "code": status}})

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
        if path == "/health":
            self._send(200, b"")
        elif path == "/ping":
            self._send(200, b"")
        elif path == "/version":
            self._send(200, {"version": __version__})
        elif path == "/v1/models":
            self._send(200, self.models())
        elif path == "/metrics":
            self._send(200, self.metrics(), content_type="text/plain; version=0.0.4; charset=utf-8")
        elif path in ("/v1/chat/completions", "/v1/completions"):
            self._send(405, {"detail": "Method Not Allowed"})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self):
        path = self._route()
        if not self._authorized(path):
            self._send(401, {"error": "Unauthorized"})
            return
        if path not in ("/v1/chat/completions", "/v1/completions"):
            if path in ("/health", "/ping", "/version", "/v1/models", "/metrics"):
                self._send(405, {"detail": "Method Not Allowed"})
            else:
                self._send(404, {"detail": "Not Found"})
            return
        data = self._read_json()
        if data is None:
            return
        model = data.get("model") or self.server.state["served"]
        if model not in self.served_ids():
            self._error(404, "The model `%s` does not exist." % model, "NotFoundError", "model")
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
        text = "[vllm_standin %s] %s" % (model, last[:200])
        max_tokens = data.get("max_tokens") or data.get("max_completion_tokens")
        if isinstance(max_tokens, int) and max_tokens > 0:
            text = " ".join(text.split()[:max_tokens])
        usage = {"prompt_tokens": _tokens(prompt), "completion_tokens": _tokens(text)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        with self.server.lock:
            self.server.counters["requests"] += 1
            self.server.counters["prompt_tokens"] += usage["prompt_tokens"]
            self.server.counters["generation_tokens"] += usage["completion_tokens"]
        created = int(time.time())
        if path == "/v1/chat/completions":
            if data.get("stream"):
                self._stream_chat(model, text, created)
                return
            body = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                         "reasoning_content": None, "tool_calls": []},
                                 "logprobs": None, "finish_reason": "stop", "stop_reason": None}],
                    "usage": usage, "prompt_logprobs": None}
        else:
            body = {"id": "cmpl-" + uuid.uuid4().hex, "object": "text_completion", "created": created,
                    "model": model,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop",
                                 "stop_reason": None, "prompt_logprobs": None}],
                    "usage": usage}
        self._send(200, body)

    def _stream_chat(self, model, text, created):
        cid = "chatcmpl-" + uuid.uuid4().hex
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
                                  "finish_reason": "stop" if last else None}]}
            self.wfile.write(("data: %s\n\n" % json.dumps(event)).encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self._access_log(200)

    # --- payloads -------------------------------------------------------------------------------------
    def served_ids(self):
        state = self.server.state
        return [state["served"]] + [lora["name"] for lora in state["loras"]]

    def models(self):
        state = self.server.state

        def permission():
            return [{"id": "modelperm-" + uuid.uuid4().hex, "object": "model_permission",
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
        state = self.server.state
        with self.server.lock:
            counters = dict(self.server.counters)
        label = 'engine="0",model_name="%s"' % state["served"]
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
            "# HELP vllm:lora_requests_info Running stats on lora requests.",
            "# TYPE vllm:lora_requests_info gauge",
            'vllm:lora_requests_info{max_lora="%d",running_lora_adapters="",waiting_lora_adapters=""} %.1f'
            % (len(state["loras"]), time.time()),
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
            'vllm:request_success_total{%s,finished_reason="stop"} %.1f' % (label, counters["requests"]),
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            "vllm:prompt_tokens_total{%s} %.1f" % (label, counters["prompt_tokens"]),
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            "vllm:generation_tokens_total{%s} %.1f" % (label, counters["generation_tokens"]),
        ]
        return "\n".join(lines) + "\n"
