"""Stand-in fidelity: the same requests against the real engine and the vLLM stand-in (tests/standin), started on
the test host beside it with the very argv the role rendered into the host's unit and its environment file. Fails on
any difference in what the collection reads or a user would script against. Generated text is not compared (the
stand-in has no model); its shape is."""

from __future__ import annotations

import contextlib
import json
import re
import time

import pytest

from tests.harness.testhosts import in_netns
from tests.real_engine import report
from tests.real_engine.conftest import StartWatch, free_port, http, standin_on_host
from tests.real_engine.test_1_engine import METRIC_FAMILIES, metric_families


class Pair:
    """The real engine itself (on the host's loopback, behind the proxy) and the stand-in (beside it, on the host's
    loopback), both reached from inside the host's network namespace, asked the same requests."""

    def __init__(self, real, standin, key, base, netns):
        self.urls = {"real": real, "standin": standin}
        self.key, self.base, self.netns = key, base, netns

    def ask(self, path, method="GET", body=None, key="right"):
        hdr = {} if key is None else {"Authorization": "Bearer %s" % (self.key if key == "right" else "wrong-" + self.key)}
        return {side: in_netns(self.netns, http, url + path, method, body, hdr, timeout=120)
                for side, url in self.urls.items()}


@pytest.fixture(scope="module")
def pair(deployment):
    """The stand-in on the test host (standin_on_host: the engine's argv and environment file), asked beside the engine."""
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    with contextlib.ExitStack() as unit:   # the stand-in's unit: stopped after the module's tests
        with StartWatch(url + "/health", interval=0.05, netns=deployment.netns) as start:   # polls before the start
            argv = unit.enter_context(standin_on_host(deployment.host, "vllm-standin-fidelity", port, 1.5))
            t0 = time.monotonic()
            while start.first_ok is None and time.monotonic() - t0 < 30:
                time.sleep(0.05)
            time.sleep(0.2)
        assert start.first_ok is not None, deployment.host.sh(
            "journalctl --no-pager -o cat -u vllm-standin-fidelity | tail -n 40", check=False).stdout
        p = Pair(deployment.engine_url(""), url, deployment.secrets["vllm_server_api_key"], deployment.base,
                 deployment.netns)
        p.start = {"real": deployment.start, "standin": start}
        p.argv = argv
        yield p


def compare(aspect, real, standin):
    same = real == standin
    report.fidelity(aspect, real, standin, same)
    assert same, "%s differs:\nreal engine: %s\nstand-in:    %s" % (aspect, real, standin)


def shape(value):
    """A JSON value's structure: dict keys (sorted) to shapes, lists by their first item, scalars by type."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def _plain(resp):
    status, hdrs, body = resp
    return {"status": status, "content-type": hdrs.get("content-type"), "body": body.decode(errors="replace")}


# --- plain endpoints -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/health", "/ping"])
def test_plain_endpoint(pair, path):
    got = pair.ask(path, key=None)
    compare("GET %s without key: status, content-type, body" % path, _plain(got["real"]), _plain(got["standin"]))


@pytest.mark.parametrize("key", [None, "wrong"])
def test_unauthorized(pair, key):
    """401 with vLLM's exact body where the engine holds a key; behind the proxy it holds none (the proxy checks it),
    and both answer the model list: then status, content-type and the JSON's shape (ids and times differ)."""
    got = pair.ask("/v1/models", key=key)
    which = "no key" if key is None else "a wrong key"
    if got["real"][0] == 200:
        view = {s: (r[0], r[1].get("content-type"), shape(json.loads(r[2]))) for s, r in got.items()}
        compare("GET /v1/models with %s, engine without its own key: status, content-type, shape" % which,
                view["real"], view["standin"])
    else:
        compare("GET /v1/models with %s: status, content-type, exact body" % which, _plain(got["real"]),
                _plain(got["standin"]))


def test_unknown_route(pair):
    got = pair.ask("/no/such/route")
    compare("GET of an unknown route: status, content-type, body", _plain(got["real"]), _plain(got["standin"]))


def test_version_keys(pair):
    got = pair.ask("/version", key=None)
    view = {s: (r[0], r[1].get("content-type"), sorted(json.loads(r[2]))) for s, r in got.items()}
    compare("GET /version: status, content-type, keys", view["real"], view["standin"])


# --- models ---------------------------------------------------------------------------------------------------
def test_models_cards(pair):
    got = pair.ask("/v1/models")
    view = {}
    for side, (status, hdrs, body) in got.items():
        data = json.loads(body)
        view[side] = {"status": status, "content-type": hdrs.get("content-type"), "object": data["object"],
                      "cards": [{"keys": sorted(c), "permission_keys": sorted(c["permission"][0]) if c["permission"] else [],
                                 "id": c["id"], "object": c["object"], "owned_by": c["owned_by"], "root": c["root"],
                                 "parent": c["parent"], "max_model_len": c["max_model_len"]} for c in data["data"]]}
    compare("GET /v1/models: card keys and values (id, root, parent, max_model_len), permission keys",
            view["real"], view["standin"])


