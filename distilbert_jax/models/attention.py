"""Scaled dot-product attention: materialised for attention maps and accelerators, chunked on CPU.

The textbook form writes the [batch, heads, length, length] scores and probabilities to memory
and reads them back several times; at 8 x 512 that is 100 MB a layer, so XLA's CPU backend
spends most of attention waiting on memory (PyTorch's fused sdpa kernel ran it 3x faster here).
`chunked_attention` takes the batch a few rows at a time (a `lax.map`), so one chunk's scores
stay in cache, and normalises after the value product (o = (e @ v) / sum(e), e = exp(s - max)).
Its custom VJP keeps q, k, v and each row's max and sum, not the probabilities, and recomputes
each chunk's probabilities in the backward pass, as FlashAttention does; that also drops the
[B, H, L, L] activations a layer would otherwise keep for the gradient. (Max and sum are kept
apart: a row whose keys are all masked has max = finfo.min, and max + log(sum) rounds the sum
away.)

Measured on the 2-core CPU (one layer's attention, distilbert-base shapes): forward 65 -> 24 ms
at 32 x 128 and 164 -> 104 ms at 8 x 512; forward+backward 363 -> 310 ms at 8 x 512 and
unchanged at 32 x 128. The materialised form stays where it is better or needed: when the
attention maps are returned, and on GPU/TPU, where XLA fuses attention itself.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distilbert_jax.sharding import BATCH_AXES

Dtype = Any
NEG = float(jnp.finfo(jnp.float32).min)
# Scores of one chunk ([rows, heads, L, L] float32) kept under this: 4 MiB sat best on the
# 2-core EPYC (rows of 4 at 32 x 128, 1 at 8 x 512, the whole batch at 8 x 128).
CHUNK_BYTES = 4 << 20


def mask_bias(attention_mask, batch: int, length: int) -> jax.Array:
    """[B, L] float32: 0 for keys to attend to, the most negative float32 for masked ones.

    Adding it equals masked_fill with finfo.min for any score of magnitude below 1e31 (the sum
    rounds to finfo.min), so a row whose keys are all masked gets uniform weights, as in
    transformers.
    """
    if attention_mask is None:
        return jnp.zeros((batch, length), jnp.float32)
    return jnp.where(jnp.asarray(attention_mask).astype(bool), 0.0, NEG).astype(jnp.float32)


def num_chunks(batch: int, heads: int, length: int, devices: int = 1) -> int:
    """Chunks per device: as few as keep each chunk's scores under CHUNK_BYTES, dividing the batch."""
    local = batch // devices
    per_row = heads * length * length * 4
    rows = max(1, min(local, CHUNK_BYTES // per_row))
    while local % rows:
        rows -= 1
    return local // rows


def _heads_first(x):
    """[rows, L, H, D] <-> [rows, H, L, D]."""
    return x.transpose(0, 2, 1, 3)


def _scores(q, k, bias):
    return jnp.matmul(_heads_first(q), _heads_first(k).swapaxes(-1, -2)).astype(jnp.float32) + bias[:, None, None, :]


def _dropout_mask(key, chunk, shape, rate: float):
    return jax.random.bernoulli(jax.random.fold_in(key, chunk), 1.0 - rate, shape)


def _split(x, devices: int, chunks: int):
    """[B, ...] -> [chunks, devices * rows, ...], keeping each device's rows on that device.

    The batch is laid out device-major ([devices, chunks, rows]), so when it is sharded over
    `devices` the mapped axis is not: every device loops over its own rows.
    """
    rows = x.shape[0] // (devices * chunks)
    x = x.reshape(devices, chunks, rows, *x.shape[1:]).swapaxes(0, 1)
    return x.reshape(chunks, devices * rows, *x.shape[3:])


def _join(x, devices: int):
    chunks, rows = x.shape[0], x.shape[1] // devices
    x = x.reshape(chunks, devices, rows, *x.shape[2:]).swapaxes(0, 1)
    return x.reshape(devices * chunks * rows, *x.shape[3:])


def _map(fn, xs, chunks: int):
    """lax.map over the chunks; one chunk is called directly (no loop for XLA to compile)."""
    if chunks > 1:
        return jax.lax.map(fn, xs)
    return jax.tree.map(lambda y: y[None], fn(jax.tree.map(lambda x: x[0], xs)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def chunked_attention(q, k, v, bias, key, rate: float, chunks: int, devices: int = 1):
    """softmax(q k^T / sqrt(D) + bias) v over [B, L, H, D], `chunks` batch chunks per device.

    bias: [B, L] from `mask_bias`. key: a PRNG key for attention dropout at `rate` (unused at 0;
    chunk i draws its mask from fold_in(key, i)). B must divide into devices * chunks.
    """
    return _forward(q, k, v, bias, key, rate, chunks, devices)[0]


def _forward(q, k, v, bias, key, rate, chunks, devices):
    scaled_q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)

    def chunk(args):
        i, q, k, v, bias = args
        s = _scores(q, k, bias)
        row_max = s.max(-1, keepdims=True)
        e = jnp.exp(s - row_max)
        total = e.sum(-1, keepdims=True)
        if rate > 0:
            e = jnp.where(_dropout_mask(key, i, e.shape, rate), e / (1.0 - rate), 0.0)
        out = jnp.matmul(e.astype(v.dtype), _heads_first(v)).astype(jnp.float32) / total
        return _heads_first(out.astype(v.dtype)), row_max[..., 0], total[..., 0]

    xs = (jnp.arange(chunks),) + tuple(_split(x, devices, chunks) for x in (scaled_q, k, v, bias))
    out, row_max, total = _map(chunk, xs, chunks)
    stats = tuple(_join(x, devices) for x in (row_max, total))
    return _join(out, devices), (scaled_q, k, v, bias, key, stats)


def _backward(rate, chunks, devices, residuals, d_out):
    scaled_q, k, v, bias, key, (row_max, total) = residuals
    q_scale = scaled_q.shape[-1] ** -0.5

    def chunk(args):
        i, q, k, v, bias, row_max, total, d_out = args
        p = jnp.exp(_scores(q, k, bias) - row_max[..., None]) / total[..., None]
        d_out = _heads_first(d_out)
        if rate > 0:
            keep = _dropout_mask(key, i, p.shape, rate)
            p_used = jnp.where(keep, p / (1.0 - rate), 0.0)
        else:
            p_used = p
        d_v = jnp.matmul(p_used.swapaxes(-1, -2).astype(v.dtype), d_out)
        d_p = jnp.matmul(d_out, _heads_first(v).swapaxes(-1, -2)).astype(jnp.float32)
        if rate > 0:
            d_p = jnp.where(keep, d_p / (1.0 - rate), 0.0)
        d_s = p * (d_p - jnp.sum(p * d_p, -1, keepdims=True))
        d_q = jnp.matmul(d_s.astype(k.dtype), _heads_first(k)) * jnp.asarray(q_scale, k.dtype)
        d_k = jnp.matmul(d_s.swapaxes(-1, -2).astype(q.dtype), _heads_first(q))
        return _heads_first(d_q), _heads_first(d_k), _heads_first(d_v)

    xs = (jnp.arange(chunks),) + tuple(_split(x, devices, chunks)
                                       for x in (scaled_q, k, v, bias, row_max, total, d_out))
    d_q, d_k, d_v = (_join(d, devices) for d in _map(chunk, xs, chunks))
    return d_q, d_k, d_v, None, None


chunked_attention.defvjp(_forward, _backward)


def materialised_attention(q, k, v, bias, *, dtype, dropout=None):
    """The same attention with the probabilities as a [B, H, L, L] array: (context, probs).

    `dropout` (a function of the probabilities) is applied before they multiply v; the returned
    probabilities are those (after dropout), as transformers' eager attention returns them.
    """
    scale = q.shape[-1] ** -0.5
    s = _scores(q * jnp.asarray(scale, q.dtype), k, bias)
    probs = jax.nn.softmax(s, axis=-1)
    if dropout is not None:
        probs = dropout(probs)
    context = jnp.matmul(probs.astype(dtype), _heads_first(v))
    return _heads_first(context), probs


def _batch_devices(batch: int) -> int:
    """How many devices the batch is split over: the batch axes of the mesh being traced in
    (`training.program.in_mesh`), when they divide it; outside a mesh inputs are whole (1)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return 1
    ways = math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.shape)
    return ways if batch % ways == 0 else 1


class DotProductAttention(nn.Module):
    """Scaled dot-product attention over [batch, length, heads, head_dim] tensors.

    Masked keys get the most negative finite float32 and the softmax runs in float32 whatever
    the compute dtype: the former Flax classes used -1e30, which overflows in fp16.
    `head_mask` ([heads] or [batch, heads]) multiplies the probabilities, as in transformers 4.
    Returns (context, probs); probs is None unless `return_probs`.
    """

    dropout_rate: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, q, k, v, attention_mask, head_mask=None, deterministic: bool = True,
                 return_probs: bool = False):
        batch, length, heads, _ = q.shape
        bias = mask_bias(attention_mask, batch, length)
        rate = 0.0 if deterministic else float(self.dropout_rate)
        if return_probs or jax.default_backend() != "cpu":
            dropout = None if rate == 0 else functools.partial(nn.Dropout(rate), deterministic=False)
            context, probs = materialised_attention(q, k, v, bias, dtype=self.dtype, dropout=dropout)
        else:
            key = self.make_rng("dropout") if rate > 0 else jax.random.key(0)
            devices = _batch_devices(batch)
            chunks = num_chunks(batch, heads, length, devices)
            context, probs = chunked_attention(q, k, v, bias, key, rate, chunks, devices), None
        if head_mask is not None:
            head_mask = jnp.asarray(head_mask, jnp.float32)
            head_mask = head_mask[None, :] if head_mask.ndim == 1 else head_mask
            context = (context * head_mask[:, None, :, None]).astype(context.dtype)
            if probs is not None:
                probs = probs * head_mask[:, :, None, None]
        return context, (probs if return_probs else None)
