"""Static image datasets: ImageNet class folders, CIFAR python batches and scikit-learn's digits.

Each loader returns PIL images; upstream's ImageNet / CIFAR timm transform (RandAugment, random erasing,
fixed-scale RandomResizedCrop, normalisation) is applied by the caller for the model's image size.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from spikingformer.config import AugmentConfig
from spikingformer.data.pixel_stats import CIFAR_MEAN, CIFAR_STD
from spikingformer.data.safe_pickle import UnsafePickleError, load_plain
from spikingformer.data.splits import split_fingerprint

#: Pixel mean/std of all 1797 digits after the 8x8 -> 32x32 bilinear upsampling below.
DIGITS_MEAN = (0.306, 0.306, 0.306)
DIGITS_STD = (0.324, 0.324, 0.324)
#: Held-out digits for evaluation (stratified, fixed seed): 1437 train / 360 test.
DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0

DEFAULT_STATS = {
    "imagenet": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    "cifar10": (CIFAR_MEAN, CIFAR_STD),
    "cifar100": (CIFAR_MEAN, CIFAR_STD),
    "digits": (DIGITS_MEAN, DIGITS_STD),
}

IMAGENET_LAYOUT = """expected layout:
  ROOT/train/<class>/<image>.JPEG   one folder per class (e.g. n01440764/)
  ROOT/val/<class>/<image>.JPEG     the same class folders"""

CIFAR_LAYOUT = {
    "cifar10": """expected layout (the python version of CIFAR-10, as torchvision downloads it):
  ROOT/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta""",
    "cifar100": """expected layout (the python version of CIFAR-100, as torchvision downloads it):
  ROOT/cifar-100-python/train, test, meta""",
}

#: name -> (folder, train files, test files, label key, meta file, class-names key)
CIFAR_FILES = {
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        "batches.meta",
        "label_names",
    ),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "fine_labels", "meta", "fine_label_names"),
}


def image_transform(
    aug: AugmentConfig, img_size: int, training: bool, mean: tuple[float, ...], std: tuple[float, ...]
) -> Callable:
    """timm's train or eval transform with the recipe's augmentation (no prefetcher: erasing runs per sample)."""
    return create_transform(
        img_size,
        is_training=training,
        scale=aug.scale,
        ratio=aug.ratio,
        hflip=aug.hflip,
        color_jitter=aug.color_jitter or None,
        auto_augment=aug.auto_augment,
        interpolation=aug.interpolation,
        mean=mean,
        std=std,
        re_prob=aug.re_prob,
        re_mode=aug.re_mode,
        re_count=aug.re_count,
        crop_pct=aug.crop_pct,
    )


class ArrayImages(Dataset):
    """uint8 ``[N, H, W, 3]`` images and integer labels, served as PIL images."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
        self.images = images
        self.targets = [int(y) for y in labels]
        self.classes = classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.targets[index]


def _require_root(root: str | None, dataset: str, layout: str) -> Path:
    if root is None:
        raise ValueError(f"data.root is required for dataset {dataset!r}; {layout}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{dataset} data folder {path} does not exist; {layout}")
    return path


def check_imagenet(root: str | None) -> Path:
    """ROOT, once it holds train/ and val/ with the same class folders (no image is listed)."""
    base = _require_root(root, "imagenet", IMAGENET_LAYOUT)
    missing = [name for name in ("train", "val") if not (base / name).is_dir()]
    if missing:
        raise FileNotFoundError(f"imagenet: {base} lacks {', '.join(f'{m}/' for m in missing)}; {IMAGENET_LAYOUT}")
    train_classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    val_classes = sorted(p.name for p in (base / "val").iterdir() if p.is_dir())
    if train_classes != val_classes:
        only = sorted(set(train_classes) ^ set(val_classes))
        raise ValueError(f"imagenet: train/ and val/ class folders differ (e.g. {only[:5]}); {IMAGENET_LAYOUT}")
    return base


def imagenet_folder(root: str | None, train: bool) -> ImageFolder:
    """``ROOT/train`` or ``ROOT/val`` as a torchvision ImageFolder (PIL images, class index by sorted name)."""
    base = check_imagenet(root)
    try:
        return ImageFolder(str(base / ("train" if train else "val")))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"imagenet: {err}; {IMAGENET_LAYOUT}") from err


def _unpickle(path: Path, layout: str) -> dict[str, Any]:
    """One CIFAR batch file, read by the restricted unpickler: a file that asks to run code is refused."""
    if not path.is_file():
        raise FileNotFoundError(f"missing CIFAR file {path}; {layout}")
    try:
        entry = load_plain(path)
    except UnsafePickleError as err:
        raise ValueError(f"refused CIFAR file: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"malformed CIFAR file {path} ({err}); {layout}") from err
    if not isinstance(entry, dict):
        raise ValueError(f"malformed CIFAR file {path}: expected a pickled dict; {layout}")
    return entry


def check_cifar(root: str | None, name: str) -> Path:
    """The folder holding CIFAR ``name``'s batch files, once every one of them is there (none is read)."""
    folder, train_files, test_files, _, meta_file, _ = CIFAR_FILES[name]
    base = _require_root(root, name, CIFAR_LAYOUT[name])
    if (base / folder).is_dir():
        base = base / folder
    missing = [file for file in (meta_file, *train_files, *test_files) if not (base / file).is_file()]
    if missing:
        raise FileNotFoundError(f"{name}: {base} lacks {', '.join(missing)}; {CIFAR_LAYOUT[name]}")
    return base


def cifar_batches(root: str | None, name: str, train: bool) -> ArrayImages:
    """Read the python-pickle CIFAR batches directly (torchvision's reader insists on the download md5s)."""
    layout = CIFAR_LAYOUT[name]
    _, train_files, test_files, label_key, meta_file, names_key = CIFAR_FILES[name]
    base = check_cifar(root, name)
    classes = [str(c) for c in _unpickle(base / meta_file, layout).get(names_key, [])]
    images, labels = [], []
    for file in train_files if train else test_files:
        entry = _unpickle(base / file, layout)
        if "data" not in entry or label_key not in entry:
            raise ValueError(f"malformed CIFAR file {base / file}: needs keys 'data' and {label_key!r}; {layout}")
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(entry[label_key]) != len(data):
            raise ValueError(
                f"malformed CIFAR file {base / file}: data {data.shape} must be [N, 3072] with N labels; {layout}"
            )
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels += list(entry[label_key])
    if not classes:
        raise ValueError(f"malformed CIFAR meta file {base / meta_file}: no {names_key!r}; {layout}")
    return ArrayImages(np.concatenate(images), np.asarray(labels), classes)


def digits(train: bool) -> tuple[ArrayImages, str]:
    """scikit-learn's 1797 8x8 digits upsampled to 32x32 RGB; a fixed stratified 1437/360 split.

    Returns the split and its fingerprint. Real, labelled, offline: the embedded default data set.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = np.round(bunch.images * (255 / 16)).astype(np.uint8)
    upsampled = np.stack([np.asarray(Image.fromarray(p).resize((32, 32), Image.BILINEAR)) for p in pixels])
    rgb = np.repeat(upsampled[..., None], 3, axis=3)
    train_idx, test_idx = train_test_split(
        np.arange(len(pixels)), test_size=DIGITS_TEST_SIZE, stratify=bunch.target, random_state=DIGITS_SPLIT_SEED
    )
    indices = train_idx if train else test_idx
    classes = [str(c) for c in range(10)]
    return ArrayImages(rgb[indices], bunch.target[indices], classes), split_fingerprint(train_idx, test_idx)
