#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: gce_load_balancer_health
short_description: What the fleet's GCE load balancer reports for each VM, optionally waiting for a state
version_added: 0.1.0
description:
  - Read-only. Asks the backend service of a load balancer made by M(llmops.gce_vllm.gce_load_balancer)
    (regionBackendServices.getHealth, for the instance group of each zone of O(instances)) whether each VM is
    C(HEALTHY) (gets new connections) or C(UNHEALTHY).
  - With O(wait_for), polls until every VM named there reports the state given (for example a drained VM
    C(UNHEALTHY) before its restart, then C(HEALTHY) again before the next batch of a rolling update), or fails
    after O(timeout) seconds with the last states seen.
author:
  - llmops team (@llmops)
extends_documentation_fragment:
  - llmops.gce_vllm.gce
  - llmops.gce_vllm.gce.load_balancer
attributes:
  check_mode:
    support: full
    description: Only reads; runs the same in check mode.
  diff_mode:
    support: none
    description: Read-only.
options:
  # name, region and instances: the fragment llmops.gce_vllm.gce.load_balancer
  instances:
    required: true
  wait_for:
    description:
      - VM name -> V(HEALTHY) or V(UNHEALTHY) to wait for. Empty answers at once.
    type: dict
    default: {}
  timeout:
    description: Seconds to wait for O(wait_for).
    type: int
    default: 300
  sleep:
    description: Seconds between two looks.
    type: float
    default: 2.0
'''

EXAMPLES = r'''
- name: Wait until the load balancer no longer sends new connections to the drained VM
  llmops.gce_vllm.gce_load_balancer_health:
    name: ai-server-lb
    instances: "{{ fleet }}"
    wait_for: {ai-server-l4-2: UNHEALTHY}
    timeout: 120
  delegate_to: localhost
'''

RETURN = r'''
health:
  description: VM name -> the state the backend service reports (VMs that are in no group are missing).
  returned: always
  type: dict
  sample: {ai-server-l4-1: HEALTHY, ai-server-l4-2: UNHEALTHY}
elapsed:
  description: Seconds waited.
  returned: always
  type: float
  sample: 10.2
'''

import copy
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce import (
    GCE_AUTH_ARGSPEC,
    GceError,
    backend_health,
    client_from_module,
)
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce_rules import (
    LOAD_BALANCER_REF_OPTIONS,
    load_balancer_problems,
    zone_region,
)

STATES = ("HEALTHY", "UNHEALTHY")


def main():
    spec = dict(GCE_AUTH_ARGSPEC)
    spec.update(copy.deepcopy(LOAD_BALANCER_REF_OPTIONS))
    spec["instances"]["required"] = True
    spec.update(
        wait_for=dict(type="dict", default={}),
        timeout=dict(type="int", default=300),
        sleep=dict(type="float", default=2.0),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    errors = load_balancer_problems(dict(name=p["name"], region=p["region"], instances=p["instances"]))
    known = set(i["name"] for i in p["instances"])
    for vm, state in sorted(p["wait_for"].items()):
        if vm not in known:
            errors.append("wait_for names %s, which is not in instances" % vm)
        if state not in STATES:
            errors.append("wait_for %s: %r is not one of %s" % (vm, state, ", ".join(STATES)))
    if errors:
        module.fail_json(msg="; ".join(errors), errors=errors)
    region = p["region"] or zone_region(p["instances"][0]["zone"])
    client = client_from_module(module)
    zones = []
    for inst in p["instances"]:
        if inst["zone"] not in zones:
            zones.append(inst["zone"])
    groups = ["https://www.googleapis.com/compute/v1/" + client.project_path(
        "zones", z, "instanceGroups", "%s-%s" % (p["name"], z)) for z in zones]
    started = time.monotonic()
    health = {}
    try:
        while True:
            health = backend_health(client, region, p["name"], groups)
            pending = dict((vm, state) for vm, state in p["wait_for"].items() if health.get(vm) != state)
            if not pending:
                break
            if time.monotonic() - started >= p["timeout"]:
                module.fail_json(msg="after %ss the load balancer %s still reports %s (waited for %s)" % (
                    p["timeout"], p["name"], ", ".join("%s %s" % (vm, health.get(vm, "not in a group"))
                                                       for vm in sorted(pending)),
                    ", ".join("%s %s" % kv for kv in sorted(pending.items()))),
                    health=health, elapsed=round(time.monotonic() - started, 1))
            time.sleep(p["sleep"])
    except GceError as e:
        module.fail_json(msg="load balancer %s: %s" % (p["name"], e), health=health)
    module.exit_json(changed=False, health=health, elapsed=round(time.monotonic() - started, 1))


if __name__ == "__main__":
    main()
