"""Every attention form that runs on CPU (models/attention.py) against the materialised oracle:
values and gradients, masked rows, dropout, bf16.

The model-level parity tests run the chunked form at one tile (their batches are small); here the
tiling (batch chunks, query blocks, the device-major layout), `jax.nn.dot_product_attention`'s XLA
form, and the choice "auto" makes are forced and compared directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distilbert_jax.errors import UserError
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


def _materialised(q, k, v, bias, dropout=None, causal=False):
    return attn.materialised_attention(q, k, v, bias, dtype=q.dtype, dropout=dropout, causal=causal)[0]


def _grads(fn, q, k, v, w):
    return jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * w), argnums=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("chunks,devices,q_blocks", [(1, 1, 1), (2, 1, 1), (4, 1, 1), (1, 2, 1), (2, 2, 1),
                                                     (1, 1, 3), (2, 1, 2), (2, 2, 3)])
def test_chunked_equals_materialised(chunks, devices, q_blocks):
    q, k, v, w, bias = _inputs()
    key = jax.random.key(0)
    ref = _materialised(q, k, v, bias)
    out = attn.chunked_attention(q, k, v, bias, key, 0.0, chunks, devices, q_blocks)
    assert float(jnp.max(jnp.abs(out - ref))) < 2e-6
    # the fully masked row attends uniformly: the mean of the values
    assert float(jnp.max(jnp.abs(out[3] - v[3].mean(0)))) < 2e-6
    got = _grads(lambda q, k, v: attn.chunked_attention(q, k, v, bias, key, 0.0, chunks, devices, q_blocks),
                 q, k, v, w)
    want = _grads(lambda q, k, v: _materialised(q, k, v, bias), q, k, v, w)
    for g, r in zip(got, want):
        assert float(jnp.max(jnp.abs(g - r))) < 5e-6
    # masked keys get no gradient, and neither their values
    assert float(jnp.max(jnp.abs(got[1][1, 17:]))) == 0.0 and float(jnp.max(jnp.abs(got[2][2, 5:]))) == 0.0


@pytest.mark.parametrize("q_blocks,causal", [(1, False), (3, False), (3, True)])
def test_dropout_gradient_matches_the_same_masks_materialised(q_blocks, causal):
    """With dropout the custom backward must redraw exactly the forward's masks, tile by tile."""
    q, k, v, w, bias = _inputs(seed=1)
    key, rate, chunks = jax.random.key(7), 0.25, 2
    rows, block = B // chunks, L // q_blocks

    def reference(q, k, v):
        parts = []
        for i in range(chunks):
            sl = slice(i * rows, (i + 1) * rows)
            keep = jnp.concatenate([attn._dropout_mask(key, i * q_blocks + j, (rows, H, block, L), rate)
                                    for j in range(q_blocks)], axis=2)
            drop = lambda p, keep=keep: jnp.where(keep, p / (1 - rate), 0.0)  # noqa: E731
            parts.append(_materialised(q[sl], k[sl], v[sl], bias[sl], dropout=drop, causal=causal))
        return jnp.concatenate(parts)

    chunked = lambda q, k, v: attn.chunked_attention(q, k, v, bias, key, rate, chunks, 1, q_blocks,  # noqa: E731
                                                     causal)
    out, ref = chunked(q, k, v), reference(q, k, v)
    assert float(jnp.max(jnp.abs(out - ref))) < 2e-6
    assert float(jnp.max(jnp.abs(out - _materialised(q, k, v, bias, causal=causal)))) > 1e-2  # dropout did something
    for g, r in zip(_grads(chunked, q, k, v, w), _grads(reference, q, k, v, w)):
        assert float(jnp.max(jnp.abs(g - r))) < 5e-6
    again = chunked(q, k, v)
    other = attn.chunked_attention(q, k, v, bias, jax.random.key(8), rate, chunks, 1, q_blocks, causal)
    assert float(jnp.max(jnp.abs(again - out))) == 0.0 and float(jnp.max(jnp.abs(other - out))) > 1e-2


def _xla(q, k, v, mask):
    return attn.fused_attention(q, k, v, mask, "xla")


