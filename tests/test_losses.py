"""The distillation loss against a PyTorch restatement of the reference distiller's formulas,
the chunked form against the plain one (values, gradients, memory), and the edge cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from distilbert_jax.errors import UserError
from distilbert_jax import precision
from distilbert_jax.losses import chunked_distillation_loss, distillation_loss, masked_lm_metrics, tied_logits

ALPHAS = dict(alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0, alpha_mse=0.5)


def make_inputs(batch=3, length=11, vocab=37, dim=16, seed=0):
    """Random logits, hidden states, ragged padding, about a third of the real tokens as targets."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), np.int32)
    for b in range(1, batch):
        mask[b, length - 3 * b:] = 0
    labels = np.where((rng.random((batch, length)) < 0.35) & (mask == 1), rng.integers(0, vocab, (batch, length)), -100)
    labels[0, 1] = 5  # at least one target
    f32 = np.float32
    return dict(
        student_logits=(3 * rng.standard_normal((batch, length, vocab))).astype(f32),
        teacher_logits=(3 * rng.standard_normal((batch, length, vocab))).astype(f32),
        student_hidden=rng.standard_normal((batch, length, dim)).astype(f32),
        teacher_hidden=rng.standard_normal((batch, length, dim)).astype(f32),
        labels=labels.astype(np.int32),
        attention_mask=mask,
    )


def torch_reference(x, temperature, restrict_ce_to_mask):
    """The reference distiller's loss terms, restated with torch.nn losses in float64."""
    nn, F = torch.nn, torch.nn.functional
    s, t = (torch.tensor(x[k], dtype=torch.float64) for k in ("student_logits", "teacher_logits"))
    labels, mask = torch.tensor(x["labels"], dtype=torch.long), torch.tensor(x["attention_mask"]).bool()
    vocab, dim = s.shape[-1], x["student_hidden"].shape[-1]
    sel = (labels > -1) if restrict_ce_to_mask else mask
    s_slct = s.masked_select(sel.unsqueeze(-1).expand_as(s)).view(-1, vocab)
    t_slct = t.masked_select(sel.unsqueeze(-1).expand_as(t)).view(-1, vocab)
    ce = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s_slct / temperature, -1),
                                             F.softmax(t_slct / temperature, -1)) * temperature ** 2
    mlm = nn.CrossEntropyLoss(ignore_index=-100)(s.view(-1, vocab), labels.view(-1))
    mse = nn.MSELoss(reduction="sum")(s_slct, t_slct) / s_slct.size(0)
    sh, th = (torch.tensor(x[k], dtype=torch.float64) for k in ("student_hidden", "teacher_hidden"))
    hmask = mask.unsqueeze(-1).expand_as(sh)
    sh, th = sh.masked_select(hmask).view(-1, dim), th.masked_select(hmask).view(-1, dim)
    cos = nn.CosineEmbeddingLoss()(sh, th, torch.ones(sh.size(0), dtype=torch.float64))
    return {"ce": ce.item(), "mlm": mlm.item(), "cos": cos.item(), "mse": mse.item()}


@pytest.mark.parametrize("restrict", [False, True])
@pytest.mark.parametrize("temperature", [2.0, 1.0])
def test_matches_torch_reference(restrict, temperature):
    x = make_inputs()
    total, parts = distillation_loss(**x, temperature=temperature, restrict_ce_to_mask=restrict, **ALPHAS)
    ref = torch_reference(x, temperature, restrict)
    assert set(parts) == {"ce", "mlm", "cos", "mse"}
    for k in ref:
        assert parts[k].dtype == jnp.float32 and parts[k].shape == ()
        np.testing.assert_allclose(float(parts[k]), ref[k], rtol=1e-5, err_msg=k)
    expected = sum(ALPHAS[f"alpha_{k}"] * ref[k] for k in ref)
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)


def test_defaults_are_the_released_recipe():
    x = make_inputs(seed=1)
    total, parts = distillation_loss(**x)
    np.testing.assert_allclose(float(total), 5 * parts["ce"] + 2 * parts["mlm"] + parts["cos"], rtol=1e-6)


