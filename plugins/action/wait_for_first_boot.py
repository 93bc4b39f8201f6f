# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action of llmops.gce_vllm.wait_for_first_boot: repeat first_boot_info on the host and print the progress."""

from __future__ import annotations

import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

PROBE = "llmops.gce_vllm.first_boot_info"
REPORT_EVERY = 30   # seconds between two progress lines about the same thing


def holders_text(locks):
    """'/var/lib/dpkg/lock-frontend held by PID 812 (unattended-upgr): /usr/bin/python3 ...', one per lock."""
    parts = []
    for lock in locks:
        who = ", ".join("PID %s (%s)" % (h["pid"], h.get("command") or "?")
                        + (": %s" % h["cmdline"][:80] if h.get("cmdline") else "") for h in lock["holders"])
        parts.append("%s held by %s" % (lock["path"], who))
    return "; ".join(parts)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True
    _VALID_ARGS = frozenset(("cloud_init_timeout", "lock_timeout", "sleep", "hint"))

    def _probe(self, task_vars, cloud_init_wait):
        res = self._execute_module(module_name=PROBE, module_args={"cloud_init_wait": cloud_init_wait},
                                   task_vars=task_vars)
        if res.get("failed"):
            raise AnsibleActionFail("%s failed: %s" % (PROBE, res.get("msg", res)))
        return res

    def _say(self, host, text, key=None):
        """Print a progress line: always when `key` (what is waited for) changed, else every REPORT_EVERY s."""
        now = time.monotonic()
        if key is not None and key == self._last_key and now - self._last_said < REPORT_EVERY:
            return
        self._last_key, self._last_said = key, now
        display.display("[%s] %s" % (host, text))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        host = task_vars.get("inventory_hostname", self._play_context.remote_addr)
        self._last_key, self._last_said = None, 0.0
        args = self._task.args
        try:
            ci_timeout = int(args.get("cloud_init_timeout", 600))
            lock_timeout = int(args.get("lock_timeout", 600))
            sleep = max(1, int(args.get("sleep", 5)))
        except (TypeError, ValueError) as exc:
            raise AnsibleActionFail("cloud_init_timeout, lock_timeout and sleep must be whole seconds: %s" % exc)
        if ci_timeout < 0 or lock_timeout < 0:
            raise AnsibleActionFail("cloud_init_timeout and lock_timeout must be 0 or more seconds")
        hint = str(args.get("hint") or "")

        # 1. cloud-init: block in `cloud-init status --wait` for at most `sleep` seconds per round, so that a
        #    finished cloud-init is noticed at once and a running one is reported every round.
        t0 = time.monotonic()
        state = self._probe(task_vars, min(sleep, ci_timeout))
        ci = state["cloud_init"]
        while ci["running"]:
            waited = time.monotonic() - t0
            if waited >= ci_timeout:
                result.update(failed=True, cloud_init=ci, locks=state["locks"], waited_cloud_init=round(waited),
                              msg="cloud-init was still %s after %d s (cloud_init_timeout=%d): its first-boot jobs "
                                  "(user data, package upgrades) would race the package installs. On the host: "
                                  "`cloud-init status --long` and /var/log/cloud-init-output.log. %s"
                                  % (ci["status"], waited, ci_timeout, hint))
                return result
            self._say(host, "waiting for cloud-init to finish (status: %s): %d s of at most %d s"
                      % (ci["status"], waited, ci_timeout), key="cloud-init " + ci["status"])
            state = self._probe(task_vars, max(1, min(sleep, int(ci_timeout - waited))))
            ci = state["cloud_init"]
        waited_ci = time.monotonic() - t0
        if ci["present"] and ci["rc"] in (1, 2):
            # Finished with errors: reported, not fatal. Nothing of this collection depends on cloud-init's
            # modules (provision passes only ssh-keys metadata), and nothing races the installs any more.
            result.setdefault("warnings", []).append(
                "cloud-init finished with %s (exit %d); the roles go on. %s"
                % ("an error" if ci["rc"] == 1 else "recoverable errors", ci["rc"], " | ".join(ci["detail"][:12])))
        if ci["present"] and waited_ci >= 1:
            self._say(host, "cloud-init finished (status: %s) after %d s" % (ci["status"], waited_ci))

        # 2. the apt/dpkg locks (apt-daily, unattended-upgrades, cloud-init's own apt runs)
        t1 = time.monotonic()
        while state["locks"]:
            waited = time.monotonic() - t1
            if waited >= lock_timeout:
                result.update(failed=True, cloud_init=ci, locks=state["locks"], waited_cloud_init=round(waited_ci),
                              waited_lock=round(waited),
                              msg="the apt/dpkg lock is still taken after %d s (lock_timeout=%d): %s. Let it finish "
                                  "(`systemctl status apt-daily.service apt-daily-upgrade.service "
                                  "unattended-upgrades.service` on the host) and run again. %s"
                                  % (waited, lock_timeout, holders_text(state["locks"]), hint))
                return result
            self._say(host, "waiting for the apt/dpkg lock: %s: %d s of at most %d s"
                      % (holders_text(state["locks"]), waited, lock_timeout), key=holders_text(state["locks"]))
            time.sleep(sleep)
            state = self._probe(task_vars, 0)
        waited_lock = time.monotonic() - t1
        if waited_lock >= 1:
            self._say(host, "the apt/dpkg locks are free after %d s" % waited_lock)
        result.update(changed=False, cloud_init=state["cloud_init"], locks=[], waited_cloud_init=round(waited_ci),
                      waited_lock=round(waited_lock),
                      msg="first boot done: cloud-init %s, apt/dpkg locks free (waited %.0f s for cloud-init, %.0f s for the locks)"
                          % (ci["status"] if ci["present"] else "absent", waited_ci, waited_lock))
        return result
