"""Reading training checkpoints: every failure says why, and a run resumes from the newest intact checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
import torch

from spikingformer.checkpoints.loading import read_checkpoint
from spikingformer.checkpoints.training import (
    BEST,
    LAST,
    CheckpointError,
    load_checkpoint,
    newest_intact,
    resume_candidates,
    save_checkpoint,
)
from spikingformer.config import TrainConfig
from spikingformer.training.engine import Callback, fit


def _write(path: Path, epoch: int) -> Path:
    return save_checkpoint({"epoch": epoch, "model": {"w": torch.full((64,), float(epoch))}}, path)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_every_unreadable_file_says_why(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"cannot read checkpoint {empty}: the file is empty \(0 bytes\)"):
        load_checkpoint(empty)
    with pytest.raises(ValueError, match=rf"cannot read checkpoint {empty}: the file is empty"):
        read_checkpoint(empty)  # what `sfh energy` and the final evaluation read files with
    cut = _write(tmp_path / "cut.pt", 3)
    _truncate(cut)
    with pytest.raises(CheckpointError, match=rf"{cut}: it is truncated or corrupt \(\d+ bytes"):
        load_checkpoint(cut)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match=rf"{text}: not a PyTorch checkpoint"):
        load_checkpoint(text)
    pickled = tmp_path / "pickled.pt"
    torch.save({"epoch": 1, "args": argparse.Namespace(lr=0.1)}, pickled)  # as timm's train.py pickles its args
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(pickled)
    message = str(refused.value)
    assert "safe loading refuses (Unsupported global: GLOBAL argparse.Namespace)" in message
    assert "could run code the file carries" in message and "only for files you made yourself" in message


def test_the_newest_intact_checkpoint_is_chosen_and_skipped_files_are_named(tmp_path: Path, caplog) -> None:
    last, best = _write(tmp_path / "run" / LAST, 5), _write(tmp_path / "run" / BEST, 3)
    older = _write(tmp_path / "older" / LAST, 4)
    candidates = [*resume_candidates(tmp_path / "run"), *resume_candidates(tmp_path / "older")]
    assert candidates == [last, best, older]
    assert newest_intact(candidates).path == last
    _truncate(last)
    with caplog.at_level(logging.WARNING, logger="spikingformer.checkpoints.training"):
        chosen = newest_intact(candidates)
    assert (chosen.path, chosen.content["epoch"]) == (older, 4)  # epoch 4 beats best.pt's 3
    assert chosen.content["model"]["w"].eq(4.0).all()
    assert [s.split(":")[0] for s in chosen.skipped] == [f"cannot read checkpoint {last}"]
    assert f"cannot read checkpoint {last}: it is truncated or corrupt" in caplog.text
    assert f"resuming from {older} (epoch 4) instead" in caplog.text
    for path in (older, best):
        path.write_bytes(b"")
    with pytest.raises(CheckpointError) as none:
        newest_intact(candidates)
    assert str(none.value).startswith("no intact checkpoint to resume from; tried:")
    assert all(str(p) in str(none.value) for p in (last, best, older))


class _CrashAfterEpoch1(Callback):
    def on_epoch_end(self, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
        if metrics["epoch"] == 1:
            raise KeyboardInterrupt  # the run dies once epoch 1's checkpoint is on disk


@pytest.mark.train
def test_fit_resumes_from_the_intact_best_when_last_is_truncated(tmp_path: Path, caplog) -> None:
    config = TrainConfig.from_dict({
        "model": {"name": "spikingformer_cifar_2_384", "kwargs": {"embed_dim": 16, "depth": 1, "num_heads": 2,
                                                                  "T": 1}},
        "data": {"dataset": "digits", "batch_size": 16, "train_size": 48, "eval_size": 30, "num_workers": 0},
        "schedule": {"epochs": 3, "warmup_epochs": 0, "cooldown_epochs": 0},
        "runtime": {"device": "cpu", "amp": "none"},
    })
    with pytest.raises(KeyboardInterrupt):
        fit(config, checkpoint_dir=tmp_path, callbacks=[_CrashAfterEpoch1()])
    best_epoch = load_checkpoint(tmp_path / BEST)["epoch"]
    _truncate(tmp_path / LAST)
    with caplog.at_level(logging.WARNING, logger="spikingformer.checkpoints.training"):
        result = fit(config, checkpoint_dir=tmp_path, resume_from=tmp_path)
    assert f"cannot read checkpoint {tmp_path / LAST}: it is truncated or corrupt" in caplog.text
    assert f"resuming from {tmp_path / BEST} (epoch {best_epoch}) instead" in caplog.text
    assert [int(h["epoch"]) for h in result.history] == [0, 1, 2]  # the best epoch's history, then the rest
    assert load_checkpoint(tmp_path / LAST)["epoch"] == 2
