#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: wait_for_first_boot
short_description: Wait until a new VM's first-boot jobs are done (cloud-init, apt/dpkg locks), showing progress
version_added: "0.1.0"
description:
  - "On its first boot a cloud VM runs cloud-init (user data, package upgrades) and C(apt-daily) /
    C(unattended-upgrades), which hold C(/var/lib/dpkg/lock-frontend) for minutes. Package installs started
    then fail with C(Could not get lock ... held by process ... (unattended-upgr))."
  - "First waits for cloud-init, when it is installed: C(cloud-init status --wait), at most O(sleep) seconds
    per round, at most O(cloud_init_timeout) seconds in all. A cloud-init that finished with an error (exit 1)
    or with recoverable errors (exit 2, degraded) is reported as a warning and the task goes on: it has
    finished, so nothing races the installs any more."
  - Then waits, at most O(lock_timeout) seconds, until none of the apt/dpkg lock files is held, naming the
    holder (PID, command) in the progress lines and in the failure.
  - Prints a progress line per round (what it waits for, seconds so far, the limit) on every verbosity.
  - An action plugin; each round runs M(llmops.gce_vllm.first_boot_info) on the host. Needs root (become).
author:
  - llmops team (@llmops)
options:
  cloud_init_timeout:
    description: Seconds to wait for cloud-init in all; the task fails when it is still running then.
    type: int
    default: 600
  lock_timeout:
    description: Seconds to wait for the apt/dpkg locks to be free; the task fails naming the holder then.
    type: int
    default: 600
  sleep:
    description: Seconds between two looks.
    type: int
    default: 5
  hint:
    description: Text appended to a failure message, for example the variables that set the timeouts.
    type: str
    default: ""
attributes:
  action:
    support: full
    description: Runs on the controller, looking at the host through M(llmops.gce_vllm.first_boot_info).
  check_mode:
    support: full
    description: Read-only; waits in check mode as well.
  diff_mode:
    support: none
    description: Reads only; there is nothing to diff.
notes:
  - The locks can be taken again between this task and the package install; give the install task a
    C(lock_timeout) as well.
seealso:
  - module: llmops.gce_vllm.first_boot_info
  - module: llmops.gce_vllm.wait_for_login
'''

EXAMPLES = r'''
- name: Wait for cloud-init and the apt/dpkg locks
  llmops.gce_vllm.wait_for_first_boot:
    cloud_init_timeout: 600
    lock_timeout: 600
  become: true
'''

RETURN = r'''
cloud_init:
  description: The last cloud-init state seen (see M(llmops.gce_vllm.first_boot_info)).
  returned: always
  type: dict
locks:
  description: The held locks with their holders (empty on success).
  returned: always
  type: list
  elements: dict
waited_cloud_init:
  description: Seconds spent waiting for cloud-init.
  returned: always
  type: int
waited_lock:
  description: Seconds spent waiting for the locks.
  returned: when the cloud-init wait ended
  type: int
'''
