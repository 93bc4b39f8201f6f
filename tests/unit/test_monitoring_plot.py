"""tests/monitoring/plot.py: the dashboard's main panels as a PNG from what a Prometheus recorded (issue 12).
Its `collect` was run once by hand against a real Prometheus 2.42 scraping the captures (see the report of
2026-12-02); here: the panels come from the dashboard JSON, legends render as Grafana's, and `render` writes a PNG
with one chart per panel."""

from __future__ import annotations

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
    assert (width, height) == (1200, 512), (width, height)   # 3 x 2 charts at 80 dpi
