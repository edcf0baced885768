"""``sfh energy``: SOPs (ACs), MACs, firing rates and energy of a registered model (SPEC §5 rules).

``--data`` is read the way training evaluates it: ``spikingformer.data`` builds the test split with the
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

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from spikingformer import MODEL_CONFIGS, build_model
from spikingformer.config import ModelConfig, TrainConfig
from spikingformer.data import InputSpec, build_eval_loader, input_spec
from spikingformer.distributed import default_device
from spikingformer.energy import E_AC_PJ, E_MAC_PJ, GIGA, EnergyReport, measure_conventions
from spikingformer.recipes import RECIPES, load_recipe
from spikingformer.train_checkpoint import resolve_checkpoint
from spikingformer.upstream_checkpoint import load_upstream_state_dict, unwrap

#: ``--data`` datasets read from a folder (``NAME:ROOT``); each has a recipe of the same name.
FOLDER_DATASETS = ("imagenet", "cifar10", "cifar100", "cifar10-dvs", "dvs128-gesture")
DATA_KINDS = (*(f"{name}:ROOT" for name in FOLDER_DATASETS), "digits", "synthetic[:N]")
#: Samples a ``synthetic`` spec draws when it names no count.
SYNTHETIC_SAMPLES = 32
#: Upstream's two countings of Spikformer's spike-sum inputs (SPEC §5), by the spike test's max spike count.
BASELINE_CONVENTIONS = {
    1: "non-binary inputs as MACs (max spike count 1, the paper's)",
    30: "spike counts up to 30 as ACs (upstream's alternative)",
}
#: Key prefixes only upstream checkpoints have (ours: ``tokenizer.``, ``blocks.``, ``head.``).
UPSTREAM_PREFIXES = ("patch_embed.", "block.")


class Checkpoint(NamedTuple):
    path: Path
    content: Mapping[str, Any]


def read_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint file, or a training run's checkpoint folder (its last.pt), read as plain data."""
    file = resolve_checkpoint(path)
    try:
        # timm training checkpoints (upstream's) also pickle the argparse Namespace of their run.
        with torch.serialization.safe_globals([argparse.Namespace]):
            content = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(f"cannot read checkpoint {file}: {err}") from err
    if not isinstance(content, Mapping):
        raise ValueError(f"checkpoint {file} holds a {type(content).__name__}, not a state_dict")
    return Checkpoint(file, content)


def model_config(name: str | None, checkpoint: Checkpoint | None, overrides: dict[str, Any], flag: str) -> ModelConfig:
    """``name`` with the settings a training checkpoint of ours records (its config), then ``overrides``."""
    config = checkpoint.content.get("config") if checkpoint else None
    trained = config.get("model") if isinstance(config, Mapping) else None
    if trained is None:
        if name is None:
            source = f"checkpoint {checkpoint.path} records no model" if checkpoint else "no checkpoint records one"
            raise ValueError(f"{flag} NAME is required: {source}")
        return ModelConfig(name, overrides)
    if name not in (None, trained["name"]):
        raise ValueError(f"checkpoint {checkpoint.path} holds a {trained['name']} model, not {flag} {name}")
    return ModelConfig(trained["name"], {**trained["kwargs"], **overrides})


def load_weights(model: nn.Module, checkpoint: Checkpoint) -> None:
    """Load our own state_dict or an upstream checkpoint (told apart by upstream's key names).

    Either may sit in a training-script wrapper. The weights must fit the model exactly, or a
    ``ValueError`` names what does not.
    """
    path, state = checkpoint.path, unwrap(checkpoint.content)
    if any(key.startswith(UPSTREAM_PREFIXES) for key in state):
        try:
            load_upstream_state_dict(model, checkpoint.content)
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


def parse_data(spec: str) -> tuple[str, str | None, int | None]:
    """(dataset, root folder, synthetic sample count) of a ``--data`` spec."""
    dataset, colon, arg = spec.partition(":")
    if dataset in FOLDER_DATASETS:
        if not arg:
            raise ValueError(f"--data {dataset} needs its folder: --data {dataset}:ROOT")
        return dataset, arg, None
    if dataset == "synthetic":
        if colon and not (arg.isdigit() and int(arg) >= 1):
            raise ValueError(f"--data synthetic:N needs a whole number N >= 1, got {arg!r}")
        return dataset, None, int(arg) if arg else SYNTHETIC_SAMPLES
    if spec == "digits":
        return dataset, None, None
    raise ValueError(f"unknown --data {spec!r}; allowed: {', '.join(DATA_KINDS)}")


