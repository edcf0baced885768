"""How every view prints a figure: numbers, paper-vs-ours pairs, spreads, differences, durations, axis values.

The markdown and CSV tables, the cost plans and the dashboards' HTML all print through these, so every view
agrees; "n/a" stands wherever a figure is missing.
"""

from __future__ import annotations

from typing import Any

NA = "n/a"


def format_number(value: float | None) -> str:
    """Two decimals, or three significant digits below 1 (a demo's SOPs are thousandths of a G)."""
    if value is None:
        return NA
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def format_pair(ours: float | None, paper: float | None) -> str:
    return f"{format_number(ours)} / {format_number(paper)}"


def format_spread(mean: float | None, sd: float | None) -> str:
    return format_number(mean) + (f" ± {sd:.2f}" if sd is not None else "")


def format_delta(delta: float | None) -> str:
    """A difference in percentage points, signed."""
    return NA if delta is None else f"{delta:+.2f}"


def format_duration(seconds: float) -> str:
    """3 s, 4.2 min, 5.1 h, 12.3 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.1f} days"


def format_kwh(value: float | None) -> str:
    return NA if value is None else f"{value:.3g}"


def format_money(value: float | None) -> str:
    """An amount in the user's currency, to the cent: 1,234.56."""
    return NA if value is None else f"{value:,.2f}"


def format_value(value: Any) -> str:
    """An axis value in ids and tables (``0.5``, not ``0.50000``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)
