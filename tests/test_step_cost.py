"""training.step_cost: the batch-halving search, the step counts of a whole run, and one real measurement."""

from __future__ import annotations

import math

import torch

from spikingformer.config import TrainConfig
from spikingformer.recipes import load_recipe
from spikingformer.training.step_cost import (
    SPLIT_SIZES,
    accumulation,
    input_source,
    largest_fitting_batch,
    measure,
    run_steps,
    split_size,
)


def test_largest_fitting_batch_halves_until_one_fits() -> None:
    tried: list[int] = []

    def fits(batch: int) -> bool:
        tried.append(batch)
        return batch <= 10

    assert largest_fitting_batch(36, fits) == 9
    assert tried == [36, 18, 9]
    assert largest_fitting_batch(24, lambda b: True) == 24  # the batch itself when it fits
    assert largest_fitting_batch(5, lambda b: False) is None  # not even one sample
    assert largest_fitting_batch(1, lambda b: b == 1) == 1


def test_accumulation_keeps_at_least_the_batch() -> None:
    assert accumulation(36, 9) == 4
    assert accumulation(24, 24) == 1
    assert accumulation(36, 8) == 5  # 40 images: the nearest accumulation that keeps >= 36
    assert all(accumulation(b, m) * m >= b for b in range(1, 50) for m in range(1, b + 1))


def test_run_steps_follow_the_engine_and_the_dataset_sizes() -> None:
    imagenet = TrainConfig.from_dict(load_recipe("imagenet"))
    steps = run_steps(imagenet, world_size=8)
    assert steps.steps_per_epoch == 4448  # the upstream 8-512 log: 4448 iterations an epoch (36/GPU x 8)
    assert steps.epochs == 310 and steps.evaluations == 310
    assert steps.eval_batches == math.ceil(50_000 / 8 / 36)
    big = TrainConfig.from_dict(load_recipe("imagenet-8-768"))
    assert run_steps(big, 8).steps_per_epoch == 6672  # 24/GPU
    dvs = TrainConfig.from_dict(load_recipe("cifar10-dvs"))
    assert split_size(dvs, "train") == 9_000 and split_size(dvs, "eval") == 1_000
    assert run_steps(dvs, 1).steps_per_epoch == 9_000 // 16
    gesture = TrainConfig.from_dict(load_recipe("dvs128-gesture"))
    assert (split_size(gesture, "train"), split_size(gesture, "eval")) == SPLIT_SIZES["dvs128-gesture"]
    digits = load_recipe("digits")
    digits["data"].update(train_size=100, max_eval_batches=1)
    digits["optim"]["grad_accum_steps"] = 2
    digits["runtime"]["eval_every"] = 4
    small = run_steps(TrainConfig.from_dict(digits), 1)
    assert (small.steps_per_epoch, small.eval_batches, small.evaluations) == (2, 1, 2)  # 3 batches, accum 2; 6 epochs


def test_input_source_says_synthetic_when_the_data_is_missing(tmp_path) -> None:
    recipe = load_recipe("cifar10")
    recipe["data"]["root"] = str(tmp_path / "absent")
    config, data = input_source(TrainConfig.from_dict(recipe), torch.device("cpu"))
    assert config.data.dataset == "synthetic" and data.startswith("synthetic [3, 32, 32] (no cifar10 folder at")
    assert config.data.num_workers == 0  # made in the measured process, not by loader processes on its cores
    digits = TrainConfig.from_dict(load_recipe("digits"))
    assert input_source(digits, torch.device("cpu")) == (digits, "digits")


def test_measure_times_real_steps_and_halves_a_batch_over_the_memory_budget() -> None:
    """Synthetic data of the model's shape (no dataset), mixup on: micro-batches stay even."""
    recipe = load_recipe("cifar10")
    recipe["model"]["kwargs"].update(embed_dim=32, depth=1, num_heads=2, T=1)
    recipe["data"].update(batch_size=8, eval_batch_size=4, num_workers=0, root=None)
    recipe["runtime"].update(device="cpu")
    calls = []
    # No budget at all (a micro-batch must need less than it): the batch of 8 runs as 4 accumulated micro-batches
    # of 2, whatever the process's memory readings (a long test process may show no growth at all).
    cost = measure(TrainConfig.from_dict(recipe), steps=2, device=torch.device("cpu"), memory_budget_mb=0.0,
                   before_timed=lambda: calls.append(1))
    assert calls == [1] and cost.data.startswith("synthetic [3, 32, 32]") and cost.precision == "fp32"
    assert not cost.fits and cost.micro_batch == 2 and cost.accumulation == 4 and "budget" in cost.note
    assert cost.step_s > 0 and cost.img_per_s > 0 and cost.eval_batch_s > 0 and cost.peak_mem_mb > 0
    assert cost.eval_batch == 4 and cost.setup_s >= 0 and cost.steps == 2
