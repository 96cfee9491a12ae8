"""The analytic FLOP counts behind every MFU figure, checked against XLA's own count of the program."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import distilbert_jax as dj
from distilbert_jax.training.flops import distillation_step_flops, encoder_forward_flops

SMALL = {
    "distilbert": dj.DistilBertConfig(vocab_size=1000, dim=128, n_layers=2, n_heads=4, hidden_dim=512,
                                      max_position_embeddings=128),
    "bert": dj.BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=512, max_position_embeddings=128),
    "roberta": dj.RobertaConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=512, max_position_embeddings=130),
    "gpt2": dj.GPT2Config(vocab_size=1000, n_embd=128, n_layer=2, n_head=4, max_position_embeddings=128),
}


@pytest.mark.parametrize("family", sorted(SMALL))
@pytest.mark.parametrize("mlm", [False, True])
def test_matmul_flops_are_most_of_what_xla_counts(family, mlm):
    """XLA also counts elementwise work (GELU, softmax, LayerNorm), so ours is a little lower, never higher."""
    config = SMALL[family]
    head = "causal-lm" if family == "gpt2" else "masked-lm"
    model = dj.PretrainedModel.from_config(config, head if mlm else "base")
    batch, length = 4, 64
    ids = jnp.ones((batch, length), jnp.int32)
    out = (lambda o: o.logits) if mlm else (lambda o: o.last_hidden_state)
    compiled = jax.jit(lambda p: out(model.module.apply({"params": p}, ids))).lower(model.params).compile()
    analysis = compiled.cost_analysis()
    xla = (analysis[0] if isinstance(analysis, list) else analysis)["flops"]
    ours = encoder_forward_flops(config, batch, length, mlm_head=mlm)
    assert 0.8 < ours / xla <= 1.0, (ours, xla)


def test_step_counts_teacher_once_and_student_three_times():
    s, t = SMALL["distilbert"], SMALL["bert"]
    one = encoder_forward_flops(s, 2, 32, mlm_head=True)
    assert distillation_step_flops(s, None, 2, 32) == 3 * one
    assert distillation_step_flops(s, t, 2, 32) == 3 * one + encoder_forward_flops(t, 2, 32, mlm_head=True)
    assert encoder_forward_flops(t, 2, 32) == encoder_forward_flops(t, 2, 32, layers=2)
