"""``sfh``: the command line of the harness.

Each subcommand lives in its own module under ``harness.commands`` and exposes ``HELP`` (one line) and
``register(subparsers) -> None``, which adds its parser and sets ``func`` (``args -> int``). Modules are
discovered, so adding a command touches no shared file; they import only argparse and ``harness.options`` at
the top (Ray, MLflow and torch inside ``func``), so ``--help`` answers at once. A command may instead take the
rest of the command line as it is (``main(argv) -> int``: ``sfh energy`` hands it to the library). Other
installed packages add commands the same way through the ``sfh.commands`` entry-point group
(``name = "module:register"``): ``sfh report`` comes from ``dashboards`` like that, so the harness never
imports it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from importlib import metadata
from types import ModuleType

import harness.commands
from harness.options import closest
from harness.run.lock import LockHeld

#: Nothing leaves the machine unless the user opts in: Ray's usage stats and MLflow's telemetry are off. Set
#: before Ray or MLflow start (the private local Ray's processes inherit them); a user's own setting wins.
TELEMETRY_OFF = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
#: Exit status when another driver holds the experiment's lock (EX_TEMPFAIL: try again later).
EXIT_LOCKED = 75
#: Entry-point group of commands that other packages add to ``sfh``.
ENTRY_POINTS = "sfh.commands"


def command_modules() -> dict[str, ModuleType]:
    """The harness's own command modules, by command name."""
    return {
        info.name: importlib.import_module(f"harness.commands.{info.name}")
        for info in sorted(pkgutil.iter_modules(harness.commands.__path__), key=lambda m: m.name)
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sfh", description="Spikingformer reproduction harness")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in command_modules().values():
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


def _closest_command(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """A refusal with a suggestion when the first word is no command (argparse alone lists every command)."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    word = next((a for a in argv if not a.startswith("-")), None)
    if word is None or word in subparsers.choices:
        return None
    return f"sfh: error: unknown command {word!r}{closest(word, subparsers.choices)} (`sfh --help` lists them)"


def main(argv: list[str] | None = None) -> int:
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    argv = sys.argv[1:] if argv is None else list(argv)
    modules = command_modules()
    if argv and hasattr(modules.get(argv[0]), "main"):  # a command that parses its own command line
        return int(modules[argv[0]].main(argv[1:]) or 0)
    parser = build_parser()
    unknown = _closest_command(parser, argv)
    if unknown:
        print(unknown, file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
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
    except Exception as err:  # anything unforeseen: one line, the next step, the traceback in a log file
        from harness.failures import one_line

        print(one_line(err, args.command, _again(args, argv)), file=sys.stderr)
        return 1


def _again(args: argparse.Namespace, argv: list[str]) -> str:
    """The command that continues after a failure."""
    if args.command == "resume":
        return f"`sfh resume {args.name}`"
    skipped = " (finished rows are skipped)" if args.command == "reproduce" else ""
    return f"run `sfh {' '.join(argv)}` again{skipped}"


if __name__ == "__main__":
    sys.exit(main())
