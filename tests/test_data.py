"""Datasets through the real code on small files in the real formats: CIFAR pickles, ImageFolder PNGs, DVS events."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.datasets import write_cifar, write_cifar10_dvs, write_events
from PIL import Image

from spikingformer._validation import deep_merge
from spikingformer.config import TrainConfig
from spikingformer.data.dvs_augment import SNNAugmentWide
from spikingformer.data.events import CIFAR10_DVS_TRAIN_RATIO, event_frames
from spikingformer.data.loaders import build_dataset, build_eval_loader, build_loaders
from spikingformer.data.pixel_stats import CIFAR_MEAN, CIFAR_STD
from spikingformer.data.splits import head_split_per_class, split_fingerprint, stratified_subset
from spikingformer.data.synthetic import SyntheticDataset
from spikingformer.models.registry import input_spec

TINY = {"embed_dim": 16, "depth": 1, "num_heads": 2, "T": 1}


def config(dataset: str, root: Path | None = None, model: str = "spikingformer_cifar_2_384", **kwargs) -> TrainConfig:
    data = {"dataset": dataset, "root": str(root) if root else None, "batch_size": 4, "num_workers": 0}
    return TrainConfig.from_dict(
        {"model": {"name": model, "kwargs": {**TINY, **kwargs}}, "data": data,
         "augment": {"auto_augment": "rand-m9-n1-mstd0.4-inc1", "re_prob": 0.25}}
    )


# --- CIFAR python batches -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_batches_load_through_the_real_reader(tmp_path: Path, name: str, classes: int) -> None:
    write_cifar(tmp_path, name)
    cfg = config(name, tmp_path, num_classes=classes)
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "eval")
    assert (len(train), len(test)) == (30, 6)
    x, y = train[7]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 7 % classes
    # The eval transform only normalises (CIFAR statistics): pixel (0, 0) of test sample 0 round-trips.
    test_file = "cifar-10-batches-py/test_batch" if name == "cifar10" else "cifar-100-python/test"
    first = pickle.loads((tmp_path / test_file).read_bytes())
    pixel = first["data"][0].reshape(3, 32, 32)[:, 0, 0] / 255.0
    expected = (torch.tensor(pixel) - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)
    torch.testing.assert_close(test[0][0][:, 0, 0], expected.float(), atol=1e-4, rtol=0)


def test_cifar_missing_and_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.root is required"):
        build_dataset(config("cifar10"), "train")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py/data_batch_1"):
        build_dataset(config("cifar10", tmp_path / "nowhere"), "train")
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3.*expected layout"):
        build_dataset(config("cifar10", tmp_path), "train")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="malformed CIFAR file"):
        build_dataset(config("cifar10", tmp_path), "train")


def test_class_count_must_match_the_model(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10")
    with pytest.raises(ValueError, match="10 classes but model .* num_classes=100"):
        build_dataset(config("cifar10", tmp_path, num_classes=100), "eval")


# --- ImageNet folders -----------------------------------------------------------------------------------------


def write_image_folder(root: Path, classes=("n01", "n02"), per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


def test_imagenet_folders_load_at_the_model_size(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    cfg = config("imagenet", tmp_path, num_classes=2)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "eval")
    assert len(train) == len(val) == 6
    assert train[0][0].shape == val[5][0].shape == (3, 32, 32)
    assert [val[i][1] for i in range(6)] == [0, 0, 0, 1, 1, 1]


def test_size_limits_take_a_seeded_stratified_subset(tmp_path: Path) -> None:
    write_image_folder(tmp_path, classes=("n01", "n02", "n03"), per_class=4)  # ImageFolder: sorted by class
    cfg = TrainConfig.from_dict(deep_merge(config("imagenet", tmp_path, num_classes=3).to_dict(),
                                           {"data": {"train_size": 6, "eval_size": 3}}))
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "eval")
    assert sorted(train.base.targets[i] for i in train.indices) == [0, 0, 1, 1, 2, 2]
    assert sorted(val.base.targets[i] for i in val.indices) == [0, 1, 2]  # a prefix would be class 0 only
    assert build_dataset(cfg, "train").indices == train.indices and val.info["subset"].startswith("seeded stratified")


def test_stratified_subset_follows_class_shares() -> None:
    labels = [0] * 50 + [1] * 30 + [2] * 20
    picked = stratified_subset(labels, 10)
    assert np.bincount([labels[i] for i in picked]).tolist() == [5, 3, 2]
    assert sorted({labels[i] for i in stratified_subset(labels, 3)}) == [0, 1, 2]
    assert picked == sorted(picked) == stratified_subset(labels, 10) != stratified_subset(labels, 10, seed=1)
    assert stratified_subset(labels, 100) == list(range(100))


def test_imagenet_layout_errors(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    (tmp_path / "val" / "n02").rename(tmp_path / "val" / "n03")
    with pytest.raises(ValueError, match="class folders differ"):
        build_dataset(config("imagenet", tmp_path, num_classes=2), "eval")
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(FileNotFoundError, match=r"(?s)lacks val/.*ROOT/val/<class>"):
        build_dataset(config("imagenet", tmp_path, num_classes=2), "train")


# --- DVS event files (spikingjelly builds the frames offline) ----------------------------------------------------


DVS = {"model": "spikingformer_dvs_2_256", "embed_dim": 16, "depth": 1, "num_heads": 2, "T": 4}


def test_dvs128_gesture_frames_from_event_files(tmp_path: Path) -> None:
    for split, count in (("train", 2), ("test", 1)):
        for label in range(11):
            write_events(tmp_path / "events_np" / split / str(label), count, seed=label)
    cfg = TrainConfig.from_dict({
        "model": {"name": DVS["model"], "kwargs": {k: v for k, v in DVS.items() if k != "model"}},
        "data": {"dataset": "dvs128-gesture", "root": str(tmp_path), "frames": 4, "num_workers": 0},
        "augment": {"dvs_augment": True},
    })
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "eval")
    assert (len(train), len(test)) == (22, 11)
    x, _ = test[0]
    assert x.shape == (4, 2, 128, 128) and x.dtype == torch.float32
    assert x.sum() == 400  # event counts: every event lands in exactly one frame
    assert (tmp_path / "frames_number_4_split_by_number").is_dir()
    assert train[0][0].shape == (4, 2, 128, 128)


def test_cifar10_dvs_split_is_the_first_90_percent_of_each_class(tmp_path: Path) -> None:
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS_CLASS_NAMES

    for k, name in enumerate(CIFAR10DVS_CLASS_NAMES):
        write_events(tmp_path / "events_np" / name, 10, seed=k)
    kwargs = {k: v for k, v in DVS.items() if k != "model"}
    cfg = TrainConfig.from_dict({
        "model": {"name": DVS["model"], "kwargs": {**kwargs, "num_classes": 10}},
        "data": {"dataset": "cifar10-dvs", "root": str(tmp_path), "num_workers": 0},
    })
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "eval")
    assert (len(train), len(test)) == (90, 10)
    assert train.indices == [c * 10 + i for c in range(10) for i in range(9)]
    assert test.indices == [c * 10 + 9 for c in range(10)]
    assert train.info["fingerprint"] == test.info["fingerprint"] == split_fingerprint(train.indices, test.indices)
    assert CIFAR10_DVS_TRAIN_RATIO == 0.9


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if spikingjelly tries to download anything."""
    import spikingjelly.datasets.base as base

    def download_url(*args, **kwargs) -> None:
        raise AssertionError("spikingjelly tried to download")

    monkeypatch.setattr(base, "download_url", download_url)


