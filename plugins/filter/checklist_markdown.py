# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
name: checklist_markdown
short_description: Render a checklist report as Markdown for a person to read
version_added: "0.1.0"
author:
  - llmops.gce_vllm contributors
description:
  - Renders what P(llmops.gce_vllm.checklist_report#filter) built as Markdown, a heading with the time, the
    overall result, the deployment facts, then one table of checks per host.
  - No "Ansible managed" banner and no HTML comment; the file is this run's output for a person, not managed
    configuration.
  - Table cells are made safe for Markdown (no line breaks, C(|) escaped).
  - Under each host's checks, the phases of vLLM's current start (when the report has them), when each began
    (seconds after systemd started the unit), how long it took, and a phase the journal did not hold with why.
  - When the report names stand-ins (the tests' nvidia-smi or vLLM), the page says so under the verdict and
    under each host that had them.
options:
  _input:
    description: The report.
    type: dict
    required: true
'''

EXAMPLES = r'''
- name: Write report.md
  ansible.builtin.copy:
    dest: results/latest/report.md
    content: "{{ _report | llmops.gce_vllm.checklist_markdown }}"
    mode: "0644"
'''

RETURN = r'''
_value:
  description: The Markdown text, ending with a newline.
  type: str
'''

from ansible.errors import AnsibleFilterError


def _cell(value):
    return " ".join(str("" if value is None else value).split()).replace("|", "\\|")


def _code(value):
    return "`%s`" % str(value).replace("`", "'")


def _seconds(value):
    return "-" if value is None else "%.1f" % value


def _startup_lines(startup):
    """The table of vLLM's start-up phases of one host (none when it was not read)."""
    if not isinstance(startup, dict):
        return []
    if startup.get("error") and not startup.get("phases"):
        return ["vLLM start-up: the journal could not be read (%s)." % _cell(startup["error"]), ""]
    head = "vLLM start-up (the journal of its current start, %s): %s" % (
        startup.get("started_at") or "?",
        ("ready after %s s" % _seconds(startup.get("ready_seconds"))) if startup.get("ready") else "not ready")
    if startup.get("first_health_200_seconds") is not None:
        head += ", first /health 200 after %s s" % _seconds(startup["first_health_200_seconds"])
    if startup.get("compile_cache"):
        head += ", compile cache %s" % startup["compile_cache"]
    out = [head + ".", "", "| phase | began (s after start) | took (s) | detail |", "|---|---|---|---|"]
    for phase in startup.get("phases") or []:
        out.append("| %s | %s | %s | %s |" % (
            _cell(phase.get("title") or phase.get("name")),
            _seconds(phase.get("offset")) if phase.get("printed") else "-",
            _seconds(phase.get("seconds")) if phase.get("printed") else "-",
            _cell(phase.get("detail"))))
    return out + [""]


def checklist_markdown(report):
    """Markdown of a checklist report (see DOCUMENTATION)."""
    if not isinstance(report, dict) or not isinstance(report.get("hosts"), list):
        raise AnsibleFilterError("checklist_markdown: expects a report from llmops.gce_vllm.checklist_report")
    where = []
    if report.get("project"):
        where.append("Project %s" % _code(report["project"]))
    if report.get("zone"):
        where.append("zone %s" % _code(report["zone"]))
    verdict = "**%s**" % ("PASSED" if report.get("passed") else "FAILED")
    lines = ["# Deployment checklist (%s)" % report.get("generated_at", "?"), "",
             "%s: %s" % (", ".join(where), verdict) if where else verdict, ""]
    if report.get("standins"):
        lines += ["**Stand-ins, not the real thing:** the %s %s the tests' stand-in%s (tests/standin): the checks "
                  "below show what %s answer%s, not a real one." % (
                      " and ".join(report["standins"]), "were" if len(report["standins"]) > 1 else "was",
                      "s" if len(report["standins"]) > 1 else "", "they" if len(report["standins"]) > 1 else "it",
                      "" if len(report["standins"]) > 1 else "s"), ""]
    deployment = report.get("deployment") or {}
    for key, value in deployment.items():
        shown = ", ".join(_code(v) for v in value) if isinstance(value, list) else _code(value)
        lines.append("- %s: %s" % (key.replace("_", " "), shown))
    if deployment:
        lines.append("")
    for host in report["hosts"]:
        lines += ["## %s (%s, external IP %s, internal IP %s)" % (
            host.get("instance") or host.get("host"), host.get("machine_type") or "?",
            host.get("external_ip") or "none", host.get("internal_ip") or "?"), "",
            "| # | check | result | detail |", "|---|---|---|---|"]
        if host.get("standins"):
            lines[-2:-2] = ["Stand-ins on this host: %s." % ", ".join(
                "%s (%s)" % (s.get("what"), _code(s.get("path"))) for s in host["standins"]), ""]
        for check in host.get("checks") or []:
            lines.append("| %s | %s | %s | %s |" % (
                _cell(check.get("id") or "-"), _cell(check.get("check")), "PASS" if check.get("passed") else "FAIL",
                _cell(check.get("detail"))))
        lines.append("")
        lines += _startup_lines(host.get("vllm_startup"))
    return "\n".join(lines).rstrip("\n") + "\n"


class FilterModule:
    """The collection's checklist_markdown filter."""

    def filters(self):
        return {"checklist_markdown": checklist_markdown}
