"""The precision policy (precision.py) and float16 loss scaling (training/loss_scale.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distilbert_jax import precision
from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.errors import UserError
from distilbert_jax.finetune.config import FinetuneConfig
from distilbert_jax.models import layers
from distilbert_jax.training import loss_scale


@pytest.mark.parametrize("text,params,compute", [
    ("params=float32,compute=bfloat16", "float32", "bfloat16"),
    ("p=f32, c=bf16", "float32", "bfloat16"),
    ("compute=half", "float32", "float16"),
    ("bfloat16", "bfloat16", "bfloat16"),
    ("float32", "float32", "float32"),
])
def test_policy_strings(text, params, compute):
    policy = precision.Policy.parse(text)
    assert (policy.params, policy.compute) == (params, compute)
    assert precision.Policy.parse(str(policy)) == policy
    assert policy.compute_dtype == getattr(jnp, compute)


@pytest.mark.parametrize("text,message", [("params=float32,compute=int8", "not supported"),
                                          ("weights=float32", "params=DTYPE or compute=DTYPE")])
def test_bad_policy_is_one_line(text, message):
    with pytest.raises(UserError, match=message):
        precision.Policy.parse(text)


def test_run_configs_take_the_policy_and_old_compute_dtype():
    assert DistillConfig().policy == precision.Policy("float32", "float32")
    old = DistillConfig.from_dict({"compute_dtype": "bfloat16"})  # a config.json from before the policy
    assert old.precision == "params=float32,compute=bfloat16"
    assert FinetuneConfig().with_overrides(["compute_dtype=float16"]).policy.needs_loss_scaling
    with pytest.raises(UserError, match="keeps parameters in float32"):
        FinetuneConfig().replace(precision="bfloat16")
    with pytest.raises(UserError, match="has no dropout"):
        FinetuneConfig().replace(attention="cudnn")
    assert FinetuneConfig().replace(attention="cudnn", dropout=False).attention == "cudnn"


def test_vocab_padded_to_128_masked_and_sliced():
    rng = np.random.RandomState(0)
    vocab, dim = 1000, 16  # 1000 -> 1024
    table = jnp.asarray(rng.randn(vocab, dim), jnp.float32)
    bias = jnp.asarray(rng.randn(vocab), jnp.float32)
    h = jnp.asarray(rng.randn(3, 5, dim), jnp.float32)
    logits = precision.vocab_logits(h, table, bias, vocab, multiple=128)
    assert logits.shape == (3, 5, 1024) and logits.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(logits[..., :vocab]), np.asarray(h @ table.T + bias), rtol=1e-5, atol=1e-5)
    assert bool(jnp.all(logits[..., vocab:] == jnp.finfo(jnp.float32).min))
    assert float(jnp.max(jax.nn.softmax(logits, -1)[..., vocab:])) == 0.0
    assert precision.padded_vocab(30522) == 30592 and precision.padded_vocab(30592) == 30592
    on_cpu = jax.default_backend() == "cpu"  # nothing to tile for there (precision.py)
    assert precision.vocab_multiple() == (1 if on_cpu else 128)
    assert precision.pad_vocab(table)[0].shape == ((1000 if on_cpu else 1024), 16)


def test_compiled_projection_multiplies_a_padded_vocabulary():
    """What XLA is given on an accelerator: a [.., 30592] dot, not [.., 30522]."""
    table = jax.ShapeDtypeStruct((30522, 64), jnp.float32)
    h = jax.ShapeDtypeStruct((4, 64), jnp.bfloat16)
    text = jax.jit(lambda h, t: precision.vocab_logits(h, t, None, 30522, 128)).lower(h, table).as_text()
    assert "30592" in text and "bf16" in text


def test_bf16_logits_accumulate_in_float32():
    """bf16 features and table, float32 products: the error is the inputs' rounding, far below that
    of logits rounded to bf16 (which are ~0.1 apart at magnitude 20)."""
    rng = np.random.RandomState(1)
    table = jnp.asarray(rng.randn(256, 64) * 0.7, jnp.bfloat16)
    h = jnp.asarray(rng.randn(8, 64) * 0.7, jnp.bfloat16)
    exact = h.astype(jnp.float32) @ table.astype(jnp.float32).T
    got = precision.vocab_logits(h, table, None, 256)
    rounded = (h @ table.T).astype(jnp.float32)
    assert float(jnp.max(jnp.abs(got - exact))) < 1e-4
    assert float(jnp.max(jnp.abs(rounded - exact))) > 1e-2


def test_layer_norm_statistics_are_float32_in_bf16():
    """Inputs of mean 300 and spread 0.5: bf16 statistics would lose the spread entirely."""
    x = jnp.asarray(300 + 0.5 * np.random.RandomState(2).randn(4, 64), jnp.bfloat16)
    norm = layers.layer_norm(1e-12, dtype=jnp.bfloat16, param_dtype=jnp.float32, name=None)
    out = norm.apply(norm.init(jax.random.key(0), x), x)
    xf = x.astype(jnp.float32)
    want = (xf - xf.mean(-1, keepdims=True)) / xf.std(-1, keepdims=True)
    assert out.dtype == jnp.bfloat16
    assert float(jnp.max(jnp.abs(out.astype(jnp.float32) - want))) < 0.05


def _scaled_tx(**kw):
    return loss_scale.dynamic_loss_scale(optax.sgd(1.0), **kw)


def test_loss_scale_unscales_and_skips_overflow():
    params = {"w": jnp.ones(3)}
    tx = _scaled_tx(initial=8.0, period=2)
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.full(3, 16.0)}, state, params)  # a scaled gradient of 2
    np.testing.assert_allclose(np.asarray(updates["w"]), -2.0)
    assert float(state.scale) == 8.0 and int(state.good_steps) == 1
    updates, state = tx.update({"w": jnp.full(3, 8.0)}, state, params)
    assert float(state.scale) == 16.0 and int(state.good_steps) == 0  # `period` finite steps: doubled
    before = state
    updates, state = tx.update({"w": jnp.asarray([1.0, jnp.inf, 0.0])}, state, params)
    assert float(jnp.max(jnp.abs(updates["w"]))) == 0.0  # overflow: nothing applied
    assert float(state.scale) == 8.0 and int(state.good_steps) == 0
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), state.inner, before.inner))


def test_loss_scale_keeps_small_fp16_gradients():
    """A float16 computation whose true gradients (~1e-8, under fp16's smallest subnormal) flush to
    zero unscaled; scaled, they arrive to fp16 rounding."""
    x = jnp.asarray(np.random.RandomState(3).rand(16), jnp.float16)

    def loss_fn(params):
        y = (params["w"].astype(jnp.float16) * x).astype(jnp.float32)
        return 1e-8 * jnp.sum(y), ()

    params = {"w": jnp.ones(16, jnp.float32)}
    plain_state = optax.sgd(1.0).init(params)
    (_, _), plain, _ = loss_scale.scaled_value_and_grad(loss_fn, plain_state)(params)
    scaled_state = _scaled_tx(initial=2.0 ** 20).init(params)
    (loss, _), grads, norm = loss_scale.scaled_value_and_grad(loss_fn, scaled_state)(params)
    want = 1e-8 * np.asarray(x, np.float32)
    assert float(jnp.max(jnp.abs(plain["w"]))) == 0.0  # underflowed
    unscaled = np.asarray(grads["w"]) / float(scaled_state.scale)
    np.testing.assert_allclose(unscaled, want, rtol=2e-3)
    assert abs(float(norm) - np.linalg.norm(want)) < 2e-3 * np.linalg.norm(want)
    assert abs(float(loss) - 1e-8 * float(jnp.sum(x.astype(jnp.float32)))) < 1e-11
