"""The command line of ``python -m spikingformer.energy`` (and ``sfh energy``), in the standard library only:
``sfh energy --help`` loads this file by its path and answers before torch is imported. Model names are checked,
and the per-operation energies default to the energy model's, once the command runs (``spikingformer.energy.cli``).
"""

from __future__ import annotations

import argparse

DESCRIPTION = """SOPs (ACs), MACs, firing rates and energy of a registered model, by Spikingformer's energy rules or
the convention its family declares.

``--data`` is read the way training evaluates it: ``spikingformer.data.loaders`` builds the test split with the
dataset's recipe (eval transform, normalisation, split; event frames at the model's T). Kinds:
``imagenet:ROOT``, ``cifar10:ROOT``, ``cifar100:ROOT``, ``cifar10-dvs:ROOT``, ``dvs128-gesture:ROOT``,
``digits`` (scikit-learn's, the fixed 360-image test split) and ``synthetic[:N]`` (N seeded samples of the
model's input). The model must take what the data gives (input shape, T of event frames, classes).

``--checkpoint`` takes our training checkpoints (a file, or a run's checkpoint folder for its last.pt; the
model's settings come from the config it records, so ``--model`` may be left out) and upstream ones.
``--baseline`` measures a second model, typically ``spikformer_*``, on the same batches and gives the
saving against it under upstream's two countings of Spikformer's non-binary inputs: as MACs (spike test
up to 1 spike, the paper's figure) and as ACs (integer spike counts up to 30).
"""

#: ``--data`` datasets read from a folder (``NAME:ROOT``); each has a recipe of the same name.
FOLDER_DATASETS = ("imagenet", "cifar10", "cifar100", "cifar10-dvs", "dvs128-gesture")
DATA_KINDS = (*(f"{name}:ROOT" for name in FOLDER_DATASETS), "digits", "synthetic[:N]")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser(prog: str = "python -m spikingformer.energy") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="registered model, e.g. spikingformer_8_512 (default: the one --checkpoint records)",
    )
    parser.add_argument(
        "--checkpoint", metavar="PATH", help="our checkpoint file or run folder, or an upstream .pth/.pth.tar"
    )
    parser.add_argument("--data", default="synthetic", help=f"{' | '.join(DATA_KINDS)} (default: synthetic)")
    parser.add_argument("--max-batches", type=positive, metavar="N", help="stop after this many batches")
    parser.add_argument("--batch-size", type=positive, default=16, metavar="N", help="default %(default)s")
    parser.add_argument(
        "--num-workers", type=int, metavar="N", help="DataLoader workers (default: the dataset recipe's)"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when present")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--num-classes", type=positive, help="override the class count (both models)")
    parser.add_argument("--T", type=positive, help="override the time steps (both models)")
    parser.add_argument("--num-heads", type=positive, help="override the head count (both models)")
    parser.add_argument(
        "--convention",
        default="paper",
        metavar="LABEL",
        help="energy convention: paper (the model's own paper's counting, default), common (Spikingformer's "
        "rules for every family, one ruler), or another the family declares (Spikformer: spike_counts)",
    )
    parser.add_argument(
        "--max-spike-count",
        type=positive,
        metavar="N",
        help="override the convention's spike test: integer spike counts up to N count as ACs (1: upstream "
        "Spikingformer; 30: upstream's alternative for Spikformer's spike sums)",
    )
    parser.add_argument("--baseline", metavar="NAME", help="second model, e.g. spikformer_8_768")
    parser.add_argument("--baseline-checkpoint", metavar="PATH", help="the baseline's checkpoint, as --checkpoint")
    parser.add_argument(
        "--memory",
        type=positive,
        metavar="N",
        help="also the memory-inclusive estimate (compute plus weight, membrane and spike memory traffic, Lemaire "
        "et al. 2022) against the same network as a quantized ANN, and the break-even firing rate, on N images",
    )
    parser.add_argument("--e-mac", type=float, metavar="PJ", help="pJ per MAC (default 4.6: 32-bit float, 45 nm)")
    parser.add_argument("--e-ac", type=float, metavar="PJ", help="pJ per AC (default 0.9: 32-bit float, 45 nm)")
    return parser
