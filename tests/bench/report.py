"""Write docs/benchmarks.md and docs/benchmarks/bench.png from docs/benchmarks/results.json (make bench).

Every figure in the page comes from results.json; the hand-written analysis is tests/bench/findings.md,
included at the end. In findings.md a figure of the latest run is written as a placeholder, `{{ PATH }}`
(PATH into the latest run's stages, e.g. `{{ fleet.4.second.wall_s }}`; `{{ PATH :x }}` for a ratio,
`{{ PATH :s3 }}` for 3 decimals, `{{ PATH :n }}` as it is), filled in here; any other figure there must name
when it was measured (a date or a time of day in the same paragraph, list item or table row), so no
hand-written number can pass for one of this run.

    report.py          rewrite docs/benchmarks.md and the plot
    report.py --check  exit 1 if docs/benchmarks.md is not what results.json renders, or findings.md has an
                       undated figure (no plot; tests/unit/test_docs_current.py)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def fmt(v, unit="s", nd=1):
    if v is None:
        return "n/a"
    if isinstance(v, float) or isinstance(v, int):
        return ("%." + str(nd) + "f%s") % (v, unit) if unit else ("%." + str(nd) + "f") % v
    return str(v)


def ok(cond):
    if cond is None:
        return "not measured"
    return "**met**" if cond else "**missed**"


PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*(?::(\w+))?\s*\}\}")
# a measured figure: seconds, a ratio, a share
FIGURE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:s|x|%)(?![\w])")
# when it was measured: a date, a time of day, or a commit-dated run ("the 10:24 run")
DATED = re.compile(r"\b20\d\d-\d\d-\d\d\b|\b\d?\d:\d\d\b")


def lookup(stages: dict, path: str):
    node = stages
    for key in path.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise KeyError("findings.md: {{ %s }} is not in the latest run's stages (results.json)" % path)
    return node


def with_shortcuts(stages: dict) -> dict:
    """The stages plus `inv.<ours|theirs>_<instances>_<cold|cached>`: the inventory rows by name."""
    out = dict(stages)
    names = {"llmops.gce_vllm.gce": "ours", "google.cloud.gcp_compute": "theirs"}
    out["inv"] = {"%s_%d_%s" % (names.get(r["plugin"], r["plugin"]), r["instances"], r["mode"]): r
                  for r in (stages.get("inventory") or {}).get("rows", [])}
    return out


def fill(text: str, stages: dict) -> str:
    stages = with_shortcuts(stages)

    def sub(m):
        value, style = lookup(stages, m.group(1)), m.group(2) or "s"
        if style == "x":
            return fmt(value, "x", 2)
        if style == "n":
            return str(value)
        if style.startswith("s") and style[1:].isdigit():
            return fmt(value, " s", int(style[1:]))
        return fmt(value, " s", 1)
    return PLACEHOLDER.sub(sub, text)


def blocks(text: str):
    """Paragraphs, list items and table rows of a Markdown text, each as one string."""
    out, cur, table = [], [], False
    for line in text.splitlines():
        row = line.lstrip().startswith("|")
        if row and table:   # a table is one block: its header dates its rows
            cur.append(line)
            continue
        starts = row or line.startswith("#") or re.match(r"\s*(?:[-*]|\d+\.)\s", line)
        if not line.strip() or starts or table:
            if cur:
                out.append(" ".join(cur))
            cur = [line] if line.strip() else []
        else:
            cur.append(line)
        table = row
    if cur:
        out.append(" ".join(cur))
    return out


def undated_figures(text: str) -> list:
    """The blocks of a hand-written text that quote a figure without saying when it was measured."""
    bad = []
    for block in blocks(PLACEHOLDER.sub("", text)):
        if FIGURE.search(block) and not DATED.search(block):
            bad.append(block[:160])
    return bad


def analysis(latest: dict) -> list:
    """What the latest run's tables say, in words: every figure computed from results.json."""
    st, out = latest["stages"], []
    cf = st.get("single", {}).get("configure") or {}
    if cf.get("second_wall_s"):
        line = "- **No-op rerun, one host**: %s (target 15 s, issue 4; 10 s, issue 8)" % fmt(cf["second_wall_s"])
        stock = cf.get("second_stock_ssh_wall_s")
        if stock:
            line += "; with stock Ansible's SSH settings %s, %s the time: what ansible.cfg's pipelining buys" % (
                fmt(stock), fmt(stock / cf["second_wall_s"], "x", 2))
        out.append(line + ".")
    fleet = st.get("fleet", {})
    ns = sorted((int(n) for n in fleet if n.isdigit()))
    if len(ns) > 1 and 1 in ns:
        one = fleet["1"]["second"]
        parts = []
        for n in ns[1:]:
            r = fleet[str(n)]["second"]
            parts.append("%d hosts %s = %s the 1-host time (linear: %d.00x; target 1.5x)" % (
                n, fmt(r["wall_s"]), fmt(r["wall_s"] / one["wall_s"], "x", 2), n))
        out.append("- **Fleet, no-op rerun**: %s. The test hosts share this machine's %s CPUs with the controller "
                   "(machine CPU busy %s at %d hosts), so N hosts cost about N times the hosts' module CPU here: "
                   "linear scaling is what this machine can do, the target needs each host's own CPUs." % (
                       "; ".join(parts), latest["machine"]["cpus"],
                       fmt(fleet[str(ns[-1])]["second"].get("machine_cpu_busy"), "", 2), ns[-1]))
        cpu = ["%d host%s %s (%s per host, %.0f ms per task run)" % (
            n, "" if n == 1 else "s", fmt(fleet[str(n)]["second"].get("controller_cpu_s")),
            fmt(fleet[str(n)]["second"]["controller_cpu_s"] / n),
            1000.0 * fleet[str(n)]["second"]["controller_cpu_s"] / max(1, fleet[str(n)]["second"]["tasks_run"]))
            for n in ns if fleet[str(n)]["second"].get("controller_cpu_s")]
        if cpu:
            out.append("- **Controller CPU, no-op rerun** (ansible-playbook and its ssh children): %s; target 3 s "
                       "per host (issue 8): fewer tasks is the lever." % "; ".join(cpu))
    inv = st.get("inventory", {})
    rows = [r for r in inv.get("rows", []) if r["plugin"] == "llmops.gce_vllm.gce" and r.get("median_s")]
    if rows:
        big = max(r["instances"] for r in rows)
        for r in rows:
            if r["instances"] == big and r.get("plugin_only_s"):
                out.append("- **Inventory, %d instances, %s**: the whole `ansible-inventory --list` %s, of which "
                           "the plugin's own work %s (%.0f %%) and the process start %s; the rest is "
                           "ansible-core's per-host variables and JSON, which every inventory plugin pays." % (
                               big, r["mode"], fmt(r["median_s"], " s", 2), fmt(r["plugin_only_s"], " s", 3),
                               100.0 * r["plugin_only_s"] / r["median_s"], fmt(inv.get("startup_s"), " s", 2)))
    return out


