"""Small files in the real layouts of the data sets (CIFAR pickles, DVS event folders) for the readers to load."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_cifar(root: Path, name: str, per_file: int = 6) -> None:
    rng = np.random.default_rng(0)
    classes = 10 if name == "cifar10" else 100

    def batch(n: int, offset: int) -> dict:
        labels = [(offset + i) % classes for i in range(n)]
        key = "labels" if name == "cifar10" else "fine_labels"
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: labels}

    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": batch(per_file, (i - 1) * per_file) for i in range(1, 6)}
        files |= {"test_batch": batch(per_file, 0), "batches.meta": {"label_names": [f"c{i}" for i in range(10)]}}
    else:
        folder = root / "cifar-100-python"
        files = {"train": batch(5 * per_file, 0), "test": batch(per_file, 0),
                 "meta": {"fine_label_names": [f"c{i}" for i in range(100)]}}
    folder.mkdir(parents=True)
    for file, entry in files.items():
        with (folder / file).open("wb") as f:
            pickle.dump(entry, f)


def write_events(folder: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        n = 400
        np.savez(folder / f"{i:03d}.npz", t=np.sort(rng.integers(0, 10**6, n)), x=rng.integers(0, 128, n),
                 y=rng.integers(0, 128, n), p=rng.integers(0, 2, n))


def write_cifar10_dvs(root: Path, per_class: int) -> None:
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS_CLASS_NAMES

    for k, name in enumerate(CIFAR10DVS_CLASS_NAMES):
        write_events(root / "events_np" / name, per_class, seed=k)