def test_dvs_incomplete_events_np_names_the_class_folders(tmp_path: Path, offline: None) -> None:
    (tmp_path / "events_np").mkdir()
    with pytest.raises(FileNotFoundError, match=r"(?s)lacks event files in 10 class folder.*airplane.*expected layout"):
        event_frames("cifar10-dvs", str(tmp_path), 4, train=True)
    write_cifar10_dvs(tmp_path, 1)
    for file in (tmp_path / "events_np" / "truck").iterdir():
        file.unlink()
    with pytest.raises(FileNotFoundError, match=r"in 1 class folder\(s\): truck "):
        event_frames("cifar10-dvs", str(tmp_path), 4, train=True)
    write_events(tmp_path / "events_np" / "train" / "3", 1, seed=0)
    with pytest.raises(FileNotFoundError, match=r"(?s)21 class folder\(s\): train/0, train/1, train/2, train/4"):
        event_frames("dvs128-gesture", str(tmp_path), 4, train=True)


@pytest.mark.parametrize("name,present", [("cifar10-dvs", "airplane.zip"), ("dvs128-gesture", "README.txt")])
def test_dvs_incomplete_download_fails_offline(tmp_path: Path, offline: None, name: str, present: str) -> None:
    download = tmp_path / "download"
    download.mkdir()
    (download / present).write_bytes(b"not the archive")
    with pytest.raises(FileNotFoundError, match=r"(?s)download lacks .*nothing is downloaded here.*expected layout"):
        event_frames(name, str(tmp_path), 4, train=True)
    from spikingformer.data.events import _dataset_class

    for file, _, _ in _dataset_class(name).resource_url_md5():
        (download / file).write_bytes(b"not the archive")
    with pytest.raises(ValueError, match="fail.* the md5 check"):
        event_frames(name, str(tmp_path), 4, train=True)
    assert (download / present).is_file()  # spikingjelly would have deleted it
    assert not (tmp_path / "events_np").exists()


