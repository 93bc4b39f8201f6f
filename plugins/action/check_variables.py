# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action of llmops.gce_vllm.check_variables: the checks of the variable NAMES a play sets, on the controller,
before any role changes anything (typos, values a role cannot see, required inputs that are missing or undefined).

The one place that reads the collection's roles/*/meta/argument_specs.yml for this (once per process)."""

from __future__ import annotations

import difflib
import os
import re

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

import yaml

COLLECTION = "llmops.gce_vllm"
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SPECS = {}   # cache: roles dir -> {role: {"options": {entry point: {name: spec}}, "defaults": {...}}}


def load_roles(roles_dir=None):
    """{role: {"options": {entry_point: {option: spec}}, "defaults": {name: value}}} of every role of the collection."""
    roles_dir = roles_dir or os.path.join(COLLECTION_ROOT, "roles")
    if roles_dir not in _SPECS:
        roles = {}
        for role in sorted(os.listdir(roles_dir)):
            spec_file = os.path.join(roles_dir, role, "meta", "argument_specs.yml")
            if not os.path.isfile(spec_file):
                continue
            with open(spec_file, encoding="utf-8") as f:
                specs = (yaml.safe_load(f) or {}).get("argument_specs") or {}
            defaults = {}
            defaults_file = os.path.join(roles_dir, role, "defaults", "main.yml")
            if os.path.isfile(defaults_file):
                with open(defaults_file, encoding="utf-8") as f:
                    defaults = yaml.safe_load(f) or {}
            roles[role] = {
                "options": {ep: dict((body or {}).get("options") or {}) for ep, body in specs.items()},
                "defaults": defaults,
            }
        _SPECS[roles_dir] = roles
    return _SPECS[roles_dir]


def prefixes(roles):
    """The public prefix of every role: its name and '_' (gpu_host_, vllm_server_, ...), longest first."""
    return sorted((r + "_" for r in roles), key=len, reverse=True)


def declared(roles):
    """Every variable name some entry point of some role declares (and the defaults, which are in sync)."""
    names = set()
    for body in roles.values():
        for options in body["options"].values():
            names.update(options)
        names.update(body["defaults"])
    return names


def owner(name, roles):
    """The role whose prefix the name has (the longest match), or None."""
    for prefix in prefixes(roles):
        if name.startswith(prefix):
            return prefix[:-1]
    return None


def unknown_variables(names, roles, ignore=()):
    """[(name, closest declared name or None)] for each name with a role's prefix that no argument spec declares.

    Private names (leading '_') are not checked; nor are the names in ignore (registered results, set_fact)."""
    known = declared(roles)
    found = []
    for name in sorted(set(names)):
        if not isinstance(name, str) or name.startswith("_") or name in known or name in ignore:
            continue
        role = owner(name, roles)
        if role is None:
            continue
        candidates = sorted(n for n in known if owner(n, roles) == role)
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        found.append((name, close[0] if close else None))
    return found


def unknown_messages(found, roles):
    return [
        "%s is not a variable of any %s role, so it changes nothing%s (the roles' variables: docs/variables.md)."
        % (name, COLLECTION, "; did you mean %s?" % close if close else "; role %s has no variable of that name" % owner(name, roles))
        for name, close in found
    ]


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def referenced(value, names):
    """The names of names that the (nested) value mentions in its strings: what a template there reads."""
    found = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, str) and "{" in item:
            found.update(w for w in _WORD.findall(item) if w in names)
    return found


def scope_problems(play_roles, readers, roles):
    """Messages for values set on one role of the play (role parameters or a role entry's vars:) that something
    outside that role reads: another role of the play, or the play's vars (e.g. playbooks/vars/service_wiring.yml).

    play_roles: [(role name, {names set on that role entry})]; readers: {reader description: set of names it reads}."""
    messages = []
    in_play = {r for r, _given in play_roles}
    for role, given in play_roles:
        for name in sorted(given):
            if name.startswith("_"):
                continue
            who = sorted(what for what, names in readers.items() if name in names and what != "role %s" % role)
            name_owner = owner(name, roles)
            if name_owner in in_play and name_owner != role and "role %s" % name_owner not in who:
                who.append("role %s" % name_owner)
            if who:
                messages.append(
                    "%s is set only on role %s.%s of this play (a role parameter or the role entry's vars:), which only that "
                    "role can see, but %s read%s it. Set %s at play level (the play's vars: or vars_files), in the inventory "
                    "(group_vars/host_vars) or with -e, not under `- role: %s.%s`."
                    % (name, COLLECTION, role, " and ".join(who), "s" if len(who) == 1 else "", name, COLLECTION, role))
    return messages


