"""From a TrainConfig to the datasets and per-rank DataLoaders of one run.

Train batches come from a DistributedSampler on every world size (one code path; its order is a function of
seed and epoch only), with ``drop_last`` as upstream. Evaluation shards the set without padding, so the
reduced accuracy counts every sample exactly once.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from spikingformer.config import TrainConfig
from spikingformer.data.dvs_augment import DVSTrainTransform, ResizedFrames, frames_to_tensor
from spikingformer.data.events import check_root, event_frames
from spikingformer.data.images import (
    DEFAULT_STATS,
    check_cifar,
    check_imagenet,
    cifar_batches,
    digits,
    image_transform,
    imagenet_folder,
)
from spikingformer.data.splits import SUBSET_SEED, stratified_subset
from spikingformer.data.synthetic import SyntheticDataset
from spikingformer.models.registry import input_spec
from spikingformer.training.distributed import rank0_first

Split = Literal["train", "eval"]
EVENT_DATASETS = ("cifar10-dvs", "dvs128-gesture")
#: Frame side of both event datasets' sensors (DVS128).
EVENT_SENSOR_SIDE = 128
#: Synthetic set sizes when data.train_size / data.eval_size are not given.
SYNTHETIC_SIZES = {"train": 256, "eval": 64}


@contextlib.contextmanager
def seeded(*key: int) -> Iterator[None]:
    """python's, numpy's and torch's CPU generators seeded from ``key`` inside, put back as they were after."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    state = int(np.random.SeedSequence(list(key)).generate_state(1)[0])
    random.seed(state)
    np.random.seed(state)
    torch.default_generator.manual_seed(state)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class LabelledSplit(Dataset):
    """One split of a base dataset: an index subset, the split's transform and a description (``info``).

    With a ``sample_seed`` the transform of sample i in epoch e draws from generators seeded by (seed, e, i)
    alone: its augmentation depends neither on which loader process makes it nor on what came before, so an
    epoch resumed part-way (:class:`ResumableSampler`) augments every remaining sample as the whole epoch would.
    """

    def __init__(self, base: Dataset, indices: list[int], transform: Callable | None, info: dict[str, Any],
                 sample_seed: int | None = None) -> None:
        self.base = base
        self.indices = indices
        self.transform = transform
        self.info = {**info, "size": len(indices)}
        self.sample_seed = sample_seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentations come next (loader processes copy the split when an epoch starts)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        x, y = self.base[self.indices[index]]
        if self.transform is None:
            return x, y
        if self.sample_seed is None:
            return self.transform(x), y
        with seeded(self.sample_seed, self.epoch, index):
            return self.transform(x), y


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: disjoint shards that together cover the set once, no padding."""

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableSampler(DistributedSampler):
    """torch's DistributedSampler (order a function of seed and epoch) that can begin its next epoch part-way:
    :meth:`skip` leaves out this rank's first samples once (those a resumed run already trained on). Its
    length stays the whole epoch's, so the epoch's batch count does not change with where it resumed."""

    def __init__(self, dataset: Dataset, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self._skip = 0

    def skip(self, samples: int) -> None:
        self._skip = samples

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        return itertools.islice(super().__iter__(), skip, None)


def check_data(config: TrainConfig) -> None:
    """Check ``config``'s data folder (layout and files, no sample read), as the loaders would find it.

    A launcher calls it before starting workers, so a missing or incomplete folder fails at once, naming
    what is missing, instead of on every worker after start-up.
    """
    name, root = config.data.dataset, config.data.root
    if name in EVENT_DATASETS:
        frames = config.data.frames or input_spec(config.model.name, **config.model.kwargs).input_shape[0]
        check_root(name, root, frames)
    elif name == "imagenet":
        check_imagenet(root)
    elif name in ("cifar10", "cifar100"):
        check_cifar(root, name)


def build_dataset(config: TrainConfig, split: Split) -> LabelledSplit:
    """The train or eval split of ``config.data.dataset``, transformed for ``config.model``'s input."""
    data, aug = config.data, config.augment
    spec = input_spec(config.model.name, **config.model.kwargs)
    train = split == "train"
    name = data.dataset
    info: dict[str, Any] = {"dataset": name, "split": split}
    kind = "event" if name in EVENT_DATASETS else "static"
    if name != "synthetic" and spec.input_kind != kind:
        raise ValueError(
            f"dataset {name!r} gives {kind} inputs but model {config.model.name!r} takes {spec.input_kind} inputs"
        )
    transform: Callable | None = None
    if name == "synthetic":
        size = (data.train_size if train else data.eval_size) or SYNTHETIC_SIZES[split]
        base: Dataset = SyntheticDataset(
            spec.input_shape, spec.num_classes, size, train=train, events=spec.input_kind == "event"
        )
        indices, num_classes = list(range(size)), spec.num_classes
    elif kind == "event":
        frames = data.frames or spec.input_shape[0]
        if frames != spec.input_shape[0]:
            raise ValueError(f"data.frames={frames} differs from the model's T={spec.input_shape[0]}")
        base, indices, extra = event_frames(name, data.root, frames, train)
        info.update(extra, root=str(data.root), frames=frames)
        num_classes = len(base.classes)
        transform = DVSTrainTransform(aug.hflip) if train and aug.dvs_augment else frames_to_tensor
        side = spec.input_shape[-1]
        if side != EVENT_SENSOR_SIDE:  # SDT's CIFAR10-DVS model takes the 128x128 frames at 64x64
            transform, info["resize"] = ResizedFrames(side, transform), f"bilinear to {side}x{side}, no antialias"
    else:
        if name == "imagenet":
            base = imagenet_folder(data.root, train)
        elif name == "digits":
            base, info["fingerprint"] = digits(train)
        else:
            base = cifar_batches(data.root, name, train)
        info["root"] = str(data.root) if data.root else "scikit-learn"
        num_classes = len(base.classes)
        mean, std = DEFAULT_STATS[name]
        transform = image_transform(aug, spec.input_shape[-1], train, aug.mean or mean, aug.std or std)
        indices = list(range(len(base)))
    if num_classes != spec.num_classes:
        raise ValueError(
            f"dataset {name!r} has {num_classes} classes but model {config.model.name!r} has "
            f"num_classes={spec.num_classes}; set model.kwargs.num_classes"
        )
    limit = data.train_size if train else data.eval_size
    if limit is not None and limit < len(indices):
        picked = stratified_subset([base.targets[i] for i in indices], limit)
        info["subset"] = f"seeded stratified {limit} of {len(indices)} (seed {SUBSET_SEED})"
        indices = [indices[i] for i in picked]
    return LabelledSplit(base, indices, transform, info)