def eval_config(spec: str, model: ModelConfig, *, batch_size: int, num_workers: int | None, device: str) -> TrainConfig:
    """The TrainConfig whose evaluation split ``--data`` names: the dataset's recipe around ``model``."""
    dataset, root, samples = parse_data(spec)
    base = load_recipe(dataset) if dataset in RECIPES else {"data": {"num_workers": 0}}
    data = {"dataset": dataset, "root": root, "eval_batch_size": batch_size, "frames": None, "eval_size": samples}
    if num_workers is not None:
        data["num_workers"] = num_workers
    return TrainConfig.from_dict(
        {
            **base,
            "model": dataclasses.asdict(model),
            "data": {**base["data"], **data},
            "runtime": {**base.get("runtime", {}), "device": device},
        }
    )


def data_input(config: TrainConfig) -> InputSpec:
    """What the data gives: its recipe model's input and classes; synthetic data and event frames follow the model."""
    ours = input_spec(config.model)
    if config.data.dataset == "synthetic":
        return ours
    given = input_spec(ModelConfig(**load_recipe(config.data.dataset)["model"]))
    if given.input_kind == ours.input_kind == "event":  # frames are integrated at the model's T
        given = dataclasses.replace(given, input_shape=(ours.input_shape[0], *given.input_shape[1:]))
    return given


def check_fits(model: ModelConfig, dataset: str, given: InputSpec) -> None:
    """A ``ValueError`` naming both unless ``model`` takes exactly what ``dataset`` gives."""
    takes = input_spec(model)
    if takes == given:
        return

    def describe(spec: InputSpec) -> str:
        return f"{spec.input_kind} inputs {list(spec.input_shape)} in {spec.num_classes} classes"

    classes_only = dataclasses.replace(takes, num_classes=given.num_classes) == given
    hint = f"; pass --num-classes {given.num_classes}" if classes_only else ""
    raise ValueError(f"model {model.name} takes {describe(takes)}, but --data {dataset} gives {describe(given)}{hint}")


def measure(
    name: str, model: nn.Module, loader: DataLoader, batches: int, counts: tuple[int, ...], **energy: float
) -> list[EnergyReport]:
    """One pass of ``model`` over the first ``batches`` batches, with a progress bar; a report per convention."""
    with tqdm(
        itertools.islice(loader, batches), total=batches, desc=f"energy {name}", unit="batch", file=sys.stderr
    ) as progress:
        reports = measure_conventions(model, progress, counts, **energy)
    note = f"data: {loader.dataset.info}"
    return [dataclasses.replace(r, model=name, notes=[*r.notes, note]) for r in reports]


def comparison(report: EnergyReport, baselines: list[EnergyReport]) -> dict[str, Any]:
    """The saving of ``report`` against each counting of the baseline, with the baseline's reports."""
    return {
        "model": baselines[0].model,
        "conventions": [
            {
                "max_spike_count": b.max_spike_count,
                "counting": BASELINE_CONVENTIONS[b.max_spike_count],
                "saving": report.saving_vs(b),
                "report": b.to_dict(),
            }
            for b in baselines
        ],
    }


def comparison_table(report: EnergyReport, baselines: list[EnergyReport]) -> str:
    lines = [
        f"## Energy of {report.model} vs {baselines[0].model} (the same {report.images} images)",
        "",
        f"| {baselines[0].model} counted with | its energy (mJ) | its MACs (G) | its ACs (G) | "
        f"{report.model} (mJ) | saving |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {BASELINE_CONVENTIONS[b.max_spike_count]} | {b.energy_mj:.4f} | {b.macs / GIGA:.4f} | {b.acs / GIGA:.4f} | "
        f"{report.energy_mj:.4f} | {report.saving_vs(b):.2%} |"
        for b in baselines
    ]
    if baselines[0].top1 is not None:
        lines += ["", f"- {baselines[0].model} top-1 on these images: {baselines[0].top1:.2%}"]
    return "\n".join(lines) + "\n"


