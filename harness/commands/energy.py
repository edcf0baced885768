"""``sfh energy``: SOPs (ACs), MACs, firing rates and energy of a registered model (SPEC §5 rules).

Inputs come from a ``--data`` spec: ``synthetic[:N]`` (N random samples of the model's input shape),
``digits[:N]`` (scikit-learn's 8x8 digits, upsampled to the model's size, 3 channels). Dataset folders
(``imagenet:/path`` ...) plug in by adding a builder to :data:`DATA_BUILDERS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import pickle
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from tqdm import tqdm

from spikingformer import MODEL_CONFIGS, SpikingTransformer, build_model
from spikingformer.energy import E_AC_PJ, E_MAC_PJ, measure_energy

#: Samples a ``synthetic`` spec draws when it names no count.
SYNTHETIC_SAMPLES = 32
#: Mean event count per pixel, polarity and step of synthetic DVS frames.
SYNTHETIC_EVENT_RATE = 0.2
#: Key prefixes only upstream checkpoints have (ours: ``tokenizer.``, ``blocks.``, ``head.``).
UPSTREAM_PREFIXES = ("patch_embed.", "block.")

Batch = tuple[torch.Tensor, torch.Tensor | None]


class BatchStream:
    """``samples`` samples in batches of ``batch_size``, each made on demand by ``make(start, stop)``."""

    def __init__(self, samples: int, batch_size: int, make: Callable[[int, int], Batch]) -> None:
        if samples < 1 or batch_size < 1:
            raise ValueError(f"need at least one sample and batch size >= 1, got {samples} and {batch_size}")
        self.samples, self.batch_size, self.make = samples, batch_size, make

    def __len__(self) -> int:
        return math.ceil(self.samples / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, self.samples, self.batch_size):
            yield self.make(start, min(start + self.batch_size, self.samples))


def synthetic(arg: str | None, model: SpikingTransformer, batch_size: int) -> BatchStream:
    """Seeded random inputs: standard-normal images, or Poisson event counts for event models."""
    samples = _count(arg, SYNTHETIC_SAMPLES, "synthetic")
    generator = torch.Generator().manual_seed(0)

    def make(start: int, stop: int) -> Batch:
        shape = (stop - start, *model.input_shape)
        if model.input_kind == "event":
            return torch.poisson(torch.full(shape, SYNTHETIC_EVENT_RATE), generator), None
        return torch.randn(shape, generator=generator), None

    return BatchStream(samples, batch_size, make)


def digits(arg: str | None, model: SpikingTransformer, batch_size: int) -> BatchStream:
    """scikit-learn's 1797 handwritten digits as ImageNet-normalised RGB images of the model's size."""
    if model.input_kind != "static" or model.in_chans != 3:
        raise ValueError("--data digits needs a static 3-channel image model (not event frames)")
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images).float().div(16.0).unsqueeze(1)  # [N, 1, 8, 8] in [0, 1]
    labels = torch.from_numpy(data.target)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)

    def make(start: int, stop: int) -> Batch:
        x = F.interpolate(images[start:stop], size=model.img_size, mode="bilinear", align_corners=False)
        return (x.expand(-1, 3, -1, -1) - mean) / std, labels[start:stop]

    return BatchStream(_count(arg, len(labels), "digits", maximum=len(labels)), batch_size, make)


def _count(arg: str | None, default: int, kind: str, maximum: int | None = None) -> int:
    if arg is None:
        return default
    if not arg.isdigit() or int(arg) < 1 or (maximum is not None and int(arg) > maximum):
        limit = f" and at most {maximum}" if maximum is not None else ""
        raise ValueError(f"--data {kind}:N needs a whole number N >= 1{limit}, got {arg!r}")
    return int(arg)


#: ``--data`` kinds: name -> builder(argument after the colon or None, model, batch size) -> loader.
#: Dataset folders (``imagenet:/path``, ``cifar10:/path``, ``dvs128:/path`` ...) are added here.
DATA_BUILDERS: dict[str, Callable[[str | None, SpikingTransformer, int], BatchStream]] = {
    "synthetic": synthetic,
    "digits": digits,
}


def build_loader(spec: str, model: SpikingTransformer, batch_size: int) -> BatchStream:
    """The loader a ``--data`` spec (``kind`` or ``kind:argument``) names."""
    kind, _, arg = spec.partition(":")
    if kind not in DATA_BUILDERS:
        raise ValueError(f"unknown --data {spec!r}; known kinds: {', '.join(DATA_BUILDERS)} (as kind or kind:N)")
    return DATA_BUILDERS[kind](arg or None, model, batch_size)


def load_checkpoint(model: SpikingTransformer, path: Path) -> None:
    """Load our own state_dict or an upstream checkpoint (told apart by upstream's key names).

    Either may sit in a training-script wrapper. The weights must fit the model exactly, or a
    ``ValueError`` names what does not.
    """
    from spikingformer.checkpoint import load_upstream_state_dict, unwrap

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        # timm training checkpoints (upstream's) also pickle the argparse Namespace of their run.
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a state_dict")
    state = unwrap(checkpoint)
    if any(key.startswith(UPSTREAM_PREFIXES) for key in state):
        try:
            load_upstream_state_dict(model, checkpoint)
        except (KeyError, RuntimeError, ValueError) as err:
            raise ValueError(f"upstream checkpoint {path} does not fit {type(model).__name__}: {err}") from err
        return
    ours = model.state_dict()
    problems = [f"missing {k}" for k in ours if k not in state] + [f"unexpected {k}" for k in state if k not in ours]
    problems += [
        f"{k}: checkpoint {list(v.shape)}, model {list(ours[k].shape)}"
        for k, v in state.items()
        if k in ours and tuple(v.shape) != tuple(ours[k].shape)
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} problems)" if len(problems) > 5 else "")
        raise ValueError(f"checkpoint {path} does not fit the model: {shown}")
    model.load_state_dict(state)


def run(args: argparse.Namespace) -> int:
    overrides = {"num_classes": args.num_classes, "T": args.T, "num_heads": args.num_heads}
    model = build_model(args.model, **{k: v for k, v in overrides.items() if v is not None})
    if args.checkpoint:
        load_checkpoint(model, Path(args.checkpoint))
    loader = build_loader(args.data, model, args.batch_size)
    total = len(loader) if args.max_batches is None else min(len(loader), args.max_batches)
    batches = itertools.islice(loader, total)
    with tqdm(batches, total=total, desc=f"energy {args.model}", unit="batch", file=sys.stderr) as progress:
        report = measure_energy(
            model, progress, max_spike_count=args.max_spike_count, e_mac_pj=args.e_mac, e_ac_pj=args.e_ac
        )
    report = dataclasses.replace(report, model=args.model)
    print(report.to_json() if args.format == "json" else report.to_table())
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "energy",
        help="SOPs, MACs, firing rates and energy of a model over some inputs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        required=True,
        choices=sorted(MODEL_CONFIGS),
        metavar="NAME",
        help="registered model, e.g. spikingformer_8_512 or spikformer_cifar_4_384",
    )
    parser.add_argument("--checkpoint", help="our state_dict or an upstream checkpoint (.pth/.pth.tar)")
    parser.add_argument("--data", default="synthetic", help="synthetic[:N] | digits[:N] (default: synthetic)")
    parser.add_argument("--max-batches", type=_positive, help="stop after this many batches")
    parser.add_argument("--batch-size", type=_positive, default=16)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--num-classes", type=_positive, help="override the config's class count")
    parser.add_argument("--T", type=_positive, help="override the time steps")
    parser.add_argument("--num-heads", type=_positive, help="override the head count")
    parser.add_argument(
        "--max-spike-count",
        type=_positive,
        default=1,
        help="spike counts up to this value count as AC (1: upstream; 30: upstream's "
        "alternative convention for Spikformer's spike sums)",
    )
    parser.add_argument("--e-mac", type=float, default=E_MAC_PJ, help="pJ per MAC (default %(default)s)")
    parser.add_argument("--e-ac", type=float, default=E_AC_PJ, help="pJ per AC (default %(default)s)")
    parser.set_defaults(func=run)
