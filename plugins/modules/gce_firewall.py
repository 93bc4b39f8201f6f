#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: gce_firewall
short_description: Manage a VPC firewall rule on Google Compute Engine
version_added: 0.1.0
description:
  - Creates, updates or deletes one VPC firewall rule through the Compute Engine v1 REST API.
  - A rule that exists but differs (ports, source ranges, target tags, priority, description) is updated
    in place with C(firewalls.patch); a change of O(network) or O(direction), which the API cannot patch,
    deletes and re-creates the rule.
  - Every input is checked before the first API call (names, ports, CIDR ranges).
  - Secure by default. For an C(INGRESS) rule, O(source_ranges) (or O(source_tags)) is required, because the
    API itself would open a rule without sources to C(0.0.0.0/0). C(0.0.0.0/0) is accepted only when written
    explicitly, and then the module warns.
author:
  - llmops team (@llmops)
extends_documentation_fragment:
  - llmops.gce_vllm.gce
attributes:
  check_mode:
    support: full
    description: Reports what would change; only reads from the API.
  diff_mode:
    support: full
    description: Shows the managed fields before and after.
options:
  name:
    description: Name of the firewall rule (RFC 1035, for example V(allow-ai-server-ports)).
    type: str
    required: true
  state:
    description: Whether the rule should exist.
    type: str
    choices: [present, absent]
    default: present
  network:
    description: The VPC network, as a name (V(default)) or a C(global/networks/NAME) path or URL.
    type: str
    default: default
  direction:
    description: Direction of the traffic the rule applies to.
    type: str
    choices: [INGRESS, EGRESS]
    default: INGRESS
  priority:
    description: Priority, 0 (highest) to 65535.
    type: int
    default: 1000
  allowed:
    description:
      - What the rule allows. Required with O(state=present).
    type: list
    elements: dict
    suboptions:
      ip_protocol:
        description: V(tcp), V(udp), V(icmp), V(esp), V(ah), V(sctp), V(ipip), V(all), or a protocol number.
        type: str
        required: true
      ports:
        description:
          - Ports or port ranges, for example V(["8000", "8001"]) or V(["8000-8001"]). Only for tcp, udp and
            sctp. Omit for every port.
        type: list
        elements: str
  source_ranges:
    description:
      - Source CIDR ranges (IPv4 or IPv6) for an C(INGRESS) rule, for example V(["203.0.113.0/24"]).
      - Required for an C(INGRESS) rule unless O(source_tags) is set. V(0.0.0.0/0) (the whole internet) must
        be written explicitly and gives a warning.
    type: list
    elements: str
  source_tags:
    description: Network tags of source instances (INGRESS only).
    type: list
    elements: str
  destination_ranges:
    description: Destination CIDR ranges (EGRESS rules).
    type: list
    elements: str
  target_tags:
    description: Network tags of the instances the rule applies to. Omit for every instance of the network.
    type: list
    elements: str
  description:
    description: Description of the rule.
    type: str
  operation_timeout:
    description: Seconds to wait for each operation to finish.
    type: int
    default: 300
'''

EXAMPLES = r'''
- name: The runbook's AI server rule, open only to the office range
  llmops.gce_vllm.gce_firewall:
    project: my-project
    name: allow-ai-server-ports
    network: default
    direction: INGRESS
    priority: 1000
    allowed:
      - ip_protocol: tcp
        ports: ["8000", "8001"]
    source_ranges: ["203.0.113.0/24"]
    target_tags: [ai-server]

- name: Monitoring exporters, from inside the VPC only
  llmops.gce_vllm.gce_firewall:
    project: my-project
    name: allow-monitoring-ports
    allowed:
      - ip_protocol: tcp
        ports: ["9100", "9400"]
    source_ranges: ["10.128.0.0/9"]
    target_tags: [monitoring]

- name: Remove a rule
  llmops.gce_vllm.gce_firewall:
    project: my-project
    name: allow-monitoring-ports
    state: absent
'''

RETURN = r'''
firewall:
  description: The firewall rule as the API returns it (absent after deletion).
  returned: when the rule exists at the end (or would, in check mode)
  type: dict
  sample:
    name: allow-ai-server-ports
    direction: INGRESS
    priority: 1000
    allowed: [{IPProtocol: tcp, ports: ["8000", "8001"]}]
    sourceRanges: ["203.0.113.0/24"]
    targetTags: [ai-server]
name:
  description: Name of the rule.
  returned: always
  type: str
  sample: allow-ai-server-ports
action:
  description: What was done (or would be done in check mode).
  returned: always
  type: str
  sample: patched
  choices: [none, created, patched, recreated, deleted]
