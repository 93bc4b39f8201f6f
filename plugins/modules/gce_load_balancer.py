#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: gce_load_balancer
short_description: A regional external passthrough Network Load Balancer in front of a fleet of GCE VMs
version_added: 0.1.0
description:
  - "Creates, updates or deletes, through the Compute Engine v1 REST API, the resources of one backend
    service-based external passthrough Network Load Balancer: a regional HTTP health check (the readiness path),
    one unmanaged instance group per zone holding the VMs of that zone, a regional backend service
    (C(loadBalancingScheme=EXTERNAL), protocol TCP, connection draining) with those groups as backends, and a
    regional forwarding rule (an external address, the forwarded port) to the backend service."
  - "Why this type: it passes TCP through unchanged (the VMs terminate the connections and see the clients'
    addresses, so the firewall rule of the AI ports keeps deciding who may connect), it needs no URL map, target
    proxy or certificate, and its health check can probe a path other than the one it forwards. An external
    Application Load Balancer would add URL maps and target proxies and terminate HTTP itself."
  - One module for the whole balancer, not one per resource kind, because the resources only make sense
    together and must be created and deleted in dependency order (forwarding rule -> backend service -> health
    check and instance groups); a rerun after an interrupted run converges (each resource is read, then
    created, updated or deleted as needed).
  - "The firewall rule that admits Google's health-check probes is not made here: use M(llmops.gce_vllm.gce_firewall)
    with the source ranges C(35.191.0.0/16), C(209.85.152.0/22) and C(209.85.204.0/22) on the health-check port
    (what the role C(gce_vllm) does)."
  - Every input is checked before the first API call; every member must be in one region (a passthrough
    Network Load Balancer is regional).
  - Resource names are O(name) for the health check, the backend service and the forwarding rule, and
    O(name)C(-)ZONE for the instance group of each zone.
author:
  - llmops team (@llmops)
extends_documentation_fragment:
  - llmops.gce_vllm.gce
  - llmops.gce_vllm.gce.load_balancer
attributes:
  check_mode:
    support: full
    description: Reports what would change; only reads from the API.
  diff_mode:
    support: full
    description: Shows the managed fields of every resource before and after.
