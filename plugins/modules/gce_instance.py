#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: gce_instance
short_description: Manage a Compute Engine VM (GPU-aware)
version_added: 0.1.0
description:
  - Creates, starts, stops or deletes one Compute Engine instance through the Compute Engine v1 REST API.
  - Built for GPU VMs such as the runbook's C(g2-standard-4) with one NVIDIA L4. Before any API call it refuses
    what cannot work. A VM with GPUs and O(scheduling.on_host_maintenance=MIGRATE), C(nvidia-l4) on a machine
    type that is not G2, or a Deep Learning VM image (C(deeplearning-platform-release)) on G2.
  - The boot image can be an image family; it is resolved to the family's newest image when the VM is created.
  - "Idempotent: an existing instance whose managed settings match gives C(changed=false). Drift of O(tags),
    O(labels) and O(metadata) (the keys given) is corrected in place (C(setTags), C(setLabels),
    C(setMetadata)); drift of O(scheduling) with C(setScheduling), which the API takes only on a stopped VM (see
    O(allow_stop)). A write refused for a stale fingerprint (412 C(conditionNotMet)) or
    C(resourceNotReady) is re-read and re-applied once. Drift of the machine type, the accelerators or the boot disk needs the
    VM stopped or re-created; it is reported in RV(pending_changes) with a warning, never applied silently."
author:
  - llmops team (@llmops)
extends_documentation_fragment:
  - llmops.gce_vllm.gce
attributes:
  check_mode:
    support: full
    description: Reports what would change; only reads from the API (images are still resolved).
  diff_mode:
    support: full
    description: Shows status, machine type, accelerators, tags, labels, metadata keys and scheduling before and after.
