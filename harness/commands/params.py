"""``sfh params``: parameter count of every registered model against the paper's.

Our models omit the LayerNorms upstream builds but never calls (4·D per block), so the table also
gives the upstream total including them: that is the figure upstream's ``train.py`` logs.
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

HELP = "parameter counts of every registered model vs the paper"

#: Millions, as printed in the Spikingformer README (= the Spikformer paper's tables, same architectures).
#: CIFAR rows are for the 10-class head.
PAPER_PARAMS_M = {
    "spikingformer_8_384": 16.81,
    "spikingformer_8_512": 29.68,
    "spikingformer_8_768": 66.34,
    "spikingformer_cifar_4_256": 4.15,
    "spikingformer_cifar_2_384": 5.76,
    "spikingformer_cifar_4_384": 9.32,
    "spikingformer_dvs_2_256": 2.57,
    "spikformer_8_384": 16.81,
    "spikformer_8_512": 29.68,
    "spikformer_8_768": 66.34,
    "spikformer_cifar_4_256": 4.15,
    "spikformer_cifar_2_384": 5.76,
    "spikformer_cifar_4_384": 9.32,
    # SDT README / paper: no figure for 6-512 and 10-512; 10.28M is the 100-class CIFAR count
    "sdt_8_384": 16.81,
    "sdt_8_512": 29.68,
    "sdt_8_768": 66.34,
    "sdt_cifar_2_512": 10.28,
    "sdt_dvs_2_256": 2.57,
    "sdt_cifar10dvs_2_256": 2.57,
    # QKFormer README / paper: 6.74M is the 100-class CIFAR count, 1.50M the MLP-ratio-1 DVS model
    # (the DVS128 code trains MLP ratio 4: 2.00M)
    "qkformer_10_384": 16.47,
    "qkformer_10_512": 29.08,
    "qkformer_10_768": 64.96,
    "qkformer_cifar_4_384": 6.74,
    "qkformer_cifar10dvs_2_256": 1.50,
    "qkformer_dvs_2_256": 1.50,
}

#: Parameters of the two unused LayerNorms (weight + bias) in each upstream block, per channel.
UNUSED_LN_PER_BLOCK_AND_CHANNEL = 4

COLUMNS = ("model", "params", "paper", "difference", "upstream total (incl. unused LN / talking_heads)")


def upstream_unused(model: torch.nn.Module) -> int:
    """Parameters upstream builds but never calls: a family declares its own (``upstream_unused_params``),
    else the two per-block LayerNorms of the Spikingformer/Spikformer code."""
    declared = getattr(model, "upstream_unused_params", None)
    if declared is not None:
        return declared()
    return UNUSED_LN_PER_BLOCK_AND_CHANNEL * model.embed_dim * model.depth


def count_rows() -> list[dict[str, object]]:
    """One row per registered config; built on the meta device, so no weights are allocated."""
    import torch

    from spikingformer import MODEL_CONFIGS, build_model

    rows = []
    for name in MODEL_CONFIGS:
        with torch.device("meta"):
            model = build_model(name)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        paper = PAPER_PARAMS_M.get(name)
        rows.append(
            {
                "model": name,
                "params": params,
                "paper": None if paper is None else round(paper * 1e6),
                "difference": None if paper is None else params - round(paper * 1e6),
                "upstream_total": params + upstream_unused(model),
            }
        )
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for r in rows:
        known = r["paper"] is not None
        paper = f"{r['paper'] / 1e6:.2f}M" if known else "–"
        difference = f"{r['difference']:+,}" if known else "–"
        cells = (r["model"], f"{r['params']:,}", paper, difference, f"{r['upstream_total']:,}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    rows = count_rows()
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(markdown(rows))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("params", help=HELP, description=__doc__)
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown", help="output table format")
    parser.set_defaults(func=run)
