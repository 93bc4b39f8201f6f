"""The dashboard's main panels as one PNG (matplotlib), from the series a real Prometheus recorded (issue 12).

The panels, their queries and legends are read from the dashboard JSON (one place), so the picture shows what
the dashboard shows. tests/integration/test_monitoring.py calls `collect` on the Prometheus it runs over a test host
and `save`s the result to results/monitoring/panels.json; docs/monitoring/panels.png is drawn from that file:

    .venv/bin/python -m tests.monitoring.plot --from-json results/monitoring/panels.json --out docs/monitoring/panels.png

or straight from a Prometheus (--save-json keeps what it collected):

    .venv/bin/python -m tests.monitoring.plot --url http://HOST:9090 --minutes 15 --out PNG [--save-json JSON]
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.parse
import urllib.request

from tests.monitoring import DASHBOARD

MAIN_PANELS = ("Requests running and waiting", "Time to first token p50 / p95", "Tokens per second", "KV cache use",
               "Requests per adapter", "Chat latency p50 / p95, by adapter", "GPU utilisation", "GPU memory used",
               "CPU busy")


def panels(titles=MAIN_PANELS) -> list:
    """The dashboard's panels named TITLES, in that order."""
    dash = json.loads(DASHBOARD.read_text())
    by_title = {p["title"]: p for p in dash["panels"] if p["type"] != "row"}
    missing = [t for t in titles if t not in by_title]
    if missing:
        raise KeyError("the dashboard has no panel %s" % missing)
    return [by_title[t] for t in titles]


def legend(fmt: str, labels: dict) -> str:
    """Grafana's legendFormat: {{label}} replaced by the series' label value."""
    return re.sub(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def query_range(url: str, expr: str, start: float, end: float, step: float, headers=None) -> list:
    """Prometheus' /api/v1/query_range result: [{"metric": {...}, "values": [[t, "v"], ...]}]."""
    qs = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    req = urllib.request.Request(url.rstrip("/") + "/api/v1/query_range?" + qs, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as resp:  # nosec B310: the test's own Prometheus
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError("query_range %r: %s" % (expr, body))
    return body["data"]["result"]


def collect(url: str, start: float, end: float, step: float = 15, instance: str = ".+", titles=MAIN_PANELS,
            headers=None) -> list:
    """[(panel title, unit, [(legend, [(t, value)])])] of the panels' queries, $instance = INSTANCE."""
    out = []
    for panel in panels(titles):
        lines = []
        for target in panel["targets"]:
            expr = target["expr"].replace("$instance", instance)
            for series in query_range(url, expr, start, end, step, headers):
                points = [(float(t), float(v)) for t, v in series["values"]]
                lines.append((legend(target.get("legendFormat", ""), series["metric"]), points))
        out.append((panel["title"], panel["fieldConfig"]["defaults"].get("unit", ""), lines))
    return out


def save(data: list, path, title: str, **meta) -> None:
    """DATA (as collect returns it) as JSON at PATH, with the picture's TITLE and further META (host, times)."""
    doc = {"title": title, **meta,
           "panels": [{"title": panel, "unit": unit, "series": [{"legend": name, "points": points} for name, points in lines]}
                      for panel, unit, lines in data]}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")


def load(path) -> tuple:
    """(data as collect returns it, title) from a file `save` wrote."""
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    data = [(p["title"], p["unit"], [(s["legend"], [(float(t), float(v)) for t, v in s["points"]]) for s in p["series"]])
            for p in doc["panels"]]
    return data, doc["title"]


def empty(data: list) -> list:
    """The titles of the panels in DATA without a single point."""
    return [panel for panel, _unit, lines in data if not any(points for _name, points in lines)]


def render(data: list, path, title: str) -> None:
    """DATA (as collect returns it) as a grid of line charts, one per panel, written to PATH (PNG)."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    cols = 3
    rows = (len(data) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    t0 = min((p[0] for _t, _u, lines in data for _l, pts in lines for p in pts[:1]), default=0)
    for ax, (panel, unit, lines) in zip(axes.flat, data):
        for name, points in lines:
            ax.plot([(t - t0) / 60 for t, _v in points], [v for _t, v in points], label=name or "(no labels)")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("minutes", fontsize=8)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        if lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(data):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--url", help="the Prometheus, e.g. http://10.231.1.2:9090")
    src.add_argument("--from-json", metavar="JSON", help="what `collect` saved (results/monitoring/panels.json)")
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--step", type=float, default=15)
    ap.add_argument("--instance", default=".+")
    ap.add_argument("--save-json", metavar="JSON", help="with --url: also save what was collected")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.from_json:
        data, title = load(args.from_json)
    else:
        end = time.time()
        data = collect(args.url, end - 60 * args.minutes, end, args.step, args.instance)
        title = "llmops.gce_vllm dashboard: main panels, last %g minutes" % args.minutes
        if args.save_json:
            save(data, args.save_json, title, end=end)
    render(data, args.out, title)
    print("wrote %s (%d panels, %d series)" % (args.out, len(data), sum(len(lines) for _t, _u, lines in data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
