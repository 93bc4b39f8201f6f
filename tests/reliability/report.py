"""docs/reliability.md, written from the suite's own results (never by hand).

    python -m tests.reliability.report tests/reliability/last-results.json   # re-render the page
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip() or "?"
    except OSError:
        return "?"


def _ansible_version() -> str:
    try:
        from ansible.release import __version__
        return __version__
    except ImportError:
        return "?"


def collect(results: dict, seconds: float, exitstatus: int, failed: int, collected: int) -> dict:
    bad = results["bad_inputs"]
    faults = results["faults"]
    secrets = results["secrets"]
    data = {
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_head(),
        "ansible_core": _ansible_version(),
        "python": platform.python_version(),
        "suite_seconds": round(seconds, 1),
        "pytest": {"exitstatus": exitstatus, "failed": failed, "collected": collected},
        "summary": {
            "bad_input_cases": len(bad),
            "bad_input_rejected_before_change": sum(1 for b in bad if b.get("rejected") and b.get("unchanged")),
            "bad_input_message_names_variable_and_fix": sum(1 for b in bad if b.get("message_ok")),
            "faults_injected": len(faults),
            "faults_survived": sum(1 for f in faults if f.get("survived")),
            "secret_places_checked": len(secrets),
            "secrets_found": sum(int(s.get("found", 0)) for s in secrets),
        },
        "bad_inputs": bad,
        "faults": faults,
        "secrets": secrets,
        "hardening": results["hardening"],
        "gpu_sandbox": results.get("gpu_sandbox", []),
        "notes": results["notes"],
    }
    return data


def _yes(v) -> str:
    return "yes" if v else "**NO**"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fault_row(f: dict) -> str:
    return "| %s | %s | %s | %s | %s | %s |" % (
        _cell(f["fault"]), _cell(f["injected"]), _cell(f["expected"]), _cell(f.get("observed", "")),
        _yes(f.get("survived")), _cell(f.get("figure", "")))


def render(d: dict) -> str:
    s = d["summary"]
    lines = [
        "<!-- Written by tests/reliability (report.py) from the suite's results; do not edit by hand. -->",
        "# Reliability and security, measured",
        "",
        "Produced by `make reliability`: `pytest tests/reliability` against one real systemd test host",
        "(tests/harness), the vLLM stand-in (tests/standin) and the local Compute API (tests/compute_api).",
        "`make test` runs the same suite and writes its results to results/reliability/ only.",
        "Every figure below is what that run observed. Raw results: `tests/reliability/last-results.json`.",
        "",
        "Run: %s, commit `%s`, ansible-core %s, Python %s, %.0f s in all; pytest: %d tests, %d failed."
        % (d["generated"], d["commit"], d["ansible_core"], d["python"], d["suite_seconds"],
           d["pytest"]["collected"], d["pytest"]["failed"]),
        "",
        "## Summary",
        "",
        "| measure | result |",
        "|---|---|",
        "| bad-input cases tried | %d |" % s["bad_input_cases"],
        "| rejected before any change (host files, units, Compute API state compared) | %d / %d |"
        % (s["bad_input_rejected_before_change"], s["bad_input_cases"]),
        "| failure message names the variable and the fix | %d / %d |"
        % (s["bad_input_message_names_variable_and_fix"], s["bad_input_cases"]),
        "| faults injected | %d |" % s["faults_injected"],
        "| faults survived (detected, reported, recovered or converged as designed) | %d / %d |"
        % (s["faults_survived"], s["faults_injected"]),
    ]
    for f in d["faults"]:
        if f.get("recovery_s") is not None:
            lines.append("| recovery time: %s | %.1f s |" % (_cell(f["fault"]), f["recovery_s"]))
    lines.append("| places searched for this run's secrets | %d |" % s["secret_places_checked"])
    lines.append("| secrets found | **%d** |" % s["secrets_found"])
    for h in d["hardening"]:
        lines.append("| `systemd-analyze security %s` | %s %s (the runbook's unit: %s %s) |" % (
            h["unit"], h["ours"], h["ours_band"], h.get("runbook", "?"), h.get("runbook_band", "")))
    findings = []
    for b in d["bad_inputs"]:
        problems = [what for what, bad in (("accepted", not b.get("rejected")),
                                           ("message lacks the variable or fix", not b.get("message_ok")),
                                           ("changed something", not b.get("unchanged"))) if bad]
        if problems:
            findings.append("bad input `%s` (%s): %s" % (b["case"], b["entry"], ", ".join(problems)))
    findings += ["fault not survived: %s: %s" % (f["fault"], f.get("observed", "")) for f in d["faults"] if not f.get("survived")]
    findings += ["secret found: %s (%s)" % (x["where"], x["found"]) for x in d["secrets"] if x.get("found")]
    findings += ["%s scores %s %s (the goal is OK or better)" % (h["unit"], h["ours"], h["ours_band"])
                 for h in d["hardening"] if h["ours_band"] not in ("SAFE", "OK")]
    findings += ["GPU sandbox probe failed: %s" % g["observed"] for g in d.get("gpu_sandbox", []) if not g.get("passed")]
    lines += ["", "## Open findings", ""]
    lines += ["- " + _cell(f) for f in findings] if findings else ["None: every case and fault behaved as required."]
    lines += ["", "## Bad input", "",
              "Each case runs the real entry point (configure.yml on the test host, provision.yml against the local",
              "Compute API, `ansible` ad-hoc for a module, `ansible-inventory` for the inventory plugin) with ONE bad",
              "value. It must fail, its message must contain the words listed, and a snapshot of the host (files",
              "under /app, /etc/systemd/system, accounts, unit states and main PIDs) and of the Compute API's state",
              "must be identical before and after.", "",
              "| case | entry point | bad value | must say | rejected | message ok | nothing changed | API requests | s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for b in d["bad_inputs"]:
        lines.append("| %s | %s | `%s` | %s | %s | %s | %s | %s | %.1f |" % (
            b["case"], b["entry"], _cell(b["value"])[:70], _cell(", ".join(b["words"])), _yes(b.get("rejected")),
            _yes(b.get("message_ok")), _yes(b.get("unchanged")), b.get("api_writes", "-"), b.get("seconds", 0)))
    first_boot = [f for f in d["faults"] if f.get("stage") == "first boot"]
    lines += ["", "## Faults", "",
              "| fault | how it was injected | expected | observed | survived | figure |",
              "|---|---|---|---|---|---|"]
    for f in d["faults"]:
        if f not in first_boot:
            lines.append(_fault_row(f))
    if first_boot:
        lines += ["", "## The first minutes of a new VM", "",
                  "A test host boots from a cached rootfs in a second; a new GCE VM is still busy when SSH first answers.",
                  "Each row puts one such thing back on the converged test host and runs configure.yml",
                  "(tests/reliability/test_5_first_boot.py; cloud-init is tests/standin/cloud-init, a stand-in).", "",
                  "| first-boot condition | how it was acted out | expected | observed | survived | figure |",
                  "|---|---|---|---|---|---|"]
        lines += [_fault_row(f) for f in first_boot]
    lines += ["", "## Secrets", "",
              "This run's vLLM API key and backend token were fresh random strings; each place below was searched for",
              "both (and for the Compute API access token where it applies).", "",
              "| where | how | found |", "|---|---|---|"]
    for x in d["secrets"]:
        lines.append("| %s | %s | %s |" % (_cell(x["where"]), _cell(x["how"]), x["found"]))
    if d["hardening"]:
        lines += ["", "## Hardening: `systemd-analyze security`", "",
                  "Measured inside the test host (%s). The runbook's units were installed there verbatim"
                  % d["hardening"][0].get("systemd", "?"),
                  "(as `runbook-*.service`, never started) and scored the same way; the runbook quotes 9.6 UNSAFE for both.",
                  "",
                  "| unit | ours | runbook's unit, same host | runbook quotes | User | highest remaining exposures |",
                  "|---|---|---|---|---|---|"]
        for h in d["hardening"]:
            lines.append("| %s | **%s %s** | %s %s | 9.6 UNSAFE | %s | %s |" % (
                h["unit"], h["ours"], h["ours_band"], h.get("runbook", "?"), h.get("runbook_band", ""),
                h.get("user", "?"), _cell("; ".join(h.get("remaining", [])[:6]))))
    if d.get("gpu_sandbox"):
        lines += ["", "## GPU devices under vllm.service's sandbox", "",
                  "A probe run in the deployed unit (ExecStart replaced, sandbox unchanged) opens harness-made NVIDIA-like",
                  "nodes (majors of a driver 580 host) as CUDA does: ENXIO = allowed by the device policy, no driver;",
                  "EPERM = denied. The control run (an allow-list without the NVIDIA groups) shows whether this host",
                  "enforces device policies at all; where it does not, EPERM cannot show here.", "",
                  "| check | unit's policy | observed | host enforces | control | passed |", "|---|---|---|---|---|---|"]
        for g in d["gpu_sandbox"]:
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                _cell(g["check"]), _cell(g["unit_policy"]), _cell(g["observed"]),
                "yes" if g.get("enforced") else "no (the EPERM half could not fail)", _cell(g["control"]),
                _yes(g.get("passed"))))
    if d["notes"]:
        lines += ["", "## Notes of the run", ""] + ["- " + _cell(n) for n in d["notes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("last-results.json"))
    sys.stdout.write(render(json.loads(src.read_text())))
