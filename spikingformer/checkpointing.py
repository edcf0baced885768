"""Training checkpoints: written atomically, read back with ``weights_only=True``.

A checkpoint is a plain mapping of tensors, numbers, strings, lists and dicts (no pickled objects), so
loading one can never execute code. A crash mid-write leaves the previous file intact (tmp + os.replace).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write ``state`` to ``path`` via a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """Atomic copy (e.g. last.pt -> best.pt)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


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


def state_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes: equal on every rank of a healthy DDP run."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