def plot(latest: dict, png: Path) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    st = latest["stages"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    fig.suptitle("llmops.gce_vllm make bench (%s, commit %s, %s CPUs)" % (
        latest["date"][:16], latest.get("commit", "?"), latest["machine"]["cpus"]))

    ax = axes[0][0]
    single = st.get("single", {})
    labels, first, second = [], [], []
    for kind, name in (("runbook", "runbook script"), ("configure", "collection")):
        if kind in single:
            labels.append(name)
            first.append(single[kind]["first_wall_s"] or 0)
            second.append(single[kind]["second_wall_s"] or 0)
    if labels:
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], first, 0.4, label="1st run")
        ax.bar([i + 0.2 for i in x], second, 0.4, label="2nd run")
        ax.set_xticks(list(x), labels)
        for i, (a, b) in enumerate(zip(first, second)):
            ax.text(i - 0.2, a, "%.0f" % a, ha="center", va="bottom")
            ax.text(i + 0.2, b, "%.1f" % b, ha="center", va="bottom")
        ax.axhline(15, color="red", linestyle="--", linewidth=1, label="target: 2nd run <= 15 s (issue 4)")
        ax.axhline(10, color="darkred", linestyle=":", linewidth=1, label="target: no-op rerun <= 10 s (issue 8)")
        ax.legend(fontsize=8)
    ax.set_ylabel("wall time, s (median)")
    ax.set_title("one fresh test host")

    ax = axes[0][1]
    fleet = st.get("fleet", {})
    if fleet:
        ns = sorted((n for n in fleet if n.isdigit()), key=int)
        fn = [n for n in ns if fleet[n].get("first")]
        ax.plot([int(n) for n in fn], [fleet[n]["first"]["wall_s"] for n in fn], "o-", label="1st run (fresh hosts)")
        ax.plot([int(n) for n in ns], [fleet[n]["second"]["wall_s"] for n in ns], "s-", label="2nd run")
        if "1" in fleet:
            xs = [int(n) for n in ns]
            one = fleet["1"]["second"]["wall_s"]
            ax.plot(xs, [one * x for x in xs], color="gray", linestyle=":",
                    label="linear: N x the 1-host 2nd run (hosts share the CPUs)")
            ax.plot(xs, [one] + [1.5 * one] * (len(xs) - 1), color="red", linestyle="--", linewidth=1,
                    label="target: N hosts <= 1.5 x 1 host (2nd run)")
            if fleet["1"].get("first"):
                f1 = fleet["1"]["first"]["wall_s"]
                ax.plot(xs, [f1 * x for x in xs], color="tab:blue", linestyle=":", linewidth=1,
                        label="linear: N x the 1-host 1st run")
        ax.set_xticks([int(n) for n in ns])
        ax.legend(fontsize=7)
    ax.set_xlabel("test hosts at once")
    ax.set_ylabel("wall time, s")
    ax.set_title("fleet: configure playbook")

    ax = axes[1][0]
    health = st.get("health", {})
    series = [(k, [r["latency_s"] for r in health.get(k, []) if r.get("latency_s") is not None])
              for k in ("http_health", "vllm_models", "ansible_task")]
    series = [(k, v) for k, v in series if v]
    if series:
        ax.boxplot([s[1] for s in series], tick_labels=[s[0].replace("ansible_task", "play task") for s in series])
        ax.axhline(1.0, color="red", linestyle="--", linewidth=1, label="target median 1 s")
        ax.legend()
    ax.set_ylabel("s after the stand-in turned healthy")
    ax.set_title("health detection latency")

    ax = axes[1][1]
    inv = st.get("inventory", {})
    rows = inv.get("rows", [])
    if rows:
        for plugin, marker in (("llmops.gce_vllm.gce", "o"), ("google.cloud.gcp_compute", "s")):
            for mode, style in (("cold", "-"), ("cached", "--")):
                pts = sorted((r["instances"], r["median_s"]) for r in rows
                             if r["plugin"] == plugin and r["mode"] == mode and r["median_s"] is not None)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker + style,
                            label="%s %s" % (plugin.rsplit(".", maxsplit=1)[-1], mode))
        ours = sorted((r["instances"], r["median_s"]) for r in rows
                      if r["plugin"] == "llmops.gce_vllm.gce" and r["mode"] == "cold" and r["median_s"])
        if len(ours) > 1:
            n0, t0 = ours[0]
            ax.plot([p[0] for p in ours], [t0 * p[0] / n0 for p in ours], color="gray", linestyle=":",
                    label="linear from %d (ours, cold)" % n0)
        ax.plot([5000], [2.0], "rv", label="target 5,000 cold <= 2 s")
        ax.plot([5000], [0.3], "r^", label="target 5,000 cached <= 0.3 s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("instances (20 zones)")
    ax.set_ylabel("ansible-inventory --list, s")
    ax.set_title("dynamic inventory")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)


