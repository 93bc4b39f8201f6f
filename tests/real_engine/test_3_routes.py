"""Security probe: every route the engine registers (its own /openapi.json, read with the key) plus the
SageMaker-style POST /invocations and GET /ping, asked on the PUBLIC port (vllm_server_port) from the controller
with no key, a wrong key and the right key. Any route other than the allowed ones that answers 2xx without the
right key fails the test. Runs last: it sends requests to every route."""

from __future__ import annotations

import json
import re

from tests.real_engine import report
from tests.real_engine.conftest import VLLM_PORT, http

# The routes allowed to answer without the key: /health (load balancers, the checklist), plus what the configuration
# explicitly opens (none in this suite's configuration). The one list the verdict is made from.
OPEN_WITHOUT_KEY = ["/health"]
# Asked besides /openapi.json's paths: the SageMaker-style routes, and FastAPI's own pages (not in its paths).
EXTRA_ROUTES = [("POST", "/invocations"), ("GET", "/ping"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc")]


def _body(path, base):
    """A request a client would send, so that an unguarded route shows what it does rather than a 422."""
    chat = {"model": base, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    bodies = {
        "/invocations": chat, "/v1/chat/completions": chat,
        "/v1/completions": {"model": base, "prompt": "hi", "max_tokens": 2},
        "/v1/responses": {"model": base, "input": "hi", "max_output_tokens": 2},
        "/tokenize": {"model": base, "prompt": "hi"},
        "/detokenize": {"model": base, "tokens": [1, 2]},
    }
    return bodies.get(path, {})


def _status(resp):
    status, _h, body = resp
    return str(status) if status is not None else body.decode()


def test_every_route_requires_the_key(deployment):
    right = deployment.key_header()
    status, _h, body = http(deployment.url(VLLM_PORT, "/openapi.json"), headers=right)
    assert status == 200, "GET /openapi.json with the key answered %s: %r" % (status, body[:300])
    spec = json.loads(body)
    routes = []
    for path, ops in sorted(spec["paths"].items()):
        for method in sorted(ops):
            if method.upper() in ("GET", "POST", "PUT", "DELETE", "PATCH"):
                routes.append((method.upper(), path))
    routes += [r for r in EXTRA_ROUTES if r not in routes]
    report.RESULTS["facts"]["open_without_key"] = OPEN_WITHOUT_KEY
    rows = []
    for method, path in routes:
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        body = _body(path, deployment.base) if method in ("POST", "PUT", "PATCH") else None
        got = {}
        for name, hdr in (("none", {}), ("wrong", {"Authorization": "Bearer wrong-" + deployment.secrets["vllm_server_api_key"]}),
                          ("right", right)):
            got[name] = http(deployment.url(VLLM_PORT, concrete), method, body, hdr, timeout=60)
        opened = any(got[k][0] is not None and 200 <= got[k][0] < 300 for k in ("none", "wrong"))
        rows.append({"method": method, "path": path, "none": _status(got["none"]), "wrong": _status(got["wrong"]),
                     "right": _status(got["right"]), "open": opened, "allowed": path in OPEN_WITHOUT_KEY})
    report.RESULTS["routes"] = rows
    bad = ["%s %s (no key %s, wrong key %s)" % (r["method"], r["path"], r["none"], r["wrong"])
           for r in rows if r["open"] and not r["allowed"]]
    report.check("every route of the public port but %s requires the key (%d routes from /openapi.json + %s)" % (
        ", ".join(OPEN_WITHOUT_KEY), len(rows), ", ".join("%s %s" % r for r in EXTRA_ROUTES)), not bad,
        "%d answer 2xx without the right key: %s" % (len(bad), "; ".join(bad)) if bad else "none answers 2xx without it")
    assert not bad, "routes that answer 2xx without the right key on port %d:\n  %s" % (VLLM_PORT, "\n  ".join(bad))
