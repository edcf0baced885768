"""Event-camera datasets through spikingjelly 2.0: DVS128 Gesture and CIFAR10-DVS as ``[T, 2, 128, 128]`` frames.

Frames are integrated with ``split_by='number'`` (T slices of equal event counts, per-pixel per-polarity
counts), as upstream. spikingjelly builds them once into ``ROOT/frames_number_{T}_split_by_number``
(``build_loaders`` lets rank 0 build first under DDP, so no two processes write the cache).

spikingjelly trusts whatever folders it finds and downloads whatever it misses. Here the layout is checked
first, so a missing class folder, a missing or corrupt archive or a half-built frames cache is an error that
names it, and spikingjelly is never asked to reach the network.

Event and frame files are ``.npz`` archives of numeric arrays and are read as such: numpy refuses the pickled
(object) arrays an archive could carry instead of unpickling them, so a data folder never runs code. The
frames are read by :func:`load_frames`, which says so with the file's name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision.datasets import DatasetFolder
from torchvision.datasets.utils import check_integrity

from spikingformer.data.splits import head_split_per_class, split_fingerprint

#: Share of each CIFAR10-DVS class (first samples by index) used for training, as upstream: 9000 / 1000.
CIFAR10_DVS_TRAIN_RATIO = 0.9
EVENT_SUFFIXES = (".npz", ".npy")

LAYOUT = {
    "dvs128-gesture": """expected layout (spikingjelly DVS128Gesture, official 1176/288 split):
  ROOT/events_np/train/<label 0..10>/*.npz and ROOT/events_np/test/<label>/*.npz (arrays t, x, y, p), or
  ROOT/download/DvsGesture.tar.gz, gesture_mapping.csv, LICENSE.txt, README.txt (the IBM files, extracted once)""",
    "cifar10-dvs": """expected layout (spikingjelly CIFAR10DVS):
  ROOT/events_np/<class name>/*.npz (arrays t, x, y, p; classes airplane ... truck), or
  ROOT/download/<class name>.zip (the ten figshare archives, extracted once)""",
}


def _dataset_class(name: str) -> type[DatasetFolder]:
    if name == "dvs128-gesture":
        from spikingjelly.datasets.dvs128_gesture import DVS128Gesture

        return DVS128Gesture
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS

    return CIFAR10DVS


def _class_folders(name: str) -> list[str]:
    """The folders under ``events_np/`` (and the frames cache) that must each hold samples."""
    if name == "dvs128-gesture":
        return [f"{split}/{label}" for split in ("train", "test") for label in range(11)]
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS_CLASS_NAMES

    return list(CIFAR10DVS_CLASS_NAMES)


def _listing(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _check_events(name: str, events: Path) -> None:
    """spikingjelly uses ``events_np/`` as it is, so every class folder must hold event files."""
    empty = [
        folder for folder in _class_folders(name)
        if not (events / folder).is_dir() or not any(p.suffix in EVENT_SUFFIXES for p in (events / folder).iterdir())
    ]
    if empty:
        raise FileNotFoundError(
            f"{name}: {events} lacks event files in {len(empty)} class folder(s): {_listing(empty)} "
            f"(an incomplete events_np/ is used as it is: complete it, or remove it to rebuild from download/); "
            f"{LAYOUT[name]}"
        )


def _check_downloads(name: str, download: Path) -> None:
    """Every archive present with its md5: spikingjelly would delete a corrupt one and fetch missing ones."""
    resources = _dataset_class(name).resource_url_md5()
    missing = [file for file, _, _ in resources if not (download / file).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name}: {download} lacks {_listing(missing)} (nothing is downloaded here: fetch them yourself); "
            f"{LAYOUT[name]}"
        )
    corrupt = [file for file, _, md5 in resources if not check_integrity(str(download / file), md5)]
    if corrupt:
        raise ValueError(f"{name}: {_listing(corrupt)} in {download} fail(s) the md5 check; {LAYOUT[name]}")


def _check_frames(name: str, events: Path, cache: Path) -> None:
    """One frames file per event file: spikingjelly reuses any existing cache folder as it is."""
    wanted = {p.relative_to(events) for p in events.rglob("*") if p.suffix in EVENT_SUFFIXES}
    built = {p.relative_to(cache) for p in cache.rglob("*") if p.suffix in EVENT_SUFFIXES}
    missing = sorted(str(p) for p in wanted - built)
    if missing:
        raise ValueError(
            f"{name}: the frames cache {cache} lacks {len(missing)} of {len(wanted)} samples ({_listing(missing)}), "
            f"left by an interrupted build: delete {cache} (and {cache.name}.building beside it, if present) and it "
            "is rebuilt from events_np/"
        )


def check_root(name: str, root: str | None, frames: int) -> Path:
    """ROOT, once what spikingjelly will read from it is complete: events_np/ (else download/) and the cache."""
    layout = LAYOUT[name]
    if root is None:
        raise ValueError(f"data.root is required for dataset {name!r}; {layout}")
    base = Path(root).expanduser()
    events, cache = base / "events_np", base / f"frames_number_{frames}_split_by_number"
    if events.is_dir():
        _check_events(name, events)
    elif cache.is_dir():
        raise FileNotFoundError(
            f"{name}: {cache} exists without the events_np/ it was built from, so it cannot be checked: "
            f"restore events_np/ or delete {cache}; {layout}"
        )
    elif (base / "download").is_dir():
        _check_downloads(name, base / "download")
    else:
        raise FileNotFoundError(f"{name}: {base} holds neither events_np/ nor download/; {layout}")
    if cache.is_dir():
        _check_frames(name, events, cache)
    return base


def load_frames(path: str | Path) -> np.ndarray:
    """One sample's ``frames`` array from a frames-cache ``.npz``, as float32; never unpickles anything."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["frames"].astype(np.float32)
    except ValueError as err:  # numpy's refusal of a pickled (object) array, or a malformed archive
        raise ValueError(f"refused event frames file {path}: {err}") from None


def event_frames(name: str, root: str | None, frames: int, train: bool) -> tuple[DatasetFolder, list[int], dict]:
    """The frame dataset, the indices of the requested split within it, and the split's description."""
    base = check_root(name, root, frames)
    split = {"train": train} if name == "dvs128-gesture" else {}
    try:
        dataset = _dataset_class(name)(str(base), data_type="frame", frames_number=frames, split_by="number", **split)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{name}: {err}; {LAYOUT[name]}") from err
    except (OSError, RuntimeError, ValueError, NotImplementedError) as err:
        raise ValueError(f"{name}: spikingjelly could not prepare {base}: {err}; {LAYOUT[name]}") from err
    dataset.loader = load_frames  # spikingjelly's loader does the same; this one is ours to vouch for
    if name == "dvs128-gesture":
        return dataset, list(range(len(dataset))), {"split": "official train/test folders"}
    train_idx, test_idx = head_split_per_class(dataset.targets, CIFAR10_DVS_TRAIN_RATIO)
    info = {"split": "first 90% of each class trains (upstream)", "fingerprint": split_fingerprint(train_idx, test_idx)}
    return dataset, train_idx if train else test_idx, info
