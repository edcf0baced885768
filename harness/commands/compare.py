"""``sfh compare [EXP ...]``: one table across families, read from MLflow: every row's parameters, SOPs and
energy under its own paper's convention and under the common ruler, beside the paper's top-1 and ours.

The per-experiment ``sfh table`` judges a reproduction; this one lines the families up. Energy "paper" is each
row costed the way its own paper counted (its family's declared convention), "common" is every row costed by
Spikingformer's rules, the one ruler on which families compare.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.options import add_table_output_options, add_tracking_option

HELP = "one table across families: params, SOPs, energy (paper / common), top-1"
EXPERIMENTS_DIR = Path("experiments")


def run(args: argparse.Namespace) -> int:
    from harness import results
    from harness.tracking import Tracking, default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    experiments = [results.load_experiment(p) for p in args.experiments] or results.discover(EXPERIMENTS_DIR)
    store = Tracking(uri)
    names = {e.name: f"{e.name}{args.suffix}" for e in experiments}
    if not args.experiments:  # all files: only those with runs
        experiments = [e for e in experiments if store.find_experiment(names[e.name]) is not None]
    table = [line for e in experiments for line in results.family_lines(e, uri, name=names[e.name])]
    if not table:
        print(f"no experiment has runs in {uri}")
        return 0
    text = results.render_families_csv(table) if args.format == "csv" else (
        "Energy per image under each row's own paper's convention (paper conv.) and under the common ruler "
        "(Spikingformer's rules for every family); the paper's own figure beside them.\n\n"
        + results.render_families_markdown(table)
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text, end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compare", help=HELP, description=__doc__)
    parser.add_argument(
        "experiments", nargs="*", type=Path, help="experiment files (default: experiments/*.yaml with runs)"
    )
    parser.add_argument("--suffix", default="", help="tracked-name suffix, e.g. -smoke for `reproduce --smoke` runs")
    add_tracking_option(parser)
    add_table_output_options(parser)
    parser.set_defaults(func=run)
