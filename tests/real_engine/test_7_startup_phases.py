"""Start-up phases of the real engine (issue 13, item 4): the checklist report shows the phases of vLLM's current
start, read from the real journal by the collection's module; the stand-in prints the same phase lines.

- test_checklist_report_shows_the_phases: playbooks/verify.yml against the real engine; its report.json/report.md
  hold the phases the module found (weight load, engine init, ready on the CPU build) and say which the build does
  not print (graph capture), never 0.
- test_standin_phase_names_match_the_real_engine: the stand-in (tests/standin), run on the same test host as a
  transient systemd unit (its own journal, real journald; conftest.standin_on_host), started with the unit's argv;
  the parser's printed phase names must equal the real engine's.
"""

from __future__ import annotations

import json

from tests.real_engine import report, startup
from tests.real_engine.conftest import free_port, standin_on_host
from tests.reliability import lib


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
    real = startup.startup_info(deployment)["startup"]
    unit = "vllm-standin-phases"
    with standin_on_host(deployment.host, unit, free_port(), 2):
        for _attempt in range(60):
            info = startup.startup_info(deployment, unit=unit)["startup"]
            if info["ready"]:
                break
        assert info["ready"], info
    report.fidelity("start-up phases printed (vllm_startup_info)", real["printed"], info["printed"],
                    real["printed"] == info["printed"])
    assert info["printed"] == real["printed"], (real["printed"], info["printed"])
