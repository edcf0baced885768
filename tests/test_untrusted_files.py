"""Files a user hands the project never run code while they are read: one malicious file per reader.

Each malicious file carries a pickle whose loading would create a marker file (``open(marker, "w")``, the
harmless stand-in for any code); every reader must refuse it with an error naming the file, and the marker
must not exist afterwards.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers.datasets import write_cifar, write_cifar10_dvs

from spikingformer.data.events import event_frames
from spikingformer.data.images import cifar_batches
from spikingformer.data.safe_pickle import UnsafePickleError, load_plain


class Payload:
    """Unpickling this calls ``open(marker, "w")``: proof that a reader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return open, (str(self.marker), "w")


class _Python2Pickler(pickle._Pickler):
    """Writes ``bytes`` as python 2's ``str`` (BINSTRING), as CIFAR's own batch files were written."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def python2_cifar_batch(n: int) -> bytes:
    """A batch file as CIFAR-10's download holds it: python 2 strings and numpy 1's module path."""
    data = np.arange(n * 3072, dtype=np.uint8).reshape(n, 3072)
    out = io.BytesIO()
    _Python2Pickler(out, protocol=2).dump({b"data": data, b"labels": list(range(n)), b"batch_label": b"x"})
    return out.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def test_python2_cifar_batches_still_load(tmp_path: Path) -> None:
    raw = python2_cifar_batch(3)
    assert b"numpy.core.multiarray\n_reconstruct" in raw  # the module path the real files name
    (tmp_path / "batch").write_bytes(raw)
    entry = load_plain(tmp_path / "batch")
    assert entry["labels"] == [0, 1, 2] and entry["batch_label"] == "x"
    np.testing.assert_array_equal(entry["data"], np.arange(3 * 3072, dtype=np.uint8).reshape(3, 3072))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_values_and_arrays_load_at_every_protocol(tmp_path: Path, protocol: int) -> None:
    value = {"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "labels": [1, 2], b"raw": b"\xff", "x": (1.5, None)}
    (tmp_path / "f").write_bytes(pickle.dumps(value, protocol=protocol))
    loaded = load_plain(tmp_path / "f")
    assert loaded["labels"] == [1, 2] and loaded[b"raw"] == b"\xff" and loaded["x"] == (1.5, None)
    np.testing.assert_array_equal(loaded["data"], value["data"])


@pytest.mark.parametrize("where", ["batches.meta", "data_batch_2", "test_batch"])
def test_cifar_file_that_runs_code_is_refused(tmp_path: Path, where: str) -> None:
    write_cifar(tmp_path, "cifar10")
    marker = tmp_path / "pwned"
    target = tmp_path / "cifar-10-batches-py" / where
    target.write_bytes(pickle.dumps({"label_names": ["a"], "data": Payload(marker), "labels": []}))
    with pytest.raises(ValueError, match=rf"refused CIFAR file: {target} asks to call io.open"):
        cifar_batches(str(tmp_path), "cifar10", train=where != "test_batch")
    assert not marker.exists()


def test_object_arrays_are_refused_even_without_a_callable(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "a").write_bytes(pickle.dumps({"data": np.array([Payload(marker)], dtype=object)}))
    with pytest.raises(UnsafePickleError, match="io.open"):
        load_plain(tmp_path / "a")
    assert not marker.exists()
    (tmp_path / "b").write_bytes(pickle.dumps({"data": np.array([1, "two"], dtype=object)}))
    with pytest.raises(UnsafePickleError, match="array of python objects"):
        load_plain(tmp_path / "b")


def test_protocol_2_bytes_admit_latin1_only(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(pickle.dumps(b"abc", protocol=2).replace(b"latin1", b"utf_16"))
    with pytest.raises(UnsafePickleError, match="latin-1 byte strings only"):
        load_plain(tmp_path / "f")


def malicious_npz(path: Path, marker: Path, key: str) -> None:
    """An .npz whose ``key`` array is a pickled object array carrying the payload (numpy writes it so)."""
    np.savez(path, **{key: np.array([Payload(marker)], dtype=object)}, allow_pickle=True)


def test_event_file_that_runs_code_is_refused(tmp_path: Path) -> None:
    write_cifar10_dvs(tmp_path, 1)
    marker = tmp_path / "pwned"
    target = tmp_path / "events_np" / "dog" / "000.npz"
    malicious_npz(target, marker, "t")
    with pytest.raises(ValueError, match=r"(?s)spikingjelly could not prepare.*pickle"):
        event_frames("cifar10-dvs", str(tmp_path), 2, train=True)
    assert not marker.exists()


def test_frames_cache_file_that_runs_code_is_refused(tmp_path: Path) -> None:
    write_cifar10_dvs(tmp_path, 2)
    dataset, indices, _ = event_frames("cifar10-dvs", str(tmp_path), 2, train=True)  # builds the cache
    marker = tmp_path / "pwned"
    target = tmp_path / "frames_number_2_split_by_number" / "airplane" / "000.npz"
    malicious_npz(target, marker, "frames")
    dataset, indices, _ = event_frames("cifar10-dvs", str(tmp_path), 2, train=True)
    with pytest.raises(ValueError, match=rf"refused event frames file {target}"):
        dataset[indices[0]]
    assert not marker.exists()
    assert dataset[indices[1]][0].shape == (2, 2, 128, 128)


def test_sfh_energy_refuses_a_cifar_folder_that_runs_code(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from harness.cli import main

    write_cifar(tmp_path, "cifar10")
    marker = tmp_path / "pwned"
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": Payload(marker)}))
    assert main(["energy", "--model", "spikingformer_cifar_4_256", "--T", "1", "--data", f"cifar10:{tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sfh energy: error: refused CIFAR file: {meta} asks to call io.open") and "\n" not in err
    assert not marker.exists()