def test_xla_form_equals_materialised():
    """jax.nn.dot_product_attention(implementation="xla"), given our [B, L] mask as booleans."""
    q, k, v, w, bias = _inputs()
    mask = (bias == 0).astype(jnp.int32)
    out = _xla(q, k, v, mask)
    assert float(jnp.max(jnp.abs(out - _materialised(q, k, v, bias)))) < 2e-6
    assert float(jnp.max(jnp.abs(out[3] - v[3].mean(0)))) < 2e-6  # all keys masked: uniform, as transformers
    for g, r in zip(_grads(lambda q, k, v: _xla(q, k, v, mask), q, k, v, w),
                    _grads(lambda q, k, v: _materialised(q, k, v, bias), q, k, v, w)):
        assert float(jnp.max(jnp.abs(g - r))) < 5e-6


@pytest.mark.parametrize("form", ["chunked", "xla", "materialised"])
def test_bfloat16_stays_bfloat16_and_close(form):
    """bf16 in, bf16 out, within bf16 rounding of the float32 oracle, gradients finite; the scores
    accumulate in float32, so the error is that of bf16 inputs and outputs, not of bf16 scores."""
    q, k, v, w, bias = _inputs(jnp.bfloat16)
    mask = (bias == 0).astype(jnp.int32)
    fn = {"chunked": lambda q, k, v: attn.chunked_attention(q, k, v, bias, jax.random.key(0), 0.0, 2, 1, 2),
          "xla": lambda q, k, v: _xla(q, k, v, mask),
          "materialised": lambda q, k, v: _materialised(q, k, v, bias)}[form]
    out = fn(q, k, v)
    ref = _materialised(*(x.astype(jnp.float32) for x in (q, k, v)), bias)
    assert out.dtype == jnp.bfloat16
    assert float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref))) < 2e-2
    grads = _grads(fn, q, k, v, w)
    want = _grads(lambda q, k, v: _materialised(q, k, v, bias), *(x.astype(jnp.float32) for x in (q, k, v, w)))
    for g, r in zip(grads, want):
        assert g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))
        assert float(jnp.max(jnp.abs(g.astype(jnp.float32) - r))) < 0.05 * float(jnp.max(jnp.abs(r)))


def test_scores_accumulate_in_float32():
    """Scores near 200 are a whole unit apart in bf16, while these differ by tenths: accumulated
    and kept in float32, the softmax is that of the exact scores, not of rounded ones."""
    rng = np.random.RandomState(3)
    q = jnp.asarray(np.full((1, 8, 1, 64), 5.0), jnp.bfloat16)
    k = jnp.asarray(5.0 + 0.1 * rng.randn(1, 8, 1, 64), jnp.bfloat16)
    v = jnp.asarray(rng.randn(1, 8, 1, 64), jnp.bfloat16)
    bias = attn.mask_bias(None, 1, 8)
    exact = _materialised(*(x.astype(jnp.float32) for x in (q, k, v)), bias)
    rounded_scores = (jnp.einsum("bqhd,bkhd->bhqk", q * jnp.bfloat16(0.125), k)).astype(jnp.float32)
    rounded = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(rounded_scores, -1), v.astype(jnp.float32))
    assert float(jnp.max(jnp.abs(rounded - exact))) > 0.05  # rounding the scores would show
    for form in (lambda: _materialised(q, k, v, bias), lambda: _xla(q, k, v, None),
                 lambda: attn.chunked_attention(q, k, v, bias, jax.random.key(0), 0.0, 1)):
        err = float(jnp.max(jnp.abs(form().astype(jnp.float32) - exact)))
        assert err < 0.02  # the bf16 output's rounding only


@pytest.mark.parametrize("backend,dtype,dropout,probs,expected", [
    ("cpu", jnp.float32, False, False, "chunked"),
    ("cpu", jnp.bfloat16, True, False, "chunked"),
    ("gpu", jnp.bfloat16, False, False, "cudnn"),
    ("gpu", jnp.float16, False, False, "cudnn"),
    ("gpu", jnp.float32, False, False, "xla"),   # cuDNN flash attention is 16-bit only
    ("gpu", jnp.bfloat16, True, False, "chunked"),
    ("tpu", jnp.bfloat16, False, False, "xla"),
    ("gpu", jnp.bfloat16, False, True, "materialised"),
])
def test_auto_choice(backend, dtype, dropout, probs, expected):
    assert attn.choose("auto", backend=backend, dtype=dtype, dropout=dropout, return_probs=probs) == expected