options:
  # name, region and the type and suboptions of instances: the fragment llmops.gce_vllm.gce.load_balancer
  state:
    description:
      - V(present) creates or reconciles every resource; V(absent) deletes them, forwarding rule first.
      - With V(absent) the instance groups found are those the backend service names, and those of the zones of
        O(instances) (so a rerun after an interrupted teardown finds groups the backend service no longer names).
    type: str
    choices: [present, absent]
    default: present
  network:
    description: VPC network of the instance groups (the VMs' network), as a name or C(global/networks/NAME).
    type: str
    default: default
  instances:
    description:
      - The VMs behind the load balancer, each by name and zone. The instance group of each zone is made to hold
        exactly these VMs (others are removed from it); groups of zones no longer used are removed from the
        backend service and deleted.
    default: []
  port:
    description: The TCP port the forwarding rule forwards (the AI server's public port).
    type: int
    default: 8000
  health_check:
    description: The HTTP health check the backend service uses.
    type: dict
    default: {}
    suboptions:
      port:
        description: Port of the probes. Default O(port).
        type: int
      request_path:
        description: Path of the probes (the AI server's readiness, 200 only when it may take traffic).
        type: str
        default: /ready
      check_interval_sec:
        description: Seconds between probes.
        type: int
        default: 5
      timeout_sec:
        description: Seconds a probe may take (at most O(health_check.check_interval_sec)).
        type: int
        default: 5
      healthy_threshold:
        description: Consecutive successes before a VM gets traffic.
        type: int
        default: 2
      unhealthy_threshold:
        description: Consecutive failures before a VM gets no new connections.
        type: int
        default: 2
  draining_timeout_sec:
    description: Connection draining of the backend service, in seconds (0..3600).
    type: int
    default: 60
  description:
    description: Description of the resources.
    type: str
    default: AI server load balancer (managed by llmops.gce_vllm)
  operation_timeout:
    description: Seconds to wait for each operation to finish.
    type: int
    default: 300
notes:
  - Verified against the collection's local stand-in of the Compute API (tests/compute_api), which validates
    every request against Google's discovery document; not against real Google Cloud.
'''

EXAMPLES = r'''
- name: Three VMs of two zones behind one address, health-checked on /ready
  llmops.gce_vllm.gce_load_balancer:
    project: my-project
    name: ai-server-lb
    instances:
      - {name: ai-server-l4-1, zone: asia-northeast3-a}
      - {name: ai-server-l4-2, zone: asia-northeast3-b}
      - {name: ai-server-l4-3, zone: asia-northeast3-a}
    port: 8000
    health_check:
      request_path: /ready
      check_interval_sec: 5
      healthy_threshold: 2
      unhealthy_threshold: 2
  register: lb

- name: Where clients connect
  ansible.builtin.debug:
    msg: "http://{{ lb.ip_address }}:8000/"

- name: Delete it (forwarding rule, backend service, health check, instance groups)
  llmops.gce_vllm.gce_load_balancer:
    project: my-project
    name: ai-server-lb
    state: absent
    instances:
      - {name: ai-server-l4-1, zone: asia-northeast3-a}
      - {name: ai-server-l4-2, zone: asia-northeast3-b}
'''

RETURN = r'''
actions:
  description: What was done (or would be, in check mode), in order, as C(VERB KIND NAME).
  returned: always
  type: list
  elements: str
  sample: ["created health check ai-server-lb", "created instance group ai-server-lb-asia-northeast3-a"]
region:
  description: The load balancer's region.
  returned: always
  type: str
  sample: asia-northeast3
ip_address:
  description: The forwarding rule's external address (null in check mode before it exists, and after deletion).
  returned: always
  type: str
  sample: 203.0.113.7
health_check:
  description: Self link of the health check.
  returned: with O(state=present)
  type: str
backend_service:
  description: Self link of the backend service.
  returned: with O(state=present)
  type: str
forwarding_rule:
  description: Self link of the forwarding rule.
  returned: with O(state=present)
  type: str
instance_groups:
  description: Self links of the instance groups, by zone.
  returned: with O(state=present)
  type: dict
health:
  description:
    - What the backend service reports for each VM (regionBackendServices.getHealth), by VM name; C(HEALTHY)
      or C(UNHEALTHY). Read only with O(state=present), after the changes (not in check mode).
  returned: with O(state=present), not in check mode
  type: dict
  sample: {ai-server-l4-1: HEALTHY, ai-server-l4-2: UNHEALTHY}
'''

import copy

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce import (
    GCE_AUTH_ARGSPEC,
    GceError,
    backend_health,
    client_from_module,
)
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce_rules import (
    LOAD_BALANCER_OPTIONS,
    basename,
    load_balancer_problems,
    network_id,
    network_path,
    zone_region,
)

_HC_FIELDS = ("checkIntervalSec", "timeoutSec", "healthyThreshold", "unhealthyThreshold")


def argument_spec():
    spec = dict(GCE_AUTH_ARGSPEC)
    spec.update(copy.deepcopy(LOAD_BALANCER_OPTIONS))
    spec.update(operation_timeout=dict(type="int", default=300))
    return spec


class Balancer(object):
    """The load balancer's resources, read, compared and changed in dependency order."""

    def __init__(self, module, client, region):
        self.module = module
        self.client = client
        self.p = module.params
        self.region = region
        self.actions = []
        self.before = {}
        self.after = {}
        self.timeout = self.p["operation_timeout"]

    # ------------------------------------------------------------------ helpers
    def rpath(self, kind, name=None):
        parts = ["regions", self.region, kind] + ([name] if name else [])
        return self.client.project_path(*parts)

    def gpath(self, zone, name=None, verb=None):
        parts = ["zones", zone, "instanceGroups"] + ([name] if name else []) + ([verb] if verb else [])
        return self.client.project_path(*parts)

    def link(self, path):
        return "https://www.googleapis.com/compute/v1/" + path

    def act(self, text, method, path, body=None):
        self.actions.append(text)
        if not self.module.check_mode:
            self.client.mutate(method, path, body=body, timeout=self.timeout)

    def group_name(self, zone):
        return "%s-%s" % (self.p["name"], zone)

    # ------------------------------------------------------------------ desired state
    def hc_body(self):
        hc = self.p["health_check"]
        return {"name": self.p["name"], "type": "HTTP", "description": self.p["description"],
                "httpHealthCheck": {"port": hc["port"] or self.p["port"], "requestPath": hc["request_path"]},
                "checkIntervalSec": hc["check_interval_sec"], "timeoutSec": hc["timeout_sec"],
                "healthyThreshold": hc["healthy_threshold"], "unhealthyThreshold": hc["unhealthy_threshold"]}

    @staticmethod
    def hc_view(hc):
        if not hc:
            return {}
        http = hc.get("httpHealthCheck") or {}
        view = dict((k, hc.get(k)) for k in _HC_FIELDS)
        view.update(type=hc.get("type"), port=http.get("port"), requestPath=http.get("requestPath"))
        return view

    def zones(self):
        out = []
        for inst in self.p["instances"]:
            if inst["zone"] not in out:
                out.append(inst["zone"])
        return out

    def bs_body(self, groups):
        return {"name": self.p["name"], "description": self.p["description"], "loadBalancingScheme": "EXTERNAL",
                "protocol": "TCP", "healthChecks": [self.link(self.rpath("healthChecks", self.p["name"]))],
                "backends": [{"group": g, "balancingMode": "CONNECTION"} for g in groups],
                "connectionDraining": {"drainingTimeoutSec": self.p["draining_timeout_sec"]}}

    @staticmethod
    def bs_view(bs):
        if not bs:
            return {}
        return {"protocol": bs.get("protocol"), "loadBalancingScheme": bs.get("loadBalancingScheme"),
                "healthChecks": [basename(h) for h in bs.get("healthChecks") or []],
                "backends": sorted(basename(b.get("group")) for b in bs.get("backends") or []),
                "drainingTimeoutSec": (bs.get("connectionDraining") or {}).get("drainingTimeoutSec", 0)}

    def fr_body(self):
        return {"name": self.p["name"], "description": self.p["description"], "loadBalancingScheme": "EXTERNAL",
                "IPProtocol": "TCP", "ports": [str(self.p["port"])], "networkTier": "PREMIUM",
                "backendService": self.link(self.rpath("backendServices", self.p["name"]))}

    @staticmethod
    def fr_view(fr):
        if not fr:
            return {}
        return {"IPProtocol": fr.get("IPProtocol"), "ports": sorted(fr.get("ports") or []),
                "portRange": fr.get("portRange"), "backendService": basename(fr.get("backendService")),
                "loadBalancingScheme": fr.get("loadBalancingScheme")}

    # ------------------------------------------------------------------ present
    def present(self):
        p = self.p
        result = {}
        # 1. health check
        path = self.rpath("healthChecks", p["name"])
        hc = self.client.get(path)
        want = self.hc_body()
        self.before["health_check"] = self.hc_view(hc)
        self.after["health_check"] = self.hc_view(want)
        if hc is None:
            self.act("created health check %s" % p["name"], "POST", self.rpath("healthChecks"), want)
        elif self.hc_view(hc) != self.hc_view(want):
            self.act("patched health check %s" % p["name"], "PATCH", path, want)
        result["health_check"] = self.link(path)

        # 2. one instance group per zone, holding exactly the VMs of that zone
        network = network_path(p["network"])
        groups = {}
        self.before["instance_groups"], self.after["instance_groups"] = {}, {}
        for zone in self.zones():
            name = self.group_name(zone)
            gpath = self.gpath(zone, name)
            group = self.client.get(gpath)
            wanted = sorted(self.link(self.client.project_path("zones", zone, "instances", i["name"]))
                            for i in p["instances"] if i["zone"] == zone)
            members = []
            if group is None:
                self.act("created instance group %s" % name, "POST", self.gpath(zone),
                         {"name": name, "network": network, "description": p["description"]})
            else:
                if network_id(group.get("network"), self.client.project) != network_id(network, self.client.project):
                    self.module.fail_json(msg="instance group %s is in network %s, not %s: delete it (state=absent) "
                                              "or set network" % (name, basename(group.get("network")),
                                                                  basename(network)), actions=self.actions)
                page = self.client.request("POST", self.gpath(zone, name, "listInstances"),
                                           body={"instanceState": "ALL"})
                members = sorted(item["instance"] for item in page.get("items") or [])
                while page.get("nextPageToken"):
                    page = self.client.request("POST", self.gpath(zone, name, "listInstances"),
                                               params={"pageToken": page["nextPageToken"]},
                                               body={"instanceState": "ALL"})
                    members += sorted(item["instance"] for item in page.get("items") or [])
            members = [self._canonical(m) for m in members]
            self.before["instance_groups"][name] = [basename(m) for m in members] if group is not None else None
            self.after["instance_groups"][name] = [basename(m) for m in wanted]
            add = [m for m in wanted if m not in members]
            remove = [m for m in members if m not in wanted]
            if remove:
                self.act("removed %s from instance group %s" % (", ".join(basename(m) for m in remove), name),
                         "POST", self.gpath(zone, name, "removeInstances"),
                         {"instances": [{"instance": m} for m in remove]})
            if add:
                self.act("added %s to instance group %s" % (", ".join(basename(m) for m in add), name),
                         "POST", self.gpath(zone, name, "addInstances"),
                         {"instances": [{"instance": m} for m in add]})
            groups[zone] = self.link(gpath)
        result["instance_groups"] = groups

        # 3. backend service, its backends the groups of this run
        bpath = self.rpath("backendServices", p["name"])
        bs = self.client.get(bpath)
        want_bs = self.bs_body([groups[z] for z in self.zones()])
        self.before["backend_service"] = self.bs_view(bs)
        self.after["backend_service"] = self.bs_view(want_bs)
        stale = []
        if bs is None:
            self.act("created backend service %s" % p["name"], "POST", self.rpath("backendServices"), want_bs)
        elif self.bs_view(bs) != self.bs_view(want_bs):
            stale = [b["group"] for b in bs.get("backends") or []
                     if self._canonical(b.get("group")) not in [self._canonical(g) for g in groups.values()]]
            patch = dict(want_bs, fingerprint=bs.get("fingerprint"))
            self.act("patched backend service %s" % p["name"], "PATCH", bpath, patch)
        result["backend_service"] = self.link(bpath)

        # 4. forwarding rule (its fields cannot be patched: re-created, with a new address unless reserved)
        fpath = self.rpath("forwardingRules", p["name"])
        fr = self.client.get(fpath)
        want_fr = self.fr_body()
        self.before["forwarding_rule"] = self.fr_view(fr)
        self.after["forwarding_rule"] = self.fr_view(want_fr)
        if fr is not None and self.fr_view(fr) != self.fr_view(want_fr):
            self.module.warn("forwarding rule %s is re-created to change %s; its ephemeral address %s may change"
                             % (p["name"], ", ".join(k for k in self.fr_view(want_fr)
                                                     if self.fr_view(fr).get(k) != self.fr_view(want_fr).get(k)),
                                fr.get("IPAddress")))
            self.act("deleted forwarding rule %s (to re-create it)" % p["name"], "DELETE", fpath)
            fr = None
        if fr is None:
            self.act("created forwarding rule %s" % p["name"], "POST", self.rpath("forwardingRules"), want_fr)
        result["forwarding_rule"] = self.link(fpath)

        # 5. groups the backend service no longer names: deleted (after the backend service let them go)
        for group_link in stale:
            zone = basename(group_link.split("/instanceGroups/")[0])
            self.act("deleted instance group %s" % basename(group_link), "DELETE",
                     self.gpath(zone, basename(group_link)))

        if not self.module.check_mode:
            final = self.client.get(fpath) or {}
            result["ip_address"] = final.get("IPAddress")
            result["health"] = self.health(bpath, groups)
        else:
            result["ip_address"] = (fr or {}).get("IPAddress")
        return result

    def _canonical(self, link):
        """projects/... of a link (self links are https://www.googleapis.com/compute/v1/projects/...)."""
        link = link or ""
        i = link.find("projects/")
        return self.link(link[i:]) if i >= 0 else link

    def health(self, bpath, groups):
        return backend_health(self.client, self.region, basename(bpath), list(groups.values()))

    # ------------------------------------------------------------------ absent
    def absent(self):
        p = self.p
        fpath = self.rpath("forwardingRules", p["name"])
        fr = self.client.get(fpath)
        self.before["forwarding_rule"] = self.fr_view(fr)
        if fr is not None:
            self.act("deleted forwarding rule %s" % p["name"], "DELETE", fpath)
        bpath = self.rpath("backendServices", p["name"])
        bs = self.client.get(bpath)
        self.before["backend_service"] = self.bs_view(bs)
        group_links = [self._canonical(b.get("group")) for b in (bs or {}).get("backends") or []]
        for zone in self.zones():
            link = self.link(self.gpath(zone, self.group_name(zone)))
            if link not in group_links:
                group_links.append(link)
        if bs is not None:
            self.act("deleted backend service %s" % p["name"], "DELETE", bpath)
        hpath = self.rpath("healthChecks", p["name"])
        hc = self.client.get(hpath)
        self.before["health_check"] = self.hc_view(hc)
        if hc is not None:
            self.act("deleted health check %s" % p["name"], "DELETE", hpath)
        self.before["instance_groups"] = {}
        for link in group_links:
            zone = basename(link.split("/instanceGroups/")[0])
            name = basename(link)
            if self.client.get(self.gpath(zone, name)) is not None:
                self.before["instance_groups"][name] = []
                self.act("deleted instance group %s" % name, "DELETE", self.gpath(zone, name))
        return {"ip_address": None}


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    errors = load_balancer_problems(p)
    if errors:
        module.fail_json(msg="; ".join(errors), errors=errors)
    region = p["region"] or (zone_region(p["instances"][0]["zone"]) if p["instances"] else None)
    if not region:
        module.fail_json(msg="region is required with state=absent and no instances")
    client = client_from_module(module)
    lb = Balancer(module, client, region)
    result = dict(changed=False, region=region, actions=lb.actions)
    try:
        result.update(lb.present() if p["state"] == "present" else lb.absent())
    except GceError as e:
        module.fail_json(msg="load balancer %s: %s (done before: %s)" % (p["name"], e, "; ".join(lb.actions)
                                                                         or "nothing"), **result)
    result["changed"] = bool(lb.actions)
    result["diff"] = dict(before=lb.before, after=lb.after if p["state"] == "present" else {})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
