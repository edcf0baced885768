"""Training checkpoints: written atomically, read back with ``weights_only=True``.

A checkpoint is a plain mapping of tensors, numbers, strings, lists and dicts (no pickled objects), so
loading one can never execute code. A crash mid-write leaves the previous file intact (tmp + os.replace),
and a failed write removes its temporary file.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAST = "last.pt"
BEST = "best.pt"


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


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load on CPU; the caller moves state to its device."""
    return torch.load(resolve_checkpoint(path), map_location="cpu", weights_only=True)


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
