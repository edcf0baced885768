"""The engine: timm schedule semantics, recipes against upstream's configs, metrics, checkpoints and exact resume."""

from __future__ import annotations

import copy
import math
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.training import AUGMENTED, TINY_MODEL, Crash, untimed
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from spikingformer._validation import ConfigError, deep_merge
from spikingformer.checkpoints.training import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from spikingformer.config import TrainConfig
from spikingformer.models import build_model
from spikingformer.recipes import list_recipes, load_recipe
from spikingformer.training.distributed import default_device
from spikingformer.training.engine import SELECTION, Callback, FitResult, fit, set_up
from spikingformer.training.epoch import RunState, amp_dtype, build_criterion, train_one_epoch
from spikingformer.training.optim import build_optimizer, build_scheduler, scaled_lr


def lrs(recipe: str, epochs: list[int]) -> list[float]:
    config = TrainConfig.from_dict(load_recipe(recipe))
    optimizer = build_optimizer(torch.nn.Linear(2, 2), config.optim, config.optim.lr)
    scheduler = build_scheduler(optimizer, config.schedule)
    out = []
    for epoch in epochs:
        scheduler.step(epoch)
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_imagenet_schedule_is_timm_cosine_on_the_raw_epoch() -> None:
    start, warm, half, cos_end, cooldown = lrs("imagenet", [0, 10, 150, 299, 305])
    assert start == pytest.approx(1e-6)
    assert warm == pytest.approx(1e-6 + 10 * (5e-4 - 1e-6) / 20)
    assert half == pytest.approx(2.55e-4)  # warmup is inside the cosine, not a prefix
    assert cos_end == pytest.approx(1e-5 + 0.5 * 4.9e-4 * (1 + math.cos(math.pi * 299 / 300)))
    assert cooldown == pytest.approx(1e-5)
    assert lrs("cifar10", [0])[0] == pytest.approx(1e-5)
    assert lrs("cifar10-dvs", [48])[0] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))


def test_recipes_validate_and_carry_spec_values() -> None:
    assert {"imagenet", "cifar10", "cifar100", "cifar10-dvs", "dvs128-gesture"} <= set(list_recipes())
    configs = {name: TrainConfig.from_dict(load_recipe(name), name) for name in list_recipes()}
    imagenet, c10, c100 = configs["imagenet"], configs["cifar10"], configs["cifar100"]
    dvs, gesture = configs["cifar10-dvs"], configs["dvs128-gesture"]
    assert (imagenet.optim.lr, imagenet.optim.weight_decay, imagenet.data.batch_size) == (5e-4, 0.05, 36)
    assert imagenet.data.recipe_global_batch == 288 and configs["imagenet-8-768"].data.recipe_global_batch == 192
    assert configs["imagenet-8-768"].data.batch_size == 24
    assert imagenet.schedule.total_epochs == 310 and imagenet.schedule.warmup_lr == 1e-6
    assert (imagenet.augment.mixup_alpha, imagenet.augment.cutmix_alpha, imagenet.augment.mixup_off_epoch) == (
        0.8, 1.0, None)
    assert imagenet.augment.auto_augment == "rand-m9-mstd0.5-inc1" and imagenet.augment.re_prob == 0.25
    assert (c10.model.kwargs["num_heads"], c100.model.kwargs["num_heads"]) == (12, 8)
    assert (c10.model.kwargs["num_classes"], c100.model.kwargs["num_classes"]) == (10, 100)
    assert (c10.optim.weight_decay, c10.data.batch_size, c10.schedule.warmup_lr) == (0.06, 64, 1e-5)
    assert (c10.schedule.epochs, configs["cifar10-400e"].schedule.epochs, configs["cifar100-400e"].schedule.epochs) == (
        300, 400, 400)
    assert (c10.augment.mixup_alpha, c10.augment.cutmix_alpha, c10.augment.mixup_off_epoch) == (0.5, 0.0, 200)
    assert c10.augment.auto_augment == "rand-m9-n1-mstd0.4-inc1" and c10.augment.mean == (0.4914, 0.4822, 0.4465)
    for cfg in (dvs, gesture):
        assert cfg.model.kwargs["tau"] == 1.5 and cfg.model.kwargs["num_heads"] == 16 and cfg.model.kwargs["T"] == 16
        assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.data.batch_size) == (1e-3, 0.06, 16)
        assert (cfg.augment.mixup_prob, cfg.augment.mixup_off_epoch, cfg.augment.dvs_augment) == (0.5, 75, True)
        assert (cfg.schedule.warmup_epochs, cfg.schedule.cooldown_epochs, cfg.runtime.amp_eval) == (10, 10, False)
    assert (dvs.schedule.total_epochs, gesture.schedule.total_epochs) == (106, 202)
    assert (dvs.model.kwargs["num_classes"], gesture.model.kwargs["num_classes"]) == (10, 11)
    assert configs["cifar10-dvs-t10"].data.frames == configs["cifar10-dvs-t10"].model.kwargs["T"] == 10
    assert all(cfg.model.kwargs.get("drop_path_rate", 0.0) == 0.0 for cfg in configs.values())
    with pytest.raises(ValueError, match="unknown recipe"):
        load_recipe("mnist")