def build_eval_dataset(config: TrainConfig) -> LabelledSplit:
    """The evaluation split alone (e.g. for the energy / firing-rate pass)."""
    return build_dataset(config, "eval")


def _loader(config: TrainConfig, dataset: Dataset, sampler: Sampler, batch_size: int, train: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=config.data.num_workers,
        drop_last=train,
        pin_memory=torch.cuda.is_available() and config.runtime.device != "cpu",
    )


def eval_batch_size(config: TrainConfig) -> int:
    """The evaluation batch of one rank: ``data.eval_batch_size``, else the training batch."""
    return config.data.eval_batch_size or config.data.batch_size


def _eval_loader(config: TrainConfig, dataset: Dataset, rank: int, world_size: int) -> DataLoader:
    sampler = ShardSampler(len(dataset), rank, world_size)
    return _loader(config, dataset, sampler, eval_batch_size(config), train=False)


def build_eval_loader(config: TrainConfig, *, rank: int = 0, world_size: int = 1) -> DataLoader:
    """This rank's shard of the evaluation split, in order. Not collective: any one process may call it."""
    return _eval_loader(config, build_eval_dataset(config), rank, world_size)


def build_loaders(config: TrainConfig, *, rank: int, world_size: int) -> tuple[DataLoader, DataLoader]:
    """(train, eval) loaders of one rank; every epoch call ``set_epoch(epoch)`` on ``train_loader.sampler`` and on
    ``train_loader.dataset`` (whose augmentations are seeded per sample).

    Collective under torch.distributed: rank 0 builds first (e.g. the DVS frame cache), then the others.
    """
    train, test = rank0_first(lambda: (build_dataset(config, "train"), build_dataset(config, "eval")))
    train.sample_seed = config.runtime.seed
    sampler = ResumableSampler(train, num_replicas=world_size, rank=rank, shuffle=True, seed=config.runtime.seed)
    if len(sampler) < config.data.batch_size:
        raise ValueError(
            f"{len(train)} training samples give {len(sampler)} per rank on {world_size} rank(s), fewer than "
            f"data.batch_size={config.data.batch_size}: every batch would be dropped"
        )
    train_loader = _loader(config, train, sampler, config.data.batch_size, train=True)
    return train_loader, _eval_loader(config, test, rank, world_size)
