"""A stand-in AI server for the load balancer's host test (tests only; stdlib).

It answers what the balancer meets on an AI server's public port: ``GET /ready`` 200, or 503 while
``/run/backend-standin/notready`` exists (the drain file's effect on the real readiness checker, roles/ai_server),
``GET /health`` 200 always (liveness), and ``POST /v1/chat`` 200 with this host's name after BACKEND_LATENCY seconds.
The real AI server and vLLM are converged by the fleet suite's roll tests; this one isolates the balancer.
"""
import json
import os
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NOT_READY = "/run/backend-standin/notready"
LATENCY = float(os.environ.get("BACKEND_LATENCY", "0.05"))
NAME = socket.gethostname()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        if self.path == "/ready":
            ready = not os.path.exists(NOT_READY)
            self._send(200 if ready else 503, {"ready": ready, "host": NAME})
        elif self.path == "/health":
            self._send(200, {"status": "ok", "host": NAME})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path != "/v1/chat":
            self._send(404, {"detail": "Not Found"})
            return
        time.sleep(LATENCY)
        self._send(200, {"host": NAME})

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True


if __name__ == "__main__":
    Server(("0.0.0.0", 8000), Handler).serve_forever()