def _device(requested: str) -> torch.device:
    try:
        return default_device(requested)
    except RuntimeError as err:
        raise ValueError(f"--device {requested}: {err}") from err


def _model(
    name: str | None, checkpoint: str | None, overrides: dict[str, Any], flag: str
) -> tuple[ModelConfig, nn.Module]:
    """The model ``flag`` names or ``checkpoint`` records, built and loaded."""
    weights = read_checkpoint(checkpoint) if checkpoint else None
    config = model_config(name, weights, overrides, flag)
    model = build_model(config.name, **config.kwargs)
    if weights is not None:
        load_weights(model, weights)
    return config, model


def run(args: argparse.Namespace) -> int:
    device = _device(args.device)
    overrides = {"num_classes": args.num_classes, "T": args.T, "num_heads": args.num_heads}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    main_cfg, main = _model(args.model, args.checkpoint, overrides, "--model")
    baseline = None
    if args.baseline or args.baseline_checkpoint:
        baseline = _model(args.baseline, args.baseline_checkpoint, overrides, "--baseline")
    config = eval_config(
        args.data, main_cfg, batch_size=args.batch_size, num_workers=args.num_workers, device=args.device
    )
    given = data_input(config)
    for model_cfg in (main_cfg, baseline[0]) if baseline else (main_cfg,):
        check_fits(model_cfg, config.data.dataset, given)
    # Models, weights and data are checked before the first batch, and nothing prints before every pass ends.
    loader = build_eval_loader(config)
    batches = min(len(loader), args.max_batches or len(loader))
    energy = {"e_mac_pj": args.e_mac, "e_ac_pj": args.e_ac}
    (report,) = measure(main_cfg.name, main.to(device), loader, batches, (args.max_spike_count,), **energy)
    if baseline is None:
        print(report.to_json() if args.format == "json" else report.to_table())
        return 0
    counts = tuple(BASELINE_CONVENTIONS)
    baselines = measure(baseline[0].name, baseline[1].to(device), loader, batches, counts, **energy)
    if args.format == "json":
        print(json.dumps({**report.to_dict(), "baseline": comparison(report, baselines)}, indent=2))
    else:
        print(report.to_table() + "\n" + comparison_table(report, baselines))
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
    models = sorted(MODEL_CONFIGS)
    parser.add_argument(
        "--model",
        choices=models,
        metavar="NAME",
        help="registered model, e.g. spikingformer_8_512 (default: the one --checkpoint records)",
    )
    parser.add_argument(
        "--checkpoint", metavar="PATH", help="our checkpoint file or run folder, or an upstream .pth/.pth.tar"
    )
    parser.add_argument("--data", default="synthetic", help=f"{' | '.join(DATA_KINDS)} (default: synthetic)")
    parser.add_argument("--max-batches", type=_positive, metavar="N", help="stop after this many batches")
    parser.add_argument("--batch-size", type=_positive, default=16, metavar="N", help="default %(default)s")
    parser.add_argument(
        "--num-workers", type=int, metavar="N", help="DataLoader workers (default: the dataset recipe's)"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when present")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--num-classes", type=_positive, help="override the class count (both models)")
    parser.add_argument("--T", type=_positive, help="override the time steps (both models)")
    parser.add_argument("--num-heads", type=_positive, help="override the head count (both models)")
    parser.add_argument(
        "--max-spike-count",
        type=_positive,
        default=1,
        help="spike counts up to this value count as AC (1: upstream; 30: upstream's "
        "alternative convention for Spikformer's spike sums)",
    )
    parser.add_argument("--baseline", choices=models, metavar="NAME", help="second model, e.g. spikformer_8_768")
    parser.add_argument("--baseline-checkpoint", metavar="PATH", help="the baseline's checkpoint, as --checkpoint")
    parser.add_argument("--e-mac", type=float, default=E_MAC_PJ, help="pJ per MAC (default %(default)s)")
    parser.add_argument("--e-ac", type=float, default=E_AC_PJ, help="pJ per AC (default %(default)s)")
    parser.set_defaults(func=run)
