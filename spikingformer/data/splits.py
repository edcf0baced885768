"""Train/test splits computed in code, and the fingerprint that proves two runs used the same one."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence


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