ROLL_PNG = REPO / "docs" / "fleet" / "roll-timeline.png"


def plot_roll_timeline(fr: dict, png: Path) -> None:
    """The fleet roll, per host: the balancer's view (serving / out) and the play's steps (drained, restarting,
    ready), over the requests' latencies; all from the fleet test's own measurements (results.json)."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    from matplotlib.patches import Patch  # pylint: disable=import-outside-toplevel

    tl = fr["timeline"]
    hosts = sorted(tl["hooks"]) or sorted({c["host"] for c in tl["balancer"]})
    fig, (ax, lx) = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1.3]})
    fig.suptitle("Rolling configure of %d hosts behind HAProxy: vllm_server_max_model_len and the adapter list "
                 "(measured %s)" % (len(hosts), fr.get("fleet_json_date", "?")[:16]), fontsize=10)
    colors = {"serving": "tab:green", "out": "lightgray", "drained": "tab:orange", "restarting": "tab:red",
              "ready": "tab:blue"}
    for y, host in enumerate(hosts):
        changes = [c for c in tl["balancer"] if c["host"] == host]
        for i, c in enumerate(changes):
            end = changes[i + 1]["t"] if i + 1 < len(changes) else tl["end"]
            up = (c["status"] or "").startswith("UP")
            ax.barh(y, end - c["t"], left=c["t"], height=0.8, color=colors["serving" if up else "out"])
        h = tl["hooks"].get(host, {})
        spans = []
        if "drained" in h and "restart" in h:
            spans.append(("drained", h["drained"][0], h["restart"][0]))
        if "restart" in h and "undrained" in h:
            spans.append(("restarting", h["restart"][0], h["undrained"][0]))
        if "undrained" in h and "lb_up" in h:
            spans.append(("ready", h["undrained"][0], h["lb_up"][1]))
        for name, a, b in spans:
            ax.barh(y, b - a, left=a, height=0.3, color=colors[name])
    ax.set_yticks(range(len(hosts)), hosts)
    ax.invert_yaxis()
    ax.legend(handles=[Patch(color=colors["serving"], label="serving (UP in the balancer)"),
                       Patch(color=colors["out"], label="out of the rotation (DOWN)"),
                       Patch(color=colors["drained"], label="drained, waiting for DOWN (play)"),
                       Patch(color=colors["restarting"], label="vLLM restarting and verified (play)"),
                       Patch(color=colors["ready"], label="undrained, until UP (play)")],
              fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5, frameon=False)
    ok = [r for r in tl["requests"] if r[2]]
    bad = [r for r in tl["requests"] if not r[2]]
    lx.plot([r[0] for r in ok], [r[1] * 1000 for r in ok], ".", markersize=2, color="tab:gray",
            label="request through the balancer (%d, %d failed)" % (len(tl["requests"]), len(bad)))
    if bad:
        lx.plot([r[0] for r in bad], [r[1] * 1000 for r in bad], "x", color="red", label="failed")
    idle = fr["idle"]
    if idle.get("p99_s"):
        lx.axhline(idle["p99_s"] * 1000, color="tab:green", linestyle="--", linewidth=1, label="idle p99")
    lx.set_yscale("log")
    lx.set_ylabel("latency, ms")
    lx.set_xlabel("seconds since the roll started")
    lx.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)


# The runbook's L4 figures (its appendix B-6, "first start takes long": the first start, per phase) and the
# expected warm restart with the role's caches, on paper (docs/benchmarks.md says why, phase by phase).
RUNBOOK_L4 = (("download", "weights download (~5 GB)", "~60 s", "0 (weights in HF_HOME under the service directory)"),
              ("weight_load", "weight load", "~60 s", "about the same; faster with the page cache warm"),
              ("compile", "torch.compile", "~60 s", "shortened: compiled graphs loaded from VLLM_CACHE_ROOT (Dynamo still "
                                                    "traces; vLLM docs: compile cache)"),
              ("graph_capture", "CUDA graph capture + warm-up", "~10 s", "about the same: graphs are captured at every start"),
              ("ready", "total", "~3 min (runbook: \"~2 min\" for later starts)",
               "on paper: ~1.5 min (weight load ~60 s + compile ~15 s + capture ~10 s + process start)"))


def startup_section(stage, w, measured):
    """## 7: the real engine's cold start vs warm restart, next to the runbook's L4 figures."""
    if not stage or not stage.get("cold"):
        return
    cold, warm = stage["cold"], stage.get("warm") or {}
    w("## 7. vLLM start-up on the real engine: cold start vs warm restart (median of %d each)" % stage["repeats"])
    w("")
    measured(stage)
    w("The REAL vLLM engine, not the stand-in: %s (Python %s, torch %s) in the roles' unit on one Debian 12 test host, "
      "serving the real-engine suite's tiny model (tests/real_engine) on this machine's %s. Cold: vLLM stopped and "
      "its compile caches (VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR under /app/vllm-server/.cache) "
      "emptied; warm: a plain restart with the caches kept; %s. Phases are what `llmops.gce_vllm.vllm_startup_info` "
      "read from the unit's journal (the same module the checklist report uses); offsets and the total count from "
      "systemd's `Started vllm.service`. The page cache is not dropped (the machine is shared)." % (
          stage.get("engine"), stage.get("host_python"), stage.get("host_torch"), "CPUs", stage.get("order")))
    w("")
    w("| phase | cold: began at | cold: took | warm: began at | warm: took | detail |")
    w("|---|---|---|---|---|---|")
    wp = {p["name"]: p for p in warm.get("phases", [])}
    for p in cold.get("phases", []):
        q = wp.get(p["name"], {})
        if not p["printed"] and not q.get("printed"):
            w("| %s | - | - | - | - | %s |" % (p["title"], p["detail"]))
            continue
        w("| %s | %s | %s | %s | %s | %s |" % (
            p["title"], fmt(p["offset_median"], " s", 1), fmt(p["seconds_median"], " s", 2),
            fmt(q.get("offset_median"), " s", 1), fmt(q.get("seconds_median"), " s", 2), p["detail"] or "-"))
    w("| first `/health` 200, seen from outside | | %s | | %s | StartWatch polling the engine's port |" % (
        fmt(cold.get("health_200_median_s"), " s", 1), fmt(warm.get("health_200_median_s"), " s", 1)))
    w("")
    w("Compile cache: cold %s, warm %s (vLLM's CPU build here prints `Inductor compilation was disabled by user "
      "settings` and no torch.compile line, so the compile caches take no part in this engine's start: what the two "
      "columns measure is the rest of the start, mostly the processes' start and imports before the first phase, on "
      "a shared 2-CPU machine)." % (
          ", ".join(cold.get("compile_cache", [])), ", ".join(warm.get("compile_cache", []))))
    w("")
    w("### Next to the runbook's L4 figures (the runbook's appendix B-6; the L4 warm restart is on paper, not measured)")
    w("")
    w("| phase | runbook, L4 first start | expected L4 warm restart with the role's caches (on paper) |")
    w("|---|---|---|")
    for _name, title, first, warm_l4 in RUNBOOK_L4:
        w("| %s | %s | %s |" % (title, first, warm_l4))
    w("")
    w("Why, phase by phase: the download is gone once the weights sit in HF_HOME (kept under the service directory); "
      "vLLM's compile cache (VLLM_CACHE_ROOT/torch_compile_cache; vLLM's docs, design/torch_compile, \"Compilation "
      "Cache\": copying that directory saves \"a great amount of compilation time\") "
      "lets a restart load the compiled graphs (`Directly load the compiled graph(s) ... from the cache`) instead "
      "of compiling them, though Dynamo still traces the model; the unit keeps that cache, Inductor's and Triton's "
      "under /app/vllm-server/.cache, because PrivateTmp= would empty the default /tmp ones at every start. "
      "CUDA graphs are captured again at every start, and the weights are read again (from the page cache when "
      "warm). No L4 was measured here.")
    w("")


