"""tests/monitoring/plot.py: the dashboard's main panels as a PNG from what a Prometheus recorded (issue 12).
Its `collect` runs against the real Prometheus of tests/integration/test_monitoring.py (which saves what it collected
to results/monitoring/panels.json); here: the panels come from the dashboard JSON, legends render as Grafana's,
`save`/`load` keep the data as collected, `--from-json` draws from that file, and `render` writes a PNG with one
chart per panel."""

from __future__ import annotations

import json

import pytest

from tests.monitoring import plot


def test_the_main_panels_are_dashboard_panels():
    got = plot.panels()
    assert [p["title"] for p in got] == list(plot.MAIN_PANELS)
    assert all(p["targets"] for p in got)
    with pytest.raises(KeyError, match="no panel"):
        plot.panels(("No such panel",))


def test_legend_is_grafanas_legend_format():
    assert plot.legend("{{instance}} GPU {{ index }} used", {"instance": "vm-1", "index": "0"}) == "vm-1 GPU 0 used"
    assert plot.legend("{{instance}} {{missing}}", {"instance": "vm-1"}) == "vm-1"


def test_render_writes_one_chart_per_panel(tmp_path):
    data = [(title, "short", [("vm-1", [(1000.0 + 15 * i, float(i)) for i in range(20)])] if n else [])
            for n, title in enumerate(plot.MAIN_PANELS)]
    out = tmp_path / "panels.png"
    plot.render(data, out, "test")
    raw = out.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    assert (width, height) == (1200, 768), (width, height)   # 3 x 3 charts at 80 dpi


def _data():
    return [(title, "short", [("vm-1 %d" % n, [(1000.0 + 15 * i, float(i * n)) for i in range(5)])] if n % 4 else
             [("vm-1 empty", [])] if n == 4 else [])
            for n, title in enumerate(plot.MAIN_PANELS)]


def test_empty_names_the_panels_without_a_point():
    assert plot.empty(_data()) == [plot.MAIN_PANELS[0], plot.MAIN_PANELS[4], plot.MAIN_PANELS[8]]


def test_save_and_load_keep_what_collect_returned(tmp_path):
    path = tmp_path / "panels.json"
    plot.save(_data(), path, "a title", host="vm-1", end=1075.0)
    assert plot.load(path) == (_data(), "a title")
    doc = json.loads(path.read_text())
    assert doc["host"] == "vm-1" and [p["title"] for p in doc["panels"]] == list(plot.MAIN_PANELS)


def test_from_json_draws_the_png_without_a_prometheus(tmp_path, capsys):
    src, out = tmp_path / "panels.json", tmp_path / "panels.png"
    plot.save(_data(), src, "from json")
    assert plot.main(["--from-json", str(src), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "9 panels, 7 series" in capsys.readouterr().out
    with pytest.raises(SystemExit):   # one source: a Prometheus or a file
        plot.main(["--from-json", str(src), "--url", "http://127.0.0.1:9", "--out", str(out)])