# --- completions ----------------------------------------------------------------------------------------------
def _chat_body(model, **kw):
    return dict({"model": model, "messages": [{"role": "user", "content": "Review the clause."}], "temperature": 0,
                 "max_tokens": 4, "ignore_eos": True}, **kw)


def _completion_view(resp, max_tokens):
    status, hdrs, body = resp
    data = json.loads(body)
    usage = data["usage"]
    choice = data["choices"][0]
    return {"status": status, "content-type": hdrs.get("content-type"), "shape": shape(data), "object": data["object"],
            "finish_reason": choice["finish_reason"],
            "usage_adds_up": usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"],
            "completion_tokens_is_max_tokens": usage["completion_tokens"] == max_tokens}


@pytest.mark.parametrize("model", ["base", "easycontract"])
def test_chat_completion(pair, model):
    name = pair.base if model == "base" else model
    got = pair.ask("/v1/chat/completions", "POST", _chat_body(name))
    view = {s: _completion_view(r, 4) for s, r in got.items()}
    for s, r in got.items():
        assert json.loads(r[2])["model"] == name, (s, r)
    compare("POST /v1/chat/completions (%s, max_tokens 4, ignore_eos): shape, finish_reason, usage" % model,
            view["real"], view["standin"])


def test_completion(pair):
    body = {"model": pair.base, "prompt": "The contract", "max_tokens": 3, "temperature": 0, "ignore_eos": True}
    got = pair.ask("/v1/completions", "POST", body)
    view = {s: _completion_view(r, 3) for s, r in got.items()}
    compare("POST /v1/completions (max_tokens 3, ignore_eos): shape, finish_reason, usage", view["real"], view["standin"])


def test_unknown_model(pair):
    got = pair.ask("/v1/chat/completions", "POST", _chat_body("no-such-model"))
    view = {}
    for side, (status, hdrs, body) in got.items():
        data = json.loads(body)
        view[side] = {"status": status, "content-type": hdrs.get("content-type"), "shape": shape(data),
                      "type": data["error"]["type"], "param": data["error"]["param"], "code": data["error"]["code"],
                      "message": data["error"]["message"]}
    compare("POST /v1/chat/completions of an unknown model: status, body (message, type, param, code)",
            view["real"], view["standin"])


# --- metrics --------------------------------------------------------------------------------------------------
def _labels(text):
    """{family: sorted label names of all its samples} (histogram _bucket/_sum/_count samples count to their family)."""
    families = metric_families(text)
    out = {}
    for m in re.finditer(r"^([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\} ", text, re.M):
        name = m.group(1)
        family = next((name[:-len(sfx)] for sfx in ("_bucket", "_sum", "_count")
                       if name.endswith(sfx) and name[:-len(sfx)] in families), name)
        out.setdefault(family, set()).update(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', m.group(2)))
    return {f: sorted(v) for f, v in out.items()}


def test_metrics(pair):
    got = pair.ask("/metrics")
    real, standin = (got[s][2].decode() for s in ("real", "standin"))
    rf, sf = metric_families(real), metric_families(standin)
    rl, sl = _labels(real), _labels(standin)
    view = {"real": {"content-type": got["real"][1].get("content-type"),
                     "families the collection documents": {f: rf.get(f) for f in METRIC_FAMILIES},
                     "the stand-in's families, with labels": {f: [rf.get(f), rl.get(f)] for f in sorted(sf) if f.startswith("vllm:")}},
            "standin": {"content-type": got["standin"][1].get("content-type"),
                        "families the collection documents": {f: sf.get(f) for f in METRIC_FAMILIES},
                        "the stand-in's families, with labels": {f: [sf.get(f), sl.get(f)] for f in sorted(sf) if f.startswith("vllm:")}}}
    compare("GET /metrics: content-type; documented families and their types; every stand-in family's type and labels",
            view["real"], view["standin"])


def test_lora_requests_info_max_lora(pair):
    got = pair.ask("/metrics")
    view = {}
    for side, resp in got.items():
        m = re.search(r'^vllm:lora_requests_info\{[^}]*max_lora="(\d+)"', resp[2].decode(), re.M)
        view[side] = m and m.group(1)
    args = pair.argv
    max_loras = args[args.index("--max-loras") + 1] if "--max-loras" in args else "1 (vLLM's default --max-loras)"
    report.note("lora_requests_info max_lora: real %s, stand-in %s; the unit passes --max-loras %s and %d adapters" % (
        view["real"], view["standin"], max_loras, sum(1 for a in args if a.startswith("{"))))
    compare("vllm:lora_requests_info max_lora (= --max-loras, not the number of adapters)", view["real"], view["standin"])


# --- start-up -------------------------------------------------------------------------------------------------
def test_startup_refused_until_ready(pair):
    view = {}
    for side, watch in pair.start.items():
        first = next((r["outcome"] for r in watch.runs if r["outcome"].startswith("200 ")), None)
        view[side] = {"before ready": sorted(set(watch.before_ready())), "first answer": first}
    compare("start-up: what GET /health meets before the engine is ready, then its first answer", view["real"], view["standin"])
