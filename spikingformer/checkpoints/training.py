"""Training checkpoints: written atomically, read back with ``weights_only=True``.

A checkpoint is a plain mapping of tensors, numbers, strings, lists and dicts (no pickled objects), so
loading one can never execute code. A crash mid-write leaves the previous file intact (tmp + os.replace),
and a failed write removes its temporary file. A file that cannot be read says why (:class:`CheckpointError`),
and a run resumes from the newest intact checkpoint it has (:func:`newest_intact`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

LAST = "last.pt"
BEST = "best.pt"

log = logging.getLogger(__name__)


def _atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """``write`` a temporary file beside ``path``, then rename it over ``path``; no temp file survives a failure."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write ``state`` to ``path`` via a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return _atomic(path, lambda tmp: torch.save(state, tmp))


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """Atomic copy (e.g. last.pt -> best.pt)."""
    return _atomic(dst, lambda tmp: shutil.copyfile(src, tmp))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a folder holding ``last.pt``."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (give a .pt file or a folder holding {LAST})")
    return path


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file(s) and why."""


def _unreadable(file: Path, err: BaseException) -> str:
    """Why torch could not read ``file``, in words (torch's own text for the rest)."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        if not detail.startswith("Unsupported global"):
            return f"not a PyTorch checkpoint (unpickling stops at: {detail})"
        refused = detail.split(" was not an allowed global")[0]
        return (
            f"it holds pickled objects that safe loading refuses ({refused}); unpickling them could run code the "
            "file carries, so it is not loaded (torch's advice to retry with weights_only=False is only for files "
            "you made yourself)"
        )
    if "central directory" in text or isinstance(err, EOFError):
        return f"it is truncated or corrupt ({file.stat().st_size} bytes; not a complete PyTorch archive)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"not a PyTorch checkpoint ({type(err).__name__}: {first})" if first else f"{type(err).__name__}"


def read_file(file: Path, *, mmap: bool = False) -> Any:
    """``torch.load(file, weights_only=True)`` on CPU; :class:`CheckpointError` says why a file cannot be read
    (missing, empty, truncated, not a checkpoint, pickled objects refused). ``mmap`` maps tensors lazily."""
    try:
        size = file.stat().st_size
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {file}: {err.strerror or err}") from err
    if size == 0:
        raise CheckpointError(f"cannot read checkpoint {file}: the file is empty (0 bytes)")
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        raise CheckpointError(f"cannot read checkpoint {file}: {_unreadable(file, err)}") from err


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load on CPU; the caller moves state to its device."""
    return read_file(resolve_checkpoint(path))


def resume_candidates(path: str | Path) -> list[Path]:
    """The files a run could resume from: a folder's ``last.pt`` and ``best.pt`` (those present), or a file."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return [path]
    return [path / name for name in (LAST, BEST) if (path / name).is_file()] or [path / LAST]


class Intact(NamedTuple):
    """The checkpoint chosen to resume from, its content, and why each other candidate was skipped."""

    path: Path
    content: dict[str, Any]
    skipped: list[str]


def _progress(content: dict[str, Any]) -> tuple[int, int, int]:
    """How far a training checkpoint got: its epoch, then whether that epoch was whole (an epoch-end checkpoint)
    or the batches an in-epoch one had trained."""
    position = content.get("position")
    if isinstance(position, dict):
        return content["epoch"], 0, int(position.get("batches", 0))
    return content["epoch"], 1, 0


def newest_intact(candidates: Sequence[str | Path]) -> Intact:
    """The checkpoint that got furthest (epoch, then position inside it) among ``candidates`` that can be read, and
    its content; the first candidate given wins a tie.

    A truncated, empty or corrupt file (a copy cut off, a full disk) is skipped with a warning naming it and
    why, so an intact older checkpoint resumes the run instead of failing it on every retry. Only when none
    can be read does this fail, naming every file tried. Files are mapped, not read, until their tensors are used.
    """
    intact: list[tuple[int, int, Path, dict[str, Any]]] = []
    problems = []
    for order, file in enumerate(Path(c) for c in candidates):
        try:
            content = read_file(file, mmap=True)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if not isinstance(content, dict) or not isinstance(content.get("epoch"), int):
            problems.append(f"cannot use checkpoint {file}: it is not a training checkpoint (no epoch)")
            continue
        intact.append((_progress(content), -order, file, content))
    if not intact:
        tried = "\n  ".join(problems) or "(none given)"
        raise CheckpointError(f"no intact checkpoint to resume from; tried:\n  {tried}")
    _, _, file, content = max(intact, key=lambda item: item[:2])
    for problem in problems:
        log.warning("%s; resuming from %s (epoch %d) instead", problem, file, content["epoch"])
    return Intact(file, content, problems)


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's python, numpy, torch CPU and (on CUDA) ``device`` generator states, as plain tensors/numbers.

    ``weights_only`` loading refuses numpy arrays and python's state tuple as they come, so both become int64
    tensors beside their scalar fields.
    """
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": (version, torch.tensor(mt, dtype=torch.int64), gauss),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Put back what :func:`rng_state` captured: the next draw of every generator is the one it would have made."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def state_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes: equal on every rank of a healthy DDP run."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
