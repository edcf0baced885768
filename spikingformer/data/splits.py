"""Train/test splits and subsets computed in code, and the fingerprint that proves two runs used the same split."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence

import numpy as np

#: Seed of ``stratified_subset``: a property of the data, not of a run's seed, so every seed trains on one subset.
SUBSET_SEED = 0


def head_split_per_class(labels: Sequence[int], train_ratio: float) -> tuple[list[int], list[int]]:
    """The first ceil(ratio * n) samples of each class (in index order) train, the rest test.

    This is upstream's CIFAR10-DVS split (``split_to_train_test_set(0.9, ..., random_split=False)``).
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    train, test = [], []
    for label in sorted(by_class):
        indices = by_class[label]
        cut = math.ceil(len(indices) * train_ratio)
        train += indices[:cut]
        test += indices[cut:]
    return train, test


def split_fingerprint(train: Sequence[int], test: Sequence[int]) -> str:
    """sha256 of the two index lists: equal fingerprints mean identical splits."""
    payload = json.dumps({"train": [int(i) for i in train], "test": [int(i) for i in test]}, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def stratified_subset(labels: Sequence[int], size: int, seed: int = SUBSET_SEED) -> list[int]:
    """``size`` positions into ``labels`` (sorted), each class by its share, every class once ``size`` allows.

    A prefix of a class-sorted set (ImageNet folders, CIFAR10-DVS) would keep only its first classes. Each class
    is shuffled with ``seed`` and its samples ranked by position / class size; the ``size`` lowest ranks win,
    so the first picks are one per class and the rest follow the class proportions. Same call, same subset.
    """
    if size >= len(labels):
        return list(range(len(labels)))
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(position)
    rng = np.random.default_rng(seed)
    ranked = []
    for label in sorted(by_class):
        positions = by_class[label]
        shuffled = rng.permutation(len(positions))
        ranked += [(k / len(positions), label, positions[i]) for k, i in enumerate(shuffled)]
    return sorted(position for *_, position in sorted(ranked)[:size])