def test_a_form_without_dropout_is_refused_for_dropout():
    with pytest.raises(UserError, match="has no dropout"):
        attn.choose("cudnn", backend="gpu", dtype=jnp.bfloat16, dropout=True, return_probs=False)
    with pytest.raises(UserError, match="unknown"):
        attn.choose("flash", backend="gpu", dtype=jnp.bfloat16, dropout=False, return_probs=False)


@pytest.mark.parametrize("implementation", ["auto", "chunked", "xla", "materialised"])
def test_module_forms_agree(implementation):
    q, k, v, _, _ = _inputs()
    mask = np.ones((B, L), np.int32)
    mask[0, 20:] = 0
    ref, _ = attn.DotProductAttention(0.1, implementation="materialised").apply({}, q, k, v, mask)
    out, none = attn.DotProductAttention(0.1, implementation=implementation).apply({}, q, k, v, mask)
    assert none is None and float(jnp.max(jnp.abs(out - ref))) < 2e-6


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


@pytest.mark.parametrize("shape,devices,budget,split,expected", [
    ((32, 12, 128), 1, attn.CPU_TILE_BYTES, True, (8, 1)),    # rows of 4: 3 MiB of scores a tile
    ((8, 12, 512), 1, attn.CPU_TILE_BYTES, True, (8, 4)),     # one row is 12 MiB: 4 blocks of 128 queries
    ((8, 12, 512), 1, attn.CPU_TILE_BYTES, False, (8, 1)),  # rows whole, as on CPU
    ((8, 12, 128), 1, attn.CPU_TILE_BYTES, True, (2, 1)),
    ((2, 4, 16), 1, attn.CPU_TILE_BYTES, True, (1, 1)),       # tiny: the whole batch at once
    ((32, 12, 128), 8, attn.CPU_TILE_BYTES, True, (1, 1)),    # 4 rows per device fit in one tile
    ((7, 12, 256), 1, attn.CPU_TILE_BYTES, True, (7, 1)),     # a prime batch still divides
    ((256, 12, 128), 1, attn.ACCELERATOR_TILE_BYTES, True, (4, 1)),  # base size on a GPU: 4 tiles of 64 rows
    ((32, 12, 512), 1, attn.ACCELERATOR_TILE_BYTES, True, (8, 1)),
    ((2, 16, 2048), 1, attn.ACCELERATOR_TILE_BYTES, True, (2, 4)),  # 256 MiB a row: blocks of 512 queries
])
def test_tiles(shape, devices, budget, split, expected):
    assert attn.tiles(*shape, devices=devices, budget=budget, query_blocks=split) == expected


def test_device_major_layout_round_trips():
    x = jnp.arange(24 * 2).reshape(24, 2)
    split = attn._split(x, 2, 3)  # 2 devices x 3 chunks x 4 rows
    assert split.shape == (3, 8, 2)
    # chunk 0 holds the first 4 rows of each device's half of the batch
    assert np.asarray(split[0, :, 0]).tolist() == [0, 2, 4, 6, 24, 26, 28, 30]
    assert np.array_equal(np.asarray(attn._join(split, 2)), np.asarray(x))


def test_auto_falls_back_to_xla_when_cudnn_refuses(monkeypatch):
    """Under "auto", a cuDNN that refuses while tracing (here: none on CPU) gives XLA's form, not an error."""
    monkeypatch.setattr(attn, "choose", lambda *args, **kwargs: "cudnn")
    q, k, v, _, _ = _inputs()
    mask = np.ones((B, L), np.int32)
    mask[0, 20:] = 0
    out, _ = attn.DotProductAttention(0.1, implementation="auto").apply({}, q, k, v, mask)
    ref = _materialised(q, k, v, attn.mask_bias(mask, B, L))
    assert float(jnp.max(jnp.abs(out - ref))) < 2e-6
    with pytest.raises(RuntimeError):  # asked for by name, cuDNN's refusal is not hidden
        attn.DotProductAttention(0.1, implementation="cudnn").apply({}, q, k, v, mask)


