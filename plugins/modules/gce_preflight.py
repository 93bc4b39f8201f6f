#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: gce_preflight
short_description: Check that a GPU VM can be created before creating anything
version_added: 0.1.0
description:
  - Read-only checks of the runbook's section 2 against the project, before anything is created.
  - First, without any API call, the rules. C(nvidia-l4) needs a G2 machine type; Deep Learning VM images
    (C(deeplearning-platform-release)) do not work on G2; the zone name must be well formed.
  - Then through the API. The zone exists; the machine type exists in the zone (and what GPUs it carries);
    the accelerator type exists in the zone (acceleratorTypes) and the count fits; the image family resolves
    to its newest image (images.getFromFamily), which is returned.
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
  zone:
    description: Zone, for example V(asia-northeast3-a).
    type: str
    required: true
  machine_type:
    description: Machine type, for example V(g2-standard-4).
    type: str
    required: true
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
'''

RETURN = r'''
zone:
  description: The zone checked.
  returned: success
  type: str
  sample: asia-northeast3-a
machine_type:
  description: The machine type as found in the zone.
  returned: success
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
  description: The accelerator type as found in the zone (null without O(accelerator_type)).
  returned: success
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
  returned: when O(image_family) or O(image) is given
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
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce import (
    GCE_AUTH_ARGSPEC,
    GceError,
    basename,
    check_gpu_setup,
    check_zone,
    client_from_module,
    image_path,
)


def main():
    argument_spec = dict(GCE_AUTH_ARGSPEC)
    argument_spec.update(
        zone=dict(type="str", required=True),
        machine_type=dict(type="str", required=True),
        accelerator_type=dict(type="str"),
        accelerator_count=dict(type="int", default=1),
        image_family=dict(type="str"),
        image=dict(type="str"),
        image_project=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[("image", "image_family")])
    p = module.params
    zone = p["zone"]
    errors = []
    err = check_zone(zone)
    if err:
        errors.append(err)
    accelerators = []
    if p["accelerator_type"]:
        if p["accelerator_count"] < 1:
            errors.append("accelerator_count: must be at least 1 with accelerator_type %s" % p["accelerator_type"])
        accelerators = [{"type": p["accelerator_type"], "count": p["accelerator_count"]}]
    errors.extend(check_gpu_setup(p["machine_type"], accelerators, None, p["image_project"]))
    if errors:
        module.fail_json(msg="; ".join(errors), errors=errors)

    client = client_from_module(module)
    result = dict(changed=False, zone=zone, accelerator=None)
    try:
        if client.get(client.project_path("zones", zone)) is None:
            module.fail_json(msg="zone: %s does not exist in project %s (gcloud compute zones list)"
                                 % (zone, client.project), **result)
        mt = client.get(client.project_path("zones", zone, "machineTypes", basename(p["machine_type"])))
        if mt is None:
            module.fail_json(msg="machine_type: %s is not offered in zone %s (gcloud compute machine-types list "
                                 "--zones %s); pick another zone or machine type" % (p["machine_type"], zone, zone),
                             **result)
        bundled = [{"type": a.get("guestAcceleratorType"), "count": a.get("guestAcceleratorCount")}
                   for a in mt.get("accelerators") or []]
        result["machine_type"] = dict(name=mt.get("name"), guest_cpus=mt.get("guestCpus"),
                                      memory_mb=mt.get("memoryMb"), accelerators=bundled)
        if p["accelerator_type"]:
            acc = client.get(client.project_path("zones", zone, "acceleratorTypes", basename(p["accelerator_type"])))
            if acc is None:
                module.fail_json(msg="accelerator_type: %s is not available in zone %s; list the zones that have it "
                                     "with gcloud compute accelerator-types list --filter=name=%s"
                                     % (p["accelerator_type"], zone, basename(p["accelerator_type"])), **result)
            result["accelerator"] = dict(name=acc.get("name"), description=acc.get("description"),
                                         maximum_cards_per_instance=acc.get("maximumCardsPerInstance"))
            most = acc.get("maximumCardsPerInstance")
            if most and p["accelerator_count"] > most:
                module.fail_json(msg="accelerator_count: %d is more than %d %s per VM"
                                     % (p["accelerator_count"], most, acc.get("name")), **result)
            if bundled and (bundled[0]["type"] != acc.get("name") or bundled[0]["count"] != p["accelerator_count"]):
                module.fail_json(msg="accelerator_count: machine type %s comes with %d x %s; set accelerator_type/"
                                     "accelerator_count to match it, or choose the G2 size with %d GPU(s)"
                                     % (mt.get("name"), bundled[0]["count"], bundled[0]["type"],
                                        p["accelerator_count"]), **result)
        if p["image_family"] or p["image"]:
            project = p["image_project"] or client.project
            image = client.get(image_path(p["image"], p["image_family"], project, client.project))
            if image is None:
                what = ("image family %s" % p["image_family"]) if p["image_family"] else ("image %s" % p["image"])
                module.fail_json(msg="%s does not resolve to any usable image in project %s (families change: list "
                                     "them with gcloud compute images list --project %s --no-standard-images)"
                                     % (what, project, project), **result)
            state = (image.get("deprecated") or {}).get("state")
            if state in ("OBSOLETE", "DELETED"):
                module.fail_json(msg="image %s is %s" % (image.get("name"), state.lower()), **result)
            if state == "DEPRECATED":
                module.warn("image %s is deprecated" % image.get("name"))
            result["image"] = dict(name=image.get("name"), self_link=image.get("selfLink"), family=image.get("family"),
                                   creation_timestamp=image.get("creationTimestamp"),
                                   disk_size_gb=image.get("diskSizeGb"))
    except GceError as e:
        module.fail_json(msg="preflight in %s: %s" % (zone, e), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
