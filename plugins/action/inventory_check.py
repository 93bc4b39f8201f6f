# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action of llmops.gce_vllm.inventory_check: before site.yml's first API call, check that the inventory will find
the VM it creates (a llmops.gce_vllm.gce source for the project) and that its vault file can be read."""

from __future__ import annotations

import os
import re

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

import yaml

PLUGIN = "llmops.gce_vllm.gce"
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE_SUFFIXES = ("gce.yml", "gce.yaml")   # the names the inventory plugin accepts (verify_file)
VAULT_HEADER = "$ANSIBLE_VAULT;"
_VAULT_REF = re.compile(r"\bvault_[A-Za-z0-9_]+")


def source_files(source):
    """The files of an inventory source (-i) that could be GCE inventory files: the source itself, or the files
    directly in a directory source (as Ansible reads a directory: each file with an inventory plugin)."""
    if os.path.isdir(source):
        return sorted(os.path.join(source, n) for n in os.listdir(source) if os.path.isfile(os.path.join(source, n)))
    return [source] if os.path.isfile(source) else []


def gce_sources(sources):
    """[(path, projects)] of the inventory files among sources whose plugin is llmops.gce_vllm.gce."""
    found = []
    for source in sources or []:
        for path in source_files(to_text(source)):
            if not path.endswith(SOURCE_SUFFIXES):
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    data = yaml.safe_load(f)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and data.get("plugin") == PLUGIN:
                projects = data.get("projects") or []
                found.append((path, [to_text(p) for p in projects] if isinstance(projects, list) else [to_text(projects)]))
    return found


def source_problem(sources, project, env_project):
    """None when a GCE source lists project (or lists none and GCP_PROJECT is project), else the failure text."""
    found = gce_sources(sources)
    for _path, projects in found:
        if not project:   # no project yet: provision's preflight names gce_vllm_project; any GCE source will do here
            return None
        if project in projects or (not projects and env_project == project):
            return None
    example = os.path.join(COLLECTION_ROOT, "inventories", "gce")
    name = project or "MY-PROJECT"
    copy = ("copy the collection's example inventory (ansible-galaxy collection list llmops.gce_vllm shows where the "
            "collection is installed): `cp -r %s ./inventory-gce`, set `projects: [%s]` in ./inventory-gce/gce.yml (or export "
            "GCP_PROJECT=%s), and run `ansible-playbook llmops.gce_vllm.site -i ./inventory-gce --ask-vault-pass ...`"
            % (example, name, name))
    if found:
        seen = "; ".join("%s lists %s" % (p, ", ".join(ps) if ps else "no projects (GCP_PROJECT is %s)" % (env_project or "unset"))
                         for p, ps in found)
        why = "its %s source(s) do not list project %s (%s)" % (PLUGIN, project, seen)
    else:
        why = "none of its sources (%s) is a %s inventory file (a *gce.yml with plugin: %s)" % (
            ", ".join(to_text(s) for s in sources or []) or "none", PLUGIN, PLUGIN)
    return ("site.yml creates the VM and then finds it through the inventory, but %s. Nothing was created: %s."
            % (why, copy))


class ActionModule(ActionBase):
    """See DOCUMENTATION in plugins/modules/inventory_check.py."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(("project", "group"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        project = to_text(self._task.args.get("project") or "")
        group = to_text(self._task.args.get("group") or "ai_server")
        sources = task_vars.get("ansible_inventory_sources") or []
        env_project = os.environ.get("GCP_PROJECT", "")

        problems = []
        problem = source_problem(sources, project, env_project)
        if problem:
            problems.append(problem)
        else:
            problems.extend(self._vault_problems(sources, group, set(task_vars)))
        result["changed"] = False
        result["sources"] = [p for p, _projects in gce_sources(sources)]
        if problems:
            result.update(failed=True, msg="\n".join(problems))
        return result

    def _vault_problems(self, sources, group, given):
        """The vault files of the VMs' group_vars: present when the group's vars read vault_* names, and readable."""
        problems = []
        for source in sources:
            base = to_text(source) if os.path.isdir(to_text(source)) else os.path.dirname(to_text(source))
            gdir = os.path.join(base, "group_vars", group)
            if not os.path.isdir(gdir):
                continue
            wanted, defined, encrypted = set(), set(), []
            for name in sorted(os.listdir(gdir)):
                path = os.path.join(gdir, name)
                if not name.endswith((".yml", ".yaml", ".json")) or not os.path.isfile(path):
                    continue
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                if text.startswith(VAULT_HEADER):
                    encrypted.append(path)
                    try:
                        data = self._loader.load_from_file(path) or {}
                    except AnsibleError:
                        problems.append(
                            "%s is encrypted with ansible-vault and no vault password was given (or not its password): pass "
                            "--ask-vault-pass, --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE. Nothing was created."
                            % path)
                        continue
                else:
                    try:
                        data = yaml.safe_load(text) or {}
                    except yaml.YAMLError:
                        continue
                    wanted.update(_VAULT_REF.findall(text))
                if isinstance(data, dict):
                    defined.update(k for k in data if isinstance(k, str))
            missing = sorted(wanted - defined - given)
            if missing and not problems:
                problems.append(
                    "%s reads %s, which no file there defines. Nothing was created: create the vault file from the example "
                    "beside it (`ansible-vault create %s`, with the keys of %s; or `ansible-vault edit` it to add the missing "
                    "ones) and pass --ask-vault-pass or --vault-password-file FILE."
                    % (gdir, ", ".join(missing), os.path.join(gdir, "vault.yml"), os.path.join(gdir, "vault.yml.example")))
        return problems
