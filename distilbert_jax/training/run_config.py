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

from distilbert_jax import precision
from distilbert_jax.errors import UserError
from distilbert_jax.models.attention import IMPLEMENTATIONS

# Flat names of fields that now live in a nested config: saved config.json files and `--set` lines
# written before the nesting still mean the same thing.
LEGACY_NAMES: dict[str, str] = {
    "learning_rate": "optimizer.learning_rate", "warmup_fraction": "optimizer.warmup_fraction",
    "adam_b1": "optimizer.b1", "adam_b2": "optimizer.b2", "adam_eps": "optimizer.eps",
    "weight_decay": "optimizer.weight_decay", "max_grad_norm": "optimizer.max_grad_norm",
    "accumulate": "optimizer.accumulate", "mesh_data": "mesh.data", "mesh_fsdp": "mesh.fsdp",
}
# Old fields whose meaning is now part of another field's value: {old name: (field, value from old value)}.
LEGACY_VALUES: dict[str, tuple[str, typing.Callable[[Any], Any]]] = {
    "compute_dtype": ("precision", lambda dtype: f"params=float32,compute={dtype}"),
}


class RunConfig:
    """What every run's frozen dataclass shares: nested sections (`optimizer`, `mesh`, ...) set
    with dotted names (`optimizer.learning_rate`), copies, JSON round trips, overrides, checks."""

    legacy_names: typing.ClassVar[dict[str, str]] = LEGACY_NAMES

    def replace(self, **changes: Any):
        """A copy with fields changed; nested ones by dotted or legacy flat name
        (`replace(**{"optimizer.learning_rate": 1e-4})`, `replace(learning_rate=1e-4)`)."""
        return _with(self, _tree(type(self), changes))

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def flat(self) -> dict[str, Any]:
        """{dotted name: value} of every leaf field (JSON values)."""
        return _flatten(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return from_dict(cls, data)

    def changed_from(self, saved: dict[str, Any], resumable: set[str]) -> list[str]:
        """Dotted names of fields that differ from a saved config (nested or from before the
        nesting), leaving out those a resumed run may change."""
        try:
            before = type(self).from_dict(saved).flat()
        except UserError:  # fields this version does not know: everything counts as changed
            before = {}
        return sorted(k for k, v in self.flat().items() if k not in resumable and before.get(k) != v)

    def with_overrides(self, assignments: list[str]):
        return apply_overrides(self, assignments)

    @property
    def policy(self) -> precision.Policy:
        """The `precision` string parsed (see precision.py)."""
        return precision.Policy.parse(self.precision)

    def check(self, checks: list[tuple[bool, str]]) -> None:
        """Raise the first failed (ok, message) as a one-line config error; the precision policy
        and the attention form are checked for every kind of run."""
        try:
            self.policy.check_trainable()
        except UserError as err:
            raise UserError(f"config: {err}") from None
        checks = checks + [
            (self.attention in IMPLEMENTATIONS, f"attention must be one of {IMPLEMENTATIONS}"),
            (not (self.dropout and self.attention in ("xla", "cudnn")),
             f"attention={self.attention!r} has no dropout; use attention='auto' (or set dropout=False)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"config: {message}")


def to_dict(config) -> dict[str, Any]:
    return {f.name: (to_dict(v) if dataclasses.is_dataclass(v := getattr(config, f.name)) else _jsonable(v))
            for f in dataclasses.fields(config)}


def _flatten(config, prefix: str = "") -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_flatten(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = _jsonable(value)
    return out


def from_dict(cls, data: dict[str, Any]):
    """A config from its `to_dict` (nested) or from a file written before the nesting (flat)."""
    return _with(cls(), _tree(cls, data))


def _field_names(cls) -> list[str]:
    """Every settable name, nested ones dotted."""
    out = []
    for f in dataclasses.fields(cls):
        hint = _field_type(cls, f.name)
        if dataclasses.is_dataclass(hint):
            out += [f"{f.name}.{n}" for n in _field_names(hint)]
        else:
            out.append(f.name)
    return out


def _tree(cls, changes: dict[str, Any]) -> dict[str, Any]:
    """{name, dotted name or legacy name: value} -> nested {section: {field: value}}."""
    legacy = getattr(cls, "legacy_names", {})
    tree: dict[str, Any] = {}
    for key, value in changes.items():
        if key in LEGACY_VALUES:
            key, value = LEGACY_VALUES[key][0], LEGACY_VALUES[key][1](value)
        parts = legacy.get(key, key).split(".")
        node, owner = tree, cls
        for part in parts[:-1]:
            if part not in {f.name for f in dataclasses.fields(owner)}:
                raise UserError(f"config: unknown field {key!r}; fields: {', '.join(_field_names(cls))}")
            owner = _field_type(owner, part)
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)  # a section given whole and some of its fields by name
        else:
            node[parts[-1]] = dict(value) if isinstance(value, dict) else value
    return tree


def _with(obj, tree: dict[str, Any], prefix: str = ""):
    """`obj` with the nested changes of `tree`, each value checked against its field's type."""
    names = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for name, value in tree.items():
        if name not in names:
            fields = ", ".join(prefix + n for n in _field_names(type(obj)))
            raise UserError(f"config: unknown field {prefix}{name}; fields: {fields}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"config: {prefix}{name} is a section; set its fields ({prefix}{name}.<field>=...)")
            changes[name] = _with(current, value, f"{prefix}{name}.")
        else:
            changes[name] = _coerce(prefix + name, value, _field_type(type(obj), name))
    return dataclasses.replace(obj, **changes) if changes else obj


def apply_overrides(config, assignments: list[str]):
    """`key=value` strings onto a frozen dataclass; keys may be dotted (`optimizer.learning_rate`);
    values are Python literals (`5e-4`, `(0, 2)`, `None`) or plain text, checked against the
    field's annotated type."""
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value with a config field as key; "
                            f"fields: {', '.join(_field_names(type(config)))}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        try:
            _with(config, _tree(type(config), {key: value}))  # each assignment checked on its own first
        except UserError as err:
            raise UserError(f"--set {item!r}: {str(err).removeprefix('config: ')}") from None
        changes[key] = value
    return _with(config, _tree(type(config), changes))


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
    raise UserError(f"config: {name}={value!r} should be of type {getattr(hint, '__name__', hint)}")


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
