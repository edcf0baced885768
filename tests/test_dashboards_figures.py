"""Figures and page markup render from plain data, including the empty cases of a partial experiment."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np

from dashboards.figures import (
    DPI,
    OURS,
    PAPER,
    LayerBar,
    Line,
    Point,
    accuracy_scatter,
    energy_breakdown,
    place_labels,
    training_curves,
)
from dashboards.markup import Section, figure, page, table, text_cell, verdict, verdict_counts
from dashboards.peers import load_peers, peers_for


def _pixels(path: Path) -> np.ndarray:
    """The decoded image (height, width, RGB in [0, 1]); fails on anything that is not a PNG."""
    return matplotlib.image.imread(path, format="png")[..., :3]


def assert_drawn(path: Path, inches: tuple[float, float]) -> None:
    """A PNG of the figure's size with something drawn on it: not one colour, not a near-blank page."""
    pixels = _pixels(path)
    width, height = inches
    assert pixels.shape[:2] == (int(height * DPI), int(width * DPI)), pixels.shape
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert pixels.std() > 0.05 and len(colours) > 20, (pixels.std(), len(colours))


def test_figures_render_with_and_without_data(tmp_path: Path) -> None:
    points = [
        Point(PAPER, "8-512", 7.46, 74.79),
        Point(OURS, "8-512", 7.1, 73.9, yerr=0.4),
        Point("QKFormer", "HST-10-512", 21.99, 82.04, unverified=True),
    ]
    lines = [Line("seed 0", [0, 1, 2], [10.0, 20.0, 30.0]), Line("upstream", [0, 1], [5.0, 9.0], reference=True)]
    bars = [LayerBar("conv", 1.0, 0.5, 1.0, 0.4), LayerBar("q", 0.2, 0.01), LayerBar("ssa", None, 0.002)]
    made = {
        accuracy_scatter(tmp_path / "a.png", points, "energy (mJ)", "t"): (7.0, 4.4),
        accuracy_scatter(tmp_path / "empty" / "a.png", [], "energy (mJ)", "t"): (7.0, 4.4),
        training_curves(tmp_path / "c.png", "t", lines, lines[:1], paper_top1=74.79): (10, 3.6),
        training_curves(tmp_path / "c0.png", "t", [], []): (10, 3.6),
        energy_breakdown(tmp_path / "e.png", "t", bars, "upstream"): (10, 2.5),
        energy_breakdown(tmp_path / "e0.png", "t", bars[1:]): (10, 2.5),
    }
    for path, inches in made.items():
        assert_drawn(path, inches)
    # Data shows: the curve with data differs from the empty one, and so do the scatters.
    assert not np.array_equal(_pixels(tmp_path / "c.png"), _pixels(tmp_path / "c0.png"))
    assert not np.array_equal(_pixels(tmp_path / "a.png"), _pixels(tmp_path / "empty" / "a.png"))


def test_scatter_labels_neither_overlap_nor_leave_the_axes() -> None:
    """The crowded ImageNet energy plot: Spikingformer's paper rows, one of ours, every peer (8-512 cluster,
    HST-10-768 in the top right corner)."""
    points = [Point(PAPER, v, e, t) for v, e, t in (("8-384", 4.69, 72.45), ("8-512", 7.46, 74.79))]
    points += [Point(PAPER, "8-768", 13.68, 75.85), Point(OURS, "8-512", 7.2, 74.4, yerr=0.3)]
    points += [
        Point(p.model, p.variant, p.energy_mJ, p.top1, unverified=p.unverified("top1", "energy_mJ"))
        for p in peers_for(load_peers(), "imagenet")
        if p.energy_mJ is not None
    ]
    styles = {OURS: ("r", "*", 15), PAPER: ("k", "D", 8)}
    styles |= {p.series: ("b", "o", 7) for p in points if p.series not in styles}
    fig, ax = plt.subplots(figsize=(7.0, 4.4), dpi=DPI)
    for p in points:
        ax.plot(p.x, p.y, styles[p.series][1], markersize=styles[p.series][2])
    ax.margins(x=0.15, y=0.08)
    fig.tight_layout()
    try:
        boxes = place_labels(ax, points, styles)
        frame = ax.get_window_extent()
    finally:
        plt.close(fig)
    assert len(boxes) == len(points)
    for a, b in combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    for box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, box


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