options:
  name:
    description: Name of the instance (RFC 1035).
    type: str
    required: true
  zone:
    description: Zone of the instance, for example V(asia-northeast3-a).
    type: str
    required: true
  state:
    description:
      - V(present) the instance exists (created and running if it did not exist; an existing stopped VM stays stopped).
      - V(started) the instance exists and is C(RUNNING) (a C(SUSPENDED) instance is resumed, a stopped one started).
      - V(stopped) or V(terminated) the instance exists and is stopped (C(TERMINATED)); it must exist already.
      - V(absent) the instance does not exist (its auto-delete boot disk goes with it).
    type: str
    choices: [present, absent, started, stopped, terminated]
    default: present
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
        description: An image name (in O(boot_disk.image_project)) or an image URL. Mutually exclusive with O(boot_disk.image_family).
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
        description:
          - Disk type, for example V(pd-ssd) or V(pd-balanced). G2 machine types boot from V(pd-balanced) or
            V(pd-ssd) only (Google's GPU machine types documentation); other types are refused before any API call.
        type: str
        default: pd-balanced
      auto_delete:
        description: Delete the disk with the instance.
        type: bool
        default: true
  scheduling:
    description: Scheduling. With GPUs, O(scheduling.on_host_maintenance) must be V(TERMINATE) (its default then).
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
    description:
      - Subnetwork of the first interface (used at creation), needed in a custom-mode VPC. A name (in the
        zone's region), a C(regions/REGION/subnetworks/NAME) path (optionally with C(projects/PROJECT/), for a
        Shared VPC) or a URL. Its region must be the zone's. Omitted, the API picks the auto-mode network's
        subnetwork of the region.
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
      - C(ssh-keys) is merged, not replaced; it holds many C(USER:KEY) lines, which C(gcloud compute ssh) and other
        users add to. The lines given are added, the other lines kept, and only the lines this module added
        before (recorded in the key C(llmops-gce-vllm-ssh-keys)) and no longer given are removed.
      - With OS Login on (C(enable-oslogin=TRUE) in the project's or the instance's metadata) the VM ignores
        C(ssh-keys); see RV(os_login).
    type: dict
  service_account_email:
    description:
      - Service account of the VM (used at creation).
      - Omitted, the project's default compute service account (C(PROJECT_NUMBER-compute@developer.gserviceaccount.com)),
        as C(gcloud compute instances create) does; V(none) for no service account (no Cloud Logging/Monitoring
        agent writes, no Cloud Storage access from the VM).
    type: str
  service_account_scopes:
    description:
      - OAuth scopes of the VM's service account (used at creation). The default is gcloud's default set.
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
  allow_stop:
    description:
      - Let the module stop a running VM to apply drift that the API accepts only on a stopped one
        (O(scheduling), as C(setScheduling) works only on C(TERMINATED) instances), and start it again after
        (unless O(state=stopped)).
      - With V(false) such drift of a running VM is reported in RV(pending_changes) with a warning; it is
        applied when the VM is stopped, or with O(state=stopped).
    type: bool
    default: false
  operation_timeout:
    description: Seconds to wait for each operation to finish (creation of a GPU VM can take minutes).
    type: int
    default: 900
'''

EXAMPLES = r'''
- name: The runbook's L4 VM
  llmops.gce_vllm.gce_instance:
    project: my-project
    name: ai-server-l4
    zone: asia-northeast3-a
    machine_type: g2-standard-4
    accelerators:
      - type: nvidia-l4
        count: 1
    boot_disk:
      image_family: ubuntu-accelerator-2204-amd64-with-nvidia-580
      image_project: ubuntu-os-accelerator-images
      size_gb: 200
      type: pd-ssd
    scheduling:
      on_host_maintenance: TERMINATE
      automatic_restart: true
    tags: [ai-server, monitoring]
    labels: {app: vllm}
  register: vm

- name: Show its addresses
  ansible.builtin.debug:
    msg: "{{ vm.nat_ip }} / {{ vm.internal_ip }}"

- name: Stop it to save cost
  llmops.gce_vllm.gce_instance:
    project: my-project
    name: ai-server-l4
    zone: asia-northeast3-a
    state: stopped
'''

RETURN = r'''
os_login:
  description:
    - Whether OS Login is on for the VM (C(enable-oslogin) in the instance's or the project's metadata). Then
      the VM ignores the C(ssh-keys) metadata; a warning names the OS Login path (role, key, user).
  returned: when O(metadata) has C(ssh-keys) and O(state) is not V(absent)
  type: bool
  sample: false
name:
  description: Name of the instance.
  returned: always
  type: str
  sample: ai-server-l4
zone:
  description: Zone of the instance.
  returned: always
  type: str
  sample: asia-northeast3-a
status:
  description: Status at the end (C(RUNNING), C(TERMINATED), ...), or V(ABSENT).
  returned: always
  type: str
  sample: RUNNING
nat_ip:
  description: External IP (C(networkInterfaces[0].accessConfigs[0].natIP)), or null.
  returned: always
  type: str
  sample: 203.0.113.10
internal_ip:
  description: Internal IP (C(networkInterfaces[0].networkIP)), or null.
  returned: always
  type: str
  sample: 10.178.0.2
self_link:
  description: The instance's self link.
  returned: when the instance exists
  type: str
  sample: https://www.googleapis.com/compute/v1/projects/my-project/zones/asia-northeast3-a/instances/ai-server-l4
id:
  description: Numeric ID of the instance (a string).
  returned: when the instance exists
  type: str
  sample: "4567890123456789012"
machine_type:
  description: Machine type name.
  returned: when the instance exists
  type: str
  sample: g2-standard-4
image:
  description: Self link of the image the boot disk was created from (resolved from the family), when this run created it.
  returned: when created
  type: str
  sample: https://www.googleapis.com/compute/v1/projects/ubuntu-os-accelerator-images/global/images/ubuntu-accelerator-2204-amd64-with-nvidia-580-v20260210
actions:
  description: What was done (or would be, in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [create]
pending_changes:
  description:
    - Differences that were not applied because they need the VM stopped, a disk resized or the VM re-created
      (machine type, accelerators, boot disk size, external IP).
  returned: always
  type: list
  elements: str
  sample: ["machine_type: g2-standard-4 -> g2-standard-8 (stop the VM and change it, or re-create it)"]
instance:
  description: The instance as the API returns it.
  returned: when the instance exists
  type: dict
'''

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce import (
    GCE_AUTH_ARGSPEC,
    GceApiError,
    GceError,
    client_from_module,
)
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce_rules import (
    INSTANCE_OPTIONS,
    basename,
    has_gpu,
    image_path,
    image_problems,
    instance_create_problems,
    instance_problems,
    internal_ip,
    nat_ip,
    network_path,
    MANAGED_SSH_KEYS_KEY,
    OS_LOGIN_HINT,
    SSH_KEYS_KEY,
    merge_ssh_keys,
    os_login_enabled,
    ssh_key_lines,
    stale_precondition,
    subnetwork_path,
    vm_service_accounts,
)


def validate(module):
    """The rules of gce_rules.instance_problems (the ones gce_preflight checks for a whole plan)."""
    p = module.params
    errors = instance_problems(p, creating=p["state"] in ("present", "started"))
    if errors:
        module.fail_json(msg="; ".join(errors), errors=errors)


def desired_scheduling(p):
    sched = p["scheduling"] or {}
    ohm = sched.get("on_host_maintenance") or ("TERMINATE" if has_gpu(p["machine_type"], p["accelerators"])
                                               else "MIGRATE")
    restart = sched.get("automatic_restart")
    return {"onHostMaintenance": ohm, "automaticRestart": True if restart is None else bool(restart)}


def metadata_dict(inst):
    return dict((i.get("key"), i.get("value")) for i in ((inst.get("metadata") or {}).get("items") or []))


def desired_metadata(given, current=None):
    """The metadata items wanted: the keys given set, other keys kept; ssh-keys merged (ours added, the other
    users' lines kept, only the lines we added before and no longer want removed; ours recorded in
    MANAGED_SSH_KEYS_KEY)."""
    current = dict(current or {})
    want = dict(current)
    for key, value in given.items():
        if key == SSH_KEYS_KEY:
            want[key] = merge_ssh_keys(current.get(key), value, current.get(MANAGED_SSH_KEYS_KEY))
            want[MANAGED_SSH_KEYS_KEY] = "\n".join(ssh_key_lines(value))
        else:
            want[key] = str(value)
    return want


def addresses(inst):
    return internal_ip(inst), nat_ip(inst)


def gpus(inst):
    return sorted((basename(a.get("acceleratorType")), int(a.get("acceleratorCount") or 0))
                  for a in (inst or {}).get("guestAccelerators") or [])


def view(inst):
    """The managed settings, for diff."""
    if not inst:
        return {}
    return {
        "status": inst.get("status"),
        "machine_type": basename(inst.get("machineType")),
        "accelerators": ["%s x%d" % g for g in gpus(inst)],
        "tags": list((inst.get("tags") or {}).get("items") or []),
        "labels": dict(inst.get("labels") or {}),
        "metadata_keys": sorted(metadata_dict(inst)),
        "scheduling": dict((k, (inst.get("scheduling") or {}).get(k))
                           for k in ("onHostMaintenance", "automaticRestart")),
    }


class InstanceManager(object):
    def __init__(self, module, client):
        self.module = module
        self.client = client
        self.p = module.params
        self.timeout = self.p["operation_timeout"]
        self.path = client.project_path("zones", self.p["zone"], "instances", self.p["name"])
        self.actions = []
        self.pending = []
        self.image = None
        self.sched_body = None  # the setScheduling body when the scheduling drifted
        self.sched_stop = False  # stop the VM to apply it

    def call(self, method, suffix, body=None):
        self.client.mutate(method, self.path + suffix, body=body, timeout=self.timeout)

    def get(self):
        return self.client.get(self.path)

    def apply(self, suffix, body_for, inst):
        """POST `suffix` with body_for(inst); on a stale fingerprint (412 conditionNotMet) or resourceNotReady,
        re-read the instance and re-apply once (body_for(fresh); None = nothing left to change)."""
        try:
            self.call("POST", suffix, body_for(inst))
        except GceApiError as e:
            if not stale_precondition(e.status, e.reason):
                raise
            fresh = self.get()
            body = body_for(fresh) if fresh is not None else None
            if body is None:
                return
            try:
                self.call("POST", suffix, body)
            except GceApiError as again:
                if stale_precondition(again.status, again.reason):
                    raise GceError("%s was refused twice (%s), the second time after the instance was re-read: "
                                   "something else keeps changing it; run again" % (suffix.lstrip("/"), again))
                raise

    def wait_status(self, wanted, timeout=None):
        """GET until the instance reaches one of `wanted` statuses (after a start/insert/stop)."""
        deadline = time.time() + (timeout or self.timeout)
        while True:
            inst = self.get()
            if inst is None or inst.get("status") in wanted or time.time() >= deadline:
                return inst
            time.sleep(1)

    # ------------------------------------------------------------- create
    def resolve_image(self):
        boot = self.p["boot_disk"] or {}
        project = boot.get("image_project") or self.client.project
        image = self.client.get(image_path(boot.get("image"), boot.get("image_family"), project, self.client.project))
        what = ("image family %s" % boot["image_family"]) if boot.get("image_family") else ("image %s" % boot["image"])
        errors, warnings = image_problems(image, what, project, boot.get("size_gb"))
        if errors:
            self.module.fail_json(msg="; ".join(errors))
        for warning in warnings:
            self.module.warn(warning)
        return image

    def create_body(self, image):
        p = self.p
        zone = p["zone"]
        boot = p["boot_disk"] or {}
        body = {
            "name": p["name"],
            "machineType": "zones/%s/machineTypes/%s" % (zone, basename(p["machine_type"])),
            "disks": [{
                "boot": True,
                "autoDelete": boot.get("auto_delete", True) is not False,
                "initializeParams": {
                    "sourceImage": image["selfLink"],
                    "diskSizeGb": str(boot.get("size_gb") or 10),
                    "diskType": "zones/%s/diskTypes/%s" % (zone, basename(boot.get("type") or "pd-balanced")),
                },
            }],
            "scheduling": desired_scheduling(p),
            "networkInterfaces": [{"network": network_path(self.p["network"])}],
        }
        subnetwork = subnetwork_path(p["subnetwork"], zone)
        if subnetwork:
            body["networkInterfaces"][0]["subnetwork"] = subnetwork
        if p["external_ip"]:
            body["networkInterfaces"][0]["accessConfigs"] = [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}]
        if p["accelerators"]:
            body["guestAccelerators"] = [
                {"acceleratorType": "projects/%s/zones/%s/acceleratorTypes/%s"
                                    % (self.client.project, zone, basename(a["type"])),
                 "acceleratorCount": a["count"]} for a in p["accelerators"]]
        if p["tags"]:
            body["tags"] = {"items": list(p["tags"])}
        if p["labels"]:
            body["labels"] = dict((k, str(v)) for k, v in p["labels"].items())
        if p["metadata"]:
            body["metadata"] = {"items": [{"key": k, "value": v} for k, v in desired_metadata(p["metadata"]).items()]}
        accounts = vm_service_accounts(p["service_account_email"], p["service_account_scopes"])
        if accounts:
            body["serviceAccounts"] = accounts
        return body

    def create(self):
        p = self.p
        errors = instance_create_problems(p)
        if errors:
            self.module.fail_json(msg="; ".join(errors), errors=errors)
        image = self.resolve_image()
        self.image = image.get("selfLink")
        self.actions.append("create")
        if self.module.check_mode:
            return None
        self.client.mutate("POST", self.client.project_path("zones", p["zone"], "instances"),
                           body=self.create_body(image), timeout=self.timeout)
        return self.wait_status(("RUNNING",))

    # ------------------------------------------------------------- drift
    def reconcile(self, inst):
        """Correct tags/labels/metadata/scheduling; report machine type/accelerator drift."""
        p = self.p
        check = self.module.check_mode
        if p["tags"] is not None:
            def tags_body(i):
                tags = i.get("tags") or {}
                if sorted(set(tags.get("items") or [])) == sorted(set(p["tags"])):
                    return None
                return {"items": list(p["tags"]), "fingerprint": tags.get("fingerprint")}
            if tags_body(inst) is not None:
                self.actions.append("setTags")
                if not check:
                    self.apply("/setTags", tags_body, inst)
        if p["labels"] is not None:
            want = dict((k, str(v)) for k, v in p["labels"].items())

            def labels_body(i):
                if dict(i.get("labels") or {}) == want:
                    return None
                return {"labels": want, "labelFingerprint": i.get("labelFingerprint")}
            if labels_body(inst) is not None:
                self.actions.append("setLabels")
                if not check:
                    self.apply("/setLabels", labels_body, inst)
        if p["metadata"]:
            def metadata_body(i):
                current = metadata_dict(i)
                want = desired_metadata(p["metadata"], current)
                if want == current:
                    return None
                return {"items": [{"key": k, "value": v} for k, v in want.items()],
                        "fingerprint": (i.get("metadata") or {}).get("fingerprint")}
            if metadata_body(inst) is not None:
                self.actions.append("setMetadata")
                if not check:
                    self.apply("/setMetadata", metadata_body, inst)
        want_sched = desired_scheduling(p)
        cur_sched = inst.get("scheduling") or {}
        if p["scheduling"] is not None or has_gpu(p["machine_type"], p["accelerators"]):
            if any(cur_sched.get(k) != v for k, v in want_sched.items()):
                # the API takes setScheduling only on a TERMINATED instance: applied by run() when the VM is
                # stopped, is to be stopped (state stopped), or allow_stop permits stopping it; else reported
                body = dict((k, v) for k, v in cur_sched.items() if k in ("preemptible", "provisioningModel"))
                body.update(want_sched)
                self.sched_body = body
                self.sched_stop = inst.get("status") != "TERMINATED" and (
                    p["state"] in ("stopped", "terminated") or p["allow_stop"])
                if inst.get("status") != "TERMINATED" and not self.sched_stop:
                    self.pending.append(
                        "scheduling: %s -> %s (the API changes it only on a stopped VM: stop the VM, or set "
                        "allow_stop: true to let this module stop it, apply it and start it again)"
                        % (dict((k, cur_sched.get(k)) for k in want_sched), want_sched))
        if p["machine_type"] and basename(inst.get("machineType")) != basename(p["machine_type"]):
            self.pending.append("machine_type: %s -> %s (stop the VM and change it, or re-create it)"
                                % (basename(inst.get("machineType")), basename(p["machine_type"])))
        if p["accelerators"]:
            want_gpus = sorted((basename(a["type"]), a["count"]) for a in p["accelerators"])
            if gpus(inst) != want_gpus:
                self.pending.append("accelerators: %s -> %s (stop the VM and change them, or re-create it)"
                                    % (gpus(inst), want_gpus))
        boot = p["boot_disk"] or {}
        boot_disks = [d for d in inst.get("disks") or [] if d.get("boot")]
        if boot.get("size_gb") and boot_disks and boot_disks[0].get("diskSizeGb") \
                and int(boot_disks[0]["diskSizeGb"]) != boot["size_gb"]:
            self.pending.append("boot_disk.size_gb: %s -> %s (resize the disk, or re-create the VM)"
                                % (boot_disks[0]["diskSizeGb"], boot["size_gb"]))
        if inst.get("status") == "RUNNING" and bool(addresses(inst)[1]) != bool(p["external_ip"]):
            self.pending.append("external_ip: %s -> %s (add or delete the access config, or re-create the VM)"
                                % (bool(addresses(inst)[1]), bool(p["external_ip"])))
        for item in self.pending:
            self.module.warn("instance %s: %s" % (p["name"], item))

    def os_login(self, inst):
        """Whether OS Login is on for the VM (then ssh-keys is ignored): warns with the OS Login path."""
        wanted = dict((k, str(v)) for k, v in (self.p["metadata"] or {}).items())
        instance_md = dict(metadata_dict(inst or {}))
        instance_md.update(wanted)
        project = self.client.get(self.client.project_path()) or {}
        project_md = dict((i.get("key"), i.get("value"))
                          for i in (project.get("commonInstanceMetadata") or {}).get("items") or [])
        on = os_login_enabled(instance_md, project_md)
        if on:
            where = "instance" if "enable-oslogin" in instance_md else "project"
            self.module.warn("instance %s: %s" % (self.p["name"], OS_LOGIN_HINT % where))
        return on

    def apply_scheduling(self, status):
        """setScheduling on the TERMINATED VM, stopping it first when sched_stop (and starting it again after
        when the wanted state is present/started); returns the status the VM is then in."""
        check = self.module.check_mode
        restart = False
        if self.sched_stop:
            self.actions.append("stop")
            restart = self.p["state"] in ("present", "started")
            if not check:
                self.call("POST", "/stop")
                self.wait_status(("TERMINATED",))
            status = "TERMINATED"
        self.actions.append("setScheduling")
        if not check:
            self.call("POST", "/setScheduling", self.sched_body)
        if restart:
            self.actions.append("start")
            if not check:
                self.call("POST", "/start")
            status = "RUNNING"
        return status

    # ------------------------------------------------------------- run
    def run(self):
        p = self.p
        state = p["state"]
        inst = self.get()
        before = view(inst)
        if state == "absent":
            if inst is not None:
                self.actions.append("delete")
                if not self.module.check_mode:
                    self.call("DELETE", "")
            return None, before, {}

        if inst is None:
            if state in ("stopped", "terminated"):
                self.module.fail_json(msg="instance %s does not exist in zone %s, so it cannot be stopped; create it "
                                          "with state=present first" % (p["name"], p["zone"]))
            inst = self.create()
            if self.module.check_mode:
                fake = self.create_body({"selfLink": self.image})
                fake.update(status="RUNNING", machineType=fake["machineType"])
                return None, before, view(fake)
        else:
            self.reconcile(inst)
            status = inst.get("status")
            if self.sched_body is not None and (status == "TERMINATED" or self.sched_stop):
                status = self.apply_scheduling(status)
            if state == "started" and status not in ("RUNNING", "PROVISIONING", "STAGING"):
                if status in ("STOPPING", "SUSPENDING") and not self.module.check_mode:
                    inst = self.wait_status(("TERMINATED", "STOPPED", "SUSPENDED"))
                    status = (inst or {}).get("status")
                # a suspended VM comes back with resume (start is for stopped ones)
                action = "resume" if status in ("SUSPENDED", "SUSPENDING") else "start"
                self.actions.append(action)
                if not self.module.check_mode:
                    self.call("POST", "/" + action)
            elif state in ("stopped", "terminated") and status not in ("TERMINATED", "STOPPED"):
                self.actions.append("stop")
                if not self.module.check_mode:
                    self.call("POST", "/stop")
            if self.actions and not self.module.check_mode:
                inst = self.get()
            if state in ("started", "present") and inst and inst.get("status") in ("PROVISIONING", "STAGING"):
                inst = self.wait_status(("RUNNING",)) if not self.module.check_mode else inst
            if state in ("stopped", "terminated") and inst and inst.get("status") == "STOPPING" \
                    and not self.module.check_mode:
                inst = self.wait_status(("TERMINATED", "STOPPED"))
        after = view(inst)
        if self.module.check_mode:
            after = dict(before)
            for action in self.actions:
                if action in ("start", "resume"):
                    after["status"] = "RUNNING"
                elif action == "stop":
                    after["status"] = "TERMINATED"
                elif action == "setTags":
                    after["tags"] = list(p["tags"])
                elif action == "setLabels":
                    after["labels"] = dict((k, str(v)) for k, v in p["labels"].items())
                elif action == "setMetadata":
                    after["metadata_keys"] = sorted(set(before.get("metadata_keys", [])) | set(p["metadata"]))
                elif action == "setScheduling":
                    after["scheduling"] = desired_scheduling(p)
        return inst, before, after


def main():
    argument_spec = dict(GCE_AUTH_ARGSPEC)
    argument_spec.update(INSTANCE_OPTIONS)
    argument_spec.update(
        state=dict(type="str", default="present", choices=["present", "absent", "started", "stopped", "terminated"]),
        operation_timeout=dict(type="int", default=900),
        allow_stop=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    validate(module)
    client = client_from_module(module)
    manager = InstanceManager(module, client)
    result = dict(changed=False, name=p["name"], zone=p["zone"])
    try:
        inst, before, after = manager.run()
    except GceError as e:
        module.fail_json(msg="instance %s in %s: %s" % (p["name"], p["zone"], e), actions=manager.actions)
    internal, nat = addresses(inst)
    result.update(
        changed=bool(manager.actions),
        actions=manager.actions,
        pending_changes=manager.pending,
        status=(inst or {}).get("status") or (after.get("status") if after else "ABSENT"),
        nat_ip=nat,
        internal_ip=internal,
        diff=dict(before=before, after=after),
    )
    if manager.image:
        result["image"] = manager.image
    if p["state"] != "absent" and SSH_KEYS_KEY in (p["metadata"] or {}):
        result["os_login"] = manager.os_login(inst)
    if inst:
        result.update(self_link=inst.get("selfLink"), id=inst.get("id"),
                      machine_type=basename(inst.get("machineType")), instance=inst)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
