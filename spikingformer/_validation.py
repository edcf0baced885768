"""The validation framework of every configuration: dataclass sections built from plain mappings (YAML).

A ``Section`` is a dataclass; :func:`section_from_dict` builds one from a mapping, refusing unknown keys,
mistyped and non-finite values with a ``ConfigError`` that names the key path, the value and what is allowed,
then runs the section's own ``validate``. The training config (``spikingformer.config``) and the harness's
experiment schema are written in it. Private: the sections are the API, this is their machinery.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or impossible; the message names the key.

    One error may carry several problems (``problems``), each naming its key: a file is checked whole, so that
    every mistake in it is reported at once rather than one per attempt.
    """

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems)
        super().__init__(problems[0] if len(problems) == 1 else
                         f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))


class Problems:
    """Collects the ConfigErrors of several checks, to raise them as one (``raise_any``)."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def check(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, or None with its ConfigError's problems kept."""
        try:
            return fn(*args, **kwargs)
        except ConfigError as err:
            self.found += err.problems
            return None

    def raise_any(self) -> None:
        if self.found:
            raise ConfigError(*self.found)


def did_you_mean(word: str, choices: Any) -> str:
    """``"'x'"`` (or ``"'x' or 'y'"``) for the choices close to ``word``, else ``""``."""
    near = difflib.get_close_matches(str(word), [str(c) for c in choices], n=2, cutoff=0.6)
    return " or ".join(repr(n) for n in near)


class _Yaml12Floats(yaml.SafeLoader):
    """PyYAML's safe loader reading floats as YAML 1.2 does: ``1e-4`` is a number (YAML 1.1, PyYAML's
    default, wants ``1.0e-4`` and otherwise gives the string "1e-4", which every float key then refuses)."""


_Yaml12Floats.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Floats.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML safely (no code runs), with scientific notation such as ``lr: 1e-4`` read as a number."""
    return yaml.load(text, Loader=_Yaml12Floats)  # noqa: S506 (a SafeLoader subclass)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _check_type(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        return section_from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_types = get_args(tp)
        if len(item_types) == 2 and item_types[1] is Ellipsis:
            problems = Problems()
            items = tuple(problems.check(_check_type, v, item_types[0], f"{where}[{i}]") for i, v in enumerate(value))
            problems.raise_any()
            return items
        if len(value) != len(item_types):
            raise ConfigError(f"{where}: expected {len(item_types)} values, got {len(value)}")
        return tuple(_check_type(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, item_types, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} is not allowed (a finite number)")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} at {where}")


def section_from_dict(cls: type, data: Any, where: str) -> Any:
    """A ``Section`` dataclass from a mapping: unknown keys and mistyped values are ``ConfigError``s naming
    ``where`` and the key; then the section's own ``validate``. Public: the harness's schemas reuse it."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = Problems()
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        guesses = "".join(f" ({key!r}: did you mean {near}?)" for key in unknown if (near := did_you_mean(key, fields)))
        problems.found.append(f"{where}: unknown key(s) {unknown}{guesses}; allowed: {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = problems.check(_check_type, data[name], hints[name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.found.append(f"{path}: required key is missing")
    problems.raise_any()
    obj = cls(**kwargs)
    obj.validate(where)
    return obj


def require(cond: bool, where: str, key: str, value: Any, allowed: str) -> None:
    """A ``ConfigError`` naming the key, the value and what is allowed, unless ``cond``."""
    if not cond:
        raise ConfigError(f"{where + '.' if where else ''}{key}: {value!r} is not allowed ({allowed})")


#: Characters no name that becomes a file or folder name may hold: path separators, NUL, control characters.
_UNSAFE_IN_NAMES = re.compile(r"[/\\\x00-\x1f\x7f]")


def folder_name_problem(name: str, *, segments: bool = False) -> str | None:
    """What keeps ``name`` from being one folder name inside its parent (None when nothing does): empty, ``.``
    or ``..``, a path separator or control character, surrounding spaces. With ``segments``, ``/`` separates
    names that are each checked (grid point ids such as ``4-384/T=2``)."""
    if name != name.strip():
        return "it has surrounding spaces"
    for part in name.split("/") if segments else [name]:
        if part in ("", ".", ".."):
            if part:
                return f"{'a segment' if segments else 'it'} is {part!r}"
            return "it has an empty segment" if segments else "it is empty"
        if _UNSAFE_IN_NAMES.search(part):
            return "it holds a path separator or control character"
    return None


def require_folder_name(name: str, where: str, key: str, *, segments: bool = False) -> None:
    """A ``ConfigError`` unless ``name`` stays one folder inside its parent (:func:`folder_name_problem`)."""
    problem = folder_name_problem(name, segments=segments)
    kind = "'/'-separated folder names" if segments else "a folder name"
    require(problem is None, where, key, name, f"{kind} that stay(s) inside the parent folder; {problem}")


class Section:
    """Base of every validated configuration dataclass (here and in the harness's schemas)."""

    def validate(self, where: str) -> None:
        """Cross-field and range checks; overridden per section."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively overlay ``override`` on ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
