"""The mapping between Flax parameter trees and PyTorch state dicts.

Because the module tree is named like PyTorch (see models/), the mapping is mechanical: join the
path with dots and rename the leaf (`kernel` -> `weight`, transposed; `scale`/`embedding` ->
`weight`). Everything else here is the handful of irregularities real files have: the base-model
prefix present or not, `LayerNorm.gamma/beta` in old files, tied decoder weights present or not,
and buffers that are not parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from distilbert_jax.errors import UserError
from distilbert_jax.weights.lazy import FileTensor

_LEAF_TO_PT = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
# First key part of a base model's tensors (DistilBERT's "transformer"; GPT-2's "wte", "h", ...).
_BASE_MODULES = ("embeddings", "transformer", "encoder", "pooler", "wte", "wpe", "h", "ln_f")
# Non-persistent tensors some files carry: position ids, and old GPT-2 files' causal-mask buffers
# (`h.0.attn.bias`, `h.0.attn.masked_bias`; the layer's own bias is `attn.c_attn.bias`).
_BUFFERS = ("position_ids", "token_type_ids", "masked_bias")
# Tied copies of the word embeddings (and of the MLM bias) that files may or may not contain.
TIED_KEYS = ("vocab_projector.weight", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
             "lm_head.decoder.weight", "lm_head.decoder.bias", "lm_head.weight")


def pt_key(path: tuple[str, ...]) -> str:
    *parent, leaf = path
    return ".".join([*parent, _LEAF_TO_PT[leaf]])


def flax_to_state_dict(params) -> dict[str, "np.ndarray | FileTensor"]:
    """Flax params -> PyTorch names, Linear weights transposed to [out, in].

    Nothing is copied: arrays come back as (transposed) host views and `FileTensor`s as views of
    their file, so a writer can read and write them one at a time (files.write_safetensors).
    """
    out = {}
    for path, value in flatten_dict(_plain(params)).items():
        value = value if isinstance(value, FileTensor) else np.asarray(value)
        out[pt_key(path)] = value.T if path[-1] == "kernel" else value
    return out


@dataclasses.dataclass
class LoadReport:
    """What loading did besides copying tensors; `missing` were freshly initialised."""

    missing: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    tied: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"newly initialised (not in the file): {', '.join(self.missing)}")
        if self.unused:
            parts.append(f"in the file but not used by this model: {', '.join(self.unused)}")
        return "; ".join(parts)


def state_dict_to_flax(
    state: dict[str, np.ndarray],
    expected: dict,
    *,
    prefix: str | None,
    family_prefix: str,
    fill_missing: Callable[[tuple[str, ...]], np.ndarray | None],
    source: str = "checkpoint",
) -> tuple[dict, LoadReport]:
    """Build the parameter tree whose shapes are `expected` (from `jax.eval_shape(module.init)`).

    `prefix` is the base-model prefix this module uses (None for a bare encoder); files saved
    from a head model carry `family_prefix` and files of a bare encoder do not, so keys are moved
    to match. A missing encoder tensor is an error; a missing head tensor (a classifier on top of
    a pretrained encoder) is taken from `fill_missing` and reported, like transformers does.
    """
    state = _normalise(state, prefix=prefix, family_prefix=family_prefix)
    report = LoadReport()
    params: dict[tuple[str, ...], np.ndarray] = {}
    missing_encoder: list[str] = []
    for path, spec in flatten_dict(_plain(expected)).items():
        key = pt_key(path)
        if key in state:
            value = state.pop(key)
            want = tuple(spec.shape)
            if path[-1] == "kernel":  # compare in PyTorch's [out, in] orientation, as the file has it
                want = want[::-1]
            if tuple(value.shape) != want:
                raise UserError(
                    f"{source}: {key} has shape {tuple(value.shape)} but the config expects "
                    f"{want}; the config.json does not match the weights"
                )
            if path[-1] == "kernel":
                value = value.T
            # a FileTensor stays in its file (read by slices when placed); arrays are converted now
            params[path] = value.astype(spec.dtype) if isinstance(value, FileTensor) else np.asarray(value, spec.dtype)
            continue
        filled = fill_missing(path)
        if filled is None:
            missing_encoder.append(key)
            continue
        params[path] = np.asarray(filled, dtype=spec.dtype)
        if not _is_sinusoid_table(path):
            report.missing.append(key)
    if missing_encoder:
        more = f" and {len(missing_encoder) - 3} more" if len(missing_encoder) > 3 else ""
        raise UserError(
            f"{source} lacks {', '.join(missing_encoder[:3])}{more}; it is not a checkpoint of this "
            "architecture, or the config.json does not match it"
        )
    report.tied = [k for k in TIED_KEYS if state.pop(k, None) is not None]
    report.unused = sorted(state)
    return unflatten_dict(params), report


def _normalise(state: dict[str, np.ndarray], *, prefix: str | None, family_prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for key, value in state.items():
        if key.split(".")[-1] in _BUFFERS or key.endswith(".attn.bias"):
            continue
        if key.endswith(".gamma"):
            key = key[: -len("gamma")] + "weight"
        elif key.endswith(".beta"):
            key = key[: -len("beta")] + "bias"
        out[key] = value
    has_prefix = any(k.startswith(family_prefix + ".") for k in out)
    if prefix is not None and not has_prefix:
        out = {(f"{prefix}.{k}" if k.split(".")[0] in _BASE_MODULES else k): v for k, v in out.items()}
    elif prefix is None and has_prefix:
        strip = len(family_prefix) + 1
        out = {(k[strip:] if k.startswith(family_prefix + ".") else k): v for k, v in out.items()}
    return out


def _is_sinusoid_table(path: tuple[str, ...]) -> bool:
    return "position_embeddings" in path


def _plain(tree):
    """FrozenDict / nested mappings -> plain dicts (flatten_dict needs a dict)."""
    if hasattr(tree, "items"):
        return {k: _plain(v) for k, v in tree.items()}
    return tree
