#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: gce_preflight
short_description: Check a whole GPU VM plan (VM, firewall rules, credentials) before creating anything
version_added: 0.1.0
description:
  - Read-only checks of the runbook's section 2 against the project, before anything is created.
  - "First, without any API call, every rule of the whole plan: each firewall rule of O(firewalls), the VM of
    O(instance) (or the single options O(zone), O(machine_type), O(accelerator_type), ...), and the connection
    options (project set and well formed, what O(auth_kind) needs, the service-account key file exists and is a
    JSON key, an access token is given). These are the very checks M(llmops.gce_vllm.gce_instance) and
    M(llmops.gce_vllm.gce_firewall) run on their own options (module_utils C(gce_rules)): C(nvidia-l4) needs a
    G2 machine type, a VM with GPUs needs C(on_host_maintenance=TERMINATE), Deep Learning VM images
    (C(deeplearning-platform-release)) do not work on G2, names, zones, ports, CIDR ranges, labels."
  - Every problem is collected; the module fails once, listing them all, each naming the input as O(names)
    says (a role passes its variable names) and the fix. A firewall rule open to C(0.0.0.0/0) is a warning.
  - Then through the API. The zone exists; the machine type exists in the zone (and what GPUs it carries);
    the accelerator type exists in the zone (acceleratorTypes) and the count fits; the image family resolves
    to its newest image (images.getFromFamily), which is returned, and the boot disk is not smaller than it.
  - Never changes anything (C(changed=false)).
author:
  - llmops team (@llmops)
extends_documentation_fragment:
  - llmops.gce_vllm.gce
attributes:
  check_mode:
    support: full
    description: Runs the same read-only checks.
  diff_mode:
    support: none
    description: Read-only; nothing to show.
