#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: check_variables
short_description: Check the names of the variables a play sets for the collection's roles, before any change
version_added: "0.2.0"
description:
  - Runs on the controller only (an action plugin); reads the collection's C(roles/*/meta/argument_specs.yml) once.
  - Warns on every variable whose name has a role's prefix (the role's name and C(_), such as C(gpu_host_), C(vllm_server_),
    C(ai_server_), C(gce_vllm_), C(auth_proxy_), ...) that no argument spec of the collection declares, naming the
    closest declared one (a typo such as C(vllm_server_max_model_length) otherwise passes silently and the default is used).
    Private names (a leading C(_)) and the names of registered results and M(ansible.builtin.set_fact) are not checked.
  - Fails when a value is set only on one role of the play (as a role parameter or under the role entry's C(vars:)) while
    something outside that role reads it (another role of the play, or the play's C(vars)/C(vars_files), such as the
    configure play's C(playbooks/vars/service_wiring.yml)), as Ansible shows a role's parameters to that role only.
  - Fails when a required option of the entry point O(entry_point) of a role in O(roles) is not set, or cannot be
    templated (for example an undefined C(vault_...) variable), with one line per problem instead of the argument
    spec's whole text.
author:
  - llmops team (@llmops)
options:
  roles:
    description: The roles (C(llmops.gce_vllm.NAME) or C(NAME)) whose required inputs to check.
    type: list
    elements: str
    default: []
  entry_point:
    description: The entry point of O(roles) whose required options to check.
    type: str
    default: main
  warn_unknown:
    description: Warn on undeclared names with a role's prefix.
    type: bool
    default: true
  check_scope:
    description: Fail on values set on one role of the play that something else reads.
    type: bool
    default: true
  once_per_play:
    description:
      - Skip the check when this play ran it already (for the host). Every run sets the fact C(_gce_vllm_variables_checked)
        to the play's identity, so the roles' C(validate.yml) can call it each while a play that holds several checks once.
    type: bool
    default: false
extends_documentation_fragment:
  - llmops.gce_vllm.read_only.controller
'''

EXAMPLES = r'''
- name: Check the variable names of this play before any role changes anything
  llmops.gce_vllm.check_variables:
    roles:
      - llmops.gce_vllm.vllm_server
      - llmops.gce_vllm.ai_server
'''

RETURN = r'''
unknown:
  description: One warning per undeclared variable with a role's prefix (also shown as warnings); on a failure the message holds the problems, one a line.
  returned: always
  type: list
  elements: str
'''
