# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The start-up phases of one vLLM start, read from its unit's journal (the one place of these rules).

Input: the journal of ONE invocation of the unit, as ``journalctl _SYSTEMD_INVOCATION_ID=ID + INVOCATION_ID=ID
--output=short-iso-precise`` prints it (ID: ``systemctl show UNIT --property=InvocationID``; the first match is what
the unit's processes wrote, the second systemd's own "Started ..." line). Each line is
``2026-12-02T15:10:01.123456+00:00 HOST IDENT[PID]: MESSAGE``; vLLM's MESSAGE is its own log line
(``INFO 12-02 15:10:01 [file.py:123] text``), from the engine process prefixed ``(EngineCore_DP0 pid=N)``.

The phases, by the lines vLLM prints (quoted from vLLM's source; the tests' fixtures under tests/fixtures/vllm/ hold
real journals of the CPU build and, for what only a GPU build prints, lines built from the source text):

- download: ``Time spent downloading weights for M: S seconds`` (printed only when fetching took over 0.5 s);
- weight_load: ``Starting to load model M...`` to ``Model loading took X GiB and S seconds`` (GPU model runner)
  or, where the build prints no such line (the CPU build 0.32.0), to ``Loading weights took S seconds`` (the read of
  the weights alone, also shown);
- compile (torch.compile / Dynamo): ``Dynamo bytecode transform time: S s``, ``Compiling a graph for ... takes S s``
  (a cache miss) or ``Directly load the compiled graph(s) for ... from the cache, took S s`` (a hit), ending with
  ``torch.compile takes S s in total``;
- graph_capture (CUDA graphs): ``Graph capturing finished in S secs, took X GiB``;
- engine_init (profiling, KV cache, warm-up; it contains compile and graph_capture):
  ``init engine (profile, create kv cache, warmup model) took S seconds``;
- ready: uvicorn's ``Application startup complete.`` (the API server listens from here), and the first
  ``GET /health`` answered 200 when the access log shows it.

A phase whose line is not in the journal is reported as not printed (with why, where vLLM prints it only under a
condition), never as 0 seconds.
"""

from __future__ import annotations

import datetime
import re

PHASES = ("download", "weight_load", "compile", "graph_capture", "engine_init", "ready")
TITLES = {
    "download": "weights download",
    "weight_load": "weight load",
    "compile": "torch.compile (Dynamo + Inductor)",
    "graph_capture": "CUDA graph capture",
    "engine_init": "engine init (profile, KV cache, warm-up)",
    "ready": "API server ready",
}
# Why a phase's line can be missing from a start that reached ready.
ABSENT = {
    "download": "not printed: nothing was downloaded (local or cached weights; vLLM logs a download over 0.5 s only)",
    "weight_load": "not printed by this build",
    "compile": "not printed by this build (or torch.compile is off: --enforce-eager / compilation mode 0)",
    "graph_capture": "not printed by this build (no CUDA graphs: a CPU build, or --enforce-eager)",
    "engine_init": "not printed by this build",
    "ready": "not printed: the API server did not report startup complete in this invocation",
}

_JOURNAL = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?)(?P<tz>Z|[+-]\d\d:?\d\d)?\s+(?P<host>\S+)\s+"
    r"(?P<ident>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?:\s?(?P<msg>.*)$")
_PREFIX = re.compile(r"^\((?P<proc>[A-Za-z_][\w-]*) pid=\d+\)\s*")
_VLLM = re.compile(r"^(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) \d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? "
                   r"\[(?P<where>[^\]]+)\]\s*(?P<text>.*)$")
_NUM = r"(\d+(?:\.\d+)?)"
# (phase, role, pattern): role "start" opens a phase, "end" closes it (its number: seconds, when it has one),
# "part" adds to its detail; "hit"/"miss" are compile-cache outcomes.
RULES = (
    ("download", "end", re.compile(r"Time spent downloading weights for (?P<what>.+?): " + _NUM + r" seconds")),
    ("weight_load", "start", re.compile(r"Starting to load model (?P<what>.+?)\.\.\.")),
    ("weight_load", "read", re.compile(r"Loading weights took " + _NUM + r" seconds")),
    ("weight_load", "end", re.compile(r"Model loading took (?P<mem>[\d.]+) ?GiB(?: memory)? and " + _NUM + r" seconds")),
    ("compile", "start", re.compile(r"Dynamo bytecode transform time: " + _NUM + r" s")),
    ("compile", "miss", re.compile(r"Compiling a graph for (?P<what>.+?) takes " + _NUM + r" s")),
    ("compile", "hit", re.compile(r"Directly load the compiled graph\(s\) for (?P<what>.+?) from the cache, took "
                                  + _NUM + r" s")),
    ("compile", "end", re.compile(r"torch\.compile takes " + _NUM + r" s in total")),
    ("graph_capture", "end", re.compile(r"Graph capturing finished in " + _NUM + r" secs?(?:, took (?P<mem>[\d.]+) GiB)?")),
    ("engine_init", "end", re.compile(r"init engine \(profile, create kv cache, warmup model\) took " + _NUM
                                      + r" s(?:econds?)?")),
    ("ready", "end", re.compile(r"Application startup complete\.")),
)
_HEALTH_200 = re.compile(r'"(?:GET|POST) /health HTTP/[\d.]+" 200')
_STARTED = re.compile(r"^Started (?P<unit>\S+)")


class JournalError(ValueError):
    """The text is not a journal of the expected format."""


def parse_time(ts, tz):
    """A journal time stamp (short-iso-precise) as an aware datetime (UTC when the zone is missing)."""
    ts = ts.replace(",", ".")
    if "." in ts:
        whole, frac = ts.split(".", 1)
        ts = "%s.%s" % (whole, (frac + "000000")[:6])
    if not tz or tz == "Z":
        tz = "+00:00"
    elif ":" not in tz:
        tz = tz[:3] + ":" + tz[3:]
    return datetime.datetime.fromisoformat(ts + tz)


def journal_lines(text):
    """[(datetime, ident, message)] of a journal's lines; '-- No entries --' and other meta lines are skipped."""
    out = []
    for raw in (text or "").splitlines():
        line = raw.rstrip("\r")
        if not line.strip() or line.startswith("-- "):
            continue
        m = _JOURNAL.match(line)
        if not m:
            continue   # a continuation (journald keeps a multi-line message as one entry; the text output does not)
        out.append((parse_time(m.group("ts"), m.group("tz")), m.group("ident"), m.group("msg")))
    if (text or "").strip() and not out and "-- No entries --" not in text:
        raise JournalError("not a journal in journalctl --output=short-iso-precise format (first line: %r)"
                           % (text.strip().splitlines()[0][:120],))
    return out