def render(data: dict, png_rel: str) -> str:  # noqa: C901 - one page, one function
    latest = data["latest"]
    st = latest["stages"]
    L = []
    w = L.append

    def measured(stage):
        m = (stage or {}).get("measured")
        if not m:
            return
        text = "Measured %s, commit `%s`, code `%s`" % (
            m["date"][:16].replace("T", " "), m["commit"], m.get("code_at_start"))
        if m.get("code_at_end") != m.get("code_at_start"):
            text += " -> `%s` (changed during the run%s)" % (m.get("code_at_end"),
                                                             ": " + m["note"] if m.get("note") else "")
        w(text + ".")
        w("")
    w("# Benchmarks")
    w("")
    w("Written by `make bench` (tests/bench/bench.py, then tests/bench/report.py) from "
      "[benchmarks/results.json](benchmarks/results.json); do not edit by hand.")
    w("Machine: %s CPUs, kernel %s; run %s, commit `%s`; the whole bench took %s." % (
        latest["machine"]["cpus"], latest["machine"]["kernel"], latest["date"], latest.get("commit"),
        fmt(latest.get("bench_wall_s"), " s", 0)))
    if latest.get("worktree_changes"):
        w("Measured on commit `%s` plus uncommitted changes to: %s." % (
            latest.get("commit"), ", ".join("`%s`" % p for p in latest["worktree_changes"])))
    if latest.get("code_at_start") and latest.get("code_at_end") != latest.get("code_at_start"):
        w("**The measured code changed while this run went on** (%s -> %s: other work landed meanwhile); figures "
          "of different stages may belong to different code." % (latest["code_at_start"], latest.get("code_at_end")))
    if "secrets_in_logs" in latest:
        w("The run's random vLLM key and backend token were searched for in every log and timing file the bench wrote: "
          "found in %d." % len(latest["secrets_in_logs"]))
    w("Test hosts are real systemd-nspawn hosts (tests/harness), reached over SSH; vLLM is the stand-in "
      "(tests/standin), so install and start-up times are those of the stand-in, not of vLLM on an L4. "
      "Figures are medians of the repeats; ratios come from the same repeat. The machine is shared and noisy.")
    w("")
    w("![make bench](%s)" % png_rel)
    w("")

    single = st.get("single", {})
    rb, cf = single.get("runbook"), single.get("configure")
    targets = []
    if rb or cf:
        n = (cf or rb)["runs"]
        w("## 1-2. The runbook's procedure vs the collection, one fresh test host (median of %d)" % n)
        w("")
        measured(single)
        w("| | runbook script (sections 3-4) | collection (`playbooks/configure.yml`) |")
        w("|---|---|---|")

        def cell(d, k, unit="s", nd=1):
            return fmt(d.get(k), unit, nd) if d else "n/a"
        w("| 1st run, wall time | %s | %s |" % (cell(rb, "first_wall_s"), cell(cf, "first_wall_s")))
        w("| 2nd run, wall time | %s | %s |" % (cell(rb, "second_wall_s"), cell(cf, "second_wall_s")))
        w("| 2nd run, tasks changed | (a script cannot tell) | %s |" % cell(cf, "second_changed", "", 0))
        w("| 2nd run, service restarts (systemd) | %s | %s |" % (
            cell(rb, "second_restarts", "", 0), cell(cf, "second_restarts", "", 0)))
        w("| 2nd run, endpoint downtime (worst of :8001, :8000; probed every 50 ms) | %s | %s |" % (
            cell(rb, "second_downtime_s", " s", 2), cell(cf, "second_downtime_s", " s", 2)))
        if cf and cf.get("second_stock_ssh_wall_s") is not None:
            w("| 2nd run with stock Ansible's SSH settings (no pipelining; ControlMaster/ControlPersist 60s, as "
              "ansible-core ships them) | | %s |" % cell(cf, "second_stock_ssh_wall_s"))
        elif cf and cf.get("second_no_pipelining_wall_s") is not None:
            w("| 2nd run without pipelining and without ControlMaster (older method: stock Ansible keeps "
              "ControlMaster/ControlPersist on; the next `make bench` measures against stock) | | %s |"
              % cell(cf, "second_no_pipelining_wall_s"))
        if cf:
            w("| 2nd run, controller CPU (ansible-playbook + ssh) | | %s |" % cell(cf, "second_controller_cpu_s"))
            w("| 2nd run, whole machine CPU busy (2 CPUs, shared) | | %s |" % cell(cf, "second_machine_busy", "", 2))
        w("")
        ratios = single.get("ratios", {})
        if ratios:
            w("Collection / runbook wall time, same repeat: 1st run %s, 2nd run %s." % (
                fmt(ratios.get("configure_over_runbook_first"), "x", 2),
                fmt(ratios.get("configure_over_runbook_second"), "x", 2)))
            w("")
        reps = single.get("repeats", [])
        if reps:
            w("<details><summary>every repeat</summary>")
            w("")
            w("| repeat | runbook 1st | runbook 2nd | runbook downtime | collection 1st | collection 2nd | "
              "changed 1st/2nd | restarts 2nd | downtime 2nd | 2nd, stock SSH settings |")
            w("|---|---|---|---|---|---|---|---|---|---|")
            for i, r in enumerate(reps, 1):
                a, c = r.get("runbook") or {}, r.get("configure") or {}
                changed_code = r.get("code_at_start") and r.get("code_at_end") != r.get("code_at_start")
                w("| %s | %s | %s | %s | %s | %s | %s / %s | %s | %s | %s |" % (
                    "%d (code changed during it: %s -> %s)" % (i, r["code_at_start"], r["code_at_end"])
                    if changed_code else i, fmt(a.get("first", {}).get("wall_s")), fmt(a.get("second", {}).get("wall_s")),
                    fmt(a.get("second", {}).get("max_downtime_s"), " s", 2),
                    fmt(c.get("first", {}).get("wall_s")), fmt(c.get("second", {}).get("wall_s")),
                    sum((c.get("first", {}).get("changed") or {}).values()),
                    sum((c.get("second", {}).get("changed") or {}).values()),
                    c.get("second", {}).get("restarts_total"),
                    fmt(c.get("second", {}).get("max_downtime_s"), " s", 2),
                    fmt(c.get("second_stock_ssh", {}).get("wall_s")) if c.get("second_stock_ssh")
                    else fmt(c.get("second_no_pipelining", {}).get("wall_s")) + (
                        " (no ControlMaster)" if c.get("second_no_pipelining") else "")))
            w("")
            w("</details>")
            w("")
            last = reps[-1].get("configure") or {}
            slow = (last.get("second") or {}).get("slowest_tasks") or []
            if slow:
                w("Slowest tasks of the collection's 2nd run (last repeat): " + "; ".join(
                    "%s %s" % (t["task"], fmt(t["s"], " s", 2)) for t in slow[:6]) + ".")
                w("")
            slow = (last.get("first") or {}).get("slowest_tasks") or []
            if slow:
                w("Slowest tasks of the collection's 1st run (last repeat): " + "; ".join(
                    "%s %s" % (t["task"], fmt(t["s"], " s", 2)) for t in slow[:6]) + ".")
                w("")
        if cf:
            targets.append(("2nd run: 0 tasks changed", cf.get("second_changed") == 0, fmt(cf.get("second_changed"), "", 0)))
            targets.append(("2nd run: 0 restarts", cf.get("second_restarts") == 0, fmt(cf.get("second_restarts"), "", 0)))
            targets.append(("2nd run: 0 s downtime", cf.get("second_downtime_s") == 0,
                            fmt(cf.get("second_downtime_s"), " s", 2)))
            targets.append(("2nd run <= 15 s on one host", (cf.get("second_wall_s") or 1e9) <= 15,
                            fmt(cf.get("second_wall_s"))))

    fleet = st.get("fleet", {})
    if fleet:
        w("## 3. Fleet: the configure playbook on N test hosts at once")
        w("")
        measured(fleet)
        w("1st run: the largest N fresh hosts at once; for 1 host the median of the fresh-host 1st runs of the "
          "same bench run's section 1-2 stage. 2nd runs: each N on the same configured hosts (`--limit`-style subsets), probed for downtime. "
          "All test hosts run on this machine's %s CPUs, next to the controller: every module a host runs takes CPU "
          "from the others and from Ansible, which a fleet of real VMs (each with its own CPUs) does not. The "
          "controller's own CPU time (ansible-playbook and its ssh children) shows what Ansible itself needs per "
          "host." % latest["machine"]["cpus"])
        w("")
        w("| hosts | 1st run | 2nd run | 2nd run / 1 host | 2nd run changed | restarts | worst downtime | "
          "2nd run controller CPU | machine CPU busy |")
        w("|---|---|---|---|---|---|---|---|---|")
        for n in sorted((n for n in fleet if n.isdigit()), key=int):
            r = fleet[n]
            w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                n, fmt((r.get("first") or {}).get("wall_s")), fmt(r["second"]["wall_s"]),
                fmt(r.get("second_ratio_to_1"), "x", 2),
                sum(r["second"]["changed"].values()), r["second"]["restarts_total"],
                fmt(r["second"]["max_downtime_s"], " s", 2), fmt(r["second"].get("controller_cpu_s")),
                fmt(r["second"].get("machine_cpu_busy"), "", 2)))
        w("")
        biggest = str(max(int(n) for n in fleet if n.isdigit()))
        if "1" in fleet and biggest != "1":
            ratio = fleet[biggest].get("second_ratio_to_1")
            targets.append(("%s hosts <= 1.5x the time of 1 (2nd run)" % biggest, ratio is not None and ratio <= 1.5,
                            fmt(ratio, "x", 2)))
            ratio1 = fleet[biggest].get("first_ratio_to_1")
            w("1st run on %s hosts = %s the time of 1 host (installs on %s CPUs at once)." % (
                biggest, fmt(ratio1, "x", 2), latest["machine"]["cpus"]))
            w("")

    health = st.get("health", {})
    if health:
        w("## 4. Health detection: from the instant the stand-in turns healthy to the module's return")
        w("")
        measured(health)
        w("The stand-in starts listening after `VLLM_STANDIN_STARTUP_DELAY` (ready instants spread evenly over one "
          "poll interval); a 10 ms probe on the controller marks the instant it first accepts a connection. "
          "Modules are run as the role runs them (default `interval: 1`), as a process on the controller; "
          "\"play task\" is the same http_health task inside `ansible-playbook` (task end from a callback).")
        w("")
        w("| | runs | median | max |")
        w("|---|---|---|---|")
        for k, name in (("http_health", "http_health module"), ("vllm_models", "vllm_models module"),
                        ("ansible_task", "http_health as a play task")):
            runs = [r for r in health.get(k, []) if not r.get("failed")]
            w("| %s | %d | %s | %s |" % (name, len(runs), fmt(health.get(k + "_median_s"), " s", 3),
                                         fmt(health.get(k + "_max_s"), " s", 3)))
        w("")
        med = health.get("http_health_median_s")
        targets.append(("health detection median <= 1 s", med is not None and med <= 1.0, fmt(med, " s", 3)))
        med = health.get("vllm_models_median_s")
        targets.append(("model list detection median <= 1 s", med is not None and med <= 1.0, fmt(med, " s", 3)))

    inv = st.get("inventory", {})
    if inv.get("rows"):
        w("## 5. Dynamic inventory over the local Compute API (20 zones, pages of 500, group by network tag)")
        w("")
        measured(inv)
        w(inv.get("note", ""))
        w("")
        w("| instances | mode | llmops.gce_vllm.gce | google.cloud.gcp_compute | ratio | plugin only, in-process "
          "(ours / theirs) | API requests (ours / theirs) |")
        w("|---|---|---|---|---|---|---|")
        by = {(r["plugin"], r["instances"], r["mode"]): r for r in inv["rows"]}
        for n in sorted({r["instances"] for r in inv["rows"]}):
            for mode in ("cold", "cached"):
                a = by.get(("llmops.gce_vllm.gce", n, mode))
                b = by.get(("google.cloud.gcp_compute", n, mode))
                if not a and not b:
                    continue
                ratio = (b["median_s"] / a["median_s"]) if a and b and a["median_s"] and b["median_s"] else None
                w("| %d | %s | %s | %s | %s | %s / %s | %s / %s |" % (
                    n, mode, fmt(a and a["median_s"], " s", 2), fmt(b and b["median_s"], " s", 2),
                    fmt(ratio, "x faster", 1), fmt(a and a.get("plugin_only_s"), " s", 3),
                    fmt(b and b.get("plugin_only_s"), " s", 3), a and a.get("api_requests"),
                    b and b.get("api_requests")))
        w("")
        base = inv.get("startup_s")
        if base is not None:
            w("Times are the wall time of the whole `ansible-inventory --list` process; "
              "`ansible-inventory --list` of an empty static inventory takes %s on this machine (ours) and %s "
              "(google.cloud venv)." % (fmt(base, " s", 2), fmt(inv.get("startup_gcp_s"), " s", 2)))
            w("")
        big = max(r["instances"] for r in inv["rows"])
        a = by.get(("llmops.gce_vllm.gce", big, "cold"))
        c = by.get(("llmops.gce_vllm.gce", big, "cached"))
        if big == 5000:
            targets.append(("inventory 5,000 cold <= 2 s (whole ansible-inventory process)",
                            a is not None and a["median_s"] <= 2.0, fmt(a and a["median_s"], " s", 2)))
            targets.append(("inventory 5,000 cached <= 0.3 s (whole process)", c is not None and c["median_s"] <= 0.3,
                            fmt(c and c["median_s"], " s", 2)))
            targets.append(("inventory 5,000 cached <= 0.3 s (plugin work in-process; the process alone starts in "
                            "%s)" % fmt(base, " s", 2), c is not None and c.get("plugin_only_s") is not None
                            and c["plugin_only_s"] <= 0.3, fmt(c and c.get("plugin_only_s"), " s", 3)))

    fr = st.get("fleet_roll")
    if fr:
        w("## 6. Fleet: the rolling configure behind HAProxy, %d hosts (tests/fleet)" % fr["hosts"])
        w("")
        measured(fr)
        w("From %s (written %s, code `%s`). One balancer test host (role load_balancer, HAProxy; checks every 1 s, "
          "2 to fall or rise) in front of %d test hosts running the real roles with the vLLM stand-in; three clients "
          "of the AI server's `/v1/chat` through the balancer during each play, each pausing 0.3 s between requests. "
          "`playbooks/configure.yml` with `serial: 1`. All hosts and the controller share this machine's CPUs." % (
              fr.get("source"), fr.get("fleet_json_date"), fr.get("fleet_json_code"), fr["hosts"]))
        w("")
        w("| run | play wall time | per host | requests | failed | p50 latency | p99 latency |")
        w("|---|---|---|---|---|---|---|")
        for key, name in (("idle", "idle (no play, 8 s)"),
                          ("roll", "roll: max_model_len 8192 -> 4096 and an adapter added, all hosts"),
                          ("noop", "no-op rerun"),
                          ("roll_fails", "roll that stops at host 2 (its new vLLM dies at start)"),
                          ("roll_fixed", "rerun with the fault fixed (hosts 2 and 3 roll)")):
            r = fr[key]
            w("| %s | %s | %s | %d | %d | %s | %s |" % (
                name, fmt(r.get("play_s")), fmt(r.get("play_per_host_s")), r["requests"], r["failed"],
                fmt(r["p50_s"] and r["p50_s"] * 1000, " ms", 0), fmt(r["p99_s"] and r["p99_s"] * 1000, " ms", 0)))
        w("")
        w("Per host in the roll (from the play's own step timings): out of the rotation (drain until the balancer "
          "shows it UP again), drain until DOWN, vLLM restart until undrain (restart, its verify, the AI server's "
          "tasks), undrain until UP; and how long before systemd began to stop its vLLM the balancer showed it DOWN.")
        w("")
        w("| host | out of rotation | drain -> DOWN | restart -> undrain | undrain -> UP | DOWN before the stop |")
        w("|---|---|---|---|---|---|")
        dbs = fr["roll"].get("down_before_stop_s") or {}
        for host, r in sorted(fr["roll"]["per_host"].items()):
            w("| %s | %s | %s | %s | %s | %s |" % (host, fmt(r.get("out_of_rotation_s")), fmt(r.get("drain_to_down_s")),
                                                   fmt(r.get("restart_to_undrain_s")), fmt(r.get("undrain_to_up_s")),
                                                   fmt(dbs.get(host))))
        w("")
        w("First deploy of the %d backends in one play: %s; the whole fleet suite (hosts, deploy, every test): %s." % (
            fr["hosts"], fmt(fr.get("first_deploy_s")), fmt(fr.get("suite_s"))))
        w("")
        w("![the roll's timeline](fleet/roll-timeline.png)")
        w("")
        targets.append(("fleet roll: 0 failed requests", fr["roll"]["failed"] == 0, str(fr["roll"]["failed"])))
        targets.append(("failing roll and its rerun: 0 failed requests",
                        fr["roll_fails"]["failed"] + fr["roll_fixed"]["failed"] == 0,
                        str(fr["roll_fails"]["failed"] + fr["roll_fixed"]["failed"])))
    startup_section(st.get("startup"), w, measured)

    if targets:
        w("## Targets (issue 4)")
        w("")
        w("| target | measured | |")
        w("|---|---|---|")
        for name, cond, val in targets:
            w("| %s | %s | %s |" % (name, val, ok(cond)))
        w("")

    hist = data.get("history", [])
    if len(hist) > 1:
        cols = [("configure_first_s", "collection 1st"), ("configure_second_s", "collection 2nd"),
                ("configure_second_changed", "2nd changed"), ("runbook_first_s", "runbook 1st"),
                ("runbook_second_s", "runbook 2nd"), ("health_median_s", "health latency"),
                ("fleet4_second_s", "4 hosts 2nd"), ("inv_llmops.gce_vllm.gce_5000_cold_s", "inventory 5k cold")]
        keys = [c[0] for c in cols]
        w("## Before / after (history of bench runs, latest last; each run measures only the stages it names)")
        w("")
        w("| date | commit | stages | " + " | ".join(c[1] for c in cols) + " |")
        w("|---|---|---|" + "---|" * len(keys))
        for h in hist[-10:]:
            sm = h.get("summary", {})
            w("| %s | `%s` | %s | " % (h["date"][:16], h.get("commit"), ",".join(h.get("stages", []))) + " | ".join(
                fmt(sm.get(k), "", 0 if k.endswith("changed") else (3 if "health" in k else 1)) for k in keys) + " |")
        w("")

    said = analysis(latest)
    if said:
        w("## What this run's tables say (computed from results.json)")
        w("")
        L.extend(said)
        w("")
    findings = REPO / "tests" / "bench" / "findings.md"
    if findings.exists():
        w(fill(findings.read_text(encoding="utf-8"), st).rstrip())
        w("")
    w("## Reproduce")
    w("")
    w("`make bench` (about 15-20 min on 2 CPUs). Parts: `.venv/bin/python tests/bench/bench.py --only "
      "health,inventory` (also `runbook`, `configure`, `fleet`; `--repeats`, `--fleet 1,2,4`, "
      "`--sizes 100,1000,5000`; `startup`, the real engine, `--startup-repeats`). Raw logs of each run: `results/bench/<time>/`.")
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=str(REPO / "docs" / "benchmarks" / "results.json"))
    ap.add_argument("--md", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--png", default=str(REPO / "docs" / "benchmarks" / "bench.png"))
    ap.add_argument("--check", action="store_true",
                    help="only check that MD is what RESULTS renders and findings.md dates its figures")
    ap.add_argument("--plot-only", action="store_true", help="only redraw the plot from RESULTS")
    args = ap.parse_args()
    data = json.loads(Path(args.results).read_text(encoding="utf-8"))
    png, md = Path(args.png), Path(args.md)
    try:
        rel = png.relative_to(md.parent)
    except ValueError:
        rel = png
    findings = REPO / "tests" / "bench" / "findings.md"
    undated = undated_figures(findings.read_text(encoding="utf-8")) if findings.exists() else []
    for block in undated:
        print("ERROR: tests/bench/findings.md quotes a figure without saying when it was measured (date it, or "
              "write {{ PATH }} for one of the latest run): %s" % block, file=sys.stderr)
    if args.check:
        if md.read_text(encoding="utf-8") != render(data, str(rel)):
            print("ERROR: %s is not what %s renders: run tests/bench/report.py (do not edit the page by hand)"
                  % (md, args.results), file=sys.stderr)
            return 1
        return 1 if undated else 0
    if undated:
        return 1
    plot(data["latest"], png)
    if data["latest"]["stages"].get("fleet_roll"):
        plot_roll_timeline(data["latest"]["stages"]["fleet_roll"], ROLL_PNG)
    if not args.plot_only:
        md.write_text(render(data, str(rel)), encoding="utf-8")
        print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
