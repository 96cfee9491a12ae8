"""Run configurations as frozen dataclasses: `--set key=value` overrides, JSON round trips, and
Python preset files whose `get_config()` returns one (big_vision / Flax-examples style).

Shared by every kind of run (distillation, fine-tuning), so a preset, a saved `config.json` and a
command-line override mean the same thing everywhere. Values are checked against the field's
annotated type, so a typo fails before any work starts.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import types
import typing
from typing import Any

from distilbert_jax.errors import UserError
from distilbert_jax.training.mesh import MeshShape
from distilbert_jax.training.optimizer import OptimizerConfig

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


class RunConfig:
    """What every run's frozen dataclass shares: the optimizer and mesh it describes (from fields
    named alike in every run config), copies, JSON round trips, overrides, and field checks."""

    @property
    def optimizer(self) -> OptimizerConfig:
        return OptimizerConfig(self.learning_rate, self.warmup_fraction, self.adam_b1, self.adam_b2, self.adam_eps,
                               self.weight_decay, self.max_grad_norm, self.accumulate)

    @property
    def mesh(self) -> MeshShape:
        return MeshShape(self.mesh_data, self.mesh_fsdp)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return from_dict(cls, data)

    def with_overrides(self, assignments: list[str]):
        return apply_overrides(self, assignments)

    def check(self, checks: list[tuple[bool, str]]) -> None:
        """Raise the first failed (ok, message) as a one-line config error."""
        checks = checks + [(self.compute_dtype in COMPUTE_DTYPES, f"compute_dtype must be one of {COMPUTE_DTYPES}")]
        for ok, message in checks:
            if not ok:
                raise UserError(f"config: {message}")


def to_dict(config) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def from_dict(cls, data: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"config: unknown field(s) {', '.join(unknown)}")
    return cls(**{k: _coerce(k, v, _field_type(cls, k)) for k, v in data.items()})


def apply_overrides(config, assignments: list[str]):
    """`key=value` strings onto a frozen dataclass; values are Python literals (`5e-4`, `(0, 2)`,
    `None`) or plain text, checked against the field's annotated type."""
    changes: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(config)}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in names:
            hint = f"; fields: {', '.join(sorted(names))}" if sep else ""
            raise UserError(f"--set {item!r}: expected key=value with a config field as key{hint}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        changes[key] = _coerce(key, value, _field_type(type(config), key))
    return dataclasses.replace(config, **changes)


def _field_type(cls, name: str):
    return typing.get_type_hints(cls)[name]


def _coerce(name: str, value: Any, hint) -> Any:
    """Check and convert a value to the field's annotated type (ints for floats, lists for tuples)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise UserError(f"config: {name} cannot be None")
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is str and isinstance(value, str):
            return value
        if origin is tuple and isinstance(value, (list, tuple)):
            item = (typing.get_args(option) or (int,))[0]
            return tuple(item(v) for v in value)
        if origin is dict and isinstance(value, dict):
            return dict(value)
    raise UserError(f"config: {name}={value!r} should be of type {hint}")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def load_config(cls, path: str | None, overrides: list[str] | None = None, *, default=None):
    """A preset file (`get_config()`), a saved `config.json`, or `default` (else `cls()`); then overrides."""
    if path is None:
        config = default if default is not None else cls()
    elif path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                config = from_dict(cls, json.load(f))
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read config {path}: {err}") from None
    else:
        config = _from_python_file(cls, path)
    return apply_overrides(config, overrides or [])


def _from_python_file(cls, path: str):
    if not os.path.isfile(path):
        raise UserError(f"config file {path} not found; presets live in experiments/configs/")
    spec = importlib.util.spec_from_file_location(f"run_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"config file {path} failed to run: {type(err).__name__}: {err}") from None
    if not hasattr(module, "get_config"):
        raise UserError(f"config file {path} must define get_config() returning a {cls.__name__}")
    config = module.get_config()
    if not isinstance(config, cls):
        raise UserError(f"{path}: get_config() returned {type(config).__name__}, not a {cls.__name__}")
    return config