def vllm_text(message):
    """The text of a vLLM log line ('INFO 12-02 15:10:01 [x.py:1] text' -> 'text'), its process prefix removed;
    other lines (uvicorn's, tqdm's) as they are."""
    message = _PREFIX.sub("", message, count=1)
    m = _VLLM.match(message)
    return m.group("text") if m else message


def _message(line):
    m = _JOURNAL.match(line or "")
    return vllm_text(m.group("msg")) if m else ""


def is_ready_line(line):
    """Whether a journal line is the API server's 'Application startup complete.'."""
    return bool(RULES[-1][2].search(_message(line)))


def is_health_200_line(line):
    """Whether a journal line is an access-log line of GET /health answered 200."""
    return bool(_HEALTH_200.search(_message(line)))


def _iso(when):
    return when.isoformat(timespec="milliseconds") if when else None


def _secs(value):
    return round(float(value), 3)


def phases(text, unit="vllm.service"):
    """The start-up phases of the journal of one invocation (see the module's doc). Returns a dict:

    started_at (systemd's "Started UNIT" line, else the first line), ready (bool), ready_seconds (ready - started),
    first_health_200_seconds, phases: [{name, title, printed, start, end, seconds, offset, detail, lines}]
    (start/end ISO 8601; seconds: what vLLM printed for the phase, else end - start; offset: start - started_at),
    compile_cache ("hit", "miss" or None), printed (names of the phases found), absent (name: why).
    """
    lines = journal_lines(text)
    found = {}
    started = None
    health = None
    for when, ident, msg in lines:
        m = _STARTED.match(msg)
        if m and ident in ("systemd", "init") and m.group("unit").rstrip(".") in (unit, unit + "."):
            started = started or when
            continue
        body = vllm_text(msg)
        if health is None and _HEALTH_200.search(body):
            health = when
        for name, role, rx in RULES:
            rm = rx.search(body)
            if not rm:
                continue
            ph = found.setdefault(name, {"lines": [], "hit": 0, "miss": 0})
            ph["lines"].append(body.strip())
            named = set(rx.groupindex.values())   # what, mem: not the phase's seconds
            nums = [g for i, g in enumerate(rm.groups(), 1) if i not in named and g and re.fullmatch(_NUM, g)]
            if role == "start":
                ph.setdefault("start", when)
                if name == "compile" and nums:
                    ph["dynamo"] = _secs(nums[-1])
            elif role == "end":
                ph["end"] = when
                if nums:
                    ph["printed_seconds"] = _secs(nums[-1])
                if rm.groupdict().get("mem"):
                    ph["mem_gib"] = float(rm.group("mem"))
                if rm.groupdict().get("what"):
                    ph["what"] = rm.group("what")
            elif role in ("hit", "miss"):
                ph[role] += 1
                ph.setdefault("start", when)
            else:   # "read": the safetensors read; the phase's end unless "Model loading took" follows (GPU builds)
                ph["read"] = _secs(nums[-1])
                ph.setdefault("end", when)
            break
    if started is None and lines:
        started = lines[0][0]
    out = []
    for name in PHASES:
        ph = found.get(name)
        if not ph or "end" not in ph:
            out.append({"name": name, "title": TITLES[name], "printed": False, "start": None, "end": None,
                        "seconds": None, "offset": None, "detail": ABSENT[name],
                        "lines": ph["lines"] if ph else []})
            continue
        end = ph["end"]
        seconds = ph.get("printed_seconds")
        start = ph.get("start")
        if name == "ready":
            start = started
            seconds = _secs((end - started).total_seconds()) if started else None
        elif name == "weight_load" and start is not None:
            seconds = _secs((end - start).total_seconds())   # from "Starting to load model" to its last line
        elif seconds is not None:
            start = end - datetime.timedelta(seconds=seconds)   # these lines are printed at the phase's end
        elif start is not None:
            seconds = _secs((end - start).total_seconds())
        detail = []
        if name == "weight_load" and ph.get("mem_gib") is not None:
            detail.append("%.2f GiB" % ph["mem_gib"])
        if name == "weight_load" and ph.get("read") is not None:
            detail.append("weights read %.2f s" % ph["read"])
        if name == "compile":
            if ph.get("dynamo") is not None:
                detail.append("Dynamo %.2f s" % ph["dynamo"])
            if ph["hit"] or ph["miss"]:
                detail.append("compile cache %s" % ("hit" if ph["hit"] and not ph["miss"] else "miss"))
        if name == "graph_capture" and ph.get("mem_gib") is not None:
            detail.append("%.2f GiB" % ph["mem_gib"])
        out.append({"name": name, "title": TITLES[name], "printed": True, "start": _iso(start), "end": _iso(end),
                    "seconds": seconds,
                    "offset": _secs((start - started).total_seconds()) if start and started else None,
                    "detail": ", ".join(detail), "lines": ph["lines"]})
    comp = found.get("compile") or {}
    ready = next(p for p in out if p["name"] == "ready")
    return {
        "started_at": _iso(started),
        "ready": ready["printed"],
        "ready_seconds": ready["seconds"],
        "first_health_200_seconds": _secs((health - started).total_seconds()) if health and started else None,
        "compile_cache": ("hit" if comp.get("hit") and not comp.get("miss") else "miss" if comp.get("miss")
                          else None),
        "phases": out,
        "printed": [p["name"] for p in out if p["printed"]],
        "absent": {p["name"]: p["detail"] for p in out if not p["printed"]},
    }


def summary(result):
    """One line for a report: 'ready in 31.2 s: weight load 0.1 s, torch.compile 9.8 s (cache miss), ...'."""
    if not isinstance(result, dict) or not result.get("phases"):
        return "no start-up journal"
    parts = []
    for p in result["phases"]:
        if p["name"] == "ready" or not p["printed"]:
            continue
        extra = " (%s)" % p["detail"] if p["detail"] else ""
        parts.append("%s %.1f s%s" % (p["title"], p["seconds"], extra))
    head = ("ready in %.1f s" % result["ready_seconds"]) if result.get("ready") and result.get("ready_seconds") is not None \
        else "not ready"
    missing = [TITLES[n] for n in result.get("absent", {}) if n != "ready"]
    tail = "; not printed: %s" % ", ".join(missing) if missing else ""
    return "%s%s%s" % (head, (": " + "; ".join(parts)) if parts else "", tail)
