#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: gce_host_keys
short_description: Read a VM's SSH host keys through the Compute API and write them to a known_hosts file
version_added: 0.1.0
description:
  - "GCE's guest agent publishes the VM's SSH host keys as guest attributes (namespace C(hostkeys/)) when the
    metadata has C(enable-guest-attributes=TRUE); this is what C(gcloud compute ssh) uses. The module reads them
    with C(instances.getGuestAttributes?queryPath=hostkeys/) and writes them to O(known_hosts_file), so that the
    first SSH connection to a new VM is verified against the keys the VM itself published, not accepted blindly."
  - "The agent writes the keys a little after the VM is RUNNING; until then the API answers 404 (C(The resource
    'hostkeys/' of type 'Guest Attribute' was not found.)). The module asks every O(interval) seconds for at most
    O(timeout) seconds."
  - "Every line of O(known_hosts_file) for any of O(hosts) (plain, C([host]:22) or hashed) is replaced by one line
    per key (C(HOST1,HOST2 TYPE KEY)); other lines are kept. A VM re-created with new keys at the same address
    therefore updates its lines instead of adding conflicting ones. The file is written atomically, mode 0600."
  - Fails at once when the VM does not exist, is not RUNNING, or its metadata turns guest attributes off.
author:
  - llmops team (@llmops)
extends_documentation_fragment:
  - llmops.gce_vllm.gce
attributes:
  check_mode:
    support: full
    description: Reads the keys; reports whether the file would change without writing it.
  diff_mode:
    support: full
    description: Shows the lines of the known_hosts file before and after.
options:
  name:
    description: Name of the instance.
    type: str
    required: true
  zone:
    description: Zone of the instance.
    type: str
    required: true
  known_hosts_file:
    description:
      - The known_hosts file to write (created with its directory, mode 0700, when missing). Point SSH at it with
        C(-o UserKnownHostsFile=FILE -o StrictHostKeyChecking=yes) (C(inventories/gce) does, through
        C(ansible_ssh_common_args)).
    type: path
    required: true
  hosts:
    description:
      - The names or addresses SSH will connect to, which key the lines. Empty means the VM's external and internal
        IP (C(networkInterfaces[0])).
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds to wait in all for the guest agent to publish the keys.
    type: int
    default: 300
  interval:
    description: Most seconds between two requests while the keys are not published yet (the first pauses are 1, 2, 4 s).
    type: int
    default: 5
notes:
  - On images without the guest agent (or with guest attributes disabled for the project by an organization
    policy) there are no keys to read; the module then fails after O(timeout) saying so.
seealso:
  - name: Manage guest attributes on VMs
    description: Google's documentation of guest attributes (enable-guest-attributes, the hostkeys namespace).
    link: https://cloud.google.com/compute/docs/metadata/manage-guest-attributes
  - module: llmops.gce_vllm.gce_instance
'''

EXAMPLES = r'''
- name: Record the new VM's SSH host keys for Ansible's first connection
  llmops.gce_vllm.gce_host_keys:
    project: my-project
    name: ai-server-l4
    zone: asia-northeast3-a
    known_hosts_file: ~/.ssh/llmops_gce_vllm_known_hosts
'''

RETURN = r'''
host_keys:
  description: The keys the VM published, by key type (base64 key without the type).
  returned: success
  type: dict
  sample: {"ssh-ed25519": "AAAAC3NzaC1lZDI1NTE5AAAAI..."}
hosts:
  description: The names or addresses the lines of the file are keyed by.
  returned: success
  type: list
  elements: str
  sample: ["203.0.113.7", "10.128.0.2"]
known_hosts_file:
  description: The file written (expanded).
  returned: always
  type: str
elapsed:
  description: Seconds spent waiting for the keys.
  returned: always
  type: int
attempts:
  description: getGuestAttributes requests made.
  returned: always
  type: int
