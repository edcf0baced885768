"""``python -m spikingformer.energy`` (``sfh energy``): measure what the command line asks (its options and
what they mean: ``spikingformer.energy.arguments``)."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from spikingformer import MODEL_CONFIGS, build_model
from spikingformer.checkpoints.loading import load_weights, model_config, read_checkpoint
from spikingformer.config import ModelConfig, TrainConfig
from spikingformer.data.loaders import build_eval_loader
from spikingformer.energy import E_AC_PJ, E_MAC_PJ, GIGA, EnergyConvention, EnergyReport, measure_conventions
from spikingformer.energy.arguments import DATA_KINDS, FOLDER_DATASETS, build_parser
from spikingformer.energy.memory import measure_memory_inclusive
from spikingformer.evaluate import first_images
from spikingformer.models.registry import InputSpec, input_spec, unknown_model
from spikingformer.recipes import RECIPES, load_recipe
from spikingformer.training.distributed import default_device

#: Samples a ``synthetic`` spec draws when it names no count.
SYNTHETIC_SAMPLES = 32


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
    ours = input_spec(config.model.name, **config.model.kwargs)
    if config.data.dataset == "synthetic":
        return ours
    recipe_model = load_recipe(config.data.dataset)["model"]
    given = input_spec(recipe_model["name"], **recipe_model["kwargs"])
    if given.input_kind == ours.input_kind == "event":  # frames are integrated at the model's T
        given = dataclasses.replace(given, input_shape=(ours.input_shape[0], *given.input_shape[1:]))
    return given


def check_fits(model: ModelConfig, dataset: str, given: InputSpec) -> None:
    """A ``ValueError`` naming both unless ``model`` takes exactly what ``dataset`` gives."""
    takes = input_spec(model.name, **model.kwargs)
    if takes == given:
        return

    def describe(spec: InputSpec) -> str:
        return f"{spec.input_kind} inputs {list(spec.input_shape)} in {spec.num_classes} classes"

    classes_only = dataclasses.replace(takes, num_classes=given.num_classes) == given
    hint = f"; pass --num-classes {given.num_classes}" if classes_only else ""
    raise ValueError(f"model {model.name} takes {describe(takes)}, but --data {dataset} gives {describe(given)}{hint}")


def measure(
    name: str, model: nn.Module, loader: DataLoader, batches: int, conventions: list[EnergyConvention],
    **energy: float,
) -> list[EnergyReport]:
    """One pass of ``model`` over the first ``batches`` batches, with a progress bar; a report per convention."""
    with tqdm(
        itertools.islice(loader, batches), total=batches, desc=f"energy {name}", unit="batch", file=sys.stderr
    ) as progress:
        reports = measure_conventions(model, progress, conventions, **energy)
    note = f"data: {loader.dataset.info}"
    return [dataclasses.replace(r, model=name, notes=[*r.notes, note]) for r in reports]


def baseline_conventions(model: nn.Module) -> list[EnergyConvention]:
    """The distinct countings the baseline's family declares (for Spikformer: its spike sums as MACs, the
    paper's, and as ACs up to 30 spikes, upstream's alternative), in declaration order."""
    distinct: dict[tuple[int, bool], EnergyConvention] = {}
    for convention in model.energy_conventions().values():
        distinct.setdefault((convention.max_spike_count, convention.first_layer_once), convention)
    return list(distinct.values())


def counting(convention: EnergyConvention) -> str:
    return f"{convention.name}: {convention.description}" if convention.description else convention.name


def comparison(
    report: EnergyReport, baselines: list[EnergyReport], conventions: list[EnergyConvention]
) -> dict[str, Any]:
    """The saving of ``report`` against each counting of the baseline, with the baseline's reports."""
    return {
        "model": baselines[0].model,
        "conventions": [
            {
                "convention": c.name,
                "max_spike_count": b.max_spike_count,
                "counting": counting(c),
                "saving": report.saving_vs(b),
                "report": b.to_dict(),
            }
            for b, c in zip(baselines, conventions, strict=True)
        ],
    }


