"""Draw docs/monitoring/series.png from the series Prometheus recorded in the monitoring test.

    .venv/bin/python -m pytest tests/integration/test_monitoring.py   # writes results/monitoring/series.json
    .venv/bin/python scripts/render_monitoring_png.py [SERIES_JSON] [PNG]

Run by hand (or by the bench), not by `make test`: the PNG in docs/ is committed. matplotlib comes from
requirements-test.txt. One panel per query of tests/integration/test_monitoring.py's SERIES, x = seconds before
the end of the recording, one line per series (its instance label).
"""
import json
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def main(argv):
    src = argv[1] if len(argv) > 1 else os.path.join(ROOT, "results", "monitoring", "series.json")
    out = argv[2] if len(argv) > 2 else os.path.join(ROOT, "docs", "monitoring", "series.png")
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    with open(src) as fh:
        data = json.load(fh)
    series = data["series"]
    cols = 4
    rows = (len(series) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, (title, entry) in zip(axes.flat, series.items()):
        # only the test host's series: for its first minutes Prometheus also holds the last samples of the package's own
        # prometheus.yml (instance localhost:9100, before the role's configuration replaced it)
        for result in [r for r in entry["result"] if r["metric"].get("instance", data["host"]) == data["host"]]:
            xs = [float(point[0]) - data["end"] for point in result["values"]]
            ys = [float(point[1]) for point in result["values"]]
            ax.plot(xs, ys, label=result["metric"].get("instance", ""))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("s before the end of the test", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.text(0.01, 0.02, entry["expr"], transform=ax.transAxes, fontsize=5, family="monospace", alpha=0.7)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.suptitle("Recorded by Prometheus in tests/integration/test_monitoring.py (host %s; vLLM and GPU exporter are "
                 "stand-ins, node_exporter is Debian's)" % data["host"], fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=90, metadata={"Software": None})
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
