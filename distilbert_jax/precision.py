"""The precision policy: which dtype parameters are kept in and which the matmuls run in, as one string.

    "params=float32,compute=bfloat16"   (or "p=f32,c=bf16"; a lone "bfloat16" means both)

as jmp and Levanter spell it. Whatever the compute dtype, what needs the range or the digits is
float32, and this file is where that is decided for every model and loss here:

- attention scores and vocabulary logits accumulate in float32 (`preferred_element_type`), so a
  bf16 step never rounds a score or a logit to 8 bits of mantissa before the softmax;
- softmax, LayerNorm statistics (Flax computes them in float32) and every loss are float32;
- on accelerators the vocabulary is padded to a multiple of 128 inside the projection
  (`pad_vocab`): 30,522 rows is not a multiple of 8, and bf16 tensor-core GEMMs tile in 64s and
  128s; the padded columns are masked, sliced off before anything is returned, and never reach a
  saved file. On CPU there is nothing to tile for, and the padded copies of both models' tables cost
  the base-size distillation step 5% of its time and 0.19 GB, so it is not padded there.

float16 has five exponent bits: its gradients underflow without loss scaling. Training in it
therefore goes through `loss_scale.py` (dynamic loss scaling, as jmp and optax do); bfloat16 has
float32's exponent and needs none.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from distilbert_jax.errors import UserError

_NAMES = {"float32": "float32", "f32": "float32", "fp32": "float32", "full": "float32",
          "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "f16": "float16", "fp16": "float16", "half": "float16"}
_KEYS = {"params": "params", "p": "params", "compute": "compute", "c": "compute"}

VOCAB_MULTIPLE = 128  # rows the vocabulary projection is padded to a multiple of (see pad_vocab)
F32 = jnp.float32


def dtype_name(name: Any) -> str:
    """'bf16', jnp.bfloat16, np.dtype('bfloat16') ... -> 'bfloat16'; a one-line error otherwise."""
    if name is None:
        return "float32"
    if not isinstance(name, str):
        name = jnp.dtype(name).name
    try:
        return _NAMES[name.strip().lower()]
    except KeyError:
        raise UserError(f"dtype {name!r} is not supported; use float32, bfloat16 or float16") from None


def as_dtype(name: Any) -> Any:
    """A dtype name or object -> the jnp scalar type (jnp.float32, jnp.bfloat16, jnp.float16)."""
    return getattr(jnp, dtype_name(name))


@dataclasses.dataclass(frozen=True)
class Policy:
    params: str = "float32"
    compute: str = "float32"

    @classmethod
    def parse(cls, text: str | "Policy") -> "Policy":
        if isinstance(text, Policy):
            return text
        text = str(text).strip()
        if "=" not in text:
            name = dtype_name(text)
            return cls(params=name, compute=name)
        fields: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            key = _KEYS.get(key.strip().lower())
            if key is None:
                raise UserError(f"precision {text!r}: each part is params=DTYPE or compute=DTYPE "
                                "(e.g. 'params=float32,compute=bfloat16')")
            fields[key] = dtype_name(value)
        return cls(**fields)

    def __str__(self) -> str:
        return f"params={self.params},compute={self.compute}"

    @property
    def param_dtype(self):
        return as_dtype(self.params)

    @property
    def compute_dtype(self):
        return as_dtype(self.compute)

    @property
    def needs_loss_scaling(self) -> bool:
        return self.compute == "float16"

    def check_trainable(self) -> "Policy":
        """Training keeps float32 master weights: Adam's updates of ~1e-7 relative vanish in 16 bits."""
        if self.params != "float32":
            raise UserError(f"precision {self}: training keeps parameters in float32 (optimizer updates "
                            "round away in 16 bits); use params=float32 with compute=bfloat16 or float16")
        return self


def vocab_multiple() -> int:
    """What the vocabulary is padded to a multiple of on this backend (read while tracing)."""
    return 1 if jax.default_backend() == "cpu" else VOCAB_MULTIPLE


def padded_vocab(size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return -(-size // multiple) * multiple


def pad_vocab(table, bias=None, multiple: int | None = None):
    """The [V, D] table (and [V] bias) padded with zero rows to a multiple of `multiple`
    (default: `vocab_multiple()`); unchanged when V is one already."""
    extra = padded_vocab(table.shape[0], multiple or vocab_multiple()) - table.shape[0]
    if extra == 0:
        return table, bias
    table = jnp.pad(table, ((0, extra), (0, 0)))
    return table, None if bias is None else jnp.pad(bias, (0, extra))


def vocab_logits(features, table, bias, vocab_size: int, multiple: int | None = None):
    """features @ table.T + bias: float32 [..., Vp] over the vocabulary padded as `pad_vocab` does
    (the caller slices [..., :vocab_size] when it hands logits out)."""
    table, bias = pad_vocab(table.astype(features.dtype), bias, multiple)
    return padded_logits(features, table, bias, vocab_size)


def padded_logits(features, table, bias, vocab_size: int):
    """`vocab_logits` for a table already padded (and cast to the features' dtype), as a loop over
    chunks of positions keeps it. Multiplied in the features' dtype, accumulated in float32; the
    columns >= vocab_size hold the most negative float32, so a softmax gives them exactly 0 and a
    KL or squared error between two such rows is exactly 0."""
    logits = jnp.einsum("...d,vd->...v", features, table, preferred_element_type=F32)
    if bias is not None:
        logits = logits + bias.astype(F32)
    if table.shape[0] == vocab_size:
        return logits
    column = jnp.arange(table.shape[0])
    return jnp.where(column < vocab_size, logits, jnp.finfo(F32).min)
