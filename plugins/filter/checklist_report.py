# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
name: checklist_report
short_description: Build the runbook's checklist report from the roles' own verification results
version_added: "0.1.0"
author:
  - llmops.gce_vllm contributors
description:
  - Turns what each host recorded (the fact C(checklist_result) the checklist role sets, with the host's inventory
    facts and the C(verify) results of gpu_host, vllm_server and ai_server plus the external checks) into one
    report for every host of the play.
  - Numbers the checks as the runbook's section 6 does (C(1) GPU, C(2) vLLM /health, C(3) vLLM /v1/models,
    C(4) AI server /health, C(5a)-C(5c) from the controller at the external IP); a check the runbook does not
    list (for example libcuda.so.1) keeps its place with the id C(null).
  - Item 1 also needs the CUDA version nvidia-smi reports to be at least O(min_cuda_major).
  - A host whose C(checklist_result.standins) lists files of the tests' stand-ins (the checklist role finds them by
    the text the stand-ins carry) gets them in RV(_value.hosts[].standins), and RV(_value.standins) names what
    was not real (C(GPU) for nvidia-smi, C(vLLM)), so a run against stand-ins never reads as a real deployment.
  - A host without a recorded result (failed or unreachable earlier) gets one failed check, so the report
    never passes by omission.
  - vLLM's start-up phases (C(vllm_server.startup), what M(llmops.gce_vllm.vllm_startup_info) read from the journal
    of the unit's current start) go to RV(_value.hosts[].vllm_startup), as information, not a check; a phase the
    journal does not hold keeps its reason (for example C(not printed by this build)), never 0 seconds.
  - Copies only named keys (check texts, details, addresses, machine type); nothing else of a host's
    variables, so no secret, reaches the report.
options:
  _input:
    description: A mapping of inventory host name to its C(checklist_result), or null for a host that has none.
    type: dict
    required: true
  run_id:
    description: The report's id (its directory name under the results directory).
    type: str
    required: true
  generated_at:
    description: When the report was made (UTC, ISO 8601).
    type: str
    required: true
  min_cuda_major:
    description: Lowest CUDA major version item 1 accepts.
    type: int
    default: 13
  deployment:
    description: Facts about the deployment for the report's header (for example C(boot_image), C(firewall_rules)),
      strings or lists of strings.
    type: dict
    default: {}
'''

EXAMPLES = r'''
- name: Build the report of every host of the play
  ansible.builtin.set_fact:
    _report: >-
      {{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars)
              | map(attribute='checklist_result', default=none)))
         | llmops.gce_vllm.checklist_report(run_id='20261201T120000Z', generated_at='2026-12-01T12:00:00Z') }}
'''

RETURN = r'''
_value:
  description: The report.
  type: dict
  contains:
    run_id:
      description: O(run_id).
      type: str
    generated_at:
      description: O(generated_at).
      type: str
    passed:
      description: Whether every check of every host passed.
      type: bool
    project:
      description: The hosts' GCE project(s), comma separated, or null.
      type: str
    zone:
      description: The hosts' zone(s), comma separated, or null.
      type: str
    deployment:
      description: O(deployment), strings and lists of strings only.
      type: dict
    standins:
      description: What was a stand-in on some host (C(GPU), C(vLLM)), sorted; empty for a real deployment.
      type: list
      elements: str
    hosts:
      description: One entry per host, in play order.
      type: list
      elements: dict
      contains:
        host:
          description: The inventory host name.
          type: str
        passed:
          description: Whether every check of this host passed.
          type: bool
        instance:
          description: The VM's name (C(gce_name)), else the host name.
          type: str
        checks:
          description: The checks, each C({id, name, check, passed, detail}).
          type: list
          elements: dict
        standins:
          description: The stand-ins found on this host, each C({what, path}).
          type: list
          elements: dict
        vllm_startup:
          description: "vLLM's current start, or null when it was not read: C(started_at), C(ready),
            C(ready_seconds), C(first_health_200_seconds), C(compile_cache), C(error) and C(phases), each
            C({name, title, printed, start, end, seconds, offset, detail})."
          type: dict