def test_dvs_half_built_frames_cache_is_refused(tmp_path: Path, offline: None) -> None:
    write_cifar10_dvs(tmp_path, 2)
    event_frames("cifar10-dvs", str(tmp_path), 4, train=True)  # builds the cache
    cache = tmp_path / "frames_number_4_split_by_number"
    (cache / "dog" / "001.npz").unlink()
    with pytest.raises(ValueError, match=r"frames cache .* lacks 1 of 20 samples \(dog/001.npz\).*delete"):
        event_frames("cifar10-dvs", str(tmp_path), 4, train=False)
    shutil.rmtree(cache)
    cache.mkdir()
    (tmp_path / f"{cache.name}.building").touch()  # spikingjelly's own marker of an unfinished build
    with pytest.raises(ValueError, match=r"(?s)lacks 20 of 20"):
        event_frames("cifar10-dvs", str(tmp_path), 4, train=False)
    shutil.rmtree(cache)
    with pytest.raises(ValueError, match=r"(?s)spikingjelly could not prepare.*unfinished.*expected layout"):
        event_frames("cifar10-dvs", str(tmp_path), 4, train=False)
    (tmp_path / f"{cache.name}.building").unlink()
    event_frames("cifar10-dvs", str(tmp_path), 4, train=False)
    shutil.rmtree(tmp_path / "events_np")
    with pytest.raises(FileNotFoundError, match="exists without the events_np/"):
        event_frames("cifar10-dvs", str(tmp_path), 4, train=False)


