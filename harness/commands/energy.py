"""``sfh energy``: a model's SOPs, MACs, firing rates and energy; the library's own entry point
(``python -m spikingformer.energy``), which needs nothing of the harness."""

from __future__ import annotations

import argparse

HELP = "SOPs, MACs, firing rates and energy of a model over some inputs"


def main(argv: list[str]) -> int:
    """Hand the command line to the library, whose parser answers ``--help`` and refuses bad input."""
    from spikingformer.energy.cli import main as energy_main

    return energy_main(argv, prog="sfh energy")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Listed in ``sfh --help``; ``harness.cli`` hands everything after ``energy`` to :func:`main`."""
    subparsers.add_parser("energy", help=HELP, add_help=False, description=__doc__)
