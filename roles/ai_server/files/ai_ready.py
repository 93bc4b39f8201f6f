# Managed by the Ansible collection llmops.gce_vllm (role ai_server): edits here are overwritten.
"""Readiness of a serving host, apart from liveness (issue 11).

``GET /ready`` answers 200 only when all of these hold, each asked now (no cache):

1. the host is not draining: the drain file (``READY_DRAIN_FILE``, root's, in a root-owned directory: only root
   on the host itself can create or remove it) does not exist;
2. the AI server's own liveness (``READY_APP_HEALTH_URL``, its loopback ``/health``) answers 200;
3. vLLM's ``/health`` (``READY_VLLM_BASE_URL`` without its ``/v1``) answers 200;
4. vLLM's ``/v1/models`` lists every name of ``READY_MODELS`` (the base model and every configured adapter).

Else 503, with the first reason that failed. ``/health`` stays the AI server's (liveness): a draining host is alive.
The authenticating proxy of the AI server routes ``/ready`` on the public port here; this listens on loopback only.
The body names no model, adapter or address (the path is open without a key); the journal says which one is missing,
once per change of state. Python standard library only: it runs with the host's python3, outside the app's venv.

Configuration (environment, from a root-only env file): READY_LISTEN (127.0.0.1), READY_PORT, READY_DRAIN_FILE,
READY_APP_HEALTH_URL, READY_VLLM_BASE_URL, READY_VLLM_API_KEY (sent as Bearer, may be empty), READY_MODELS (a
JSON list), READY_TIMEOUT (seconds per request, default 2).
"""

import json
import os
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Config:
    """What the checker asks, read once from the environment."""

    def __init__(self, env):
        self.listen = env.get("READY_LISTEN", "127.0.0.1")
        self.port = int(env["READY_PORT"])
        self.drain_file = env["READY_DRAIN_FILE"]
        self.app_health_url = env.get("READY_APP_HEALTH_URL", "")
        base = env["READY_VLLM_BASE_URL"].rstrip("/")
        self.vllm_models_url = base + "/models"
        self.vllm_health_url = (base[: -len("/v1")] if base.endswith("/v1") else base) + "/health"
        self.api_key = env.get("READY_VLLM_API_KEY", "")
        self.models = json.loads(env.get("READY_MODELS", "[]"))
        if not isinstance(self.models, list) or not all(isinstance(m, str) for m in self.models):
            raise ValueError("READY_MODELS must be a JSON list of names")
        self.timeout = float(env.get("READY_TIMEOUT", "2"))


def _get(url, timeout, key=""):
    """(status, body) of a GET; status 0 when nothing answered."""
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # nosec - loopback URLs from the role
            return resp.status, resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, ValueError):
        return 0, b""


def check(cfg):
    """(ready, public reason, detail for the journal)."""
    if os.path.lexists(cfg.drain_file):
        return False, "draining", "the drain file %s exists" % cfg.drain_file
    if cfg.app_health_url:
        status = _get(cfg.app_health_url, cfg.timeout)[0]
        if status != 200:
            return False, "the AI server is not healthy", "%s answered %s" % (cfg.app_health_url, status or "nothing")
    status = _get(cfg.vllm_health_url, cfg.timeout)[0]
    if status != 200:
        return False, "vLLM is not healthy", "%s answered %s" % (cfg.vllm_health_url, status or "nothing")
    status, body = _get(cfg.vllm_models_url, cfg.timeout, cfg.api_key)
    if status != 200:
        return False, "vLLM does not list its models", "%s answered %s" % (cfg.vllm_models_url, status or "nothing")
    try:
        served = {card["id"] for card in json.loads(body)["data"]}
    except (ValueError, KeyError, TypeError):
        return False, "vLLM does not list its models", "%s answered no model list" % cfg.vllm_models_url
    missing = [name for name in cfg.models if name not in served]
    if missing:
        return (False, "vLLM serves %d of the %d configured models" % (len(cfg.models) - len(missing), len(cfg.models)),
                "vLLM does not serve %s" % ", ".join(missing))
    return True, "ready", "ready"


class Checker:
    """Answers /ready; logs each change of state once."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._last = None
        self._lock = threading.Lock()

    def answer(self):
        ready, reason, detail = check(self.cfg)
        with self._lock:
            if detail != self._last:
                print(("ready" if ready else "not ready: " + detail), file=sys.stderr, flush=True)
                self._last = detail
        return (200 if ready else 503), {"ready": ready, "reason": reason}


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def make_server(cfg):
    checker = Checker(cfg)

    class Handler(BaseHTTPRequestHandler):
        server_version = "llmops-ready"
        sys_version = ""

        def _reply(self, head_only):
            if self.path.split("?", 1)[0] != "/ready":
                status, body = 404, {"error": "not found"}
            else:
                status, body = checker.answer()
            data = (json.dumps(body) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not head_only:
                self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's name
            self._reply(False)

        def do_HEAD(self):  # noqa: N802
            self._reply(True)

        def log_message(self, format, *args):  # pylint: disable=redefined-builtin
            pass   # the load balancer asks every few seconds: only changes of state are logged

    return _Server((cfg.listen, cfg.port), Handler)


def main():
    server = make_server(Config(os.environ))
    print("readiness on %s:%d/ready" % server.server_address[:2], file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
