"""Figures and page markup render from plain data, including the empty cases of a partial experiment."""

from __future__ import annotations

from pathlib import Path

from dashboards.figures import OURS, PAPER, LayerBar, Line, Point, accuracy_scatter, energy_breakdown, training_curves
from dashboards.html import Section, figure, page, table, text_cell, verdict, verdict_counts

PNG = b"\x89PNG\r\n\x1a\n"


def test_figures_render_with_and_without_data(tmp_path: Path) -> None:
    points = [
        Point(PAPER, "8-512", 7.46, 74.79),
        Point(OURS, "8-512", 7.1, 73.9, yerr=0.4),
        Point("QKFormer", "HST-10-512", 21.99, 82.04, unverified=True),
    ]
    lines = [Line("seed 0", [0, 1, 2], [10.0, 20.0, 30.0]), Line("upstream", [0, 1], [5.0, 9.0], reference=True)]
    bars = [LayerBar("conv", 1.0, 0.5, 1.0, 0.4), LayerBar("q", 0.2, 0.01), LayerBar("ssa", None, 0.002)]
    paths = [
        accuracy_scatter(tmp_path / "a.png", points, "energy (mJ)", "t"),
        accuracy_scatter(tmp_path / "empty" / "a.png", [], "energy (mJ)", "t"),
        training_curves(tmp_path / "c.png", "t", lines, lines[:1], paper_top1=74.79),
        training_curves(tmp_path / "c0.png", "t", [], []),
        energy_breakdown(tmp_path / "e.png", "t", bars, "upstream"),
        energy_breakdown(tmp_path / "e0.png", "t", bars[1:]),
    ]
    for path in paths:
        assert path.read_bytes().startswith(PNG)


def test_page_escapes_text_and_colours_verdicts() -> None:
    rows = [[text_cell("<8-512>", title="paper: README"), verdict("NOT RUN"), "1.0"]]
    html = page(
        "Report <x>",
        "sub",
        [
            Section("t", "Table", verdict_counts(["PASS", "NOT RUN", "PASS"]) + table(["row", "verdict", "v"], rows)),
            Section("f", "Figures", figure("figures/a.png", "a & b")),
        ],
    )
    assert "Report &lt;x&gt;" in html and "&lt;8-512&gt;" in html and 'title="paper: README"' in html
    assert '<td class="verdict NOT-RUN">NOT RUN</td>' in html
    assert '<span class="PASS">2 PASS</span>' in html
    assert '<img src="figures/a.png" alt="a &amp; b">' in html
    assert "http" not in html.replace("http-equiv", "")  # no network resource
