"""From raw YAML to what a row trains: reading files, laying overrides over a recipe, checking the model, hashing.

The lower piece every experiment-file module shares: the schema (``schema``), the grid pre-pass (``grid``)
and search files (``search_space``) all read YAML and resolve a row's TrainConfig mapping through here, so
none of them needs another. A row's identity (:func:`config_hash`) is what it trains, not where it runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from spikingformer._validation import ConfigError, deep_merge, did_you_mean, load_yaml
from spikingformer.config import ModelConfig
from spikingformer.models import build_model
from spikingformer.recipes import RECIPES, load_recipe

#: TrainConfig keys that say where and how a run executes, not what it trains: changing them (another
#: machine's data folder, more loader processes, a GPU, checkpoints written more often) keeps a run's identity.
MACHINE_KEYS = frozenset({"data.root", "data.num_workers", "runtime.device", "runtime.checkpoint_every",
                          "runtime.checkpoint_every_updates", "runtime.checkpoint_every_minutes",
                          "runtime.lif_backend"})


def _siblings(path: Path) -> str:
    """What the missing file's folder does hold: the closest YAML files first, or all of them if few."""
    folder = path.parent if path.parent.is_dir() else None
    found = sorted(p.name for p in folder.glob("*.yaml")) if folder is not None else []
    if not found:
        return ""
    near = did_you_mean(path.name, found)
    if near:
        return f"; did you mean {near} in {folder}/?"
    return f"; {folder}/ holds {', '.join(found[:12])}{' ...' if len(found) > 12 else ''}"


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file; a missing file or a syntax error names the file (and the parser's line and column)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist{_siblings(path)}")
    try:
        return load_yaml(path.read_text())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def check_recipe(name: str | None, where: str) -> None:
    """A recipe name must be one ``spikingformer.recipes`` knows (null: the file gives the whole TrainConfig)."""
    if name is not None and name not in RECIPES:
        raise ConfigError(f"{where}: recipe: unknown recipe {name!r}; known: {', '.join(RECIPES)}")


def check_model(model: ModelConfig, where: str) -> None:
    """Build the model on the meta device (no memory): kwargs the constructor refuses fail here, not on a worker."""
    with torch.device("meta"):
        try:
            build_model(model.name, **model.kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}.model: {model.name} with kwargs {model.kwargs}: {err}") from err


def train_mapping(recipe: str | None, train: Mapping[str, Any], model: Mapping[str, Any],
                  row_train: Mapping[str, Any]) -> dict[str, Any]:
    """A row's TrainConfig as a plain mapping: ``recipe`` <- the file's ``train`` <- the row's ``model`` and
    ``train`` (a row's model is ``{name, kwargs, finetune}``)."""
    base = load_recipe(recipe) if recipe else {}
    model_part = {"name": model.get("name"), "kwargs": dict(model.get("kwargs") or {})}
    if model.get("finetune") is not None:
        model_part["finetune"] = model["finetune"]
    return deep_merge(deep_merge(base, dict(train)), deep_merge({"model": model_part}, dict(row_train)))


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """{"optim.lr": 1e-3} -> {"optim": {"lr": 1e-3}}, the shape TrainConfig overrides take."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b.c": "value"}, the shape MLflow params take.

    A tuple reads as a list: Tune hands a restored trial its config with lists where the original had tuples,
    and the config hash must not tell them apart.
    """
    out: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(list(value) if isinstance(value, tuple) else value)
    return out


def config_identity(train: Mapping[str, Any]) -> dict[str, str]:
    """What a run trains: its flattened TrainConfig without the ``MACHINE_KEYS``."""
    return {k: v for k, v in flatten(train).items() if k not in MACHINE_KEYS}


def config_hash(train: Mapping[str, Any]) -> str:
    """A short digest of :func:`config_identity`: equal for a retry, a resume or another machine's run."""
    text = json.dumps(config_identity(train), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
