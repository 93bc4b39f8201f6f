#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: first_boot_info
short_description: Report what a freshly booted host is still busy with (cloud-init, apt/dpkg locks)
version_added: "0.1.0"
description:
  - One look at the two things that keep a new cloud VM busy in its first minutes, without changing anything
    and without taking any lock.
  - "cloud-init: when C(cloud-init) is on PATH, runs C(cloud-init status) (with O(cloud_init_wait) > 0:
    C(cloud-init status --wait), bounded by C(timeout)) and reports its status and exit code. Exit codes as
    documented by cloud-init: V(0) done (or disabled), V(1) error, V(2) done with recoverable errors
    (degraded, cloud-init 23.4 and later; Ubuntu's stable releases keep V(0) for it)."
  - "apt/dpkg locks: for each of O(lock_files), asks the kernel with C(fcntl(F_GETLK)) whether a write lock
    (as apt and dpkg take) would conflict, and who holds it (PID, command name, command line)."
  - Used by M(llmops.gce_vllm.wait_for_first_boot), which repeats it and prints the progress.
author:
  - llmops team (@llmops)
options:
  cloud_init_wait:
    description:
      - Seconds to block in C(cloud-init status --wait) before reporting it still running;
        V(0) runs C(cloud-init status) without waiting.
    type: int
    default: 0
  lock_files:
    description: The lock files apt and dpkg take (front end, dpkg database, package lists, archives).
    type: list
    elements: path
    default:
      - /var/lib/dpkg/lock-frontend
      - /var/lib/dpkg/lock
      - /var/lib/apt/lists/lock
      - /var/cache/apt/archives/lock
extends_documentation_fragment:
  - llmops.gce_vllm.read_only
notes:
  - Must run as root to open the lock files (they are C(0640 root)).
seealso:
  - module: llmops.gce_vllm.wait_for_first_boot
'''

EXAMPLES = r'''
- name: What is the host busy with?
  llmops.gce_vllm.first_boot_info:
  become: true
  register: busy
'''

RETURN = r'''
cloud_init:
  description: What cloud-init said.
  returned: always
  type: dict
  contains:
    present:
      description: Whether C(cloud-init) is on PATH.
      type: bool
    running:
      description: Still running (or not started yet) when the module returned.
      type: bool
    status:
      description: The C(status:) word it printed (V(running), V(done), V(error), V(degraded done), V(disabled), ...).
      type: str
    rc:
      description: Its exit code (V(124) when C(timeout) ended the wait).
      type: int
    detail:
      description: The output of C(cloud-init status --long) when it ended with an error or recoverable errors.
      type: list
      elements: str
locks:
  description: The lock files that are held now, each with its holders.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The lock file.
      type: str
    holders:
      description: Processes holding it (V(pid) -1 for an open-file-description lock).
      type: list
      elements: dict
busy:
  description: cloud-init still running or any lock held.
  returned: always
  type: bool
'''

import fcntl
import os
import struct

from ansible.module_utils.basic import AnsibleModule

# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid (+ padding)
_FLOCK = "hhqqi4x"
LOCK_FILES = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock", "/var/cache/apt/archives/lock")


def _process(pid):
    info = {"pid": pid, "command": "", "cmdline": ""}
    if pid <= 0:
        return info
    try:
        with open("/proc/%d/comm" % pid) as f:
            info["command"] = f.read().strip()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            info["cmdline"] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        pass
    return info


def lock_holder(path):
    """The process holding a lock that conflicts with a write lock on `path`, or None (free or absent)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    finally:
        os.close(fd)
    if answer[0] == fcntl.F_UNLCK:
        return None
    return _process(answer[4])


def cloud_init_state(module, wait):
    binary = module.get_bin_path("cloud-init")
    state = {"present": bool(binary), "running": False, "status": "absent", "rc": 0, "detail": []}
    if not binary:
        return state
    cmd = [binary, "status"]
    if wait > 0:
        timeout = module.get_bin_path("timeout", required=True)
        cmd = [timeout, "--kill-after=5", str(wait), binary, "status", "--wait"]
    rc, out, err = module.run_command(cmd)
    words = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("status:")]
    state["rc"] = rc
    state["status"] = words[-1] if words else ("running" if rc == 124 else (err.strip() or out.strip())[:200])
    state["running"] = rc == 124 or state["status"] in ("running", "not started", "not run")
    if rc in (1, 2) and not state["running"]:
        rc2, out2, err2 = module.run_command([binary, "status", "--long"])
        state["detail"] = (out2 + err2).strip().splitlines()[:30]
    return state


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cloud_init_wait=dict(type="int", default=0),
            lock_files=dict(type="list", elements="path", default=list(LOCK_FILES)),
        ),
        supports_check_mode=True,
    )
    if module.params["cloud_init_wait"] < 0:
        module.fail_json(msg="cloud_init_wait must be 0 or more seconds, got %d" % module.params["cloud_init_wait"])
    cloud_init = cloud_init_state(module, module.params["cloud_init_wait"])
    locks = []
    for path in module.params["lock_files"]:
        try:
            holder = lock_holder(path)
        except OSError as exc:
            module.fail_json(msg="cannot check the lock %s: %s (the module needs root: become: true)" % (path, exc),
                             cloud_init=cloud_init)
        if holder:
            locks.append({"path": path, "holders": [holder]})
    module.exit_json(changed=False, cloud_init=cloud_init, locks=locks, busy=cloud_init["running"] or bool(locks))


if __name__ == "__main__":
    main()
