#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: vllm_startup_info
short_description: Time the phases of vLLM's current start from its unit's journal
version_added: "0.1.0"
description:
  - Reads the journal of the B(current) invocation of the vLLM unit (its C(InvocationID), from
    C(systemctl show); C(journalctl _SYSTEMD_INVOCATION_ID=ID + INVOCATION_ID=ID)) and returns each start-up phase
    with its start, end and duration, as vLLM printed them.
  - "The phases: V(download) (the weights, only when vLLM had to fetch them), V(weight_load), V(compile)
    (torch.compile / Dynamo, with whether vLLM's compile cache was hit), V(graph_capture) (CUDA graphs),
    V(engine_init) (profiling, KV cache and warm-up; it contains compile and graph capture) and V(ready)
    (uvicorn's C(Application startup complete.)); the rules are in the collection's module_utils C(vllm_startup)."
  - A phase whose line the journal does not hold is returned with C(printed=false) and why (for example a CPU build
    prints no graph capture), never as 0 seconds.
  - Stops reading after the start (at O(max_lines), or once the first C(GET /health) answered 200 after ready), so
    a unit that has served for weeks is not read to its end.
author:
  - llmops team (@llmops)
options:
  unit:
    description: The vLLM unit (C(vllm_server_service_name)), with or without C(.service).
    type: str
    default: vllm
  max_lines:
    description: The most journal lines of the invocation to read.
    type: int
    default: 20000
extends_documentation_fragment:
  - llmops.gce_vllm.read_only
notes:
  - "Needs to read the system journal (root, or a member of C(systemd-journal) or C(adm)): C(become: true)."
  - The journal's time stamps are journald's (when the line was received), to the microsecond; vLLM's own
    numbers (C(... took 12.3 seconds)) are used for a phase's duration where it prints one.
seealso:
  - module: llmops.gce_vllm.service_info
'''

EXAMPLES = r'''
- name: Time vLLM's start-up phases
  llmops.gce_vllm.vllm_startup_info:
    unit: vllm
  become: true
  register: vllm_startup
'''

RETURN = r'''
invocation_id:
  description: The unit's current InvocationID; empty when the unit has not started since boot.
  returned: always
  type: str
active_state:
  description: The unit's ActiveState.
  returned: always
  type: str
lines_read:
  description: Journal lines of the invocation read.
  returned: always
  type: int
startup:
  description: The phases of this start.
  returned: always
  type: dict
  contains:
    started_at:
      description: systemd's C(Started) line of the unit (else the first line), ISO 8601.
      type: str
    ready:
      description: Whether the API server reported startup complete.
      type: bool
    ready_seconds:
      description: From started_at to ready.
      type: float
    first_health_200_seconds:
      description: From started_at to the first C(GET /health) answered 200 in vLLM's access log (null when not logged).
      type: float
    compile_cache:
      description: V(hit) when vLLM loaded every compiled graph from its cache, V(miss) when it compiled, null when not printed.
      type: str
    phases:
      description: "One per phase, in start order: name, title, printed, start, end (ISO 8601), seconds, offset
        (start - started_at), detail (or why it was not printed), lines (the lines it was read from)."
      type: list
      elements: dict
    printed:
      description: The names of the phases found.
      type: list
      elements: str
    absent:
      description: Phase name to why it is not in this journal.
      type: dict
'''

import re
import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils import vllm_startup


def read_journal(module, journalctl, invocation, max_lines):
    """The first lines of one invocation's journal: up to the first /health 200 after ready (or max_lines).

    journalctl's output is cut at max_lines by head(1) on the host, so a long-running vLLM's request log is not read
    to its end."""
    if not re.match(r"^[0-9a-f]{32}$", invocation):
        raise OSError("not an invocation id: %r" % invocation)
    cmd = "%s --no-pager --output=short-iso-precise _SYSTEMD_INVOCATION_ID=%s + INVOCATION_ID=%s | head -n %d" % (
        shlex.quote(journalctl), invocation, invocation, max_lines)
    rc, out, err = module.run_command(cmd, use_unsafe_shell=True, environ_update={"LC_ALL": "C"}, errors="surrogate_or_replace")
    lines, ready = [], False
    for line in out.splitlines():
        lines.append(line)
        if vllm_startup.is_ready_line(line):
            ready = True
        elif ready and vllm_startup.is_health_200_line(line):
            break
    if not lines and (rc != 0 or err.strip()):
        raise OSError("journalctl failed (rc=%s): %s" % (rc, err.strip()[:300]))
    return lines


def main():
    module = AnsibleModule(
        argument_spec=dict(
            unit=dict(type="str", default="vllm"),
            max_lines=dict(type="int", default=20000),
        ),
        supports_check_mode=True,
    )
    unit = module.params["unit"]
    if module.params["max_lines"] < 1:
        module.fail_json(msg="max_lines must be 1 or more, got %d" % module.params["max_lines"])
    unit = unit if unit.endswith(".service") else unit + ".service"
    systemctl = module.get_bin_path("systemctl", required=True)
    journalctl = module.get_bin_path("journalctl", required=True)
    rc, out, err = module.run_command([systemctl, "show", unit, "--property=InvocationID,ActiveState"])
    if rc != 0:
        module.fail_json(msg="systemctl show %s failed: %s" % (unit, (err or out).strip()))
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    invocation = props.get("InvocationID", "").strip()
    result = dict(changed=False, invocation_id=invocation, active_state=props.get("ActiveState", ""), lines_read=0)
    if not invocation:
        result["startup"] = vllm_startup.phases("", unit=unit)
        module.exit_json(**result)
    try:
        lines = read_journal(module, journalctl, invocation, module.params["max_lines"])
    except OSError as exc:
        module.fail_json(msg="cannot read the journal of %s (invocation %s): %s (the module needs root or the "
                             "systemd-journal group: become: true)" % (unit, invocation, exc), **result)
    result["lines_read"] = len(lines)
    try:
        result["startup"] = vllm_startup.phases("\n".join(lines), unit=unit)
    except vllm_startup.JournalError as exc:
        module.fail_json(msg="the journal of %s: %s" % (unit, exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
