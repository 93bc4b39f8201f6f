#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: wait_for_login
short_description: Wait until Ansible can log in to a new VM, and say why it could not
version_added: "0.1.0"
description:
  - "Like M(ansible.builtin.wait_for_connection): tries a fresh connection and the M(ansible.builtin.ping) module
    (with the task's become) every O(sleep) seconds until it works or O(timeout) seconds have passed."
  - "It also tells the ways a new VM is not ready apart, and prints a progress line when the answer changes
    and every 30 s: no answer at all (timed out), port closed (connection refused), a port without an SSH
    banner, SSH answering but refusing the key (C(Permission denied (publickey)): on GCE the guest agent creates
    the user of the C(ssh-keys) metadata after sshd already listens), logged in but sudo not allowed yet."
  - After a failed attempt over SSH (not through a proxy) it connects from the controller to the SSH port and
    reads the banner, so the failure can say whether SSH itself answered.
  - The failure message names what it saw last and for how long it saw each answer.
  - "Errors that waiting cannot fix end the wait at the first attempt, with what to do: a host key that does not match
    the known_hosts file (C(Host key verification failed.), C(REMOTE HOST IDENTIFICATION HAS CHANGED)), a private
    key ssh cannot use (missing, unreadable, too open, wrong format), a host name that does not resolve, ssh
    options ssh refuses. C(Permission denied (publickey)) is not one of them: it is waited through."
author:
  - llmops team (@llmops)
options:
  timeout:
    description: Seconds to keep trying in all.
    type: int
    default: 900
  sleep:
    description: Seconds between two attempts.
    type: int
    default: 5
  connect_timeout:
    description: Seconds the controller's banner probe of the SSH port may take.
    type: int
    default: 5
  key_refused_hint:
    description: Text added to the failure when the key was refused (for example the variables that set the user and key).
    type: str
    default: ""
  host_key_hint:
    description: Text added to the failure when the host key did not match (for example how the known_hosts file is made).
    type: str
    default: ""
  no_answer_hint:
    description: Text added to the failure when the host never answered.
    type: str
    default: ""
attributes:
  action:
    support: full
    description: Runs on the controller and uses the host's connection settings.
  check_mode:
    support: full
    description: Changes nothing; waits in check mode as well.
  diff_mode:
    support: none
    description: There is nothing to diff.
seealso:
  - module: ansible.builtin.wait_for_connection
  - module: llmops.gce_vllm.wait_for_first_boot
'''

EXAMPLES = r'''
- name: Wait until the new VM lets Ansible in (up to 15 minutes)
  llmops.gce_vllm.wait_for_login:
    timeout: 900
    key_refused_hint: check the user and key in the VM's ssh-keys metadata
'''

RETURN = r'''
elapsed:
  description: Seconds it waited.
  returned: always
  type: int
seen:
  description: Seconds each kind of answer was seen (V(key_refused), V(no_answer), V(port_closed), V(no_banner), V(become),
    V(host_key), V(key_file), V(unresolvable), V(ssh_config), ...).
  returned: always
  type: dict
kind:
  description: The last kind of answer, when it failed.
  returned: failure
  type: str
last_error:
  description: The last connection error, when it failed.
  returned: failure
  type: str
'''
