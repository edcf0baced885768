"""Weights into a model from any checkpoint file: ours (training checkpoints) or an upstream repository's.

:func:`read_checkpoint` reads a file (or a run's checkpoint folder) as plain data, never running pickled
code; :func:`model_config` recovers the model a checkpoint of ours records; :func:`load_weights` loads
either kind strictly. Used by ``sfh energy``, the end-of-training evaluation and anyone with a file.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from spikingformer.checkpoints.training import read_file, resolve_checkpoint
from spikingformer.checkpoints.upstream import load_upstream_state_dict, unwrap
from spikingformer.config import ModelConfig

#: The classifier's weight, under the same name in our layout and upstream's.
HEAD_WEIGHT = "head.weight"


class Checkpoint(NamedTuple):
    """A checkpoint's file and its content (plain data)."""

    path: Path
    content: Mapping[str, Any]


def read_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint file, or a training run's checkpoint folder (its last.pt), read as plain data."""
    file = resolve_checkpoint(path)
    # timm training checkpoints (upstream's) also pickle the argparse Namespace of their run.
    with torch.serialization.safe_globals([argparse.Namespace]):
        content = read_file(file)
    if not isinstance(content, Mapping):
        raise ValueError(f"checkpoint {file} holds a {type(content).__name__}, not a state_dict")
    return Checkpoint(file, content)


def model_config(name: str | None, checkpoint: Checkpoint | None, overrides: dict[str, Any], flag: str) -> ModelConfig:
    """``name`` with the settings a training checkpoint of ours records (its config), then ``overrides``."""
    config = checkpoint.content.get("config") if checkpoint else None
    trained = config.get("model") if isinstance(config, Mapping) else None
    if trained is None:
        if name is None:
            source = f"checkpoint {checkpoint.path} records no model" if checkpoint else "no checkpoint records one"
            raise ValueError(f"{flag} NAME is required: {source}")
        return ModelConfig(name, overrides)
    if name not in (None, trained["name"]):
        raise ValueError(f"checkpoint {checkpoint.path} holds a {trained['name']} model, not {flag} {name}")
    return ModelConfig(trained["name"], {**trained["kwargs"], **overrides})


def head_classes(checkpoint: Checkpoint) -> int | None:
    """The class count of the checkpoint's classifier (``head.weight``, in our layout and upstream's), if any."""
    weight = unwrap(checkpoint.content).get(HEAD_WEIGHT)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim == 2 else None


def load_weights(model: nn.Module, checkpoint: Checkpoint, *, new_head: bool = False) -> None:
    """Load our own state_dict or an upstream checkpoint (told apart by whether most keys are ours).

    Either may sit in a training-script wrapper. The weights must fit the model exactly, or a
    ``ValueError`` names what does not; with ``new_head``, a classifier of another class count is the
    exception: every other weight loads and the model keeps a new classifier of its own count (fine-tuning
    from another dataset, through timm's ``reset_classifier``).
    """
    classes = model.num_classes
    trained = head_classes(checkpoint) if new_head else None
    if trained is not None and trained != classes:
        model.reset_classifier(trained)
        _load_exactly(model, checkpoint)
        model.reset_classifier(classes)
    else:
        _load_exactly(model, checkpoint)


def _load_exactly(model: nn.Module, checkpoint: Checkpoint) -> None:
    path, state = checkpoint.path, unwrap(checkpoint.content)
    ours = model.state_dict()
    if sum(key in ours for key in state) * 2 < len(state):  # mostly foreign names: an upstream layout
        try:
            load_upstream_state_dict(model, checkpoint.content)
        except (KeyError, RuntimeError, ValueError) as err:
            raise ValueError(f"upstream checkpoint {path} does not fit {type(model).__name__}: {err}") from err
        return
    problems = [f"missing {k}" for k in ours if k not in state] + [f"unexpected {k}" for k in state if k not in ours]
    problems += [
        f"{k}: checkpoint {list(v.shape)}, model {list(ours[k].shape)}"
        for k, v in state.items()
        if k in ours and tuple(v.shape) != tuple(ours[k].shape)
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} problems)" if len(problems) > 5 else "")
        raise ValueError(f"checkpoint {path} does not fit the model: {shown}")
    model.load_state_dict(state)
