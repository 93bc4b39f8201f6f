"""`make bench`'s startup stage (tests/bench/bench.py --only startup): cold start vs warm restart of the REAL engine.

Not a test of the suite (its name does not match test_*.py, so `make real-engine` does not collect it): bench.py
runs it by path, with the real-engine suite's fixtures (conftest.py: one Debian 12 test host, the roles' deployment
of vLLM's CPU build and a tiny model), and LLMOPS_STARTUP_BENCH_OUT (the JSON file to write) and
LLMOPS_STARTUP_BENCH_N (starts of each kind). Cold and warm starts alternate (cold, warm, cold, warm, ...), so
both see the same machine load; each start's phases come from llmops.gce_vllm.vllm_startup_info (startup.py).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from tests.real_engine import report, startup


def _median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def summarize(runs: list) -> dict:
    """Medians per phase of the starts of one kind; a phase no start printed stays unprinted, with its reason."""
    out = {"runs": len(runs), "ready_median_s": _median([r["ready_s"] for r in runs]),
           "health_200_median_s": _median([r["health_200_s"] for r in runs]),
           "compile_cache": sorted({r["compile_cache"] or "not printed" for r in runs}), "phases": []}
    names = [p["name"] for p in runs[0]["phases"]] if runs else []
    for name in names:
        seen = [next(p for p in r["phases"] if p["name"] == name) for r in runs]
        printed = [p for p in seen if p["printed"]]
        out["phases"].append({
            "name": name, "title": seen[0]["title"], "printed": len(printed), "of": len(seen),
            "seconds_median": _median([p["seconds"] for p in printed]),
            "offset_median": _median([p["offset"] for p in printed]),
            "detail": printed[-1]["detail"] if printed else seen[0]["detail"]})
    return out


def test_cold_vs_warm(deployment):
    out_path = os.environ.get("LLMOPS_STARTUP_BENCH_OUT")
    assert out_path, "run by tests/bench/bench.py --only startup (LLMOPS_STARTUP_BENCH_OUT names the results file)"
    n = int(os.environ.get("LLMOPS_STARTUP_BENCH_N", "3"))
    assert n >= 1, "LLMOPS_STARTUP_BENCH_N must be 1 or more"
    runs = []
    t0 = time.monotonic()
    for i in range(n):
        for cold in (True, False):
            r = startup.start(deployment, cold=cold)
            st = r["info"]["startup"]
            runs.append({"kind": r["kind"], "round": i + 1, "ready_s": st["ready_seconds"],
                         "health_200_s": r["health_200_s"], "compile_cache": st["compile_cache"],
                         "cache_bytes_before": r["cache_bytes_before"],
                         "phases": [{k: p[k] for k in ("name", "title", "printed", "seconds", "offset", "detail")}
                                    for p in st["phases"]]})
            report.note("bench %s start %d: ready %.1f s (journal), /health 200 after %.1f s" % (
                r["kind"], i + 1, st["ready_seconds"] or -1, r["health_200_s"]))
    facts = report.RESULTS["facts"]
    data = {
        "engine": facts.get("engine_package"), "host_python": facts.get("host_python"),
        "host_torch": facts.get("host_torch"), "model": (facts.get("model") or {}).get("base", facts.get("model")),
        "repeats": n, "order": "cold, warm alternating", "starts_wall_s": round(time.monotonic() - t0, 1),
        "cold": summarize([r for r in runs if r["kind"] == "cold"]),
        "warm": summarize([r for r in runs if r["kind"] == "warm"]),
        "runs": runs,
    }
    Path(out_path).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    # what a cold start is: its caches were empty, and the warm start's were not
    assert all(sum(r["cache_bytes_before"].values()) == 0 for r in runs if r["kind"] == "cold"), runs
    assert all(sum(r["cache_bytes_before"].values()) > 0 for r in runs if r["kind"] == "warm"), runs