options:
  instance:
    description:
      - The VM of the plan, with the options of M(llmops.gce_vllm.gce_instance) (as for its O(llmops.gce_vllm.gce_instance#module:state=present)).
      - With O(instance.state) V(started), V(stopped) or V(absent), only what that state needs (name, zone and any
        labels, tags or metadata given) is checked, and the API is not asked about the VM.
      - Mutually exclusive with the single options O(zone), O(machine_type), O(accelerator_type),
        O(image_family), O(image) and O(image_project).
    type: dict
    suboptions:
      state:
        description:
          - What the plan does with the VM. V(present) creates or reconciles it (every option is checked, then
            the zone, machine type, accelerator and image against the API); V(started), V(stopped) and V(absent)
            act on an existing VM by name and zone.
        type: str
        choices: [present, started, stopped, absent]
        default: present
      name:
        description: Name of the instance (RFC 1035). Required without O(fleet).
        type: str
      zone:
        description: Zone of the instance, for example V(asia-northeast3-a). Required without O(fleet).
        type: str
      machine_type:
        description: Machine type, for example V(g2-standard-4). Required to create the instance.
        type: str
      accelerators:
        description:
          - GPUs to attach. G2 machine types come with their L4 GPUs; listing them (the runbook's
            C(--accelerator=type=nvidia-l4,count=1)) is accepted when it matches.
        type: list
        elements: dict
        default: []
        suboptions:
          type:
            description: Accelerator type, for example V(nvidia-l4).
            type: str
            required: true
          count:
            description: Number of GPUs.
            type: int
            default: 1
      boot_disk:
        description: The boot disk, used when the instance is created.
        type: dict
        suboptions:
          image:
            description: An image name (in O(instance.boot_disk.image_project)) or an image URL. Mutually exclusive with O(instance.boot_disk.image_family).
            type: str
          image_family:
            description: An image family, resolved to its newest image at creation (images.getFromFamily).
            type: str
          image_project:
            description: Project of the image or family, for example V(ubuntu-os-accelerator-images). Defaults to O(project).
            type: str
          size_gb:
            description: Size in GB (at least 10, and not smaller than the image).
            type: int
            default: 10
          type:
            description: Disk type, for example V(pd-ssd) or V(pd-balanced).
            type: str
            default: pd-balanced
          auto_delete:
            description: Delete the disk with the instance.
            type: bool
            default: true
      scheduling:
        description: Scheduling. With GPUs, O(instance.scheduling.on_host_maintenance) must be V(TERMINATE) (its default then).
        type: dict
        suboptions:
          on_host_maintenance:
            description: V(TERMINATE) or V(MIGRATE). Default V(TERMINATE) with GPUs, else V(MIGRATE).
            type: str
            choices: [TERMINATE, MIGRATE]
          automatic_restart:
            description: Restart the VM after a host event or crash.
            type: bool
            default: true
      network:
        description: VPC network of the first interface (name, or C(global/networks/NAME) path or URL).
        type: str
        default: default
      subnetwork:
        description: Subnetwork of the first interface (name in the zone's region, path or URL); its region must be the zone's.
        type: str
      external_ip:
        description: Give the VM an ephemeral external IP (ONE_TO_ONE_NAT access config).
        type: bool
        default: true
      tags:
        description: Network tags (the firewall rules target them). Managed exactly when given.
        type: list
        elements: str
      labels:
        description: Labels. Managed exactly when given.
        type: dict
      metadata:
        description:
          - Metadata items. The keys given are set to the values given; other keys already on the instance are kept.
        type: dict
      service_account_email:
        description:
          - Service account of the VM (used at creation). Omitted, the project's default compute service account
            (as gcloud does); V(none) for none.
        type: str
      service_account_scopes:
        description: OAuth scopes of the VM's service account (used at creation). The default is gcloud's default set.
        type: list
        elements: str
        default:
          - https://www.googleapis.com/auth/devstorage.read_only
          - https://www.googleapis.com/auth/logging.write
          - https://www.googleapis.com/auth/monitoring.write
          - https://www.googleapis.com/auth/pubsub
          - https://www.googleapis.com/auth/service.management.readonly
          - https://www.googleapis.com/auth/servicecontrol
          - https://www.googleapis.com/auth/trace.append
  firewalls:
    description:
      - The firewall rules of the plan, each with the options of M(llmops.gce_vllm.gce_firewall).
      - Their rules are checked before any API call; the API is not asked about them.
    type: list
    elements: dict
    suboptions:
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
          - What the rule allows. Required with O(firewalls[].state=present).
        type: list
        elements: dict
        suboptions:
          ip_protocol:
            description: V(tcp), V(udp), V(icmp), V(esp), V(ah), V(sctp), V(ipip), V(all), or a protocol number.
            type: str
            required: true
          ports:
            description:
              - Ports or port ranges, for example V([8000, 8001]) or V(["8000-8001"]). Only for tcp, udp and
                sctp. Omit for every port.
              - A list of numbers or strings; unlike M(llmops.gce_vllm.gce_firewall), a comma-separated string
                such as V("8000,8001") is refused rather than split, so that a mistyped variable is caught.
            type: raw
      source_ranges:
        description:
          - Source CIDR ranges (IPv4 or IPv6) for an C(INGRESS) rule, for example V(["203.0.113.0/24"]).
          - Required for an C(INGRESS) rule unless O(firewalls[].source_tags) is set. V(0.0.0.0/0) (the whole internet) must
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
  fleet:
    description:
      - The VMs of the plan when there are several, each as its name and zone; O(instance) is then the template
        that every member shares (its O(instance.name) and O(instance.zone) are not used).
      - Checked before any API call, all problems in one failure. Each name is used once in the whole fleet,
        even across zones (the inventory and the load balancer's instance groups know a VM by its name).
      - With O(instance.state=present) the API is asked once per zone of the selected members (machine type, GPU,
        image), which VMs exist already, and whether the regional GPU quota (for example C(NVIDIA_L4_GPUS)) and
        the project's C(GPUS_ALL_REGIONS) have room for the GPUs of the VMs still to be created.
      - Names in messages use the pattern entries of O(names), for example C(fleet.N.zone) to
        C(gce_vllm_instances[N].zone).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the VM (RFC 1035).
        type: str
        required: true
      zone:
        description: Zone of the VM.
        type: str
        required: true
  load_balancer:
    description:
      - The load balancer of the plan, with the options of M(llmops.gce_vllm.gce_load_balancer); its rules are
        checked before any API call (one region for every VM, ports, health-check timing, names), named as
        O(names) says (C(load_balancer.health_check.timeout_sec) ...). The API is not asked about it.
    type: dict
    suboptions:
      name:
        description: Name of the load balancer's resources.
        type: str
        required: true
      state:
        description: Whether it should exist.
        type: str
        choices: [present, absent]
        default: present
      region:
        description: Its region (default the VMs' region).
        type: str
      network:
        description: The VMs' network.
        type: str
        default: default
      instances:
        description: The VMs behind it.
        type: list
        elements: dict
        default: []
        suboptions:
          name:
            description: Name of the VM.
            type: str
            required: true
          zone:
            description: Zone of the VM.
            type: str
            required: true
      port:
        description: The forwarded port.
        type: int
        default: 8000
      health_check:
        description: The health check (as in M(llmops.gce_vllm.gce_load_balancer)).
        type: dict
        default: {}
        suboptions:
          port:
            description: Port of the probes.
            type: int
          request_path:
            description: Path of the probes.
            type: str
            default: /ready
          check_interval_sec:
            description: Seconds between probes.
            type: int
            default: 5
          timeout_sec:
            description: Seconds a probe may take.
            type: int
            default: 5
          healthy_threshold:
            description: Successes before traffic.
            type: int
            default: 2
          unhealthy_threshold:
            description: Failures before no new connections.
            type: int
            default: 2
      draining_timeout_sec:
        description: Connection draining, seconds.
        type: int
        default: 60
      description:
        description: Description of the resources.
        type: str
        default: AI server load balancer (managed by llmops.gce_vllm)
  only:
    description:
      - Names of the members of O(fleet) that the plan acts on; empty for all. A name that is not in O(fleet) is
        an error (named as O(names) says for C(only)).
    type: list
    elements: str
    default: []
  names:
    description:
      - "How messages name each input: a mapping of option paths to names, for example C(instance.zone) to
        C(gce_vllm_zone), C(firewalls.0.source_ranges) to C(gce_vllm_ai_source_ranges), C(firewalls.0.allowed.0.ports)
        to C(gce_vllm_ai_ports), C(project) to C(gce_vllm_project)."
      - A list index is a path element (C(firewalls.0.name)). An input without an entry is named by its path.
      - "An entry with C(N) for the index names every element of a list: C(fleet.N.zone) to
        C(gce_vllm_instances[N].zone)."
    type: dict
    default: {}
  zone:
    description:
      - Zone, for example V(asia-northeast3-a), when the VM is not given as O(instance).
      - Required with O(machine_type).
    type: str
  machine_type:
    description:
      - Machine type, for example V(g2-standard-4), when the VM is not given as O(instance).
      - Required with O(zone).
    type: str
  accelerator_type:
    description: Accelerator type, for example V(nvidia-l4). Omit for a VM without GPUs.
    type: str
  accelerator_count:
    description: Number of GPUs of O(accelerator_type).
    type: int
    default: 1
  image_family:
    description: Image family to resolve to its newest image. Mutually exclusive with O(image).
    type: str
  image:
    description: An image name (in O(image_project)) to check instead of a family.
    type: str
  image_project:
    description: Project of the image family, for example V(ubuntu-os-accelerator-images). Defaults to O(project).
    type: str
notes:
  - One of O(instance), O(zone) or O(firewalls) is required.
'''

EXAMPLES = r'''
- name: Can the runbook's L4 VM be created here?
  llmops.gce_vllm.gce_preflight:
    project: my-project
    zone: asia-northeast3-a
    machine_type: g2-standard-4
    accelerator_type: nvidia-l4
    accelerator_count: 1
    image_family: ubuntu-accelerator-2204-amd64-with-nvidia-580
    image_project: ubuntu-os-accelerator-images
  register: preflight

- name: The image the VM will boot
  ansible.builtin.debug:
    var: preflight.image.name

- name: The whole plan in one task, errors naming the role's variables
  llmops.gce_vllm.gce_preflight:
    project: "{{ gce_vllm_project }}"
    instance:
      name: "{{ gce_vllm_instance_name }}"
      zone: "{{ gce_vllm_zone }}"
      machine_type: g2-standard-4
      accelerators: [{type: nvidia-l4, count: 1}]
      boot_disk:
        image_family: ubuntu-accelerator-2204-amd64-with-nvidia-580
        image_project: ubuntu-os-accelerator-images
        size_gb: 200
        type: pd-ssd
      scheduling: {on_host_maintenance: TERMINATE, automatic_restart: true}
      tags: [ai-server]
    firewalls:
      - name: allow-ai-server-ports
        allowed: [{ip_protocol: tcp, ports: "{{ gce_vllm_ai_ports }}"}]
        source_ranges: "{{ gce_vllm_ai_source_ranges }}"
        target_tags: [ai-server]
    names:
      project: gce_vllm_project
      instance.name: gce_vllm_instance_name
      instance.zone: gce_vllm_zone
      firewalls.0.allowed.0.ports: gce_vllm_ai_ports
      firewalls.0.source_ranges: gce_vllm_ai_source_ranges

- name: Three VMs over two zones, the same template; errors name the role's variables
  llmops.gce_vllm.gce_preflight:
    instance:
      machine_type: g2-standard-4
      boot_disk:
        image_family: ubuntu-accelerator-2204-amd64-with-nvidia-580
        image_project: ubuntu-os-accelerator-images
        size_gb: 200
    fleet:
      - {name: ai-server-l4-1, zone: asia-northeast3-a}
      - {name: ai-server-l4-2, zone: asia-northeast3-b}
      - {name: ai-server-l4-3, zone: asia-northeast3-c}
    names:
      fleet.N.name: gce_vllm_instances[N].name
      fleet.N.zone: gce_vllm_instances[N].zone
'''

RETURN = r'''
zone:
  description: The zone checked.
  returned: when a VM is checked
  type: str
  sample: asia-northeast3-a
machine_type:
  description: The machine type as found in the zone.
  returned: when a VM is checked
  type: dict
  contains:
    name:
      description: Name.
      type: str
      sample: g2-standard-4
    guest_cpus:
      description: vCPUs.
      type: int
      sample: 4
    memory_mb:
      description: Memory in MB.
      type: int
      sample: 16384
    accelerators:
      description: GPUs that come with the machine type (G2, A2, A3), as C({type, count}).
      type: list
      elements: dict
      sample: [{type: nvidia-l4, count: 1}]
accelerator:
  description: The accelerator type as found in the zone (null without GPUs to attach).
  returned: when a VM is checked
  type: dict
  contains:
    name:
      description: Name.
      type: str
      sample: nvidia-l4
    description:
      description: Description.
      type: str
      sample: NVIDIA L4
    maximum_cards_per_instance:
      description: Most GPUs of this type per VM.
      type: int
      sample: 8
image:
  description: The image the VM would boot (the family's newest image).
  returned: when an image (family) is given
  type: dict
  contains:
    name:
      description: Image name.
      type: str
      sample: ubuntu-accelerator-2204-amd64-with-nvidia-580-v20260210
    self_link:
      description: Image self link.
      type: str
      sample: https://www.googleapis.com/compute/v1/projects/ubuntu-os-accelerator-images/global/images/ubuntu-accelerator-2204-amd64-with-nvidia-580-v20260210
    family:
      description: Family.
      type: str
      sample: ubuntu-accelerator-2204-amd64-with-nvidia-580
    creation_timestamp:
      description: When the image was made.
      type: str
      sample: "2026-02-10T10:00:00.000-07:00"
    disk_size_gb:
      description: Smallest disk for this image, in GB (a string, as the API writes int64).
      type: str
      sample: "10"
fleet:
  description: The selected members of O(fleet) (all without O(only)), and whether each exists already.
  returned: when O(fleet) is given
  type: list
  elements: dict
  sample: [{name: ai-server-l4-1, zone: asia-northeast3-a, exists: true}, {name: ai-server-l4-2, zone: asia-northeast3-b, exists: null}]
  contains:
    name:
      description: Name.
      type: str
    zone:
      description: Zone.
      type: str
    exists:
      description: Whether the VM exists (asked only with O(instance.state=present); null otherwise).
      type: bool
quota:
  description: The GPU quotas checked for the VMs still to be created (with O(fleet) and O(instance.state=present)).
  returned: when O(fleet) is given and O(instance.state=present)
  type: list
  elements: dict
  sample: [{scope: asia-northeast3, metric: NVIDIA_L4_GPUS, needed: 2, limit: 8.0, usage: 1.0}]
  contains:
    scope:
      description: The region, or C(global) for C(GPUS_ALL_REGIONS).
      type: str
    metric:
      description: The quota metric.
      type: str
    needed:
      description: GPUs the VMs to create need.
      type: int
    limit:
      description: The quota's limit (null when the API does not list the metric).
      type: float
    usage:
      description: GPUs in use (null when the API does not list the metric).
      type: float
errors:
  description: Every problem found, each naming the input (as O(names) says) and the fix.
  returned: failure
  type: list
  elements: str
  sample: ["gce_vllm_zone 'asia-northeast3' is not a zone name ..."]
'''

import copy

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce import (
    GCE_AUTH_ARGSPEC,
    GceError,
    client_from_module,
)
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce_rules import (
    FIREWALL_OPTIONS,
    GLOBAL_GPU_METRIC,
    LOAD_BALANCER_OPTIONS,
    GPU_QUOTA_METRICS,
    INSTANCE_OPTIONS,
    VM_REF_OPTIONS,
    Names,
    api_option_problems,
    basename,
    check_gpu_setup,
    check_zone,
    fleet_problems,
    fleet_selection,
    image_path,
    image_problems,
    load_balancer_problems,
    plan_problems,
    quota_problems,
    zone_region,
)

_SINGLE_VM_OPTIONS = ("zone", "machine_type", "accelerator_type", "image_family", "image", "image_project")


def argument_spec():
    spec = dict(GCE_AUTH_ARGSPEC)
    instance = copy.deepcopy(INSTANCE_OPTIONS)
    instance["state"] = dict(type="str", choices=["present", "started", "stopped", "absent"], default="present")
    # with a fleet the members carry the names and zones (checked in main() without one)
    instance["name"] = dict(type="str")
    instance["zone"] = dict(type="str")
    firewall = copy.deepcopy(FIREWALL_OPTIONS)
    # a string is refused (check_ports names the variable) instead of being split at commas
    firewall["allowed"]["options"]["ports"] = dict(type="raw")
    spec.update(
        instance=dict(type="dict", options=instance),
        firewalls=dict(type="list", elements="dict", options=firewall),
        fleet=dict(type="list", elements="dict", options=copy.deepcopy(VM_REF_OPTIONS)),
        only=dict(type="list", elements="str", default=[]),
        load_balancer=dict(type="dict", options=copy.deepcopy(LOAD_BALANCER_OPTIONS)),
        names=dict(type="dict", default={}),
        zone=dict(type="str"),
        machine_type=dict(type="str"),
        accelerator_type=dict(type="str"),
        accelerator_count=dict(type="int", default=1),
        image_family=dict(type="str"),
        image=dict(type="str"),
        image_project=dict(type="str"),
    )
    return spec


def single_vm_plan(p, names):
    """(errors, vm) of the single options zone/machine_type/accelerator_*/image*: vm as the API phase reads it."""
    errors = []
    err = check_zone(p["zone"], names("zone"))
    if err:
        errors.append(err)
    accelerators = []
    if p["accelerator_type"]:
        if p["accelerator_count"] < 1:
            errors.append("%s: must be at least 1 with accelerator_type %s"
                          % (names("accelerator_count"), p["accelerator_type"]))
        accelerators = [{"type": p["accelerator_type"], "count": p["accelerator_count"]}]
    errors.extend(check_gpu_setup(p["machine_type"], accelerators, None, p["image_project"],
                                  machine_type_name=names("machine_type"), accelerators_name=names("accelerator_type"),
                                  image_project_name=names("image_project"), image_family_name=names("image_family")))
    vm = dict(zone=p["zone"], machine_type=p["machine_type"], accelerators=accelerators, image=p["image"],
              image_family=p["image_family"], image_project=p["image_project"], size_gb=None,
              names=dict(zone=names("zone"), machine_type=names("machine_type"),
                         accelerator_type=names("accelerator_type"), accelerator_count=names("accelerator_count"),
                         image=names("image_family") if p["image_family"] else names("image"),
                         size_gb=None))
    return errors, vm


def instance_vm(inst, names):
    boot = inst.get("boot_disk") or {}
    return dict(zone=inst["zone"], machine_type=inst["machine_type"], accelerators=inst.get("accelerators") or [],
                image=boot.get("image"), image_family=boot.get("image_family"), image_project=boot.get("image_project"),
                size_gb=boot.get("size_gb"),
                names=dict(zone=names("zone"), machine_type=names("machine_type"),
                           accelerator_type=names("accelerators.0.type"),
                           accelerator_count=names("accelerators.0.count"),
                           image=names("boot_disk.image_family") if boot.get("image_family")
                           else names("boot_disk.image"), size_gb=names("boot_disk.size_gb")))


def check_vm_with_api(module, client, vm, result):
    """The API checks of one VM (zone, machine type, accelerator, image); fails the module at the first problem."""
    zone = vm["zone"]
    n = vm["names"]
    result["zone"] = zone
    if client.get(client.project_path("zones", zone)) is None:
        module.fail_json(msg="%s: %s does not exist in project %s (gcloud compute zones list)"
                             % (n["zone"], zone, client.project), **result)
    mt = client.get(client.project_path("zones", zone, "machineTypes", basename(vm["machine_type"])))
    if mt is None:
        module.fail_json(msg="%s: %s is not offered in zone %s%s (gcloud compute machine-types list --zones %s); pick "
                             "another zone or machine type" % (n["machine_type"], vm["machine_type"], zone,
                                                               n.get("where", ""), zone),
                         **result)
    bundled = [{"type": a.get("guestAcceleratorType"), "count": a.get("guestAcceleratorCount")}
               for a in mt.get("accelerators") or []]
    result["machine_type"] = dict(name=mt.get("name"), guest_cpus=mt.get("guestCpus"), memory_mb=mt.get("memoryMb"),
                                  accelerators=bundled)
    for wanted in vm["accelerators"][:1]:
        acc_type = basename(wanted["type"])
        count = wanted.get("count") or 1
        acc = client.get(client.project_path("zones", zone, "acceleratorTypes", acc_type))
        if acc is None:
            module.fail_json(msg="%s: %s is not available in zone %s%s; list the zones that have it with gcloud "
                                 "compute accelerator-types list --filter=name=%s"
                                 % (n["accelerator_type"], wanted["type"], zone, n.get("where", ""), acc_type),
                             **result)
        result["accelerator"] = dict(name=acc.get("name"), description=acc.get("description"),
                                     maximum_cards_per_instance=acc.get("maximumCardsPerInstance"))
        most = acc.get("maximumCardsPerInstance")
        if most and count > most:
            module.fail_json(msg="%s: %d is more than %d %s per VM" % (n["accelerator_count"], count, most,
                                                                       acc.get("name")), **result)
        if bundled and (bundled[0]["type"] != acc.get("name") or bundled[0]["count"] != count):
            module.fail_json(msg="%s: machine type %s comes with %d x %s; set %s/%s to match it, or choose the G2 "
                                 "size with %d GPU(s)" % (n["accelerator_count"], mt.get("name"), bundled[0]["count"],
                                                          bundled[0]["type"], n["accelerator_type"],
                                                          n["accelerator_count"], count), **result)
    if vm["image_family"] or vm["image"]:
        project = vm["image_project"] or client.project
        image = client.get(image_path(vm["image"], vm["image_family"], project, client.project))
        what = ("image family %s" % vm["image_family"]) if vm["image_family"] else ("image %s" % vm["image"])
        errors, warnings = image_problems(image, what, project, vm["size_gb"], name=n["image"],
                                          size_name=n["size_gb"])
        for warning in warnings:
            module.warn(warning)
        if errors:
            module.fail_json(msg="; ".join(errors), errors=errors, **result)
        result["image"] = dict(name=image.get("name"), self_link=image.get("selfLink"), family=image.get("family"),
                               creation_timestamp=image.get("creationTimestamp"), disk_size_gb=image.get("diskSizeGb"))


def fleet_quota(module, client, vm, members, result):
    """Which members exist; then the GPU quotas (regional per accelerator type, GPUS_ALL_REGIONS) against the GPUs
    of the members still to be created. Fails the module listing every quota without room."""
    per_vm = (result.get("machine_type") or {}).get("accelerators") or vm["accelerators"]
    new = []
    for member in members:
        member["exists"] = client.get(client.project_path("zones", member["zone"], "instances",
                                                          member["name"])) is not None
        if not member["exists"]:
            new.append(member)
    needed = {}  # scope -> {metric: GPUs}
    for member in new:
        for acc in per_vm[:1]:
            acc_type = basename(acc.get("type"))
            count = acc.get("count") or 1
            metric = GPU_QUOTA_METRICS.get(acc_type)
            if metric:
                region = needed.setdefault(zone_region(member["zone"]), {})
                region[metric] = region.get(metric, 0) + count
            total = needed.setdefault("global", {})
            total[GLOBAL_GPU_METRIC] = total.get(GLOBAL_GPU_METRIC, 0) + count
    result["quota"] = []
    errors = []
    for scope in sorted(needed):
        if scope == "global":
            quotas = (client.get(client.project_path()) or {}).get("quotas") or []
            where = "of project %s" % client.project
        else:
            quotas = (client.get(client.project_path("regions", scope)) or {}).get("quotas") or []
            where = "in region %s" % scope
        by_metric = dict((q.get("metric"), q) for q in quotas)
        for metric, want in sorted(needed[scope].items()):
            q = by_metric.get(metric) or {}
            result["quota"].append(dict(scope=scope, metric=metric, needed=want, limit=q.get("limit"),
                                        usage=q.get("usage")))
        errors.extend(quota_problems(needed[scope], quotas, where, Names(module.params["names"])("fleet")))
    if errors:
        module.fail_json(msg="; ".join(errors), errors=errors, **result)


def _unique(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(), supports_check_mode=True,
        mutually_exclusive=[("image", "image_family")] + [("instance", o) for o in _SINGLE_VM_OPTIONS],
        required_one_of=[("instance", "zone", "firewalls")],
        required_together=[("zone", "machine_type")],
        required_by={"accelerator_type": ("zone",), "image_family": ("zone",), "image": ("zone",),
                     "fleet": ("instance",)},
    )
    p = module.params
    names = Names(p["names"])
    fleet = [dict(name=m["name"], zone=m["zone"]) for m in p["fleet"] or []]
    instance = p["instance"]
    if p["only"] and p["fleet"] is None:
        module.fail_json(msg="only needs fleet: it selects members of the fleet")
    if instance is not None and p["fleet"] is None:
        missing = [o for o in ("name", "zone") if not instance.get(o)]
        if missing:
            module.fail_json(msg="missing required arguments: %s found in instance (or give fleet)"
                                 % ", ".join(missing))
    if instance is not None and fleet:
        # the template with the first member's name and zone: names as fleet.0 does
        instance = dict(instance, name=fleet[0]["name"], zone=fleet[0]["zone"])
        p["names"] = dict(p["names"])
        p["names"]["instance.name"] = names("fleet.0.name")
        p["names"]["instance.zone"] = names("fleet.0.zone")
        names = Names(p["names"])

    # 1. every rule of the whole plan, no API call
    errors, warnings = plan_problems(instance, p["firewalls"], p["names"])
    if p["fleet"] is not None:
        if not fleet:
            errors.append("%s is empty: a fleet has at least one VM" % names("fleet"))
        errors.extend(fleet_problems(fleet, p["only"], names))
    if p["load_balancer"] is not None:
        errors.extend(load_balancer_problems(p["load_balancer"], names.sub("load_balancer")))
    errors = _unique(errors)
    vm = None
    if instance is not None and instance["state"] == "present":
        vm = instance_vm(instance, names.sub("instance"))
    elif p["zone"]:
        vm_errors, vm = single_vm_plan(p, names)
        errors.extend(vm_errors)
    api_errors, api_warnings = api_option_problems(p, names)
    errors.extend(api_errors)
    warnings.extend(api_warnings)
    for warning in warnings:
        module.warn(warning)
    if errors:
        msg = errors[0] if len(errors) == 1 else "%d problems in the plan: %s" % (
            len(errors), " ".join("(%d) %s;" % (i + 1, e) for i, e in enumerate(errors)).rstrip(";"))
        module.fail_json(msg=msg, errors=errors)

    # 2. what only the API knows (read-only)
    result = dict(changed=False)
    members = [dict(m, exists=None) for m in fleet_selection(fleet, p["only"])]
    if p["fleet"] is not None:
        result["fleet"] = members
    if vm is None:
        module.exit_json(**result)
    result["accelerator"] = None
    client = client_from_module(module)
    zone = vm["zone"]
    try:
        if not members:
            check_vm_with_api(module, client, vm, result)
        else:
            index = dict((m["name"], i) for i, m in enumerate(fleet))
            for member in members:  # once per zone
                if any(m["zone"] == member["zone"] for m in members[:members.index(member)]):
                    continue
                zone = member["zone"]
                zone_name = names("fleet.%d.zone" % index[member["name"]])
                member_vm = dict(vm, zone=zone, names=dict(vm["names"], zone=zone_name, where=" (%s)" % zone_name))
                check_vm_with_api(module, client, member_vm, result)
            fleet_quota(module, client, vm, members, result)
    except GceError as e:
        module.fail_json(msg="preflight in %s: %s" % (zone, e), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
