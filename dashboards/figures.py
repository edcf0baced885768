"""The report's PNG figures (matplotlib, Agg): plain data in, one file out, no MLflow here.

Four kinds: accuracy against a cost (energy or parameters) with our runs among the paper's and the
peers' points; training curves of a row over the upstream run's; a per-layer firing-rate and
energy breakdown; and a grid's metric against one of its axes. Unverified values (evidence mark M) are
drawn hollow and say so in the legend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

OURS = "this reproduction"
PAPER = "Spikingformer (paper)"
_FIXED_STYLE = {OURS: ("#d62728", "*", 15), PAPER: ("#222222", "D", 8)}
_PEER_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2", "#7f7f7f")
_PEER_MARKERS = ("o", "s", "^", "v", "P", "X", "h", "<")
_REFERENCE = "#888888"
DPI = 96


@dataclass(frozen=True)
class Point:
    """A model on an accuracy/cost plot. Points of one ``series`` share a style; ``label`` annotates."""

    series: str
    label: str
    x: float
    y: float
    yerr: float | None = None
    unverified: bool = False


@dataclass(frozen=True)
class Line:
    """One curve over epochs. Lines of one ``group`` (a seed) share a colour; ``reference`` ones are grey."""

    label: str
    epochs: Sequence[float]
    values: Sequence[float]
    reference: bool = False
    dashed: bool = False
    group: int = 0


@dataclass(frozen=True)
class LayerBar:
    """One counted layer: our input firing rate and energy, optionally the upstream values beside them."""

    name: str
    rate: float | None
    energy_mJ: float
    reference_rate: float | None = None
    reference_energy_mJ: float | None = None


def accuracy_scatter(
    path: Path, points: Sequence[Point], xlabel: str, title: str, families: Sequence[str] = ()
) -> Path:
    """Top-1 against a cost. Each reproduced row is linked to its paper point by a dotted line.

    ``families`` fixes the peers' colour order, so one family looks the same in every plot of a report.
    """
    fig, ax = plt.subplots(figsize=(7.0, 4.4), dpi=DPI)
    styles = _series_styles(points, families)
    for series, (colour, marker, size) in styles.items():
        group = [p for p in points if p.series == series]
        for hollow in (False, True):
            sub = [p for p in group if p.unverified == hollow]
            if not sub:
                continue
            ax.errorbar(
                [p.x for p in sub],
                [p.y for p in sub],
                yerr=[p.yerr or 0.0 for p in sub] if any(p.yerr for p in sub) else None,
                fmt=marker,
                markersize=size,
                color=colour,
                markerfacecolor="none" if hollow else colour,
                markeredgewidth=1.5,
                linestyle="none",
                capsize=3,
                zorder=3 if series == OURS else 2,
            )
    paper = {p.label: p for p in points if p.series == PAPER}
    for p in points:
        if p.series == OURS and p.label in paper:
            q = paper[p.label]
            ax.plot([q.x, p.x], [q.y, p.y], ":", color=_FIXED_STYLE[OURS][0], linewidth=1, zorder=1)
    xs = [p.x for p in points if p.x > 0]
    if xs and max(xs) / min(xs) > 30:
        ax.set_xscale("log")
    else:
        ax.ticklabel_format(axis="x", useOffset=False)
    handles = [
        Line2D([], [], marker=m, color=c, linestyle="none", markersize=min(s, 9), label=series)
        for series, (c, m, s) in styles.items()
    ]
    if any(p.unverified for p in points):
        handles.append(
            Line2D(
                [], [], marker="o", color="k", markerfacecolor="none", linestyle="none", label="hollow: unverified [M]"
            )
        )
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.margins(x=0.15, y=0.08)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, "no points to plot", ha="center", va="center", transform=ax.transAxes, color=_REFERENCE)
    fig.tight_layout()  # the axes' final place and limits first: labels are placed in pixels
    place_labels(ax, points, styles)
    return _save(fig, path)


#: Where a point's label may go, nearest first: (x, y) directions and, per ring, the gap in points beyond the
#: marker. The label's corner (or edge centre) nearest the point sits there.
_LABEL_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1), (0, -1), (1, 0), (-1, 0))
_LABEL_RINGS = (1.5, 6.0, 12.0, 20.0)
_LABEL_SIZE = 7


def place_labels(ax: plt.Axes, points: Sequence[Point], styles: dict[str, tuple[str, str, int]]) -> list[Bbox]:
    """Annotate each point with its label where it overlaps no other label or marker and stays in the axes.

    Deterministic: our points first, then the paper's, then the peers in ``styles`` order; each takes the
    nearest free spot of ``_LABEL_DIRECTIONS`` x ``_LABEL_RINGS`` (else the least crowded one), linked to
    its point by a thin line when set apart. The axes must be laid out already. Returns the labels' boxes
    in pixels.
    """
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    to_px = ax.figure.dpi / 72
    taken = []  # markers, shrunk a little (most are rounder than their square), then the labels placed
    for p in points:
        x, y = ax.transData.transform((p.x, p.y))
        r = 0.35 * styles[p.series][2] * to_px
        taken.append(Bbox.from_bounds(x - r, y - r, 2 * r, 2 * r))
    rank = {series: i for i, series in enumerate(styles)}
    boxes = []
    for p in sorted(points, key=lambda p: rank[p.series]):  # stable: file order within a series
        colour, _, size = styles[p.series]
        best: tuple[float, float, dict] | None = None
        for ring in _LABEL_RINGS:
            for sx, sy in _LABEL_DIRECTIONS:
                gap = 0.4 * size + ring
                spot = {
                    "xytext": (sx * gap, sy * gap * 0.8),
                    "ha": {1: "left", -1: "right", 0: "center"}[sx],
                    "va": {1: "bottom", -1: "top", 0: "center"}[sy],
                }
                trial = _label(ax, p, colour, spot)
                box = trial.get_window_extent(renderer)
                trial.remove()
                outside = box.width * box.height - _overlap(box, frame)
                cost = sum(_overlap(box, other) for other in taken) + 10 * outside
                if best is None or cost < best[0]:
                    best = (cost, ring, spot)
                if cost == 0:
                    break
            if best[0] == 0:
                break
        _, ring, spot = best
        if ring > _LABEL_RINGS[1]:  # set apart from its point: a thin line says whose label it is
            spot["arrowprops"] = {"arrowstyle": "-", "color": colour, "linewidth": 0.5, "alpha": 0.6, "shrinkA": 0}
        box = _label(ax, p, colour, spot).get_window_extent(renderer)
        taken.append(box)
        boxes.append(box)
    return boxes


def _label(ax: plt.Axes, p: Point, colour: str, spot: dict) -> Annotation:
    return ax.annotate(
        p.label, (p.x, p.y), textcoords="offset points", fontsize=_LABEL_SIZE, color=colour, annotation_clip=False,
        **spot,
    )  # fmt: skip


def _overlap(a: Bbox, b: Bbox) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)


def training_curves(
    path: Path, title: str, top1: Sequence[Line], loss: Sequence[Line], paper_top1: float | None = None
) -> Path:
    """Top-1 and loss per epoch, side by side: our seeds in colour, the upstream run in grey."""
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=DPI)
    for ax, lines in ((ax_acc, top1), (ax_loss, loss)):
        for line in lines:
            ax.plot(
                line.epochs,
                line.values,
                "--" if line.dashed else "-",
                color=_REFERENCE if line.reference else f"C{line.group}",
                linewidth=1.0 if line.reference else 1.6,
                marker="" if line.reference or len(line.epochs) > 30 else ".",
                label=line.label,
                zorder=1 if line.reference else 2,
            )
        ax.set_xlabel("epoch")
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, -0.5), max(hi, 1.5))  # a run of one or two epochs still gets integer ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if lines:  # handles long enough to show a dashed curve as dashed
            ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False,
                      handlelength=3.5)
        else:
            ax.text(0.5, 0.5, "no epochs logged yet", ha="center", va="center", transform=ax.transAxes)
    if paper_top1 is not None:
        ax_acc.axhline(paper_top1, color="#222222", linestyle=":", linewidth=1)
        ax_acc.annotate(f"paper {paper_top1:g}", (0, paper_top1), xytext=(2, 3), textcoords="offset points", fontsize=7)
    ax_acc.set_ylabel("test top-1 (%)")
    ax_loss.set_ylabel("loss")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def gap_curve(path: Path, title: str, gaps: Sequence[Line], band: tuple[Sequence[float], Sequence[float]]) -> Path:
    """Each seed's test top-1 minus the reference curve at the same fraction of the schedule, over the band
    within which a trial is on track (``band``: epochs and the band's half-width there)."""
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=DPI)
    epochs, width = band
    ax.fill_between(epochs, [-w for w in width], width, color=_REFERENCE, alpha=0.25, label="on track (band)")
    ax.axhline(0.0, color="#222222", linewidth=0.8)
    for line in gaps:
        ax.plot(line.epochs, line.values, "-", color=f"C{line.group}", linewidth=1.6,
                marker="" if len(line.epochs) > 30 else ".", label=line.label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 minus reference (points)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def energy_breakdown(path: Path, title: str, layers: Sequence[LayerBar], reference_label: str | None = None, *,
                     energy_limit: float | None = None) -> Path:
    """Per-layer input firing rate and energy as horizontal bars; upstream values as black ticks. Figures drawn
    with one ``energy_limit`` (mJ, the largest bar among them) share their energy axis, and all their rate axis."""
    height = max(2.5, 0.16 * len(layers) + 1.2)
    fig, (ax_rate, ax_energy) = plt.subplots(1, 2, figsize=(10, height), dpi=DPI, sharey=True)
    ys = range(len(layers))
    rates = [100 * (x.rate if x.rate is not None else math.nan) for x in layers]
    ax_rate.barh(ys, rates, color="#1f77b4", height=0.7, label="input firing rate (ours)")
    ax_energy.barh(ys, [x.energy_mJ for x in layers], color="#d62728", height=0.7, label="energy (ours)")
    if reference_label:
        for ax, values in (
            (ax_rate, [100 * x.reference_rate if x.reference_rate is not None else math.nan for x in layers]),
            (ax_energy, [x.reference_energy_mJ if x.reference_energy_mJ is not None else math.nan for x in layers]),
        ):
            ax.plot(values, ys, "|", color="k", markersize=9, markeredgewidth=2, label=reference_label)
    ax_rate.set_yticks(list(ys), [x.name for x in layers], fontsize=7)
    ax_rate.margins(y=0.01)
    ax_rate.invert_yaxis()
    ax_rate.set_xlabel("input firing rate (%); 100 = non-spike input (MACs)")
    ax_energy.set_xlabel("energy per image (mJ)")
    ax_rate.set_xlim(0, 105)
    if energy_limit:
        ax_energy.set_xlim(0, 1.05 * energy_limit)
    ax_energy.xaxis.set_major_locator(MaxNLocator(nbins=5))
    for ax in (ax_rate, ax_energy):
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


@dataclass(frozen=True)
class AxisLine:
    """A grid's points along one axis at fixed values of the other axes (``label`` names those values).

    ``y`` is ours (None where the point has no finished run); ``paper`` is the paper's value where the
    point equals a paper row, else None.
    """

    label: str
    x: Sequence[object]
    y: Sequence[float | None]
    yerr: Sequence[float | None]
    paper: Sequence[float | None]


def axis_lines(path: Path, lines: Sequence[AxisLine], xlabel: str, ylabel: str, title: str) -> Path:
    """One metric of a grid against one axis: a line per combination of the other axes, paper rows marked.

    Numeric axis values are placed to scale; others (datasets) as categories in first-seen order.
    """
    fig, ax = plt.subplots(figsize=(7.0, 4.0), dpi=DPI)
    values = list(dict.fromkeys(x for line in lines for x in line.x))
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values)
    where = {x: (x if numeric else i) for i, x in enumerate(values)}
    for i, line in enumerate(lines):
        ours = [(where[x], y, e) for x, y, e in zip(line.x, line.y, line.yerr, strict=True) if y is not None]
        if ours:
            xs, ys, errs = zip(*ours, strict=True)
            ax.errorbar(xs, ys, yerr=[e or 0.0 for e in errs] if any(errs) else None, fmt="-o", color=f"C{i}",
                        markersize=5, capsize=3, label=line.label)
        marks = [(where[x], p) for x, p in zip(line.x, line.paper, strict=True) if p is not None]
        if marks:
            colour, marker, size = _FIXED_STYLE[PAPER]
            ax.plot(*zip(*marks, strict=True), linestyle="none", marker=marker, markersize=size,
                    markerfacecolor="none", markeredgecolor=colour, markeredgewidth=1.5, zorder=4)
    if any(p is not None for line in lines for p in line.paper):
        colour, marker, size = _FIXED_STYLE[PAPER]
        ax.plot([], [], linestyle="none", marker=marker, markersize=size, markerfacecolor="none",
                markeredgecolor=colour, markeredgewidth=1.5, label=f"{PAPER} row")
    ticks = [where[x] for x in values]
    ax.set_xticks(ticks, [str(x) for x in values])
    pad = 0.08 * (max(ticks) - min(ticks)) or 0.5  # every value of the axis shows, run or not
    ax.set_xlim(min(ticks) - pad, max(ticks) + pad)
    ax.margins(y=0.1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.text(0.5, 0.5, "no finished point yet", ha="center", va="center", transform=ax.transAxes, color=_REFERENCE)
    return _save(fig, path)


def _series_styles(points: Sequence[Point], families: Sequence[str]) -> dict[str, tuple[str, str, int]]:
    """Ours and the paper first with fixed styles, then each peer family in ``families`` order (then any other)."""
    present = dict.fromkeys(p.series for p in points)
    order = list(dict.fromkeys([*families, *present]))
    styles = {series: style for series, style in _FIXED_STYLE.items() if series in present}
    for i, series in enumerate(s for s in order if s not in _FIXED_STYLE):
        if series in present:
            styles[series] = (_PEER_COLOURS[i % len(_PEER_COLOURS)], _PEER_MARKERS[i % len(_PEER_MARKERS)], 7)
    return styles


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
