# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
name: gce_fleet
short_description: The VMs of a fleet as a list of name and zone, from a list or a count
version_added: "0.1.0"
author:
  - llmops.gce_vllm contributors
description:
  - The one place where the role C(gce_vllm) turns its fleet variables into the VMs it manages.
  - "A non-empty list (C(gce_vllm_instances)) gives the VMs: each entry a dict with C(name) and an optional C(zone)
    (default O(zone)). An empty list gives O(count) VMs in O(zone): one named O(name) when O(count) is 1 (the
    single VM of earlier releases, so existing inventories keep working), else O(name)C(-1) ... O(name)C(-N)."
  - The names and zones are checked by M(llmops.gce_vllm.gce_preflight) (each name once in the fleet, zones well
    formed, the machine type and GPU offered in every zone, GPU quota), before any API call that changes anything.
options:
  _input:
    description: The fleet's list (C(gce_vllm_instances)); empty for O(count) VMs.
    type: list
    elements: dict
    required: true
  zone:
    description: The zone of entries without one, and of the O(count) VMs.
    type: str
    required: true
  name:
    description: The VM's name (O(count) 1) or the prefix of the names (O(count) > 1).
    type: str
    required: true
  count:
    description: How many VMs when the list is empty (at least 1). With a non-empty list it must stay 1.
    type: int
    default: 1
  variable:
    description: The list's variable name, for the messages.
    type: str
    default: gce_vllm_instances
  count_variable:
    description: The count's variable name, for the messages.
    type: str
    default: gce_vllm_instance_count
'''

EXAMPLES = r'''
- name: Three VMs over two zones
  ansible.builtin.debug:
    msg: >-
      {{ [{'name': 'vm-a'}, {'name': 'vm-b', 'zone': 'asia-northeast3-b'}, {'name': 'vm-c'}]
         | llmops.gce_vllm.gce_fleet(zone='asia-northeast3-a', name='ai-server-l4') }}

- name: Two VMs named ai-server-l4-1 and ai-server-l4-2
  ansible.builtin.debug:
    msg: "{{ [] | llmops.gce_vllm.gce_fleet(zone='asia-northeast3-a', name='ai-server-l4', count=2) }}"
'''

RETURN = r'''
_value:
  description: The VMs, each C({name, zone}), in the order given.
  type: list
  elements: dict
'''

from ansible.errors import AnsibleFilterError


def gce_fleet(instances, zone, name, count=1, variable="gce_vllm_instances", count_variable="gce_vllm_instance_count"):
    if instances is None:
        instances = []
    if not isinstance(instances, (list, tuple)):
        raise AnsibleFilterError("%s must be a list of {name, zone}, got %s" % (variable, type(instances).__name__))
    try:
        count = int(count)
    except (TypeError, ValueError):
        raise AnsibleFilterError("%s must be a number, got %r" % (count_variable, count))
    if instances:
        if count != 1:
            raise AnsibleFilterError("set either %s (the VMs by name and zone) or %s (that many VMs in one zone), "
                                     "not both: %s has %d entries and %s is %d"
                                     % (variable, count_variable, variable, len(instances), count_variable, count))
        out = []
        for i, entry in enumerate(instances):
            if not isinstance(entry, dict) or not entry.get("name"):
                raise AnsibleFilterError("%s[%d] must be a dict with a name and an optional zone, for example "
                                         "{name: ai-server-l4-2, zone: asia-northeast3-b}; got %r" % (variable, i, entry))
            extra = sorted(set(entry) - {"name", "zone"})
            if extra:
                raise AnsibleFilterError("%s[%d] has unknown keys %s (only name and zone)"
                                         % (variable, i, ", ".join(map(str, extra))))
            out.append({"name": entry["name"], "zone": entry.get("zone") or zone})
        return out
    if count < 1:
        raise AnsibleFilterError("%s must be at least 1, got %d (teardown deletes the VMs)" % (count_variable, count))
    if count == 1:
        return [{"name": name, "zone": zone}]
    return [{"name": "%s-%d" % (name, i), "zone": zone} for i in range(1, count + 1)]


class FilterModule(object):
    def filters(self):
        return {"gce_fleet": gce_fleet}
