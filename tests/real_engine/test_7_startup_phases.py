"""Start-up phases of the real engine (issue 13, item 4): the checklist report shows the phases of vLLM's current
start, read from the real journal by the collection's module; the stand-in prints the same phase lines.

- test_checklist_report_shows_the_phases: playbooks/verify.yml against the real engine; its report.json/report.md
  hold the phases the module found (weight load, engine init, ready on the CPU build) and say which the build does
  not print (graph capture), never 0.
- test_standin_phase_names_match_the_real_engine: the stand-in (tests/standin), run on the same test host as a
  transient systemd unit (its own journal, real journald), started with the unit's argv; the parser's printed phase
  names must equal the real engine's.
"""

from __future__ import annotations

import json
import shlex

from tests.real_engine import report, startup
from tests.real_engine.conftest import ROOT, free_port
from tests.real_engine.test_2_fidelity import unit_argv
from tests.reliability import lib

STANDIN_SRC = ROOT / "tests" / "standin" / "vllm_standin"
STANDIN_ON_HOST = "/opt/llmops-standin-src"


def test_checklist_report_shows_the_phases(deployment, workdir):
    results = workdir / "checklist"
    res = deployment.play(lib.VERIFY, "verify-startup-phases",
                          ["-e", "checklist_results_dir=%s" % results, "-e", "gce_public_ip=%s" % deployment.host.address])
    assert res.rc == 0, res.tail(6000)
    rep = json.loads((results / "latest" / "report.json").read_text())
    st = rep["hosts"][0]["vllm_startup"]
    names = {p["name"]: p for p in st["phases"]}
    assert st["ready"] is True and st["ready_seconds"] > 0, st
    for name in ("weight_load", "engine_init", "ready"):
        assert names[name]["printed"] and names[name]["seconds"] is not None, names[name]
    assert not names["graph_capture"]["printed"] and names["graph_capture"]["seconds"] is None
    assert names["graph_capture"]["detail"].startswith("not printed")
    text = (results / "latest" / "report.md").read_text()
    assert "vLLM start-up" in text and "| CUDA graph capture | - | - | not printed" in text, text
    report.check("checklist report shows the real engine's start-up phases", True,
                 "; ".join("%s %s" % (p["name"], p["seconds"]) for p in st["phases"] if p["printed"]))


def test_standin_phase_names_match_the_real_engine(deployment):
    host = deployment.host
    real = startup.startup_info(deployment)["startup"]
    from tests.harness import testhosts

    for f in sorted(STANDIN_SRC.glob("*.py")):
        testhosts.copy_in(str(host.state), host.name, str(f), "%s/vllm_standin/%s" % (STANDIN_ON_HOST, f.name))
    args = unit_argv(host)
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(free_port())
    unit = "vllm-standin-phases"
    host.sh("systemctl stop %s 2>/dev/null; systemctl reset-failed %s 2>/dev/null; true" % (unit, unit))
    host.sh("systemd-run --unit=%s --setenv=PYTHONPATH=%s --setenv=VLLM_STANDIN_STARTUP_DELAY=2 "
            "python3 -m vllm_standin %s" % (unit, STANDIN_ON_HOST, " ".join(shlex.quote(a) for a in args)))
    try:
        for _attempt in range(60):
            info = startup.startup_info(deployment, unit=unit)["startup"]
            if info["ready"]:
                break
        assert info["ready"], info
    finally:
        host.sh("systemctl stop %s; true" % unit)
    report.fidelity("start-up phases printed (vllm_startup_info)", real["printed"], info["printed"],
                    real["printed"] == info["printed"])
    assert info["printed"] == real["printed"], (real["printed"], info["printed"])
