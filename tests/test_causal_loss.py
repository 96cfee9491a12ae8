"""DistilGPT2's causal objective against the reference distiller's CLM branch restated in torch,
and the chunked form (what training runs) against the plain one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

from distilbert_jax.losses import (IGNORE_INDEX, causal_distillation_loss, chunked_distillation_loss,
                                   next_token_labels)
from test_losses import make_inputs

ALPHAS = dict(alpha_ce=5.0, alpha_clm=2.0, alpha_cos=1.0)


def _causal_inputs(seed=0):
    x = make_inputs(seed=seed)
    rng = np.random.default_rng(seed)
    x["input_ids"] = rng.integers(0, 37, x["labels"].shape).astype(np.int32)
    del x["labels"]
    return x


def torch_reference(x, temperature):
    """The reference's causal branch: KL on every real position, shifted cross-entropy with
    padding labelled -100, cosine of the last hidden states (float64)."""
    nn, F = torch.nn, torch.nn.functional
    s, t = (torch.tensor(x[k], dtype=torch.float64) for k in ("student_logits", "teacher_logits"))
    mask = torch.tensor(x["attention_mask"]).bool()
    vocab, dim = s.shape[-1], x["student_hidden"].shape[-1]
    s_slct = s[mask].view(-1, vocab)
    t_slct = t[mask].view(-1, vocab)
    ce = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s_slct / temperature, -1),
                                             F.softmax(t_slct / temperature, -1)) * temperature ** 2
    labels = torch.tensor(x["input_ids"], dtype=torch.long).masked_fill(~mask, -100)
    clm = nn.CrossEntropyLoss(ignore_index=-100)(s[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1))
    sh, th = (torch.tensor(x[k], dtype=torch.float64)[mask].view(-1, dim) for k in ("student_hidden", "teacher_hidden"))
    cos = nn.CosineEmbeddingLoss()(sh, th, torch.ones(sh.size(0), dtype=torch.float64))
    return {"ce": ce.item(), "clm": clm.item(), "cos": cos.item()}


def test_next_token_labels():
    ids = np.array([[5, 6, 7, 8], [5, 6, 7, 8], [5, 6, 7, 8]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]])
    x = IGNORE_INDEX
    assert np.asarray(next_token_labels(ids, mask)).tolist() == [[6, 7, 8, x], [6, x, x, x], [x, x, 8, x]]


def test_matches_the_reference_causal_loss():
    for temperature in (2.0, 1.0):
        x = _causal_inputs()
        total, parts = causal_distillation_loss(**x, temperature=temperature, **ALPHAS)
        ref = torch_reference(x, temperature)
        assert set(parts) == {"ce", "clm", "cos", "mse"}
        for k, value in ref.items():
            np.testing.assert_allclose(float(parts[k]), value, rtol=1e-5, err_msg=k)
        np.testing.assert_allclose(float(total), sum(ALPHAS[f"alpha_{k}"] * v for k, v in ref.items()), rtol=1e-5)


def test_chunked_form_equals_plain_with_a_bias_free_head():
    """What the causal train step computes: GPT-2's head has no bias (None)."""
    rng = np.random.default_rng(3)
    batch, length, dim, vocab = 3, 11, 16, 37
    s_feat, t_feat = (jnp.asarray(rng.standard_normal((batch, length, dim)), jnp.float32) for _ in range(2))
    s_table, t_table = (jnp.asarray(rng.standard_normal((vocab, dim)), jnp.float32) for _ in range(2))
    x = _causal_inputs(seed=3)
    ids, mask = x["input_ids"], x["attention_mask"]
    labels = next_token_labels(ids, mask)

    def plain(feat, table):
        return causal_distillation_loss(feat @ table.T, t_feat @ t_table.T, feat, t_feat, ids, mask, **ALPHAS)[0]

    def chunked(feat, table):
        return chunked_distillation_loss(feat, table, None, t_feat, t_table, None, feat, t_feat, labels, mask,
                                         alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0, chunk_size=7)[0]

    np.testing.assert_allclose(float(chunked(s_feat, s_table)), float(plain(s_feat, s_table)), rtol=1e-6)
    g_plain = jax.grad(plain, argnums=(0, 1))(s_feat, s_table)
    g_chunked = jax.grad(chunked, argnums=(0, 1))(s_feat, s_table)
    for a, b in zip(g_chunked, g_plain):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)
