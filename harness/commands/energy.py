"""``sfh energy``: a model's SOPs, MACs, firing rates and energy; the library's own entry point
(``python -m spikingformer.energy``), which needs nothing of the harness."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType

HELP = "SOPs, MACs, firing rates and energy of a model over some inputs"
PROG = "sfh energy"


def _arguments() -> ModuleType:
    """The library's command-line module (standard library only), loaded by its path: importing it as
    ``spikingformer.energy.arguments`` would import the package, and with it torch, timm and every model."""
    package = importlib.util.find_spec("spikingformer")  # a top-level package: found, not imported
    path = Path(package.origin).parent / "energy" / "arguments.py"
    spec = importlib.util.spec_from_file_location("_sfh_energy_arguments", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    """Hand the command line to the library, whose parser refuses bad input; ``--help`` is answered at once."""
    if {"-h", "--help"} & set(argv[: argv.index("--")] if "--" in argv else argv):
        _arguments().build_parser(PROG).print_help()
        return 0
    from spikingformer.energy.cli import main as energy_main

    return energy_main(argv, prog=PROG)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Listed in ``sfh --help``; ``harness.cli`` hands everything after ``energy`` to :func:`main`."""
    subparsers.add_parser("energy", help=HELP, add_help=False, description=__doc__)