def features_inputs(batch=3, length=11, vocab=37, dim=16, seed=0, dtype=np.float32):
    """Inputs of the chunked form: MLM features, tied tables and biases, hidden states."""
    rng = np.random.default_rng(seed + 100)
    x = make_inputs(batch, length, vocab, dim, seed)
    del x["student_logits"], x["teacher_logits"]
    for who in ("student", "teacher"):
        x[f"{who}_features"] = rng.standard_normal((batch, length, dim)).astype(dtype)
        x[f"{who}_embedding"] = (0.5 * rng.standard_normal((vocab, dim))).astype(np.float32)
        x[f"{who}_bias"] = (0.1 * rng.standard_normal(vocab)).astype(np.float32)
    return x


def unchunked(x, **kwargs):
    """The plain loss on materialised logits, with the same arguments as the chunked one."""
    s = tied_logits(x["student_features"], x["student_embedding"], x["student_bias"])
    t = tied_logits(x["teacher_features"], x["teacher_embedding"], x["teacher_bias"])
    return distillation_loss(s, t, x["student_hidden"], x["teacher_hidden"], x["labels"], x["attention_mask"],
                             **kwargs)


def chunked(x, **kwargs):
    return chunked_distillation_loss(**x, **kwargs)


STUDENT = ("student_features", "student_embedding", "student_bias", "student_hidden")


# 7 does not divide the 3 * 11 positions; 2048 is more than all of them (one chunk). `padded`: the
# vocabulary of 37 padded to 128 with masked columns, as on accelerators (precision.py).
@pytest.mark.parametrize("chunk_size, restrict, padded", [(7, False, False), (7, True, False), (2048, False, False),
                                                          (7, False, True), (2048, True, True)])
def test_chunked_equals_unchunked(chunk_size, restrict, padded, monkeypatch):
    if padded:
        monkeypatch.setattr(precision, "vocab_multiple", lambda: precision.VOCAB_MULTIPLE)
    x = features_inputs()
    kwargs = dict(restrict_ce_to_mask=restrict, **ALPHAS)

    def loss(fn, student):
        return fn({**x, **student}, **kwargs, **({"chunk_size": chunk_size} if fn is chunked else {}))

    student = {k: jnp.asarray(x[k]) for k in STUDENT}
    (v_c, parts_c), g_c = jax.jit(jax.value_and_grad(lambda p: loss(chunked, p), has_aux=True))(student)
    (v_u, parts_u), g_u = jax.jit(jax.value_and_grad(lambda p: loss(unchunked, p), has_aux=True))(student)
    np.testing.assert_allclose(float(v_c), float(v_u), rtol=1e-6)
    for k in parts_u:
        np.testing.assert_allclose(float(parts_c[k]), float(parts_u[k]), rtol=1e-6, atol=1e-7, err_msg=k)
    for k in STUDENT:
        scale = float(jnp.max(jnp.abs(g_u[k])))
        assert scale > 0, k
        np.testing.assert_allclose(np.asarray(g_c[k]), np.asarray(g_u[k]), rtol=1e-5, atol=1e-5 * scale, err_msg=k)


def test_chunked_memory_is_per_chunk_not_per_sequence():
    """With the real vocabulary, the chunked gradient's scratch memory does not grow with the
    sequence length (it holds a chunk of logits), while the plain one's grows with it."""
    vocab, dim, batch = 30522, 64, 2
    wrt = ("student_features", "student_embedding", "student_bias")

    def temp_bytes(fn, length, **kwargs):
        spec = jax.ShapeDtypeStruct
        args = {"labels": spec((batch, length), jnp.int32), "attention_mask": spec((batch, length), jnp.int32)}
        for who in ("student", "teacher"):
            args[f"{who}_features"] = args[f"{who}_hidden"] = spec((batch, length, dim), jnp.float32)
            args[f"{who}_embedding"] = spec((vocab, dim), jnp.float32)
            args[f"{who}_bias"] = spec((vocab,), jnp.float32)
        student = {k: args.pop(k) for k in wrt}

        def loss(student, rest):
            return fn({**rest, **student}, **kwargs)[0]

        return jax.jit(jax.grad(loss)).lower(student, args).compile().memory_analysis().temp_size_in_bytes

    full = temp_bytes(unchunked, 512)
    small = temp_bytes(chunked, 512, chunk_size=64)
    assert full >= batch * 512 * vocab * 4  # at least one whole [B, L, V] float32 array
    assert small / full < 0.25, (small, full)
    short = temp_bytes(chunked, 128, chunk_size=64)
    assert small < 1.1 * short, (small, short)  # 4x the positions, about the same scratch


