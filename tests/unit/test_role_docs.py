"""Each role's meta/argument_specs.yml is the one source of its variables: defaults/main.yml says the same,
and docs/variables.md and playbooks/README.md's table are what scripts/render_variables.py renders from it."""
import os
import sys

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
try:
    from render_variables import ROLES   # pylint: disable=wrong-import-position
finally:
    sys.path.pop(0)


def _load(role, *path):
    with open(os.path.join(ROOT, "roles", role, *path)) as fh:
        return yaml.safe_load(fh) or {}


def _defaults(role):
    """defaults/main.yml, or every file of a defaults/main/ directory (prometheus: server.yml, alerts.yml)."""
    folder = os.path.join(ROOT, "roles", role, "defaults", "main")
    if not os.path.isdir(folder):
        return _load(role, "defaults", "main.yml")
    merged = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith((".yml", ".yaml")):
            merged.update(_load(role, "defaults", "main", name))
    return merged


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults(role):
    options = _load(role, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    defaults = _defaults(role)
    with_default = {k for k, v in options.items() if "default" in v}
    assert set(defaults) == with_default, "in defaults/main.yml only: %s; in argument_specs only: %s" % (
        sorted(set(defaults) - with_default), sorted(with_default - set(defaults)))
    for name in defaults:
        assert options[name]["default"] == defaults[name], name
    for name, spec in options.items():
        assert spec.get("required") or "default" in spec, "%s: neither required nor a default" % name
        assert name.startswith(role + "_"), "%s: public role variables start with %s_" % (name, role)


def test_every_role_that_runs_on_its_own_has_a_main_entry_point():
    """ROLES (scripts/render_variables.py) comes from the argument specs on disk: a role with tasks/main.yml (usable
    as `roles: [...]`) needs a `main` entry point there, so that its variables are checked here and rendered into
    docs/variables.md; the internal roles (auth_proxy, venv_service: tasks_from only) have none."""
    runnable = tuple(sorted(r for r in os.listdir(os.path.join(ROOT, "roles"))
                            if os.path.isfile(os.path.join(ROOT, "roles", r, "tasks", "main.yml"))))
    assert ROLES == runnable, "roles with tasks/main.yml but no main entry point in meta/argument_specs.yml: %s" % (
        sorted(set(runnable) - set(ROLES)))