def test_recipe_copies_are_independent() -> None:
    recipe = load_recipe("cifar10")
    recipe["optim"]["lr"] = 1.0
    assert load_recipe("cifar10")["optim"]["lr"] == 5e-4


def test_weight_decay_only_on_weights_and_linear_lr_rule() -> None:
    model = build_model(TINY_MODEL["name"], **TINY_MODEL["kwargs"])
    config = TrainConfig()
    optimizer = build_optimizer(model, config.optim, 1e-3)
    decay = {g["weight_decay"]: [p.ndim for p in g["params"]] for g in optimizer.param_groups}
    assert set(decay) == {0.0, 0.05}
    assert all(n <= 1 for n in decay[0.0]) and all(n > 1 for n in decay[0.05])
    assert type(optimizer).__name__ == "AdamW"
    linear = TrainConfig.from_dict({"optim": {"lr_scaling": "linear", "base_batch": 256}}).optim
    assert scaled_lr(linear, 512) == pytest.approx(1e-3) and scaled_lr(config.optim, 512) == 5e-4


def test_loss_follows_mixup_and_smoothing() -> None:
    loss, mixup = build_criterion(TrainConfig.from_dict(load_recipe("cifar10")).augment, 10)
    assert isinstance(loss, SoftTargetCrossEntropy) and mixup.mixup_alpha == 0.5 and mixup.label_smoothing == 0.1
    loss, mixup = build_criterion(TrainConfig().augment, 10)
    assert isinstance(loss, LabelSmoothingCrossEntropy) and mixup is None
    with pytest.raises(ConfigError, match="must be even with mixup"):
        TrainConfig.from_dict(deep_merge(load_recipe("cifar10"), {"data": {"batch_size": 63}}))


@pytest.mark.parametrize("section,key,value,allowed", [
    ("augment", "re_mode", "zero", "is not one of ['const', 'rand', 'pixel']"),
    ("augment", "interpolation", "cubic", "is not one of ['bilinear', 'bicubic'"),
    ("augment", "re_count", 0, "is not allowed (>= 1)"),
    ("augment", "mixup_off_epoch", 0, "is not allowed (null (never) or an epoch >= 1)"),
    ("schedule", "warmup_lr", -1e-6, "is not allowed (>= 0)"),
    ("schedule", "min_lr", -1e-5, "is not allowed (>= 0)"),
])
def test_config_errors_name_key_value_and_what_is_allowed(section: str, key: str, value, allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({section: {key: value}}, "row.yaml")
    assert str(err.value).startswith(f"row.yaml.{section}.{key}: {value!r} {allowed}")


def test_cpu_runs_fp32_and_cuda_request_without_gpu_fails() -> None:
    assert amp_dtype(TrainConfig().runtime, torch.device("cpu")) is None
    assert default_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            default_device("cuda")


def test_default_device_spreads_ranks_over_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [default_device("auto", rank) for rank in range(3)] == [torch.device("cuda", r) for r in (0, 1, 0)]
    assert default_device("cpu", 1) == torch.device("cpu")


@pytest.mark.parametrize("amp,bf16,expected", [
    ("none", True, None), ("bf16", False, torch.bfloat16), ("fp16", True, torch.float16),
    ("auto", True, torch.bfloat16), ("auto", False, torch.float16),
])
def test_amp_dtype_per_setting(monkeypatch: pytest.MonkeyPatch, amp: str, bf16: bool, expected) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    runtime = TrainConfig.from_dict({"runtime": {"amp": amp}}).runtime
    assert amp_dtype(runtime, torch.device("cuda", 0)) == expected
    assert amp_dtype(runtime, torch.device("cpu")) is None


def linear_run(optim: dict) -> RunState:
    """A RunState around a linear classifier and plain SGD (lr 1, held by a per-epoch schedule from 1 to 1), so an
    update is minus the gradient."""
    model = nn.Linear(4, 3)
    config = TrainConfig.from_dict({"optim": optim, "schedule": {"warmup_epochs": 0, "min_lr": 1.0}})
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, config.schedule)
    return RunState(
        config=config, model=model, net=model, optimizer=optimizer, scheduler=scheduler,
        scaler=torch.amp.GradScaler("cpu", enabled=False), ema=None, criterion=nn.CrossEntropyLoss(), mixup=None,
        device=torch.device("cpu"), dtype=None, train_loader=None, eval_loader=None, rank=0, world=1, global_batch=4,
    )


