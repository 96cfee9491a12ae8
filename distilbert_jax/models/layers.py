"""The few building blocks both model families share: dense, LayerNorm, embeddings, activations, heads.

Each family keeps its own module tree (their parameter names differ: `q_lin` vs
`attention/self/query`), but the arithmetic lives here and in attention.py once, so a fix to
masking or to the precision policy reaches DistilBERT and BERT alike.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from distilbert_jax.errors import UserError
from distilbert_jax.sharding import partitioned

Dtype = Any

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # "gelu" is the exact erf GELU in PyTorch and transformers; jax defaults to tanh.
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


class FamilyModule(nn.Module):
    """What every module of both families carries (its config, compute and parameter dtypes, the
    attention form) and hands on to its submodules (`_shared`), with the layers built from them."""

    config: Any
    dtype: Dtype = jnp.float32  # compute
    param_dtype: Dtype = jnp.float32
    attention: str = "auto"  # the attention form: see models/attention.py (`choose`)

    def _shared(self) -> dict:
        return {"dtype": self.dtype, "param_dtype": self.param_dtype, "attention": self.attention}

    def _dense(self, features: int, name: str, axes: tuple[str | None, str | None]) -> nn.Dense:
        return dense(features, std=self.config.initializer_range, dtype=self.dtype, param_dtype=self.param_dtype,
                     name=name, axes=axes)

    def _norm(self, name: str) -> nn.LayerNorm:
        return layer_norm(self.config.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name=name)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise UserError(f"activation {name!r} is not supported; use one of {sorted(ACTIVATIONS)}") from None


def dense(features: int, *, std: float, dtype: Dtype, param_dtype: Dtype, name: str,
          axes: tuple[str | None, str | None], use_bias: bool = True) -> nn.Dense:
    """A Linear layer initialised like transformers (N(0, std) weights, zero bias), its kernel
    [in, out] carrying the logical `axes` the sharding rules map onto the mesh."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        kernel_init=partitioned(nn.initializers.normal(stddev=std), axes),
        bias_init=partitioned(nn.initializers.zeros, axes[1:]),
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


def layer_norm(eps: float, *, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.LayerNorm:
    """Flax's default epsilon is 1e-6; BERT and DistilBERT use 1e-12, so it is always passed."""
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name,
                        scale_init=partitioned(nn.initializers.ones, ("norm",)),
                        bias_init=partitioned(nn.initializers.zeros, ("norm",)))


def embed(num: int, features: int, *, std: float, dtype: Dtype, param_dtype: Dtype, name: str,
          axes: tuple[str, str], pad_id: int | None = None) -> nn.Embed:
    """N(0, std) rows; the padding row starts at zero, as in PyTorch's `padding_idx`."""
    normal = nn.initializers.normal(stddev=std)

    def init(key, shape, dtype=jnp.float32):
        table = normal(key, shape, dtype)
        return table if pad_id is None or not 0 <= pad_id < shape[0] else table.at[pad_id].set(0)

    return nn.Embed(
        num,
        features,
        embedding_init=partitioned(init, axes),
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


def bias(module: nn.Module, size: int, param_dtype: Dtype, name: str = "bias") -> jax.Array:
    """A lone zero-initialised bias over the vocabulary (the tied MLM projection's)."""
    return module.param(name, partitioned(nn.initializers.zeros, ("vocab",)), (size,), param_dtype)


class VocabProjector(nn.Module):
    """A vocabulary projection's parameters: `kernel` [dim, vocab] (untied heads; tied ones use the
    word table) and `bias` [vocab], initialised as a Linear layer. The product is
    `precision.vocab_logits`, which pads the vocabulary for the matmul units."""

    size: int
    std: float
    param_dtype: Dtype = jnp.float32
    with_kernel: bool = True
    with_bias: bool = True

    @nn.compact
    def __call__(self, dim: int):
        kernel = self.param("kernel", partitioned(nn.initializers.normal(stddev=self.std), ("embed", "vocab")),
                            (dim, self.size), self.param_dtype) if self.with_kernel else None
        return kernel, bias(self, self.size, self.param_dtype) if self.with_bias else None


def check_input(input_ids: jax.Array, max_positions: int) -> None:
    """Shape checks that would otherwise surface as an XLA error deep inside a gather."""
    if input_ids.ndim != 2:
        raise UserError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    if input_ids.shape[1] > max_positions:
        raise UserError(
            f"input of {input_ids.shape[1]} tokens is longer than the model's limit of {max_positions} "
            "positions; truncate it (truncation=True)"
        )
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise UserError("empty input: give at least one sequence of at least one token")


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def merge_heads(x: jax.Array) -> jax.Array:
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def layer_head_mask(head_mask, layer: int):
    """`head_mask` is [heads] for every layer, or [layers, heads] (None: keep every head)."""
    if head_mask is None:
        return None
    head_mask = jnp.asarray(head_mask)
    return head_mask[layer] if head_mask.ndim == 2 else head_mask


def sinusoidal_table(num_positions: int, dim: int) -> jax.Array:
    """The fixed position table of `sinusoidal_pos_embds=True` checkpoints (sin even, cos odd)."""
    import numpy as np

    pos = np.arange(num_positions, dtype=np.float64)[:, None]
    j = np.arange(dim)[None, :]
    angle = pos / np.power(10000, 2 * (j // 2) / dim)
    table = np.zeros((num_positions, dim), dtype=np.float32)
    table[:, 0::2] = np.sin(angle[:, 0::2])
    table[:, 1::2] = np.cos(angle[:, 1::2])
    return jnp.asarray(table)