def role_short_name(role_obj):
    """The collection role's short name of a Role object, or None for a role of somewhere else."""
    path = to_text(getattr(role_obj, "_role_path", "") or "")
    roles_dir = os.path.join(COLLECTION_ROOT, "roles")
    if path and os.path.realpath(os.path.dirname(path)) == os.path.realpath(roles_dir):
        return os.path.basename(path)
    return None


class ActionModule(ActionBase):
    """Checks the names of the variables a play sets (see DOCUMENTATION in plugins/modules/check_variables.py)."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(("roles", "entry_point", "check_scope", "warn_unknown", "once_per_play"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        wanted = [to_text(r).split(".")[-1] for r in (args.get("roles") or [])]
        entry_point = to_text(args.get("entry_point") or "main")
        roles = load_roles()
        bad = [r for r in wanted if r not in roles]
        if bad:
            raise AnsibleActionFail("check_variables: roles %s are not roles of %s (it has %s)" % (", ".join(bad), COLLECTION, ", ".join(roles)))

        play = self._task.get_play()
        # this play's identity (new every run, so a persistent fact cache does not skip a later run's check)
        mark = to_text(getattr(play, "_uuid", "") or task_vars.get("ansible_play_name", ""))
        if args.get("once_per_play") and (task_vars.get("ansible_facts") or {}).get("_gce_vllm_variables_checked") == mark:
            result.update(changed=False, skipped=True, msg="checked already in this play")
            return result
        play_roles = []
        for role_obj in (play.get_roles() if play else []):
            short = role_short_name(role_obj)
            if short:
                given = set(role_obj.get_role_params()) | set(getattr(role_obj, "vars", None) or {})
                play_roles.append((short, given))

        # names set by registered results and set_fact (the nonpersistent cache) are not inputs
        ignore = set()
        manager = self._task.get_variable_manager()
        if manager is not None:
            ignore.update(getattr(manager, "_nonpersistent_fact_cache", {}).get(task_vars.get("inventory_hostname"), {}))

        warnings = []
        errors = []
        names = set(task_vars)
        for _role, given in play_roles:
            names.update(given)
        if args.get("warn_unknown", True):
            warnings.extend(unknown_messages(unknown_variables(names, roles, ignore), roles))

        if args.get("check_scope", True) and play_roles:
            known = declared(roles)
            readers = {}
            if play is not None:
                play_vars = dict(play.get_vars() or {})
                files = []
                for vars_file in play.get_vars_files():
                    # relative to the playbook's directory, as Ansible reads them; a templated name is skipped
                    path = self._loader.path_dwim(to_text(vars_file)) if "{" not in to_text(vars_file) else None
                    if path and os.path.isfile(path):
                        files.append(os.path.basename(path))
                        play_vars.update(self._loader.load_from_file(path) or {})
                label = "the play's vars" + (" and vars_files (%s)" % ", ".join(files) if files else "")
                readers[label] = referenced(play_vars, known)
            for role, _given in play_roles:
                readers["role %s" % role] = referenced(roles[role]["defaults"], known) | set(roles[role]["defaults"])
            errors.extend(scope_problems(play_roles, readers, roles))

        for role in wanted:
            for name, spec in sorted(roles[role]["options"].get(entry_point, {}).items()):
                if not (spec or {}).get("required"):
                    continue
                if name not in task_vars:
                    errors.append("%s is required (role %s.%s) and not set: set it in the inventory's group_vars, the play's "
                                  "vars or with -e (docs/variables.md)." % (name, COLLECTION, role))
                    continue
                try:
                    self._templar.template(task_vars[name])
                except AnsibleError as exc:
                    # the first line only: the exception's own text (an undef() hint says what to create), never the value
                    errors.append("%s cannot be read: %s" % (name, to_text(exc.message if hasattr(exc, "message") else exc).splitlines()[0]))

        # the roles' validate.yml skip this check when this play already ran it (once per play, warnings once)
        result.update(changed=False, unknown=list(warnings),
                      ansible_facts={"_gce_vllm_variables_checked": mark})
        if warnings:
            result["warnings"] = warnings
        if errors:   # the problems only, one a line: no argument spec in the output
            result.update(failed=True, msg="\n".join(errors))
        return result