def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randn(4, 4), torch.randint(3, (4,))) for _ in range(n)]


def sgd_step(model: nn.Module, loss: torch.Tensor) -> None:
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= p.grad


def test_short_last_accumulation_group_is_a_mean_of_its_own_batches() -> None:
    run = linear_run({"grad_accum_steps": 2})
    reference = copy.deepcopy(run.model)
    data = batches(3)  # groups {0, 1} and {2}
    train_one_epoch(run, data, epoch=0, progress=False)
    ce = nn.functional.cross_entropy
    sgd_step(reference, (ce(reference(data[0][0]), data[0][1]) + ce(reference(data[1][0]), data[1][1])) / 2)
    sgd_step(reference, ce(reference(data[2][0]), data[2][1]))  # not halved: the group holds one batch
    assert run.num_updates == 2
    for got, want in zip(run.model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_clip_grad_bounds_the_update() -> None:
    data = batches(1)
    steps = {}
    for clip in (None, 0.01):
        run = linear_run({"clip_grad": clip})
        before = [p.detach().clone() for p in run.model.parameters()]
        train_one_epoch(run, data, epoch=0, progress=False)
        after = run.model.parameters()
        steps[clip] = float(torch.cat([(p.detach() - b).flatten() for p, b in zip(after, before, strict=True)]).norm())
    assert steps[None] > 0.05 and steps[0.01] == pytest.approx(0.01, rel=1e-4)


def test_checkpoint_restores_generator_positions(tmp_path: Path) -> None:
    def draws() -> tuple:
        return random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(4).tolist()

    random.gauss(0, 1), np.random.randn()  # both keep a cached gaussian: part of the state
    save_checkpoint({"rng": [rng_state(torch.device("cpu"))]}, tmp_path / "rng.pt")
    after_save = draws()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"][0], torch.device("cpu"))  # weights_only=True
    assert draws() == after_save


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    with pytest.raises(Exception):  # noqa: B017 - pickling fails after the write began
        save_checkpoint({"epoch": 2, "w": torch.zeros(3), "callback": lambda: None}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


class Recorder(Callback):
    def __init__(self) -> None:
        self.epochs: list[tuple[dict, Path | None]] = []
        self.result: FitResult | None = None

    def on_epoch_end(self, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
        self.epochs.append((metrics, checkpoint_path))

    def on_fit_end(self, result: FitResult) -> None:
        self.result = result


class CrashAfter(Callback):
    """Kills the run after ``epochs`` epochs, once that epoch's checkpoint is on disk."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
        if metrics["epoch"] + 1 == self.epochs:
            raise Crash


@pytest.mark.train
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_equals_the_uninterrupted_run(tmp_path: Path, workers: int) -> None:
    config = TrainConfig.from_dict(deep_merge(AUGMENTED, {"data": {"num_workers": workers}}))
    straight = fit(config, checkpoint_dir=tmp_path / "straight")
    with pytest.raises(Crash):
        fit(config, checkpoint_dir=tmp_path / "split", callbacks=[CrashAfter(2)])
    assert load_checkpoint(tmp_path / "split")["epoch"] == 1
    recorder = Recorder()
    resumed = fit(config, checkpoint_dir=tmp_path / "split", resume_from=tmp_path / "split", callbacks=[recorder])
    assert [m["epoch"] for m, _ in recorder.epochs] == [2, 3]  # only the epochs the crash lost
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    for part in ("model", "ema"):
        for key, value in a[part].items():
            torch.testing.assert_close(b[part][key], value, rtol=0, atol=1e-6)
    assert resumed.weights_sha256 == straight.weights_sha256
    assert len(resumed.history) == 4 and untimed(resumed.history) == untimed(straight.history)
    assert resumed.best_top1 == straight.best_top1 and resumed.ema_top1 == straight.ema_top1


@pytest.mark.train
def test_fit_reports_metrics_checkpoints_and_labels(tmp_path: Path) -> None:
    config = TrainConfig.from_dict(deep_merge(AUGMENTED, {
        "schedule": {"epochs": 3}, "optim": {"grad_accum_steps": 2},
        "runtime": {"eval_every": 2, "ema_decay": None}, "augment": {"mixup_alpha": 0.0, "cutmix_alpha": 0.0},
    }))
    recorder = Recorder()
    result = fit(config, callbacks=[recorder], checkpoint_dir=tmp_path)
    keys = {"epoch", "train_loss", "eval_loss", "top1", "top5", "lr", "epoch_time_s", "img_per_s", "peak_mem_mb"}
    assert [m["epoch"] for m, _ in recorder.epochs] == [0, 1, 2]
    assert all(keys <= set(m) for m, _ in recorder.epochs)
    assert math.isnan(recorder.epochs[0][0]["top1"]) and not math.isnan(recorder.epochs[1][0]["top1"])
    assert [p for _, p in recorder.epochs] == [tmp_path / "last.pt"] * 3  # epoch 0: checkpoint_every 1
    assert recorder.result is result and result.global_batch == 32 and result.recipe_global_batch is None
    assert result.selection == SELECTION and result.ema_top1 is None
    assert result.last_top1 == result.history[-1]["top1"]
    assert result.best_top1 == max(h["top1"] for h in result.history if not math.isnan(h["top1"]))
    assert result.best_checkpoint == tmp_path / "best.pt" and result.last_checkpoint == tmp_path / "last.pt"
    assert result.data_info["train"]["size"] == 96 and result.data_info["eval"]["fingerprint"]
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["epoch"] == 2 and ckpt["num_updates"] == 3 * 3  # 6 batches per epoch, 2 per update
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "scaler", "ema", "history", "best_top1", "config", "rng"}
    assert len(ckpt["rng"]) == ckpt["world_size"] == 1 and ckpt["rng"][0]["cuda"] is None
    with pytest.raises(ValueError, match="runtime.seed"):
        fit(TrainConfig.from_dict(deep_merge(config.to_dict(), {"runtime": {"seed": 8}})), resume_from=tmp_path)
    finished = fit(config, resume_from=tmp_path / "last.pt")  # nothing left to train: the stored figures
    assert untimed(finished.history) == untimed(result.history)
    assert torch.equal(torch.get_rng_state(), ckpt["rng"][0]["torch"])  # the generators were put back


class StopAfter(Callback):
    """Asks the engine to stop once ``epochs`` epochs are done, as the convergence guard does."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.done = epochs, 0

    def on_epoch_end(self, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
        self.done += 1

    def stop_reason(self) -> str | None:
        return "enough" if self.done >= self.epochs else None


@pytest.mark.train
def test_a_callback_stops_training_and_the_result_says_why(tmp_path: Path) -> None:
    config = TrainConfig.from_dict(deep_merge(AUGMENTED, {"schedule": {"epochs": 3}}))
    recorder = Recorder()
    result = fit(config, callbacks=[StopAfter(1), recorder], checkpoint_dir=tmp_path)
    assert [m["epoch"] for m, _ in recorder.epochs] == [0] and len(result.history) == 1
    assert result.stopped == "enough" and recorder.result is result  # on_fit_end still runs
    assert fit(config, callbacks=[StopAfter(9)]).stopped is None


@pytest.mark.train
def test_mixup_switches_off_at_its_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    mixed: list[list[bool]] = [[]]
    targets: list[torch.Tensor] = []
    real_call = Mixup.__call__

    def spy(self: Mixup, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        before = x.clone()
        x, soft = real_call(self, x, target)
        mixed[-1].append(not torch.equal(x, before))
        targets.append(soft)
        return x, soft

    class NextEpoch(Callback):
        def on_epoch_end(self, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
            mixed.append([])

    monkeypatch.setattr(Mixup, "__call__", spy)
    config = TrainConfig.from_dict(deep_merge(AUGMENTED, {
        "data": {"train_size": 32, "eval_size": 16}, "schedule": {"epochs": 3},
        "augment": {"auto_augment": None, "re_prob": 0.0, "cutmix_alpha": 0.0, "mixup_off_epoch": 2},
        "runtime": {"ema_decay": None},
    }))
    fit(config, callbacks=[NextEpoch()])
    assert mixed[:3] == [[True, True], [True, True], [False, False]]
    assert len(torch.cat(targets[:4]).unique()) > 2  # epochs 0-1: mixed soft targets
    off = torch.cat(targets[-2:])  # epoch 2: smoothed one-hot targets, still for SoftTargetCE
    assert off.unique().tolist() == pytest.approx([0.01, 0.91])


def test_channels_last_runs_on_cpu() -> None:
    config = TrainConfig.from_dict(deep_merge(AUGMENTED, {
        "data": {"train_size": 32, "eval_size": 16}, "schedule": {"epochs": 1},
        "runtime": {"channels_last": True, "ema_decay": None},
    }))
    result = fit(config)
    assert math.isfinite(result.history[0]["train_loss"]) and not math.isnan(result.last_top1)


@pytest.mark.train
def test_tiny_model_learns_digits() -> None:
    began = time.perf_counter()
    result = fit(TrainConfig.from_dict(load_recipe("digits")))
    print(f"digits recipe: last top-1 {result.last_top1:.2f}, best {result.best_top1:.2f}, "
          f"{time.perf_counter() - began:.0f} s")
    assert result.last_top1 >= 90.0


@pytest.mark.train
def test_finetune_starts_from_a_digits_checkpoint(tmp_path: Path) -> None:
    """``model.finetune``: a digits run's checkpoint folder is where a second digits run starts (every weight,
    the head too: same classes). A checkpoint of another class count loads all but its classifier, which is
    new (timm's ``reset_classifier``); the run trains from there."""
    short = {"schedule": {"epochs": 1, "cooldown_epochs": 0}, "data": {"max_train_batches": 4}}
    digits = deep_merge(load_recipe("digits"), short)
    source = fit(TrainConfig.from_dict(digits), checkpoint_dir=tmp_path / "source")
    tuned = set_up(TrainConfig.from_dict(deep_merge(digits, {"model": {"finetune": str(tmp_path / "source")}})))
    trained = load_checkpoint(source.last_checkpoint)["model"]
    assert all(torch.equal(tuned.model.state_dict()[k], v) for k, v in trained.items())

    five = build_model(digits["model"]["name"], **{**digits["model"]["kwargs"], "num_classes": 5})
    torch.save(five.state_dict(), tmp_path / "five.pth")
    config = TrainConfig.from_dict(deep_merge(digits, {"model": {"finetune": str(tmp_path / "five.pth")}}))
    tuned = set_up(config)
    body = {k: v for k, v in five.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(tuned.model.state_dict()[k], v) for k, v in body.items())
    assert tuned.model.head.weight.shape[0] == 10
    result = fit(config)
    assert math.isfinite(result.history[-1]["train_loss"]) and result.last_top1 > 0

    with pytest.raises(FileNotFoundError, match="nowhere"):
        set_up(TrainConfig.from_dict(deep_merge(digits, {"model": {"finetune": str(tmp_path / "nowhere.pth")}})))