def test_bf16_inputs_give_f32_parts():
    x = make_inputs(seed=2)
    ref_total, ref = distillation_loss(**x, **ALPHAS)
    low = {k: (v.astype(jnp.bfloat16) if v.dtype == np.float32 else v) for k, v in x.items()}
    total, parts = distillation_loss(**{k: jnp.asarray(v) for k, v in low.items()}, **ALPHAS)
    assert total.dtype == jnp.float32
    for k in ref:
        assert parts[k].dtype == jnp.float32
        np.testing.assert_allclose(float(parts[k]), float(ref[k]), rtol=2e-2, err_msg=k)

    f = features_inputs(seed=3)
    _, ref = chunked(f, chunk_size=8)
    half = dict(f, student_features=jnp.asarray(f["student_features"], jnp.bfloat16),
                teacher_features=jnp.asarray(f["teacher_features"], jnp.bfloat16))
    _, parts = chunked(half, chunk_size=8)
    _, parts_plain = jax.jit(unchunked)(half)  # eager bf16 rounds the logits at other points than jit does
    for k in ref:
        assert parts[k].dtype == jnp.float32
        np.testing.assert_allclose(float(parts[k]), float(ref[k]), rtol=5e-2, err_msg=k)
        np.testing.assert_allclose(float(parts[k]), float(parts_plain[k]), rtol=1e-5, err_msg=k)


@pytest.mark.parametrize("restrict", [False, True])
def test_empty_selection_gives_finite_zeros(restrict):
    x = make_inputs(seed=4)
    x["labels"] = np.full_like(x["labels"], -100)
    if not restrict:
        x["attention_mask"] = np.zeros_like(x["attention_mask"])
    def loss(s):
        total, parts = distillation_loss(**dict(x, student_logits=s), restrict_ce_to_mask=restrict)
        return total, (total, parts)

    grad, (total, parts) = jax.jit(jax.grad(loss, has_aux=True))(jnp.asarray(x["student_logits"]))
    assert np.isfinite(float(total)) and np.all(np.isfinite(grad))
    assert float(parts["mlm"]) == 0.0 and float(parts["ce"]) == 0.0 and float(parts["mse"]) == 0.0
    if not restrict:
        assert float(parts["cos"]) == 0.0 and float(total) == 0.0

    f = dict(features_inputs(seed=4), labels=x["labels"], attention_mask=x["attention_mask"])
    total, parts = jax.jit(lambda f: chunked(f, restrict_ce_to_mask=restrict, chunk_size=5))(f)
    assert all(np.isfinite(float(v)) for v in parts.values())
    assert float(parts["ce"]) == 0.0 and float(parts["mlm"]) == 0.0


def test_teacher_gets_no_gradient():
    x = make_inputs(seed=5)
    teacher = {k: jnp.asarray(x[k]) for k in ("teacher_logits", "teacher_hidden")}
    grads = jax.grad(lambda t: distillation_loss(**{**x, **t}, **ALPHAS)[0])(teacher)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in grads.values())

    f = features_inputs(seed=5)
    keys = ("teacher_features", "teacher_embedding", "teacher_bias", "teacher_hidden")
    grads = jax.grad(lambda t: chunked({**f, **t}, chunk_size=8, **ALPHAS)[0])({k: jnp.asarray(f[k]) for k in keys})
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in grads.values())


