"""``sfh compare [EXP ...]``: one table across families, read from MLflow: every row's parameters, SOPs and
energy under its own paper's convention and under the common ruler, beside the paper's top-1 and ours.

The per-experiment ``sfh table`` judges a reproduction; this one lines the families up. Energy "paper" is each
row costed the way its own paper counted (its family's declared convention), "common" is every row costed by
Spikingformer's rules (SPEC §5), the one ruler on which families compare.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from harness import results
from harness.config import discover, load_experiment
from harness.results import FamilyLine, family_lines
from harness.tracking import Tracking, default_tracking_uri

EXPERIMENTS_DIR = Path("experiments")

COLUMNS = (
    "table", "row", "model", "dataset", "T", "params_M", "sops_G_paper_conv", "sops_G_common",
    "energy_mJ_paper_conv", "energy_mJ_common", "paper_energy_mJ", "paper_top1", "top1", "seeds", "verdict",
)


def _cell(value: object) -> str:
    if value is None:
        return results.NA
    return results.format_number(value) if isinstance(value, float) else str(value)


def render_markdown(table: list[FamilyLine]) -> str:
    header = (
        "| table | row | model | dataset | T | params M | SOPs G (paper conv. / common) "
        "| energy mJ (paper conv. / common / paper's figure) | top-1 (paper / ours) | seeds | verdict |"
    )
    lines_out = [header, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for line in table:
        t, row, model, dataset, steps, params, sops, sops_c, energy, energy_c, paper_e, paper_top1, top1, seeds, v = (
            _cell(x) for x in line.values()
        )
        lines_out.append(
            f"| {t} | {row} | {model} | {dataset} | {steps} | {params} | {sops} / {sops_c} "
            f"| {energy} / {energy_c} / {paper_e} | {paper_top1} / {top1} | {seeds} | {v} |"
        )
    return "\n".join(lines_out) + "\n"


def render_csv(table: list[FamilyLine]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(line.values() for line in table)
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    uri = args.tracking_uri or default_tracking_uri()
    experiments = [load_experiment(p) for p in args.experiments] or discover(EXPERIMENTS_DIR)
    store = Tracking(uri)
    names = {e.name: f"{e.name}{args.suffix}" for e in experiments}
    if not args.experiments:  # all files: only those with runs
        experiments = [e for e in experiments if store.find_experiment(names[e.name]) is not None]
    table = [line for e in experiments for line in family_lines(e, uri, name=names[e.name])]
    if not table:
        print(f"no experiment has runs in {uri}")
        return 0
    text = render_csv(table) if args.format == "csv" else (
        "Energy per image under each row's own paper's convention (paper conv.) and under the common ruler "
        "(Spikingformer's rules, SPEC §5, for every family); the paper's own figure beside them.\n\n"
        + render_markdown(table)
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text, end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="one table across families: params, SOPs, energy (paper / common), top-1", description=__doc__
    )
    parser.add_argument(
        "experiments", nargs="*", type=Path, help="experiment files (default: experiments/*.yaml with runs)"
    )
    parser.add_argument("--suffix", default="", help="tracked-name suffix, e.g. -smoke for `reproduce --smoke` runs")
    parser.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db)")
    parser.add_argument("--format", choices=("md", "csv"), default="md")
    parser.add_argument("--out", help="also write the table to this file")
    parser.set_defaults(func=run)
