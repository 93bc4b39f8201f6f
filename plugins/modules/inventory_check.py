#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: inventory_check
short_description: Check, before any API call, that the inventory will find the VM site.yml creates
version_added: "0.2.0"
description:
  - Runs on the controller only (an action plugin), before C(llmops.gce_vllm.site) calls the Compute API.
  - Fails unless one of the inventory sources (C(ansible_inventory_sources), the C(-i) paths; a directory's files)
    is a C(*gce.yml) file whose C(plugin) is C(llmops.gce_vllm.gce) and that lists O(project) in C(projects) (or lists none while
    E(GCP_PROJECT) is O(project)). The message says how to copy C(inventories/gce) out of the installed collection.
  - Then, for each source directory with C(group_vars/)O(group), a file there encrypted with ansible-vault must be readable
    (else it says to pass C(--ask-vault-pass), C(--vault-password-file) or E(ANSIBLE_VAULT_PASSWORD_FILE)), and every
    C(vault_*) name its plain files read must be defined by a file there (else it says to create C(vault.yml) from
    C(vault.yml.example)).
author:
  - llmops team (@llmops)
options:
  project:
    description: The Google Cloud project the VM is created in; empty accepts any GCE source (provision then names the missing project).
    type: str
    default: ""
  group:
    description: The inventory group of the VM (the network tag's group), whose C(group_vars) hold the secrets.
    type: str
    default: ai_server
extends_documentation_fragment:
  - llmops.gce_vllm.read_only.controller
'''

EXAMPLES = r'''
- name: Check the inventory before any API call
  llmops.gce_vllm.inventory_check:
    project: "{{ gce_vllm_project | default('', true) or lookup('ansible.builtin.env', 'GCP_PROJECT') }}"
'''

RETURN = r'''
sources:
  description: The llmops.gce_vllm.gce inventory files among the sources.
  returned: always
  type: list
  elements: str
'''