'''

from ansible.errors import AnsibleFilterError

# The runbook's section 6, by the name of the check that does it (the roles' verify results, the checklist's
# external checks).
RUNBOOK_IDS = {
    "gpu_host_gpu": "1",
    "vllm_server_health": "2",
    "vllm_server_models": "3",
    "ai_server_health": "4",
    "checklist_external_ai": "5a",
    "checklist_external_vllm": "5b",
    "checklist_external_no_key": "5c",
}
# Where each part of a host's checklist_result comes from, in report order.
SOURCES = ("gpu_host", "vllm_server", "ai_server", "external")
HOST_KEYS = ("instance", "project", "zone", "machine_type", "external_ip", "internal_ip")
STARTUP_KEYS = ("started_at", "ready", "ready_seconds", "first_health_200_seconds", "compile_cache")
PHASE_KEYS = ("name", "title", "printed", "start", "end", "seconds", "offset", "detail")
# What a stand-in file found on a host replaces, by its file name.
STANDINS = {"nvidia-smi": "GPU", "vllm": "vLLM"}


def _text(value):
    return "" if value is None else " ".join(str(value).split())


def _cuda_major(version):
    try:
        return int(str(version).split(".", 1)[0])
    except (TypeError, ValueError):
        return None


def _check(item, gpu, min_cuda_major):
    if not isinstance(item, dict) or "name" not in item:
        raise AnsibleFilterError("checklist_report: a check must be a dict with name, check, ok, detail; got %r" % (item,))
    name = str(item["name"])
    passed = item.get("ok") is True
    detail = _text(item.get("detail"))
    if name == "gpu_host_gpu":
        cuda = (gpu or {}).get("cuda_version")
        major = _cuda_major(cuda)
        if major is None or major < min_cuda_major:
            passed = False
            detail += "; CUDA %s is below %d.x (checklist_min_cuda_major)" % (cuda or "unknown", min_cuda_major)
    return {"id": RUNBOOK_IDS.get(name), "name": name, "check": _text(item.get("check") or name),
            "passed": passed, "detail": detail}


def _number(value):
    try:
        return None if value is None or isinstance(value, bool) else round(float(value), 3)
    except (TypeError, ValueError):
        return None


def _startup(vllm):
    """The start-up phases of vllm_server's result, named keys only (no journal line reaches the report)."""
    if not isinstance(vllm, dict) or not isinstance(vllm.get("startup"), dict):
        if isinstance(vllm, dict) and vllm.get("startup_error"):
            return {"error": _text(vllm["startup_error"]), "phases": []}
        return None
    src = vllm["startup"]
    out = {key: src.get(key) for key in STARTUP_KEYS}
    out["ready"] = src.get("ready") is True
    for key in ("ready_seconds", "first_health_200_seconds"):
        out[key] = _number(out[key])
    for key in ("started_at", "compile_cache"):
        out[key] = _text(out[key]) or None
    out["error"] = _text(vllm.get("startup_error")) or None
    out["phases"] = []
    for phase in src.get("phases") or []:
        if not isinstance(phase, dict) or not phase.get("name"):
            continue
        item = {key: phase.get(key) for key in PHASE_KEYS}
        item["printed"] = phase.get("printed") is True
        for key in ("seconds", "offset"):
            item[key] = _number(item[key])
        for key in ("name", "title", "start", "end", "detail"):
            item[key] = _text(item[key]) or None
        out["phases"].append(item)
    return out


def _host(host, result, min_cuda_major):
    if not isinstance(result, dict):
        return {"host": host, "instance": host, "passed": False, "checks": [
            {"id": None, "name": "host_reachable", "check": "host reachable", "passed": False,
             "detail": "no checklist: the host failed or was unreachable before its checks ran"}]}
    entry = {"host": host}
    for key in HOST_KEYS:
        value = result.get(key)
        entry[key] = None if value in (None, "") else str(value)
    entry["instance"] = entry["instance"] or host
    paths = result.get("standins") if isinstance(result.get("standins"), list) else []
    entry["standins"] = [{"what": STANDINS.get(_text(p).rsplit("/", 1)[-1], _text(p)), "path": _text(p)}
                         for p in paths if p]
    checks = []
    for source in SOURCES:
        part = result.get(source)
        if not isinstance(part, dict) or not isinstance(part.get("checks"), list):
            checks.append({"id": None, "name": source, "check": "%s checks ran" % source, "passed": False,
                           "detail": "no %s result recorded" % source})
            continue
        checks += [_check(item, part.get("gpu"), min_cuda_major) for item in part["checks"]]
    entry["checks"] = checks
    entry["passed"] = all(c["passed"] for c in checks)
    entry["vllm_startup"] = _startup(result.get("vllm_server"))
    return entry


def _scalars(deployment):
    out = {}
    for key, value in (deployment or {}).items():
        if isinstance(value, (list, tuple)):
            out[str(key)] = [_text(v) for v in value]
        elif value is not None and value != "":
            out[str(key)] = _text(value)
    return out


def _joined(hosts, key):
    values = sorted({h[key] for h in hosts if h.get(key)})
    return ", ".join(values) if values else None


def checklist_report(results, run_id, generated_at, min_cuda_major=13, deployment=None):
    """The report (see DOCUMENTATION)."""
    if not isinstance(results, dict):
        raise AnsibleFilterError("checklist_report: expects a mapping of host name to checklist_result, got %s"
                                 % type(results).__name__)
    try:
        min_cuda_major = int(min_cuda_major)
    except (TypeError, ValueError):
        raise AnsibleFilterError("checklist_report: min_cuda_major (checklist_min_cuda_major) must be an integer, got %r"
                                 % (min_cuda_major,))
    if deployment is not None and not isinstance(deployment, dict):
        raise AnsibleFilterError("checklist_report: deployment (checklist_deployment) must be a dict, got %s"
                                 % type(deployment).__name__)
    hosts = [_host(str(host), result, min_cuda_major) for host, result in results.items()]
    return {
        "run_id": str(run_id),
        "generated_at": str(generated_at),
        "passed": bool(hosts) and all(h["passed"] for h in hosts),
        "project": _joined(hosts, "project"),
        "zone": _joined(hosts, "zone"),
        "deployment": _scalars(deployment),
        "standins": sorted({s["what"] for h in hosts for s in h.get("standins", [])}),
        "hosts": hosts,
    }


class FilterModule:
    """The collection's checklist_report filter."""

    def filters(self):
        return {"checklist_report": checklist_report}
