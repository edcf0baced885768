"""``sfh``: the command line of the harness.

Each subcommand lives in its own module under ``harness.commands`` and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (``args -> int``).
Modules are discovered, so adding a command touches no shared file. Other installed packages add
commands the same way through the ``sfh.commands`` entry-point group (``name = "module:register"``):
``sfh report`` comes from ``dashboards`` like that, so the harness never imports it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from importlib import metadata

import harness.commands
from harness.lock import LockHeld

#: Nothing leaves the machine unless the user opts in: Ray's usage stats and MLflow's telemetry are off. Set
#: before Ray or MLflow start (the private local Ray's processes inherit them); a user's own setting wins.
TELEMETRY_OFF = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
#: Exit status when another driver holds the experiment's lock (EX_TEMPFAIL: try again later).
EXIT_LOCKED = 75
#: Entry-point group of commands that other packages add to ``sfh``.
ENTRY_POINTS = "sfh.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sfh", description="Spikingformer reproduction harness")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(harness.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"harness.commands.{info.name}")
        module.register(subparsers)
    for entry in sorted(metadata.entry_points(group=ENTRY_POINTS), key=lambda e: e.name):
        if entry.name in subparsers.choices:
            print(f"sfh: {entry.value} not registered: a command {entry.name!r} exists already", file=sys.stderr)
            continue
        try:
            register = entry.load()
        except ImportError as err:  # a plugin that cannot load must not take the harness's own commands down
            print(f"sfh: command {entry.name!r} unavailable ({entry.value}: {err})", file=sys.stderr)
            continue
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        print(f"sfh {args.command}: error: {err}", file=sys.stderr)
        return 2
    except LockHeld as err:
        print(f"sfh {args.command}: refused: {err}", file=sys.stderr)
        return EXIT_LOCKED
    except KeyboardInterrupt:
        print(f"sfh {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