def test_dvs_missing_root_shows_the_layout(tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict({
        "model": {"name": DVS["model"], "kwargs": {"T": 4}},
        "data": {"dataset": "dvs128-gesture", "root": str(tmp_path)},
    })
    with pytest.raises(FileNotFoundError, match=r"(?s)events_np/.*expected layout.*events_np/train/<label"):
        build_dataset(cfg, "train")


def test_static_dataset_with_event_model_is_refused() -> None:
    cfg = TrainConfig.from_dict({"model": {"name": DVS["model"]}, "data": {"dataset": "digits"}})
    with pytest.raises(ValueError, match="static inputs but model .* takes event inputs"):
        build_dataset(cfg, "train")


def test_head_split_per_class() -> None:
    labels = [0, 1, 0, 1, 0, 1, 2]
    assert head_split_per_class(labels, 0.5) == ([0, 2, 1, 3, 6], [4, 5])
    assert split_fingerprint([0, 1], [2]) != split_fingerprint([0, 2], [1])


# --- SNNAugmentWide ------------------------------------------------------------------------------------------


def test_snn_augment_magnitudes_are_upstreams_grid() -> None:
    torch.manual_seed(0)
    draws = [SNNAugmentWide.sample() for _ in range(6000)]
    shear = sorted({round(m, 6) for op, m in draws if op == "shear_x"})
    assert shear == [round(-0.3 + 0.02 * k, 6) for k in range(31)]  # linspace(-0.3, 0.3, 31), then a random sign
    assert {m for op, m in draws if op == "identity"} == {0.0}
    assert max(abs(m) for op, m in draws if op == "rotate") == 30.0


def test_snn_augment_applies_one_transform_to_all_frames() -> None:
    frame = torch.rand(2, 128, 128)
    frames = frame.expand(5, 2, 128, 128).clone()
    augment = SNNAugmentWide()
    torch.manual_seed(0)
    unchanged = 0
    for _ in range(60):
        out = augment(frames)
        assert out.shape == frames.shape
        assert all(torch.equal(out[0], out[t]) for t in range(1, 5))
        unchanged += torch.equal(out, frames)
    assert 2 <= unchanged <= 30  # identity (1/6) plus zero-magnitude draws; most samples change


# --- digits, synthetic and loaders ----------------------------------------------------------------------------


def test_digits_split_is_stratified_fixed_and_normalised() -> None:
    cfg = config("digits")
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "eval")
    assert (len(train), len(test)) == (1437, 360)
    assert np.bincount(test.base.targets).min() >= 35
    assert train.info["fingerprint"] == test.info["fingerprint"] == build_dataset(cfg, "eval").info["fingerprint"]
    x = torch.stack([test[i][0] for i in range(100)])
    assert x.shape[1:] == (3, 32, 32)
    assert abs(x.mean()) < 0.15 and 0.8 < x.std() < 1.2


@pytest.mark.parametrize("model", ["spikingformer_8_384", "spikingformer_cifar_4_256", "spikingformer_dvs_2_256"])
def test_synthetic_matches_any_model_input(model: str) -> None:
    cfg = TrainConfig.from_dict({"model": {"name": model}, "data": {"dataset": "synthetic", "train_size": 8,
                                                                     "eval_size": 4}})
    spec = input_spec(cfg.model.name, **cfg.model.kwargs)
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "eval")
    assert (len(train), len(test)) == (8, 4)
    x, y = train[3]
    assert tuple(x.shape) == spec.input_shape and y == 3 % spec.num_classes
    assert torch.equal(train[3][0], x) and not torch.equal(test[3][0], x)
    if spec.input_kind == "event":
        assert x.min() >= 0


def test_synthetic_is_learnable_signal() -> None:
    data = SyntheticDataset((3, 8, 8), 4, 40, train=True, events=False)
    same = torch.stack([data[i][0] for i in range(0, 40, 4)])  # all class 0
    other = torch.stack([data[i][0] for i in range(1, 40, 4)])  # all class 1
    assert (same.mean(0) - other.mean(0)).abs().mean() > 0.5


def test_loaders_shard_eval_exactly_and_shuffle_train_per_epoch() -> None:
    cfg = TrainConfig.from_dict({"model": {"name": "spikingformer_cifar_2_384", "kwargs": TINY},
                                 "data": {"dataset": "synthetic", "train_size": 40, "eval_size": 11,
                                          "batch_size": 4, "num_workers": 0}})
    shards = [list(build_eval_loader(cfg, rank=r, world_size=2).sampler) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(11))
    train, _ = build_loaders(cfg, rank=0, world_size=2)
    assert len(train) == 5  # 20 samples per rank, drop_last
    order0 = list(train.sampler)
    train.sampler.set_epoch(1)
    assert list(train.sampler) != order0
    with pytest.raises(ValueError, match="fewer than data.batch_size"):
        build_loaders(TrainConfig.from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "train_size": 6}}),
                      rank=0, world_size=2)
