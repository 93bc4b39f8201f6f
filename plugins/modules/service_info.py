#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: service_info
short_description: Read a venv service's state from the host - installed packages, unit, staleness
version_added: "0.1.0"
description:
  - One read-only look at a systemd service that runs from a Python virtual environment, in one module run
    (the roles decide install and restart from it, not from marker files).
  - For each venv in O(venvs), whether it holds the wanted requirements, read from the venv's installed
    distributions (C(*.dist-info/METADATA); for a wheel file or C(file://) URL also the C(direct_url.json) pip
    writes). Exact pins and wheels are judged by version (and URL); any other requirement counts as held only
    when the venv's C(site-packages) changed after the requirements file.
  - For the unit, C(systemctl show) (active state, C(NeedDaemonReload)) and whether the running main process
    is stale - the unit needs a daemon-reload, or a path in O(files) or a venv's C(site-packages) changed
    (ctime) after the process started (C(ExecMainStartTimestampMonotonic)). A run interrupted after writing a
    file but before its restart leaves exactly that, so the next run restarts the service.
  - Whether the account in O(user) and each of O(paths) is as wanted (owner, group, mode; a file's SHA-1, which
    the caller compares with what it would write), so that the tasks that would change them run only when needed.
  - Which of O(packages) dpkg does not list as installed, so that an apt task runs only when one is missing.
  - Which of O(legacy_files) (marker files of earlier versions) exist, so that a task removes only those.
  - Changes nothing; runs in check mode too.
author:
  - llmops team (@llmops)
options:
  name:
    description:
      - The systemd unit, with or without C(.service).
    type: str
  files:
    description:
      - Files (or directories) a start of the service reads - its unit file, environment file, application
        files. A change (ctime) after the running process started makes the service stale.
    type: list
    elements: path
    default: []
  venvs:
    description:
      - Virtual environments to inspect.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The venv's directory.
        type: path
        required: true
      requirements:
        description: Requirements the venv must hold (C(name==version), a wheel path or C(file://) URL, ...).
        type: list
        elements: str
        default: []
      requirements_file:
        description: A requirements file on the host whose lines the venv must hold too.
        type: path
  reload_files:
    description:
      - Files a reload of the service reads (a master-worker server such as HAProxy C(-Ws), whose reload keeps
        the main process and forks new workers). A change (ctime) after the youngest child of the running main
        process started makes a reload due (RV(unit.reload_due)); a restart is not needed for them.
      - Needs O(name).
    type: list
    elements: path
    default: []
  watch_venvs:
    description:
      - Virtual environments the service runs from; a change of their C(site-packages) (an install, an
        upgrade) after the running process started makes the service stale.
    type: list
    elements: path
    default: []
  user:
    description:
      - A system account to check (returned in RV(account)).
    type: dict
    suboptions:
      name:
        description: The user.
        type: str
        required: true
      group:
        description: Its primary group.
        type: str
        required: true
      home:
        description: Its home directory.
        type: path
      shell:
        description: Its login shell.
        type: path
  paths:
    description:
      - Paths to read (returned in RV(paths)), each with what it should be.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The path.
        type: path
        required: true
      state:
        description: What it should be.
        type: str
        choices: [directory, file]
      owner:
        description: Its owner's name.
        type: str
      group:
        description: Its group's name.
        type: str
      mode:
        description: Its permission bits, octal (C("0750")).
        type: str
  packages:
    description:
      - Distribution packages to look up in dpkg's status (returned in RV(packages_missing)).
    type: list
    elements: str
    default: []
  legacy_files:
    description:
      - Paths that should not exist (files earlier versions wrote); returned in RV(legacy_present) when they do.
    type: list
    elements: path
    default: []
extends_documentation_fragment:
  - llmops.gce_vllm.read_only
notes:
  - A host whose clock is stepped between a service's start and this check can misjudge staleness by the step.
'''

EXAMPLES = r'''
- name: Read the vLLM service's state
  llmops.gce_vllm.service_info:
    name: vllm
    files: [/etc/systemd/system/vllm.service, /app/vllm-server/vllm.env]
    watch_venvs: [/app/vllm-server/venv]
    venvs:
      - path: /app/vllm-server/venv
        requirements: [vllm==0.15.1]
    legacy_files: [/app/vllm-server/.llmops-applied]
  register: vllm_state

- name: Restart vLLM when it runs an older configuration than the files
  ansible.builtin.systemd_service:
    name: vllm
    state: "{{ 'restarted' if vllm_state.unit.stale else 'started' }}"
    daemon_reload: "{{ vllm_state.unit.need_daemon_reload }}"
'''

RETURN = r'''
unit:
  description: The unit's state; empty when O(name) is not given.
  returned: always
  type: dict
  contains:
    properties:
      description: C(systemctl show) values (LoadState, ActiveState, SubState, UnitFileState, NeedDaemonReload, MainPID, ...).
      type: dict
    active:
      description: ActiveState is C(active).
      type: bool
    started_at:
      description: Epoch seconds at which the running main process started; null when none runs.
      type: float
    need_daemon_reload:
      description: systemd reports the unit file changed since its last daemon-reload.
      type: bool
    changed_since_start:
      description: Paths of O(files) and venv C(site-packages) changed after the running process started.
      type: list
      elements: str
    stale:
      description: The service is active but runs an older configuration than what is on disk.
      type: bool
    reason:
      description: Why it is stale, in words; empty when it is not.
      type: str
    loaded_at:
      description: Epoch seconds at which the running workers (the youngest child of the main process) started; null when none runs.
      type: float
    reload_due:
      description: One of O(reload_files) changed after the running workers loaded their configuration.
      type: bool
    reload_reason:
      description: Why a reload is due, in words; empty when it is not.
      type: str
  sample: {"active": true, "stale": false, "need_daemon_reload": false, "changed_since_start": [], "reason": ""}
venvs:
  description: Per entry of O(venvs), in order.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The venv.
      type: str
    exists:
      description: The venv has C(bin/python).
      type: bool
    satisfied:
      description: The venv holds every wanted requirement.
      type: bool
    missing:
      description: Requirements it does not hold (or cannot be shown to hold).
      type: list
      elements: str
  sample: [{"path": /app/vllm-server/venv, "exists": true, "satisfied": true, "missing": []}]
account:
  description: The account of O(user) (exists, group_exists, ok, home, shell); empty when O(user) is not given.
  returned: always
  type: dict
  sample: {"name": vllm, "exists": true, "group_exists": true, "ok": true, "home": /app/vllm-server, "shell": /usr/sbin/nologin}
paths:
  description:
    - Per path of O(paths), keyed by the path - exists, ok (state, owner, group and mode as wanted), state,
      owner, group, mode, checksum (SHA-1 of a file).
  returned: always
  type: dict
  sample: {"/app/vllm-server": {"exists": true, "ok": true, "state": directory, "owner": vllm, "group": vllm, "mode": "0750", "checksum": null}}
packages_missing:
  description:
    - The names of O(packages) dpkg does not list as installed (all of them where dpkg's status cannot be read;
      a name with a version, architecture or pattern always).
  returned: always
  type: list
  elements: str
  sample: [python3.11-venv]
legacy_present:
  description: The paths of O(legacy_files) that exist.
  returned: always
  type: list
  elements: str
  sample: []
'''

import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils import service_state as ss


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            files=dict(type="list", elements="path", default=[]),
            venvs=dict(type="list", elements="dict", default=[], options=dict(
                path=dict(type="path", required=True),
                requirements=dict(type="list", elements="str", default=[]),
                requirements_file=dict(type="path"),
            )),
            watch_venvs=dict(type="list", elements="path", default=[]),
            reload_files=dict(type="list", elements="path", default=[]),
            user=dict(type="dict", options=dict(
                name=dict(type="str", required=True),
                group=dict(type="str", required=True),
                home=dict(type="path"),
                shell=dict(type="path"),
            )),
            paths=dict(type="list", elements="dict", default=[], options=dict(
                path=dict(type="path", required=True),
                state=dict(type="str", choices=["directory", "file"]),
                owner=dict(type="str"),
                group=dict(type="str"),
                mode=dict(type="str"),
            )),
            packages=dict(type="list", elements="str", default=[]),
            legacy_files=dict(type="list", elements="path", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    venvs = [ss.venv_state(v["path"], v["requirements"], v["requirements_file"]) for v in p["venvs"]]
    unit = {}
    if p["name"]:
        name = p["name"] if "." in p["name"] else p["name"] + ".service"
        systemctl = module.get_bin_path("systemctl", required=True)
        rc, out, err = module.run_command(
            [systemctl, "show", name, "--property=" + ",".join(ss.UNIT_PROPERTIES)], environ_update={"LC_ALL": "C"})
        if rc != 0:
            module.fail_json(msg="systemctl show %s failed (rc=%d): %s" % (name, rc, err.strip()))
        props = ss.parse_show(out)
        unit = ss.service_state(props, p["files"], p["watch_venvs"])
        unit.update(ss.reload_state(props, p["reload_files"]))
        unit["properties"] = props
    account = ss.account_state(**p["user"]) if p["user"] else {}
    paths = {}
    for want in p["paths"]:
        if want["mode"] is not None and not re.match(r"^0?[0-7]{3,4}$", want["mode"]):
            module.fail_json(msg="paths: mode of %s must be octal digits such as 0750, got %r" % (want["path"], want["mode"]))
        paths[want["path"]] = ss.path_state(want["path"], want["state"], want["owner"], want["group"], want["mode"])
    missing = ss.packages_missing(p["packages"]) if p["packages"] else []
    module.exit_json(changed=False, unit=unit, venvs=venvs, account=account, paths=paths, packages_missing=missing,
                     legacy_present=[f for f in p["legacy_files"] if os.path.lexists(f)])


if __name__ == "__main__":
    main()
