"""The chunked attention (models/attention.py) against the materialised one: values and gradients.

The model-level parity tests run it at one chunk (their batches are small); here the chunk count,
the device-major layout, masking, dropout and bf16 are forced and compared directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distilbert_jax.models import attention as attn

B, L, H, D = 4, 24, 3, 8


def _inputs(dtype=jnp.float32, seed=0):
    rng = np.random.RandomState(seed)
    q, k, v, w = (jnp.asarray(rng.randn(B, L, H, D), dtype) for _ in range(4))
    mask = np.ones((B, L), np.int32)
    mask[1, 17:] = 0
    mask[2, 5:] = 0
    mask[3, :] = 0  # every key masked: uniform weights, as masked_fill(finfo.min) gives
    return q, k, v, w, attn.mask_bias(mask, B, L)


def _materialised(q, k, v, bias, dropout=None):
    return attn.materialised_attention(q, k, v, bias, dtype=q.dtype, dropout=dropout)[0]


def _grads(fn, q, k, v, w):
    return jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * w), argnums=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("chunks,devices", [(1, 1), (2, 1), (4, 1), (1, 2), (2, 2)])
def test_chunked_equals_materialised(chunks, devices):
    q, k, v, w, bias = _inputs()
    key = jax.random.key(0)
    ref = _materialised(q, k, v, bias)
    out = attn.chunked_attention(q, k, v, bias, key, 0.0, chunks, devices)
    assert float(jnp.max(jnp.abs(out - ref))) < 2e-6
    # the fully masked row attends uniformly: the mean of the values
    assert float(jnp.max(jnp.abs(out[3] - v[3].mean(0)))) < 2e-6
    got = _grads(lambda q, k, v: attn.chunked_attention(q, k, v, bias, key, 0.0, chunks, devices), q, k, v, w)
    want = _grads(lambda q, k, v: _materialised(q, k, v, bias), q, k, v, w)
    for g, r in zip(got, want):
        assert float(jnp.max(jnp.abs(g - r))) < 5e-6
    # masked keys get no gradient, and neither their values
    assert float(jnp.max(jnp.abs(got[1][1, 17:]))) == 0.0 and float(jnp.max(jnp.abs(got[2][2, 5:]))) == 0.0


def test_dropout_gradient_matches_the_same_masks_materialised():
    """With dropout the custom backward must redraw exactly the forward's masks, chunk by chunk."""
    q, k, v, w, bias = _inputs(seed=1)
    key, rate, chunks = jax.random.key(7), 0.25, 2
    rows = B // chunks

    def reference(q, k, v):
        parts = []
        for i in range(chunks):
            sl = slice(i * rows, (i + 1) * rows)
            keep = attn._dropout_mask(key, i, (rows, H, L, L), rate)
            drop = lambda p, keep=keep: jnp.where(keep, p / (1 - rate), 0.0)  # noqa: E731
            parts.append(_materialised(q[sl], k[sl], v[sl], bias[sl], dropout=drop))
        return jnp.concatenate(parts)

    chunked = lambda q, k, v: attn.chunked_attention(q, k, v, bias, key, rate, chunks)  # noqa: E731
    out, ref = chunked(q, k, v), reference(q, k, v)
    assert float(jnp.max(jnp.abs(out - ref))) < 2e-6
    assert float(jnp.max(jnp.abs(out - _materialised(q, k, v, bias)))) > 1e-2  # dropout did something
    for g, r in zip(_grads(chunked, q, k, v, w), _grads(reference, q, k, v, w)):
        assert float(jnp.max(jnp.abs(g - r))) < 5e-6
    again = attn.chunked_attention(q, k, v, bias, key, rate, chunks)
    other = attn.chunked_attention(q, k, v, bias, jax.random.key(8), rate, chunks)
    assert float(jnp.max(jnp.abs(again - out))) == 0.0 and float(jnp.max(jnp.abs(other - out))) > 1e-2


def test_bfloat16_stays_bfloat16_and_close():
    q, k, v, w, bias = _inputs(jnp.bfloat16)
    out = attn.chunked_attention(q, k, v, bias, jax.random.key(0), 0.0, 2)
    ref = _materialised(*(x.astype(jnp.float32) for x in (q, k, v)), bias)
    assert out.dtype == jnp.bfloat16
    assert float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref))) < 3e-2
    grads = _grads(lambda q, k, v: attn.chunked_attention(q, k, v, bias, jax.random.key(0), 0.0, 2), q, k, v, w)
    assert all(g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))) for g in grads)


def test_module_paths_agree_and_probs_only_when_asked():
    q, k, v, _, _ = _inputs()
    mask = np.ones((B, L), np.int32)
    mask[0, 20:] = 0
    head_mask = np.array([[1.0, 0.0, 1.0]] * B, np.float32)
    module = attn.DotProductAttention(0.1)
    fast, none = module.apply({}, q, k, v, mask, head_mask, True)
    slow, probs = module.apply({}, q, k, v, mask, head_mask, True, True)
    assert none is None and probs.shape == (B, H, L, L)
    assert float(jnp.max(jnp.abs(fast - slow))) < 2e-6
    assert float(jnp.max(jnp.abs(fast[:, :, 1]))) == 0.0  # the masked head
    assert float(jnp.max(jnp.abs(probs[0, :, :, 20:]))) == 0.0
    dropped, _ = module.apply({}, q, k, v, mask, None, False, rngs={"dropout": jax.random.key(1)})
    kept, _ = module.apply({}, q, k, v, mask, None, True)
    assert float(jnp.max(jnp.abs(dropped - kept))) > 1e-2
    # the materialised path (attention maps asked for) drops probabilities too, and returns them dropped
    dropped_maps, maps = module.apply({}, q, k, v, mask, None, False, True, rngs={"dropout": jax.random.key(1)})
    assert float(jnp.max(jnp.abs(dropped_maps - kept))) > 1e-2
    assert 0.05 < float(jnp.mean(maps[1:] == 0.0)) < 0.2  # rows 1-3 mask no key: the zeros are dropout's 10%


@pytest.mark.parametrize("shape,devices,expected", [
    ((32, 12, 128), 1, 8),   # rows of 4: 3 MiB of scores a chunk
    ((8, 12, 512), 1, 8),    # one row is 12 MiB already: row by row
    ((8, 12, 128), 1, 2),
    ((2, 4, 16), 1, 1),      # tiny: the whole batch at once
    ((32, 12, 128), 8, 1),   # 4 rows per device fit in one chunk
    ((7, 12, 256), 1, 7),    # a prime batch still divides
])
def test_chunk_count(shape, devices, expected):
    assert attn.num_chunks(*shape, devices=devices) == expected


def test_device_major_layout_round_trips():
    x = jnp.arange(24 * 2).reshape(24, 2)
    split = attn._split(x, 2, 3)  # 2 devices x 3 chunks x 4 rows
    assert split.shape == (3, 8, 2)
    # chunk 0 holds the first 4 rows of each device's half of the batch
    assert np.asarray(split[0, :, 0]).tolist() == [0, 2, 4, 6, 24, 26, 28, 30]
    assert np.array_equal(np.asarray(attn._join(split, 2)), np.asarray(x))
