"""The monitoring files' tests' shared parts (issue 12): the real promtool, and the paths of the rules, their
promtool tests and the dashboard. The tests themselves are tests/unit/test_monitoring_*.py (run by `make unit`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "roles" / "prometheus" / "files" / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
RULES_TEST = Path(__file__).parent / "llmops.rules.test.yml"
DASHBOARD = ROOT / "roles" / "prometheus" / "files" / "dashboards" / "llmops-vllm.json"
FIXTURES = ROOT / "tests" / "fixtures"

_PROMTOOL: list = []


def promtool() -> str:
    """The path of the real promtool (scripts/promtool fetches Debian's once). Raises, never skips: without
    promtool the rules and the dashboard's expressions are untested."""
    if not _PROMTOOL:
        res = subprocess.run([str(ROOT / "scripts" / "promtool")], capture_output=True, text=True, timeout=600,
                             check=False)
        if res.returncode != 0 or not res.stdout.strip():
            raise RuntimeError("scripts/promtool could not provide promtool (rc %d):\n%s" % (res.returncode, res.stderr))
        _PROMTOOL.append(res.stdout.strip())
    return _PROMTOOL[0]


def run_promtool(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd,
                          check=False)


def load_rules(paths=None) -> list:
    """Every rule of the rule files: dicts with their group's name under '_group'."""
    rules = []
    for path in paths or RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [dict(r, _group=group["name"], _file=path.name) for r in group["rules"]]
    return rules


def alerts(paths=None) -> list:
    return [r for r in load_rules(paths) if "alert" in r]