def comparison_table(
    report: EnergyReport, baselines: list[EnergyReport], conventions: list[EnergyConvention]
) -> str:
    lines = [
        f"## Energy of {report.model} vs {baselines[0].model} (the same {report.images} images)",
        "",
        f"| {baselines[0].model} counted with | its energy (mJ) | its MACs (G) | its ACs (G) | "
        f"{report.model} (mJ) | saving |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {counting(c)} | {b.energy_mj:.4f} | {b.macs / GIGA:.4f} | {b.acs / GIGA:.4f} | "
        f"{report.energy_mj:.4f} | {report.saving_vs(b):.2%} |"
        for b, c in zip(baselines, conventions, strict=True)
    ]
    if baselines[0].top1 is not None:
        lines += ["", f"- {baselines[0].model} top-1 on these images: {baselines[0].top1:.2%}"]
    return "\n".join(lines) + "\n"


def chosen_convention(model: nn.Module, label: str, max_spike_count: int | None) -> EnergyConvention:
    """The family's convention ``label`` (paper, common or one of its extras), its spike test overridable."""
    declared = model.energy_conventions()
    if label not in declared:
        raise ValueError(f"--convention {label!r} is not one {type(model).__name__} declares: {', '.join(declared)}")
    convention = declared[label]
    if max_spike_count is not None and max_spike_count != convention.max_spike_count:
        return dataclasses.replace(convention, name=f"{convention.name}, spike test {max_spike_count}",
                                   max_spike_count=max_spike_count)
    return convention


def _device(requested: str) -> torch.device:
    try:
        return default_device(requested)
    except RuntimeError as err:
        raise ValueError(f"--device {requested}: {err}") from err


def _model(
    name: str | None, checkpoint: str | None, overrides: dict[str, Any], flag: str
) -> tuple[ModelConfig, nn.Module]:
    """The model ``flag`` names or ``checkpoint`` records, built and loaded; ``--num-classes`` other than the
    checkpoint's gives it a new classifier of that count (e.g. an ImageNet checkpoint measured on CIFAR)."""
    weights = read_checkpoint(checkpoint) if checkpoint else None
    config = model_config(name, weights, overrides, flag)
    model = build_model(config.name, **config.kwargs)
    if weights is not None:
        load_weights(model, weights, new_head="num_classes" in overrides)
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
    energy = {"e_mac_pj": E_MAC_PJ if args.e_mac is None else args.e_mac,
              "e_ac_pj": E_AC_PJ if args.e_ac is None else args.e_ac}
    convention = chosen_convention(main, args.convention, args.max_spike_count)
    (report,) = measure(main_cfg.name, main.to(device), loader, batches, [convention], **energy)
    # what the convention counts, and where the paper's own figure cannot be recomputed (it says so)
    table = report.to_table() + f"\n- counting: {counting(convention)}"
    memory = None
    if args.memory:  # the memory-inclusive estimate and its bit-matched quantized ANN, on the first images
        memory = measure_memory_inclusive(main, [x.to(device) for x in first_images(loader, args.memory)])
        table += "\n" + memory.to_table()
    if baseline is None:
        data = {**report.to_dict(), "counting": counting(convention)}
        print(json.dumps({**data, "memory_inclusive": memory.to_dict() if memory else None}, indent=2)
              if args.format == "json" else table)
        return 0
    conventions = baseline_conventions(baseline[1])
    baselines = measure(baseline[0].name, baseline[1].to(device), loader, batches, conventions, **energy)
    if args.format == "json":
        print(json.dumps({**report.to_dict(), "baseline": comparison(report, baselines, conventions)}, indent=2))
    else:
        print(table + "\n" + comparison_table(report, baselines, conventions))
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m spikingformer.energy") -> int:
    """Parse ``argv`` and measure; a bad model, checkpoint or data folder ends in one line saying which."""
    args = build_parser(prog).parse_args(argv)
    try:
        for name in (args.model, args.baseline):
            if name is not None and name not in MODEL_CONFIGS:
                raise ValueError(unknown_model(name))
        return run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
