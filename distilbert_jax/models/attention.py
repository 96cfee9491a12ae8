"""Scaled dot-product attention in the forms each backend and each use needs.

- "chunked" (ours): tiles of (batch rows, query block) walked by `lax.map`; each tile normalises
  after the value product (o = (e @ v) / sum(e), e = exp(s - max)) and keeps only each query's
  max and sum, and the custom VJP remakes a tile's probabilities in the backward pass, as
  FlashAttention does, so no [B, H, L, L] array (scores, probabilities or dropout mask) is ever
  alive whole, forward or backward. It is the form with dropout: each tile draws its mask from
  fold_in(key, tile) and the backward pass redraws the same one. (Max and sum are kept apart: a
  row whose keys are all masked has max = finfo.min, and max + log(sum) rounds the sum away.)
- "xla" / "cudnn": `jax.nn.dot_product_attention`, XLA's form or cuDNN's flash attention; no
  dropout, so for inference and for training with attention dropout off.
- "materialised": the textbook form, the oracle the others are tested against, and the one that
  returns attention maps.

"auto" picks per call (`choose`). On CPU the chunked form won by keeping a tile's scores in
cache (2-core EPYC, one layer at distilbert-base shapes: forward 65 -> 24 ms at 32 x 128 and
164 -> 104 ms at 8 x 512; forward+backward 363 -> 310 ms at 8 x 512, unchanged at 32 x 128).
On GPUs materialised attention writes and rereads [B, H, L, L] in HBM several times (XLA does
not fuse the two matmuls and the softmax into one kernel), so inference goes to cuDNN and
training with dropout to the chunked tiles; `experiments/device_check.py` times every form.
Every score and value product accumulates in float32 (`preferred_element_type`), whatever the
compute dtype; the softmax is float32.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distilbert_jax.errors import UserError
from distilbert_jax.sharding import BATCH_AXES

Dtype = Any
NEG = float(jnp.finfo(jnp.float32).min)
# Scores of one tile ([rows, heads, Lq, L] float32) kept under this. CPU: 4 MiB sat best on the
# 2-core EPYC (rows of 4 at 32 x 128, 1 at 8 x 512, the whole batch at 8 x 128): a tile stays in
# cache. Accelerators: each tile is a few kernel launches, so tiles are large; 64 MiB bounds the
# scores, exponentials and dropout mask alive at once to ~0.2 GB whatever the batch (a base-size
# batch of 256 x 128 is 4 tiles a layer instead of one 200 MB array).
CPU_TILE_BYTES = 4 << 20
ACCELERATOR_TILE_BYTES = 64 << 20


def mask_bias(attention_mask, batch: int, length: int) -> jax.Array:
    """[B, L] float32: 0 for keys to attend to, the most negative float32 for masked ones.

    Masked scores are replaced by it (`_scores`), as masked_fill with finfo.min does in
    transformers, so a row whose keys are all masked gets uniform weights.
    """
    if attention_mask is None:
        return jnp.zeros((batch, length), jnp.float32)
    return jnp.where(jnp.asarray(attention_mask).astype(bool), 0.0, NEG).astype(jnp.float32)


def tile_bytes(backend: str) -> int:
    return CPU_TILE_BYTES if backend == "cpu" else ACCELERATOR_TILE_BYTES


def tiles(batch: int, heads: int, length: int, devices: int = 1, budget: int = CPU_TILE_BYTES,
          query_blocks: bool = True) -> tuple[int, int]:
    """(batch chunks per device, query blocks per chunk): as few tiles as keep one tile's float32
    scores under `budget`. Whole rows while a row fits (dividing each device's rows), else one row
    at a time, in query blocks (dividing the length, preferring blocks of a multiple of 8) if
    `query_blocks`. The CPU path does not split rows: at 8 x 512 (12 MiB a row) whole rows ran the
    forward in 130 ms, 4 blocks of 128 queries in 175 ms, and forward+backward no faster."""
    local = batch // devices
    per_row = heads * length * length * 4
    if per_row <= budget or not query_blocks:
        rows = max(1, min(local, budget // per_row))
        while local % rows:
            rows -= 1
        return local // rows, 1
    need = -(-per_row // budget)
    fits = [b for b in range(need, length + 1) if length % b == 0]
    aligned = [b for b in fits if (length // b) % 8 == 0]
    return local, (aligned or fits)[0]


def _masked(bias, q_start, queries: int):
    """[rows, 1, Lq or 1, L] True where a score is masked: a masked key (bias < 0), or with a
    `q_start` (causal attention; the tile's first query position) a key after the query."""
    masked = (bias < 0)[:, None, None, :]
    if q_start is None:
        return masked
    future = jnp.arange(bias.shape[-1])[None, :] > (q_start + jnp.arange(queries))[:, None]
    return masked | future[None, None]


def _scores(q, k, bias, q_start=None):
    """[rows, Lq, H, D] x [rows, L, H, D] -> [rows, H, Lq, L] float32 scores, accumulated in float32.

    Masked scores (`_masked`: bias [rows, L] from `mask_bias`, and future keys when causal) are
    replaced by NEG rather than added to: the same values, but a masked key passes no gradient
    back, as transformers' masked_fill, even in a row whose keys are all masked.
    """
    s = jnp.einsum("rqhd,rkhd->rhqk", q, k, preferred_element_type=jnp.float32)
    return jnp.where(_masked(bias, q_start, q.shape[1]), NEG, s)


def _dropout_mask(key, tile, shape, rate: float):
    return jax.random.bernoulli(jax.random.fold_in(key, tile), 1.0 - rate, shape)


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


def _blocks(x, blocks: int, axis: int):
    """Cut `axis` (query positions) into `blocks` and move the block index to the front."""
    x = x.reshape(*x.shape[:axis], blocks, x.shape[axis] // blocks, *x.shape[axis + 1:])
    return jnp.moveaxis(x, axis, 0)


def _unblock(x, axis: int):
    """Inverse of `_blocks`: [blocks, ..., Lq/blocks at axis, ...] -> [..., Lq, ...]."""
    x = jnp.moveaxis(x, 0, axis)
    return x.reshape(*x.shape[:axis], x.shape[axis] * x.shape[axis + 1], *x.shape[axis + 2:])


def _tile_forward(q, k, v, bias, key, tile, rate, q_start=None):
    """One tile: queries [rows, Lq, H, D] (already scaled) against every key of their rows.

    Returns the context [rows, Lq, H, D] and each query's score max and exp-sum [rows, H, Lq],
    which the backward pass uses to remake the probabilities instead of storing them.
    """
    s = _scores(q, k, bias, q_start)
    row_max = s.max(-1, keepdims=True)
    e = jnp.exp(s - row_max)
    total = e.sum(-1, keepdims=True)
    if rate > 0:
        e = jnp.where(_dropout_mask(key, tile, e.shape, rate), e / (1.0 - rate), 0.0)
    out = jnp.einsum("rhqk,rkhd->rqhd", e.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return (out / _heads_last(total)).astype(v.dtype), row_max[..., 0], total[..., 0]


def _heads_last(stat):
    """[rows, H, Lq, 1] -> [rows, Lq, H, 1], to divide a [rows, Lq, H, D] context."""
    return stat.transpose(0, 2, 1, 3)


def _tile_backward(q, k, v, bias, key, tile, rate, row_max, total, d_out, q_start=None):
    """Gradients of one tile: d_q for its queries, and its rows' d_k, d_v contributions (float32)."""
    p = jnp.exp(_scores(q, k, bias, q_start) - row_max[..., None]) / total[..., None]
    if rate > 0:
        keep = _dropout_mask(key, tile, p.shape, rate)
        p_used = jnp.where(keep, p / (1.0 - rate), 0.0)
    else:
        p_used = p
    d_v = jnp.einsum("rhqk,rqhd->rkhd", p_used.astype(v.dtype), d_out, preferred_element_type=jnp.float32)
    d_p = jnp.einsum("rqhd,rkhd->rhqk", d_out, v, preferred_element_type=jnp.float32)
    if rate > 0:
        d_p = jnp.where(keep, d_p / (1.0 - rate), 0.0)
    d_s = jnp.where(_masked(bias, q_start, q.shape[1]), 0.0, p * (d_p - jnp.sum(p * d_p, -1, keepdims=True)))
    d_q = jnp.einsum("rhqk,rkhd->rqhd", d_s.astype(k.dtype), k, preferred_element_type=jnp.float32)
    d_k = jnp.einsum("rhqk,rqhd->rkhd", d_s.astype(q.dtype), q, preferred_element_type=jnp.float32)
    return d_q, d_k, d_v


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9))
def chunked_attention(q, k, v, bias, key, rate: float, chunks: int, devices: int = 1, q_blocks: int = 1,
                      causal: bool = False):
    """softmax(q k^T / sqrt(D) + bias) v over [B, L, H, D], in tiles of (batch rows, query block).
    `causal`: each query also sees no key after its own position (GPT-2).

    `chunks` batch chunks per device, each cut into `q_blocks` blocks of queries (see `tiles`).
    bias: [B, L] from `mask_bias`. key: a PRNG key for attention dropout at `rate` (unused at 0;
    tile t = chunk * q_blocks + block draws its mask from fold_in(key, t)). B must divide into
    devices * chunks, L into q_blocks.
    """
    return _forward(q, k, v, bias, key, rate, chunks, devices, q_blocks, causal)[0]


def _query_start(block, q_blocks: int, length: int, causal: bool):
    """The first query position of query block `block` when causal (None: no causal mask)."""
    return block * (length // q_blocks) if causal else None


def _forward(q, k, v, bias, key, rate, chunks, devices, q_blocks, causal=False):
    scaled_q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    length = q.shape[1]

    def chunk(args):
        i, q, k, v, bias = args

        def block(block_args):
            j, q = block_args
            return _tile_forward(q, k, v, bias, key, i * q_blocks + j, rate,
                                 _query_start(j, q_blocks, length, causal))

        out, row_max, total = _map(block, (jnp.arange(q_blocks), _blocks(q, q_blocks, 1)), q_blocks)
        return _unblock(out, 1), _unblock(row_max, 2), _unblock(total, 2)

    xs = (jnp.arange(chunks),) + tuple(_split(x, devices, chunks) for x in (scaled_q, k, v, bias))
    out, row_max, total = _map(chunk, xs, chunks)
    stats = tuple(_join(x, devices) for x in (row_max, total))
    return _join(out, devices), (scaled_q, k, v, bias, key, stats)


def _backward(rate, chunks, devices, q_blocks, causal, residuals, d_out):
    scaled_q, k, v, bias, key, (row_max, total) = residuals
    q_scale = scaled_q.shape[-1] ** -0.5
    length = scaled_q.shape[1]

    def chunk(args):
        i, q, k, v, bias, row_max, total, d_out = args

        def block(sums, block_args):
            j, q, row_max, total, d_out = block_args
            d_q, d_k, d_v = _tile_backward(q, k, v, bias, key, i * q_blocks + j, rate, row_max, total, d_out,
                                           _query_start(j, q_blocks, length, causal))
            return (sums[0] + d_k, sums[1] + d_v), d_q

        blocks = (jnp.arange(q_blocks), _blocks(q, q_blocks, 1), _blocks(row_max, q_blocks, 2),
                  _blocks(total, q_blocks, 2), _blocks(d_out, q_blocks, 1))
        zeros = jnp.zeros(k.shape, jnp.float32)
        if q_blocks == 1:
            (d_k, d_v), d_q = block((zeros, zeros), jax.tree.map(lambda x: x[0], blocks))
        else:
            (d_k, d_v), d_q = jax.lax.scan(block, (zeros, zeros), blocks)
            d_q = _unblock(d_q, 1)
        return (d_q * q_scale).astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype)

    xs = (jnp.arange(chunks),) + tuple(_split(x, devices, chunks)
                                       for x in (scaled_q, k, v, bias, row_max, total, d_out))
    d_q, d_k, d_v = (_join(d, devices) for d in _map(chunk, xs, chunks))
    return d_q, d_k, d_v, None, None


chunked_attention.defvjp(_forward, _backward)


def materialised_attention(q, k, v, bias, *, dtype, dropout=None, causal: bool = False, query_start=0):
    """The same attention with the probabilities as a [B, H, Lq, L] array: (context, probs).

    The oracle every other form is tested against, and the form that returns attention maps.
    `dropout` (a function of the probabilities) is applied before they multiply v; the returned
    probabilities are those (after dropout), as transformers' eager attention returns them.
    Causal, the queries sit at positions `query_start`.. of the keys: a key-value cache's new
    tokens (Lq < L), or the whole input (0).
    """
    scale = q.shape[-1] ** -0.5
    probs = jax.nn.softmax(_scores(q * jnp.asarray(scale, q.dtype), k, bias, query_start if causal else None),
                           axis=-1)
    if dropout is not None:
        probs = dropout(probs)
    context = jnp.einsum("rhqk,rkhd->rqhd", probs.astype(dtype), v, preferred_element_type=jnp.float32)
    return context.astype(dtype), probs


def fused_attention(q, k, v, attention_mask, implementation: str, causal: bool = False):
    """`jax.nn.dot_product_attention`: cuDNN's flash attention ("cudnn") or XLA's ("xla").

    Neither has dropout. The mask is passed as booleans: both implementations set masked scores
    to a large negative number, so a row whose keys are all masked attends uniformly, as with
    `mask_bias`. cuDNN checks the mask's query dimension (it takes no [B, 1, 1, L]), so it gets
    [B, 1, L, L]; right-padding is not assumed, so sequence lengths are not used instead.
    """
    mask = None
    if attention_mask is not None:
        mask = jnp.asarray(attention_mask).astype(bool)[:, None, None, :]
        if implementation == "cudnn":
            mask = jnp.broadcast_to(mask, (q.shape[0], 1, q.shape[1], k.shape[1]))
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation=implementation)


def _batch_devices(batch: int) -> int:
    """How many devices the batch is split over: the batch axes of the mesh being traced in
    (`training.program.in_mesh`), when they divide it; outside a mesh inputs are whole (1)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return 1
    ways = math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.shape)
    return ways if batch % ways == 0 else 1


IMPLEMENTATIONS = ("auto", "chunked", "xla", "cudnn", "materialised")


@functools.cache
def _warn_once(message: str) -> None:
    logging.getLogger("distilbert_jax").warning(message)



def choose(implementation: str, *, backend: str, dtype, dropout: bool, return_probs: bool) -> str:
    """Which form "auto" (or a user's choice) runs as, given what the call needs.

    Attention maps need the materialised form; dropout needs ours (no fused kernel in jax 0.10-0.11
    takes a fresh dropout mask per step); otherwise cuDNN on NVIDIA GPUs in 16 bits, XLA's fused
    form on other accelerators, and the chunked form on CPU, where it measured fastest.
    """
    if implementation not in IMPLEMENTATIONS:
        raise UserError(f"attention implementation {implementation!r} is unknown; use one of {IMPLEMENTATIONS}")
    if return_probs:
        return "materialised"
    if implementation in ("xla", "cudnn") and dropout:
        raise UserError(f"attention implementation {implementation!r} has no dropout; use 'auto' or 'chunked' "
                        "for training with attention dropout (or set the attention dropout to 0)")
    if implementation != "auto":
        return implementation
    if dropout or backend == "cpu":
        return "chunked"
    if backend in ("gpu", "cuda") and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return "cudnn"
    return "xla"


class DotProductAttention(nn.Module):
    """Scaled dot-product attention over [batch, length, heads, head_dim] tensors.

    Masked keys get the most negative finite float32 and the softmax runs in float32 whatever
    the compute dtype: the former Flax classes used -1e30, which overflows in fp16.
    `head_mask` ([heads] or [batch, heads]) multiplies the probabilities, as in transformers 4.
    `implementation`: see `choose`. Returns (context, probs); probs is None unless `return_probs`.
    """

    dropout_rate: float
    dtype: Dtype = jnp.float32
    implementation: str = "auto"
    causal: bool = False  # a query sees no later key (GPT-2)

    @nn.compact
    def __call__(self, q, k, v, attention_mask, head_mask=None, deterministic: bool = True,
                 return_probs: bool = False, query_start=0):
        """`query_start` (causal, materialised form only): the key position of the first query."""
        batch, length, heads, _ = q.shape
        rate = 0.0 if deterministic else float(self.dropout_rate)
        backend = jax.default_backend()
        form = choose(self.implementation, backend=backend, dtype=q.dtype, dropout=rate > 0,
                      return_probs=return_probs)
        probs = None
        if form == "materialised":
            dropout = None if rate == 0 else functools.partial(nn.Dropout(rate), deterministic=False)
            context, probs = materialised_attention(q, k, v, mask_bias(attention_mask, batch, k.shape[1]),
                                                    dtype=self.dtype, dropout=dropout, causal=self.causal,
                                                    query_start=query_start)
        elif form == "cudnn" and self.implementation == "auto":
            try:  # cuDNN's checks run while tracing: a GPU, cuDNN or shape it rejects falls back to XLA's
                context = fused_attention(q, k, v, attention_mask, "cudnn", self.causal)
            except (RuntimeError, ValueError) as err:
                _warn_once(f"cuDNN attention unavailable ({str(err).splitlines()[0][:120]}); using XLA's")
                context = fused_attention(q, k, v, attention_mask, "xla", self.causal)
        elif form in ("xla", "cudnn"):
            context = fused_attention(q, k, v, attention_mask, form, self.causal)
        else:
            key = self.make_rng("dropout") if rate > 0 else jax.random.key(0)
            devices = _batch_devices(batch)
            chunks, q_blocks = tiles(batch, heads, length, devices, tile_bytes(backend), backend != "cpu")
            context = chunked_attention(q, k, v, mask_bias(attention_mask, batch, length), key, rate, chunks,
                                        devices, q_blocks, self.causal)
        if head_mask is not None:
            head_mask = jnp.asarray(head_mask, jnp.float32)
            head_mask = head_mask[None, :] if head_mask.ndim == 1 else head_mask
            context = (context * head_mask[:, None, :, None]).astype(context.dtype)
            if probs is not None:
                probs = probs * head_mask[:, :, None, None]
        return context, (probs if return_probs else None)