def test_teacher_may_be_absent_when_its_terms_are_off():
    x = make_inputs(seed=6)
    _, full = distillation_loss(**x)
    total, parts = distillation_loss(**dict(x, teacher_logits=None, teacher_hidden=None), alpha_ce=0.0, alpha_cos=0.0)
    assert float(parts["ce"]) == float(parts["mse"]) == float(parts["cos"]) == 0.0
    np.testing.assert_allclose(float(total), 2 * float(full["mlm"]), rtol=1e-6)

    f = features_inputs(seed=6)
    none = dict(f, teacher_features=None, teacher_embedding=None, teacher_bias=None, teacher_hidden=None)
    total_c, parts_c = chunked(none, alpha_ce=0.0, alpha_cos=0.0, chunk_size=4)
    _, parts_u = unchunked(f)
    np.testing.assert_allclose(float(parts_c["mlm"]), float(parts_u["mlm"]), rtol=1e-6)
    with pytest.raises(UserError, match="alpha_ce"):
        distillation_loss(**dict(x, teacher_logits=None))
    with pytest.raises(UserError, match="alpha_cos"):
        chunked(dict(f, teacher_hidden=None))


@pytest.mark.parametrize("with_bias", [True, False])
def test_mlm_only_gradient_without_teacher(with_bias):
    """The fused gradient of the teacher-less step (pretraining, the no-teacher baseline)."""
    f = features_inputs(seed=8)
    if not with_bias:
        f["student_bias"] = None
    none = dict(f, teacher_features=None, teacher_embedding=None, teacher_bias=None, teacher_hidden=None)
    wrt = [k for k in ("student_features", "student_embedding", "student_bias") if f[k] is not None]

    def plain(p):
        x = {**f, **p}
        logits = tied_logits(x["student_features"], x["student_embedding"], x["student_bias"])
        return distillation_loss(logits, None, x["student_hidden"], None, x["labels"], x["attention_mask"],
                                 alpha_ce=0.0, alpha_mlm=1.0, alpha_cos=0.0)[0]

    def fused(p):
        return chunked({**none, **p}, alpha_ce=0.0, alpha_mlm=1.0, alpha_cos=0.0, chunk_size=5)[0]

    student = {k: jnp.asarray(f[k]) for k in wrt}
    (v_f, g_f), (v_p, g_p) = (jax.jit(jax.value_and_grad(fn))(student) for fn in (fused, plain))
    np.testing.assert_allclose(float(v_f), float(v_p), rtol=1e-6)
    for k in wrt:
        scale = float(jnp.max(jnp.abs(g_p[k])))
        assert scale > 0, k
        np.testing.assert_allclose(np.asarray(g_f[k]), np.asarray(g_p[k]), rtol=1e-5, atol=1e-5 * scale, err_msg=k)


@pytest.mark.parametrize("probability", [0.15, 0.4])
def test_mlm_alone_on_the_gathered_targets_is_the_loss_of_all_positions(probability):
    """What the teacher-less step does on one device (distill/step.py): the projection at the masked
    positions only (gathered to a static ceil(p * B * L) rows), with the loss and gradients of the
    pass over every position."""
    from distilbert_jax.data.masking import mask_tokens
    from distilbert_jax.distill.step import _targets_only

    f = features_inputs(batch=4, length=13, seed=9)
    real = np.ones((4, 13), np.int32)
    real[1, 9:] = 0  # padding: fewer real tokens than the capacity assumes
    ids = np.random.default_rng(3).integers(5, 37, size=(4, 13)).astype(np.int32)
    _, labels = mask_tokens(jax.random.key(1), ids, real, np.ones(37, np.float32), mask_id=4,
                            mlm_probability=probability)
    table = {"student_embedding": jnp.asarray(f["student_embedding"]), "student_bias": jnp.asarray(f["student_bias"])}
    weights = dict(alpha_ce=0.0, alpha_mlm=1.0, alpha_cos=0.0, chunk_size=7)

    def every(features, p):
        return chunked_distillation_loss(features, p["student_embedding"], p["student_bias"], None, None, None,
                                         None, None, labels, real, **weights)[0]

    def gathered(features, p):
        rows, row_labels, row_mask = _targets_only(features, labels, probability)
        return chunked_distillation_loss(rows, p["student_embedding"], p["student_bias"], None, None, None,
                                         None, None, row_labels, row_mask, **weights)[0]

    features = jnp.asarray(f["student_features"])
    (v_all, g_all), (v_few, g_few) = (jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(features, table)
                                      for fn in (every, gathered))
    assert int(np.sum(np.asarray(labels) != -100)) > 0
    np.testing.assert_allclose(float(v_few), float(v_all), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_few), jax.tree.leaves(g_all)):
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6 * scale)


