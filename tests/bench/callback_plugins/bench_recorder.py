# Timing callback of make bench and of the fleet suite (tests/fleet: a roll's steps): records, per task and host,
# when it started and ended, its status and whether it changed, and writes them as JSON to $LLMOPS_BENCH_EVENTS at
# the end of the run. Enabled only by those (ANSIBLE_CALLBACK_PLUGINS + ANSIBLE_CALLBACKS_ENABLED).
from __future__ import annotations

DOCUMENTATION = r"""
name: bench_recorder
type: aggregate
short_description: per task and host timings for make bench
description:
  - Writes a JSON list of task results (task, host, action, status, changed, start, end in epoch seconds)
    to the file named by E(LLMOPS_BENCH_EVENTS).
requirements:
  - enable in callbacks_enabled
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_recorder"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._starts = {}
        self._events = []
        self._t0 = time.time()

    def v2_runner_on_start(self, host, task):
        self._starts[(host.get_name(), task._uuid)] = time.time()

    def _record(self, result, status):
        now = time.time()
        host = result._host.get_name()
        task = result._task
        res = result._result or {}
        self._events.append({
            "host": host,
            "task": task.get_name(),
            "action": task.action,
            "handler": task.__class__.__name__ == "Handler",
            "status": status,
            "changed": bool(res.get("changed", False)),
            "start": self._starts.get((host, task._uuid), now),
            "end": now,
            "elapsed": res.get("elapsed"),
            "attempts": res.get("attempts"),
        })

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("LLMOPS_BENCH_EVENTS")
        if not path:
            return
        out = {"start": self._t0, "end": time.time(), "events": self._events, "stats": {}}
        for host in sorted(stats.processed):
            out["stats"][host] = stats.summarize(host)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(out, fh)
