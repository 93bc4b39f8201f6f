"""`nvitop-exporter` stand-in: the real 1.7.2 command line, serving the real /metrics body of an NVIDIA H200.

The body is tests/fixtures/gpu/nvitop-exporter-1.7.2-h200-2026-12-02.prom (bundled as fixture.prom when the wheel
is built), with the `hostname` label set to --hostname, as the real exporter sets it. Like the real one: the
same flags and defaults (bind 127.0.0.1, port 8000, interval >= 0.25), `--certfile`/`--keyfile` together,
`Content-Type: text/plain; version=0.0.4; charset=utf-8` (prometheus_client's WSGI server) on every path,
the startup lines on stderr, SIGTERM ends it. Unlike it: no NVML, so the values never change (except the
fixture's own), and TLS is refused (exit 2) rather than served.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FIXTURE_HOSTNAME = 'hostname="h200"'


def _fixture() -> str:
    path = os.environ.get("NVITOP_EXPORTER_STANDIN_FIXTURE") or os.path.join(os.path.dirname(__file__), "fixture.prom")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def body(hostname: str) -> bytes:
    """The /metrics body for an exporter started with --hostname HOSTNAME."""
    return _fixture().replace(FIXTURE_HOSTNAME, 'hostname="%s"' % hostname.replace("\\", "\\\\").replace('"', '\\"')).encode()


def _posfloat(value: str) -> float:
    num = float(value)
    if num <= 0:
        raise ValueError
    return num


_posfloat.__name__ = "positive float"


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nvitop-exporter", description="Prometheus exporter built on top of `nvitop`.")
    parser.add_argument("--version", "-V", action="version", version="%(prog)s 1.7.2 (nvitop 1.7.2)")
    parser.add_argument("--hostname", "--host", "-H", dest="hostname", default=socket.gethostname())
    parser.add_argument("--bind-address", "--bind", "-B", dest="bind_address", default="127.0.0.1")
    parser.add_argument("--port", "-p", type=int, default=8000)
    parser.add_argument("--interval", type=_posfloat, default=1.0)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--client-cafile")
    parser.add_argument("--client-capath")
    parser.add_argument("--client-auth-required", action="store_true")
    args = parser.parse_args(argv)
    if args.interval < 0.25:
        parser.error("the interval %0.2gs is too short, which may cause performance issues. Expected 1/4 or higher." % args.interval)
    if (args.certfile is None) != (args.keyfile is None):
        parser.error("`--certfile` and `--keyfile` must be specified together.")
    if args.certfile is not None:
        parser.error("the stand-in serves no TLS")
    return args


def _stop(*_):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_arguments(argv)
    payload = body(args.hostname)

    class Handler(BaseHTTPRequestHandler):
        server_version = "WSGIServer/0.2"

        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_):
            pass

    family = socket.AF_INET6 if ":" in args.bind_address else socket.AF_INET
    ThreadingHTTPServer.address_family = family
    try:
        server = ThreadingHTTPServer((args.bind_address, args.port), Handler)
    except OSError as exc:
        sys.stderr.write("ERROR: %s\n" % exc)
        return 1
    signal.signal(signal.SIGTERM, _stop)
    sys.stderr.write("INFO: Found 1 device(s).\nINFO: GPU 0: NVIDIA H200 (stand-in, fixture)\n"
                     "INFO: Start the exporter on %s at http://%s:%d/metrics.\n" % (args.hostname, args.bind_address, args.port))
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