def test_masked_lm_metrics():
    x = make_inputs(seed=7)
    logits, labels = x["student_logits"], x["labels"]
    labels[1, 0] = int(np.argmax(logits[1, 0]))  # one sure hit
    m = masked_lm_metrics(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32), labels)
    m32 = masked_lm_metrics(logits, labels)
    targets = labels != -100
    ref = torch.nn.CrossEntropyLoss(ignore_index=-100)(torch.tensor(logits, dtype=torch.float64).view(-1, 37),
                                                       torch.tensor(labels, dtype=torch.long).view(-1)).item()
    np.testing.assert_allclose(float(m32["loss"]), ref, rtol=1e-5)
    accuracy = (np.argmax(logits, -1) == labels)[targets].mean()
    np.testing.assert_allclose(float(m32["accuracy"]), accuracy, rtol=1e-6)
    assert float(m32["count"]) == targets.sum() and all(v.dtype == jnp.float32 for v in m32.values())
    assert np.isfinite(float(m["loss"]))
    empty = masked_lm_metrics(logits, np.full_like(labels, -100))
    assert float(empty["loss"]) == float(empty["accuracy"]) == float(empty["count"]) == 0.0


SHARDED = r"""
import json
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
from test_losses import ALPHAS, STUDENT, chunked, features_inputs
from distilbert_jax.training.mesh import MeshShape, make_mesh

out = {}
x = features_inputs(batch=16, length=11)  # 176 positions: 22 per device, cut into chunks of 5
for layout, shape in (("data", MeshShape(8, 1)), ("fsdp", MeshShape(1, 8)), ("mixed", MeshShape(2, 4))):
    mesh = make_mesh(shape)
    rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    placed = {k: jax.device_put(v, rows) if v.ndim >= 2 and v.shape[0] == 16 else v for k, v in x.items()}
    for restrict in (False, True):
        def loss(student, mesh_arg):
            args = {**placed, **dict(zip(STUDENT, student))}
            return chunked(args, restrict_ce_to_mask=restrict, chunk_size=5, mesh=mesh_arg, **ALPHAS)

        student = tuple(placed[k] for k in STUDENT)
        results = {}
        for name, mesh_arg in (("whole", None), ("sharded", mesh)):
            fn = jax.jit(jax.value_and_grad(lambda s: loss(s, mesh_arg), has_aux=True))
            (total, parts), grads = fn(student)
            results[name] = (total, parts, grads)
        (t0, p0, g0), (t1, p1, g1) = results["whole"], results["sharded"]
        out[f"{layout}-{restrict}"] = {
            "total": abs(float(t0 - t1)), "parts": max(abs(float(p0[k] - p1[k])) for k in p0),
            "grads": max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1))),
            "scale": float(abs(t0))}
print(json.dumps(out))
"""


def test_the_loss_per_batch_shard_equals_the_whole_batch_loss():
    """The vocabulary terms under shard_map (each device its own rows, sums and table gradients
    psum-reduced) give the unsharded values and gradients, on data, fsdp and mixed meshes."""
    from subprocess_jax import run_python

    results = run_python(SHARDED, devices=8, timeout=600)
    print(results)
    for name, r in results.items():
        assert r["total"] <= 1e-5 * r["scale"] and r["parts"] <= 1e-5 * r["scale"], name
        assert r["grads"] <= 1e-5, name
