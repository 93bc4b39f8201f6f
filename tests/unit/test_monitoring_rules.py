"""The Prometheus recording and alerting rules (roles/prometheus/files/rules, issue 12) under the real promtool:
they load, every alert carries what an on-call reader needs, and `promtool test rules` acts out each incident
(tests/monitoring/llmops.rules.test.yml): each alert fires when its `for:` ends and not one evaluation before, and a
healthy day with short bursts fires nothing. The same tests with every `for:` set to 0 must fail for every alert."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from tests.monitoring import RULE_FILES, RULES_DIR, RULES_TEST, ROOT, alerts, load_rules, run_promtool

# what Prometheus 2.31 (Ubuntu 22.04's package, the oldest a GPU VM runs) reads; keep_firing_for is 2.42
GROUP_KEYS = {"name", "interval", "limit", "rules"}
RULE_KEYS = {"record", "alert", "expr", "for", "labels", "annotations"}
SEVERITIES = {"critical", "warning"}


def test_the_rule_files_exist_and_load_in_promtool():
    assert [p.name for p in RULE_FILES] == ["llmops-alerts.rules.yml", "llmops-recording.rules.yml"]
    res = run_promtool("check", "rules", *RULE_FILES)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(RULE_FILES), res.stdout


def test_only_keys_prometheus_2_31_knows():
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            assert set(group) <= GROUP_KEYS, (path.name, group["name"], set(group) - GROUP_KEYS)
            for rule in group["rules"]:
                assert set(rule) <= RULE_KEYS, (path.name, rule, set(rule) - RULE_KEYS)


def test_recording_rule_names_follow_level_metric_operations():
    for rule in load_rules():
        if "record" in rule:
            assert re.fullmatch(r"instance:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_every_alert_has_for_severity_instance_and_runbook(rule):
    assert re.fullmatch(r"[1-9][0-9]*[mh]", str(rule.get("for", ""))), "%s: `for:` missing or 0" % rule["alert"]
    assert rule.get("labels", {}).get("severity") in SEVERITIES, rule
    notes = rule.get("annotations", {})
    for key in ("summary", "description"):
        assert "{{ $labels.instance }}" in notes.get(key, ""), "%s: %s does not name the instance" % (rule["alert"], key)
    assert len(notes.get("runbook", "")) > 20, "%s: no runbook line" % rule["alert"]


def _cases():
    return yaml.safe_load(RULES_TEST.read_text())["tests"]


def test_each_alert_is_tested_before_and_when_its_for_ends():
    """Each alert has a case where it is expected quiet at one time and firing one evaluation later, the
    difference being its `for:` (so a `for: 0` would be seen), and the healthy day lists every alert."""
    want = {r["alert"]: r["for"] for r in alerts()}
    seen = {}
    for case in _cases():
        checks = case.get("alert_rule_test", [])
        for name in want:
            quiet = [c["eval_time"] for c in checks if c["alertname"] == name and not c["exp_alerts"]]
            firing = [c["eval_time"] for c in checks if c["alertname"] == name and c["exp_alerts"]]
            for t in firing:
                if any(_minutes(t) - _minutes(q) == 1 for q in quiet):
                    seen.setdefault(name, []).append(t)
    assert sorted(seen) == sorted(want), "alerts without a quiet-then-firing check: %s" % sorted(set(want) - set(seen))
    healthy = [c for c in _cases() if any(t["eval_time"] == "24h" for t in c.get("alert_rule_test", []))]
    assert len(healthy) == 1
    assert {t["alertname"] for t in healthy[0]["alert_rule_test"] if not t["exp_alerts"]} == set(want)


def _minutes(text: str) -> int:
    m = re.fullmatch(r"(\d+)([mh])", text)
    return int(m.group(1)) * (60 if m.group(2) == "h" else 1)


def test_promtool_test_rules_passes():
    res = run_promtool("test", "rules", RULES_TEST)
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_the_tests_see_the_for_of_every_alert(tmp_path):
    """With every `for:` set to 0 the incident tests fail for every alert, and the healthy day fires: the tests
    check timing, not only that an alert exists."""
    rules = tmp_path / RULES_DIR.relative_to(ROOT)
    rules.mkdir(parents=True)
    for path in RULE_FILES:
        (rules / path.name).write_text(re.sub(r"(?m)^(\s+for:) \S+$", r"\1 0s", path.read_text()))
    test = tmp_path / RULES_TEST.relative_to(ROOT)
    test.parent.mkdir(parents=True)
    shutil.copy(RULES_TEST, test)
    res = run_promtool("test", "rules", test)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    failed = set(re.findall(r"alertname: (\w+), time:", out))
    assert failed == {r["alert"] for r in alerts()}, out
    assert 'ALERTS{alertstate=\\"firing\\"}' in out, out
