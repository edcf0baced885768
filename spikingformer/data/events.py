"""Event-camera datasets through spikingjelly 2.0: DVS128 Gesture and CIFAR10-DVS as ``[T, 2, 128, 128]`` frames.

Frames are integrated with ``split_by='number'`` (T slices of equal event counts, per-pixel per-polarity
counts), as upstream. spikingjelly builds them once into ``ROOT/frames_number_{T}_split_by_number``
(``build_loaders`` lets rank 0 build first under DDP, so no two processes write the cache).
"""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import DatasetFolder

from spikingformer.data.splits import head_split_per_class, split_fingerprint

#: Share of each CIFAR10-DVS class (first samples by index) used for training, as upstream: 9000 / 1000.
CIFAR10_DVS_TRAIN_RATIO = 0.9

LAYOUT = {
    "dvs128-gesture": """expected layout (spikingjelly DVS128Gesture, official 1176/288 split):
  ROOT/events_np/train/<label 0..10>/*.npz and ROOT/events_np/test/<label>/*.npz (arrays t, x, y, p), or
  ROOT/download/DvsGesture.tar.gz, gesture_mapping.csv, LICENSE.txt, README.txt (the IBM files, extracted once)""",
    "cifar10-dvs": """expected layout (spikingjelly CIFAR10DVS):
  ROOT/events_np/<class name>/*.npz (arrays t, x, y, p; classes airplane ... truck), or
  ROOT/download/<class name>.zip (the ten figshare archives, extracted once)""",
}

def _check_root(name: str, root: str | None) -> Path:
    layout = LAYOUT[name]
    if root is None:
        raise ValueError(f"data.root is required for dataset {name!r}; {layout}")
    base = Path(root).expanduser()
    sources = ("events_np", "download")  # spikingjelly re-downloads when events_np/ is missing
    if not any((base / s).is_dir() for s in sources):
        raise FileNotFoundError(f"{name}: {base} holds none of {', '.join(s + '/' for s in sources)}; {layout}")
    return base


def event_frames(name: str, root: str | None, frames: int, train: bool) -> tuple[DatasetFolder, list[int], dict]:
    """The frame dataset, the indices of the requested split within it, and the split's description."""
    base = _check_root(name, root)
    frame_args = dict(data_type="frame", frames_number=frames, split_by="number")
    if name == "dvs128-gesture":
        from spikingjelly.datasets.dvs128_gesture import DVS128Gesture

        dataset = DVS128Gesture(str(base), train=train, **frame_args)
        return dataset, list(range(len(dataset))), {"split": "official train/test folders"}
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS

    dataset = CIFAR10DVS(str(base), **frame_args)
    train_idx, test_idx = head_split_per_class(dataset.targets, CIFAR10_DVS_TRAIN_RATIO)
    info = {"split": "first 90% of each class trains (upstream)", "fingerprint": split_fingerprint(train_idx, test_idx)}
    return dataset, train_idx if train else test_idx, info