def _causal_reference(q, k, v, bias, query_start=0):
    """Causal attention written out in numpy (float64): a query sees the unmasked keys at or before
    its own position; a query with none attends uniformly (as masked_fill with finfo.min gives)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    seen = (np.arange(k.shape[1])[None, :] <= query_start + np.arange(q.shape[1])[:, None])[None, None]
    seen = seen & (np.asarray(bias) == 0)[:, None, None, :]
    s = np.where(seen, s, -1e30)
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhqk,bkhd->bqhd", p / p.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("chunks,devices,q_blocks", [(1, 1, 1), (2, 1, 1), (1, 1, 3), (2, 1, 2), (2, 2, 3)])
def test_causal_chunked_equals_materialised(chunks, devices, q_blocks):
    """Causal tiles (GPT-2): each query block masks the keys after its own positions."""
    q, k, v, w, bias = _inputs(seed=2)
    key = jax.random.key(0)
    causal = lambda q, k, v: attn.chunked_attention(q, k, v, bias, key, 0.0, chunks, devices, q_blocks,  # noqa: E731
                                                    True)
    materialised = lambda q, k, v: attn.materialised_attention(q, k, v, bias, dtype=q.dtype,  # noqa: E731
                                                               causal=True)[0]
    out, ref = causal(q, k, v), materialised(q, k, v)
    assert float(jnp.max(jnp.abs(ref - _causal_reference(q, k, v, bias)))) < 2e-6
    assert float(jnp.max(jnp.abs(out - ref))) < 2e-6
    assert float(jnp.max(jnp.abs(out[0, 0] - v[0, 0]))) < 2e-6  # the first query sees only itself
    assert float(jnp.max(jnp.abs(out - _materialised(q, k, v, bias)))) > 1e-2  # and it is not bidirectional
    got, want = _grads(causal, q, k, v, w), _grads(materialised, q, k, v, w)
    for g, r in zip(got, want):
        assert float(jnp.max(jnp.abs(g - r))) < 5e-6
    # the last key is seen by the last query only: its value's gradient is that query's weight alone
    p_last = jax.nn.softmax(jnp.einsum("hd,khd->hk", q[0, -1] * D ** -0.5, k[0]), -1)[:, -1]  # [H]
    assert float(jnp.max(jnp.abs(got[2][0, -1] - p_last[:, None] * w[0, -1]))) < 5e-6


@pytest.mark.parametrize("implementation", ["chunked", "xla", "materialised"])
def test_causal_module_forms_agree(implementation):
    """DotProductAttention(causal=True), the GPT-2 path, in every form that runs on CPU."""
    q, k, v, _, bias = _inputs(seed=3)
    mask = (bias == 0).astype(jnp.int32)
    module = attn.DotProductAttention(0.0, implementation=implementation, causal=True)
    out = module.apply({}, q, k, v, mask)[0]
    ref = _causal_reference(q, k, v, bias)
    rows = slice(0, 3)  # row 3 has no key at all: what a query without keys gets is each form's own
    assert float(jnp.max(jnp.abs(out[rows] - ref[rows]))) < 2e-6


def test_causal_queries_at_an_offset_as_a_cache_has_them():
    """The materialised form with `query_start`: the last 5 queries against all 24 keys (a decode
    step's new tokens in their cache slots) equal those rows of the whole causal attention."""
    q, k, v, _, bias = _inputs(seed=4)
    whole = attn.materialised_attention(q, k, v, bias, dtype=q.dtype, causal=True)[0]
    tail = attn.materialised_attention(q[:, -5:], k, v, bias, dtype=q.dtype, causal=True, query_start=L - 5)[0]
    assert float(jnp.max(jnp.abs(tail[:3] - whole[:3, -5:]))) < 2e-6
    assert float(np.max(np.abs(np.asarray(tail[:3]) - _causal_reference(q[:, -5:], k, v, bias, L - 5)[:3]))) < 2e-6