self_link:
  description: The rule's self link.
  returned: when the rule exists at the end
  type: str
  sample: https://www.googleapis.com/compute/v1/projects/my-project/global/firewalls/allow-ai-server-ports
'''


from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce import (
    GCE_AUTH_ARGSPEC,
    GceError,
    client_from_module,
)
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce_rules import (
    FIREWALL_OPTIONS,
    firewall_problems,
    network_id,
    network_path,
)


def validate(module):
    """The rules of gce_rules.firewall_problems (the ones gce_preflight checks for a whole plan)."""
    errors, warnings = firewall_problems(module.params)
    if errors:
        module.fail_json(msg="; ".join(errors), errors=errors)
    for warning in warnings:
        module.warn(warning)


def desired_body(p):
    body = {
        "name": p["name"],
        "network": network_path(p["network"]),
        "direction": p["direction"],
        "priority": p["priority"],
        "allowed": [],
    }
    for rule in p["allowed"] or []:
        entry = {"IPProtocol": str(rule["ip_protocol"]).lower()}
        if rule.get("ports"):
            entry["ports"] = [str(x).strip() for x in rule["ports"]]
        body["allowed"].append(entry)
    for opt, field in (("source_ranges", "sourceRanges"), ("source_tags", "sourceTags"),
                       ("destination_ranges", "destinationRanges"), ("target_tags", "targetTags"),
                       ("description", "description")):
        if p[opt] is not None:
            body[field] = list(p[opt]) if isinstance(p[opt], list) else p[opt]
    return body


def _norm(field, value):
    """A comparable form of a managed field (order of lists does not matter to the API)."""
    if field == "allowed":
        return sorted((r.get("IPProtocol"), tuple(sorted(r.get("ports") or []))) for r in value or [])
    if isinstance(value, list):
        return sorted(value)
    if field == "description":
        return value or ""
    return value


def differences(existing, desired):
    """Managed fields whose values differ (network and direction compared separately)."""
    changed = []
    for field, value in desired.items():
        if field in ("name", "network", "direction"):
            continue
        current = existing.get(field)
        if field in ("sourceRanges", "sourceTags", "destinationRanges", "targetTags") and current is None:
            current = []
        if _norm(field, current) != _norm(field, value):
            changed.append(field)
    return changed


def _view(resource):
    if resource is None:
        return {}
    keys = ("name", "network", "direction", "priority", "allowed", "sourceRanges", "sourceTags",
            "destinationRanges", "targetTags", "description")
    out = dict((k, resource[k]) for k in keys if k in resource)
    if "network" in out:
        out["network"] = network_id(out["network"], None)[1]
    return out


def main():
    argument_spec = dict(GCE_AUTH_ARGSPEC)
    argument_spec.update(FIREWALL_OPTIONS)
    argument_spec.update(operation_timeout=dict(type="int", default=300))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    validate(module)
    client = client_from_module(module)
    path = client.project_path("global", "firewalls", p["name"])
    result = dict(changed=False, name=p["name"], action="none")
    try:
        existing = client.get(path)
        timeout = p["operation_timeout"]
        if p["state"] == "absent":
            if existing is not None:
                result.update(changed=True, action="deleted")
                if not module.check_mode:
                    client.mutate("DELETE", path, timeout=timeout)
            result["diff"] = dict(before=_view(existing), after={})
            module.exit_json(**result)

        desired = desired_body(p)
        if existing is None:
            action = "created"
        elif (network_id(existing.get("network"), client.project) != network_id(desired["network"], client.project)
              or existing.get("direction", "INGRESS") != desired["direction"]):
            action = "recreated"
        else:
            action = "patched" if differences(existing, desired) else "none"
        result["action"] = action
        final = existing
        if action != "none":
            result["changed"] = True
            if module.check_mode:
                final = dict(existing or {}, **desired)
            else:
                if action == "created":
                    client.mutate("POST", client.project_path("global", "firewalls"), body=desired, timeout=timeout)
                elif action == "recreated":
                    client.mutate("DELETE", path, timeout=timeout)
                    client.mutate("POST", client.project_path("global", "firewalls"), body=desired, timeout=timeout)
                else:
                    patch = dict((k, desired[k]) for k in differences(existing, desired))
                    patch["name"] = p["name"]  # the API requires the name in a patch
                    client.mutate("PATCH", path, body=patch, timeout=timeout)
                final = client.get(path)
        result["firewall"] = final
        result["self_link"] = (final or {}).get("selfLink")
        after = dict(existing or {}, **desired) if module.check_mode else final
        result["diff"] = dict(before=_view(existing), after=_view(after))
    except GceError as e:
        module.fail_json(msg="firewall rule %s: %s" % (p["name"], e), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