'''

import os
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce import (
    GCE_AUTH_ARGSPEC,
    GUEST_ATTRIBUTES_KEY,
    GceError,
    client_from_module,
    guest_host_keys,
    known_hosts_update,
)
from ansible_collections.llmops.gce_vllm.plugins.module_utils.gce_rules import internal_ip, nat_ip


def argument_spec():
    spec = dict(GCE_AUTH_ARGSPEC)
    spec.update(
        name=dict(type="str", required=True),
        zone=dict(type="str", required=True),
        known_hosts_file=dict(type="path", required=True),
        hosts=dict(type="list", elements="str", default=[]),
        timeout=dict(type="int", default=300),
        interval=dict(type="int", default=5),
    )
    return spec


def write_atomic(path, text):
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".known_hosts.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    path = p["known_hosts_file"]
    result = dict(changed=False, known_hosts_file=path, elapsed=0, attempts=0)
    if p["timeout"] < 0 or p["interval"] < 1:
        module.fail_json(msg="timeout must be >= 0 and interval >= 1 (seconds)", **result)
    client = client_from_module(module)
    where = "instance %s in %s" % (p["name"], p["zone"])
    try:
        inst = client.get(client.project_path("zones", p["zone"], "instances", p["name"]))
        if inst is None:
            module.fail_json(msg="%s does not exist: provision it first (state present)" % where, **result)
        if inst.get("status") != "RUNNING":
            module.fail_json(msg="%s is %s: its guest agent publishes the SSH host keys only while it runs; start it "
                                 "first" % (where, inst.get("status")), **result)
        metadata = dict((i.get("key"), i.get("value")) for i in (inst.get("metadata") or {}).get("items") or ())
        if GUEST_ATTRIBUTES_KEY in metadata and str(metadata[GUEST_ATTRIBUTES_KEY]).strip().lower() != "true":
            module.fail_json(msg="%s has %s=%s in its metadata: the guest agent cannot publish the SSH host keys. Set "
                                 "it to TRUE (the gce_vllm role does)" % (where, GUEST_ATTRIBUTES_KEY,
                                                                          metadata[GUEST_ATTRIBUTES_KEY]), **result)
        hosts = list(dict.fromkeys(p["hosts"] or [h for h in (nat_ip(inst), internal_ip(inst)) if h]))
        if not hosts:
            module.fail_json(msg="%s has no IP address to key the known_hosts lines by; pass hosts" % where, **result)
        t0 = time.monotonic()
        pause = 1.0
        while True:
            result["attempts"] += 1
            keys = guest_host_keys(client, p["zone"], p["name"])
            result["elapsed"] = int(time.monotonic() - t0)
            if keys or time.monotonic() - t0 >= p["timeout"]:
                break
            time.sleep(min(pause, max(0.0, p["timeout"] - (time.monotonic() - t0))))
            pause = min(pause * 2, p["interval"])
    except GceError as e:
        module.fail_json(msg="reading the SSH host keys of %s: %s" % (where, e), **result)
    if not keys:
        module.fail_json(
            msg="%s published no SSH host keys within %d s (%d requests of getGuestAttributes?queryPath=hostkeys/ "
                "answered not found). The guest agent writes them a little after boot when the metadata has %s=TRUE "
                "(it has %s); check the VM's serial console for google-guest-agent, or raise the timeout. Without them "
                "the first SSH connection cannot be verified." % (
                    where, p["timeout"], result["attempts"], GUEST_ATTRIBUTES_KEY,
                    metadata.get(GUEST_ATTRIBUTES_KEY, "no such key: set it, or the project must")), **result)
    try:
        with open(path) as f:
            before = f.read()
    except FileNotFoundError:
        before = ""
    except OSError as e:
        module.fail_json(msg="cannot read %s: %s" % (path, e), **result)
    after = known_hosts_update(before, hosts, keys)
    result.update(host_keys=keys, hosts=hosts, changed=after != before)
    result["diff"] = dict(before=before, after=after, before_header=path, after_header=path)
    if result["changed"] and not module.check_mode:
        try:
            write_atomic(path, after)
        except OSError as e:
            module.fail_json(msg="cannot write %s: %s" % (path, e), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
