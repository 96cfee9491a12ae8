"""Every architecture against transformers' PyTorch class: logits, hidden states and attentions."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import distilbert_jax as dj
from conftest import (BASE_BERT, BASE_DISTILBERT, BERT_ARCHS, DISTILBERT_ARCHS, TINY_BERT, TINY_DISTILBERT,
                      random_batch)

TOL = 1e-4


def _torch_outputs(model, ids, mask, token_types=None):
    kwargs = {} if token_types is None else {"token_type_ids": torch.tensor(token_types)}
    with torch.no_grad():
        return model(torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True,
                     output_attentions=True, **kwargs)


def _main_output(pt):
    if hasattr(pt, "start_logits"):
        return torch.stack([pt.start_logits, pt.end_logits], -1).numpy()
    if hasattr(pt, "logits"):
        return pt.logits.numpy()
    return pt.last_hidden_state.numpy()


def _max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def check_parity(folder, pt_model, vocab_size, arch, seq_len=11, batch=3):
    choices = 2 if "MultipleChoice" in arch else None
    ids, mask = random_batch(vocab_size, batch=batch, length=seq_len, choices=choices)
    token_types = None
    if arch.startswith("Bert"):
        token_types = (np.arange(seq_len) >= seq_len // 2).astype(np.int64) * np.ones_like(ids)
    model = dj.from_pretrained(folder)
    assert model.architecture.name == arch
    assert not model.load_report.missing and not model.load_report.unused
    out = model(ids, mask, token_types, output_hidden_states=True, output_attentions=True)
    pt = _torch_outputs(pt_model, ids, mask, token_types)
    main = out.logits if out.logits is not None else out.last_hidden_state
    errors = {"main": _max_err(main, _main_output(pt))}
    errors["hidden"] = max(_max_err(a, b.numpy()) for a, b in zip(out.hidden_states, pt.hidden_states))
    errors["attn"] = max(_max_err(a, b.numpy()) for a, b in zip(out.attentions, pt.attentions))
    assert len(out.hidden_states) == len(pt.hidden_states) and len(out.attentions) == len(pt.attentions)
    # Without attention maps the models take the chunked attention path (models/attention.py).
    fast = model(ids, mask, token_types)
    errors["main_chunked"] = _max_err(fast.logits if fast.logits is not None else fast.last_hidden_state,
                                      _main_output(pt))
    # jax.nn.dot_product_attention's XLA form (what "auto" runs on TPUs and on GPUs in float32)
    xla = dj.PretrainedModel(model.config, model.architecture, model.params,
                             **{**model.module_kwargs, "attention": "xla"})(ids, mask, token_types)
    errors["main_xla"] = _max_err(xla.logits if xla.logits is not None else xla.last_hidden_state, _main_output(pt))
    if out.start_logits is not None:
        errors["start"] = _max_err(out.start_logits, pt.start_logits.numpy())
        errors["end"] = _max_err(out.end_logits, pt.end_logits.numpy())
    if out.pooler_output is not None and hasattr(pt, "pooler_output"):
        errors["pooler"] = _max_err(out.pooler_output, pt.pooler_output.numpy())
    assert all(e < TOL for e in errors.values()), errors
    return errors


@pytest.mark.parametrize("arch", DISTILBERT_ARCHS + BERT_ARCHS)
def test_tiny_parity(checkpoint, arch):
    config = TINY_DISTILBERT if arch.startswith("DistilBert") else TINY_BERT
    folder, pt_model = checkpoint(arch, **config, num_labels=2 if "QuestionAnswering" in arch else 3)
    check_parity(folder, pt_model, config["vocab_size"], arch)


@pytest.mark.parametrize("arch", DISTILBERT_ARCHS + BERT_ARCHS)
def test_base_size_parity(checkpoint, arch):
    config = BASE_DISTILBERT if arch.startswith("DistilBert") else BASE_BERT
    folder, pt_model = checkpoint(arch, **config)
    check_parity(folder, pt_model, 30522, arch, seq_len=24, batch=2)


def test_sinusoidal_positions(checkpoint):
    folder, pt_model = checkpoint("DistilBertForMaskedLM", **TINY_DISTILBERT, sinusoidal_pos_embds=True)
    check_parity(folder, pt_model, TINY_DISTILBERT["vocab_size"], "DistilBertForMaskedLM")
    model = dj.from_pretrained(folder)
    table = np.asarray(model.params["distilbert"]["embeddings"]["position_embeddings"]["embedding"])
    assert table[3, 0] == pytest.approx(np.sin(3.0)) and table[3, 1] == pytest.approx(np.cos(3.0))


@pytest.mark.parametrize("arch", ["DistilBertModel", "BertModel"])
def test_head_mask_matches_zeroed_output_projection(checkpoint, arch):
    """transformers 5 dropped head_mask; a masked head equals zeroing its slice of the output projection."""
    config = TINY_DISTILBERT if arch.startswith("DistilBert") else TINY_BERT
    folder, pt_model = checkpoint(arch, **config)
    ids, mask = random_batch(config["vocab_size"])
    head_mask = np.ones((2, 4), np.float32)
    head_mask[0, 1] = 0.0
    head_mask[1, 3] = 0.0
    out = dj.from_pretrained(folder)(ids, mask, head_mask=head_mask)
    pt = copy.deepcopy(pt_model)
    width = 32 // 4
    with torch.no_grad():
        for layer, head in ((0, 1), (1, 3)):
            if arch.startswith("DistilBert"):
                linear = pt.transformer.layer[layer].attention.out_lin
            else:
                linear = pt.encoder.layer[layer].attention.output.dense
            linear.weight[:, head * width : (head + 1) * width] = 0.0
    expected = _torch_outputs(pt, ids, mask).last_hidden_state.numpy()
    assert _max_err(out.last_hidden_state, expected) < TOL
    assert _max_err(out.last_hidden_state, dj.from_pretrained(folder)(ids, mask).last_hidden_state) > 1e-3


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_masking_is_finite_and_close(checkpoint, dtype):
    folder, _ = checkpoint("DistilBertForMaskedLM", **TINY_DISTILBERT)
    ids, mask = random_batch(TINY_DISTILBERT["vocab_size"])
    mask[2, :] = 0  # a row with every key masked must not give NaN either
    low = dj.from_pretrained(folder, dtype=dtype)(ids, mask)
    full = dj.from_pretrained(folder)(ids, mask)
    assert low.logits.dtype == np.float32  # vocabulary logits accumulate in float32 (precision.py)
    assert low.last_hidden_state.dtype == np.dtype(dtype)
    assert np.isfinite(np.asarray(low.logits, np.float32)).all()
    assert _max_err(np.asarray(low.logits, np.float32)[:2], np.asarray(full.logits)[:2]) < 0.1


def test_dropout_needs_rng_and_changes_outputs(checkpoint):
    folder, _ = checkpoint("DistilBertModel", **TINY_DISTILBERT)
    model = dj.from_pretrained(folder)
    ids, mask = random_batch(TINY_DISTILBERT["vocab_size"])
    with pytest.raises(dj.UserError, match="dropout_rng"):
        model(ids, mask, train=True)
    import jax

    a = model(ids, mask, train=True, dropout_rng=jax.random.key(1)).last_hidden_state
    b = model(ids, mask, train=True, dropout_rng=jax.random.key(1)).last_hidden_state
    c = model(ids, mask, train=True, dropout_rng=jax.random.key(2)).last_hidden_state
    assert _max_err(a, b) == 0.0 and _max_err(a, c) > 1e-3


def test_random_init_statistics():
    """Init as the recipe says: N(0, 0.02) weights, zero biases, zero pad row, unit LayerNorm."""
    model = dj.PretrainedModel.from_config(dj.DistilBertConfig(), "masked-lm", seed=3)
    p = model.params["distilbert"]
    words = np.asarray(p["embeddings"]["word_embeddings"]["embedding"])
    assert np.all(words[0] == 0)
    assert np.std(words[1:]) == pytest.approx(0.02, rel=0.02)
    q = p["transformer"]["layer"]["0"]["attention"]["q_lin"]
    assert np.std(np.asarray(q["kernel"])) == pytest.approx(0.02, rel=0.02) and not np.any(np.asarray(q["bias"]))
    ln = p["transformer"]["layer"]["0"]["sa_layer_norm"]
    assert np.all(np.asarray(ln["scale"]) == 1) and not np.any(np.asarray(ln["bias"]))
    assert model.num_parameters == 66_985_530
