"""Train one configuration without Ray: ``torchrun --nproc_per_node=N -m spikingformer.train --config FILE``.

FILE holds a TrainConfig mapping, or ``rows: {NAME: mapping, ...}`` picked with ``--row NAME``. A mapping may
start from a recipe: ``recipe: cifar10`` plus keys deep-merged on top. Under torchrun (WORLD_SIZE > 1) each
process joins a gloo (CPU) or NCCL (GPU: its LOCAL_RANK GPU) group; this CLI is the only place that reads
torchrun's environment, the engine gets the device as an argument. Rank 0 prints one line per epoch (with a
tqdm bar when interactive), then measures the final figures a Ray trial logs (best/last top-1, SOPs, MACs,
energy under the family's conventions: :func:`spikingformer.evaluate.evaluate_run`) and writes them to
OUT/result.json (``final``) with the per-layer report in OUT/energy_layers.json and OUT/energy.md; every rank
writes OUT/rank<r>.json (final metrics and weight checksum) so a distributed run can be checked for agreement.
Checkpoints go to OUT/last.pt and OUT/best.pt, inside an epoch too (``runtime.checkpoint_every_minutes``,
``checkpoint_every_updates``). SIGTERM (what torchrun forwards, and Slurm or Kubernetes send before a kill) makes
every rank checkpoint at the next optimizer update and exit with status 143; ``--resume OUT`` continues there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from spikingformer import evaluate
from spikingformer._validation import ConfigError, deep_merge, load_yaml
from spikingformer.config import TrainConfig
from spikingformer.recipes import load_recipe
from spikingformer.training.distributed import rank_and_world
from spikingformer.training.engine import Callback, fit
from spikingformer.training.preemption import Preempted, StopRequest, stop_on_signals

#: Exit status after a stop request was honoured (a checkpoint written): 128 + SIGTERM, as a shell reports it.
EXIT_STOPPED = 143


def load_config(path: str | Path, row: str | None = None, epochs: int | None = None) -> TrainConfig:
    """Read FILE (optionally one of its rows), apply its recipe and the ``--epochs`` override, validate."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    doc = load_yaml(path.read_text())
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping (a TrainConfig, or rows: {{name: TrainConfig}})")
    where = str(path)
    if "rows" in doc:
        rows = doc["rows"]
        if not isinstance(rows, dict) or not rows:
            raise ConfigError(f"{path}: rows must map row names to TrainConfig mappings")
        if row is None and len(rows) > 1:
            raise ConfigError(f"{path} has several rows; pick one with --row ({', '.join(rows)})")
        row = row if row is not None else next(iter(rows))
        if row not in rows:
            raise ConfigError(f"{path}: no row {row!r}; rows: {', '.join(rows)}")
        doc, where = rows[row], f"{path}:rows.{row}"
    elif row is not None:
        raise ConfigError(f"--row {row!r} given but {path} has no rows")
    mapping: dict[str, Any] = dict(doc)
    recipe = mapping.pop("recipe", None)
    if recipe is not None:
        mapping = deep_merge(load_recipe(recipe), mapping)
    if epochs is not None:
        mapping = deep_merge(mapping, {"schedule": {"epochs": epochs}})
    return TrainConfig.from_dict(mapping, where)


def join_torchrun(config: TrainConfig) -> tuple[bool, torch.device | None]:
    """torchrun's protocol: WORLD_SIZE > 1 means join its group (NCCL on GPU, gloo on CPU) on GPU LOCAL_RANK.

    Returns (joined here, this process's device or None to let ``fit`` decide from ``runtime.device``).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False, None
    use_cuda = config.runtime.device != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if use_cuda else None
    if device is not None:
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True, device


class PrintEpochs(Callback):
    """One line per epoch (rank 0)."""

    def __init__(self, total: int) -> None:
        self.total = total

    def on_epoch_end(self, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
        line = (
            f"epoch {int(metrics['epoch']) + 1}/{self.total}  train_loss {metrics['train_loss']:.4f}  "
            f"eval_loss {metrics['eval_loss']:.4f}  top1 {metrics['top1']:.2f}  top5 {metrics['top5']:.2f}  "
            f"lr {metrics['lr']:.3g}  {metrics['epoch_time_s']:.1f}s  {metrics['img_per_s']:.0f} img/s  "
            f"peak {metrics['peak_mem_mb']:.0f} MB"
        )
        if "ema_top1" in metrics:
            line += f"  ema_top1 {metrics['ema_top1']:.2f}"
        print(line, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m spikingformer.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML file: a TrainConfig mapping or rows: {name: mapping}")
    parser.add_argument("--row", help="row name when the file has rows")
    parser.add_argument("--epochs", type=int, help="override schedule.epochs (cooldown epochs come on top)")
    parser.add_argument("--out", help="output folder (default runs/train/<config stem>[-<row>])")
    parser.add_argument("--resume", help="checkpoint file, or a folder holding last.pt")
    parser.add_argument("--energy-batches", type=int, default=8, metavar="N",
                        help="evaluation batches of the final energy pass (default 8, as sfh reproduce)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.row, args.epochs)
    except (ValueError, FileNotFoundError) as err:
        print(f"spikingformer.train: error: {err}", file=sys.stderr)
        return 2
    joined, device = join_torchrun(config)
    try:
        rank, world = rank_and_world()
        logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(message)s")
        out = Path(args.out or Path("runs/train") / "-".join(filter(None, [Path(args.config).stem, args.row])))
        out.mkdir(parents=True, exist_ok=True)
        callbacks = [PrintEpochs(config.schedule.total_epochs)] if rank == 0 else []
        with stop_on_signals(StopRequest()) as stop:
            result = fit(config, callbacks=callbacks, checkpoint_dir=out, resume_from=args.resume, device=device,
                         progress=True, stop=stop)
        final = result.history[-1] if result.history else {}
        record = {"rank": rank, "world_size": world, "weights_sha256": result.weights_sha256, "final": final}
        (out / f"rank{rank}.json").write_text(json.dumps(record, indent=2))
        if rank == 0:
            final = evaluate.evaluate_run(config, result, energy_batches=args.energy_batches, device=device)
            (out / "result.json").write_text(json.dumps({**result.to_dict(), "final": final.metrics}, indent=2))
            (out / evaluate.ENERGY_ARTIFACT).write_text(final.report.to_json())
            (out / evaluate.ENERGY_TABLE_ARTIFACT).write_text(final.report.to_table())
            print(f"best top-1 {result.best_top1:.2f} at epoch {result.best_epoch + 1} "
                  f"({result.selection['best_top1']}); last top-1 {result.last_top1:.2f} "
                  f"({result.selection['last_top1']})")
            print(f"energy {final.metrics[evaluate.ENERGY_MJ]:.4g} mJ/image, SOPs "
                  f"{final.metrics[evaluate.SOPS_G]:.4g} G, MACs {final.metrics[evaluate.MACS_G]:.4g} G "
                  f"({final.report.images} images)")
            print(f"results and checkpoints in {out}")
    except Preempted as stopped:
        if rank == 0:
            print(f"spikingformer.train: {stopped}; continue with the same command and --resume {out}", flush=True)
        return EXIT_STOPPED
    except (ValueError, FileNotFoundError) as err:
        print(f"spikingformer.train: error: {err}", file=sys.stderr)
        return 2
    finally:
        if joined:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
