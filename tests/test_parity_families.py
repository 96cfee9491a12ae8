"""RoBERTa and GPT-2 against transformers' PyTorch classes: every head, tiny and base size.

RoBERTa inputs are padded with its pad id (its position ids skip padding); GPT-2 is compared
with padding on the right and on the left, at the real positions only (a left-padding query
has no key it may see, and its value is arbitrary in both frameworks).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import distilbert_jax as dj
from conftest import BASE_GPT2, BASE_ROBERTA, GPT2_ARCHS, ROBERTA_ARCHS, TINY_GPT2, TINY_ROBERTA, random_batch
from test_parity import _main_output, _max_err, _torch_outputs

TOL = 1e-4


def _roberta_batch(vocab_size, batch, length, choices=None):
    ids, mask = random_batch(vocab_size, batch=batch, length=length, choices=choices)
    ids = np.where(ids == 1, 2, ids)  # 1 is the pad id: only padding carries it
    return np.where(mask == 1, ids, 1), mask


def _errors(out, pt, real=None):
    """Max abs errors of the main output, every hidden state and attention map, at `real` positions."""
    pick = (lambda a: np.asarray(a)) if real is None else (lambda a: np.asarray(a)[real])
    main = out.logits if out.logits is not None else out.last_hidden_state
    errors = {"main": _max_err(pick(main), pick(_main_output(pt)))}
    if out.start_logits is not None:
        errors["start"] = _max_err(out.start_logits, pt.start_logits.numpy())
    assert len(out.hidden_states) == len(pt.hidden_states) and len(out.attentions) == len(pt.attentions)
    errors["hidden"] = max(_max_err(pick(a), pick(b.numpy())) for a, b in zip(out.hidden_states, pt.hidden_states))
    attn_rows = (lambda a: np.asarray(a)) if real is None else (lambda a: np.asarray(a).transpose(0, 2, 1, 3)[real])
    errors["attn"] = max(_max_err(attn_rows(a), attn_rows(b.numpy())) for a, b in zip(out.attentions, pt.attentions))
    return errors


def check_roberta(folder, pt_model, vocab_size, arch, length=11, batch=3):
    ids, mask = _roberta_batch(vocab_size, batch, length, 2 if "MultipleChoice" in arch else None)
    model = dj.from_pretrained(folder)
    assert model.architecture.name == arch
    assert not model.load_report.missing and not model.load_report.unused
    errors = _errors(model(ids, mask, output_hidden_states=True, output_attentions=True),
                     _torch_outputs(pt_model, ids, mask))
    fast = model(ids, mask)  # the chunked attention path
    errors["main_chunked"] = _max_err(fast.logits if fast.logits is not None else fast.last_hidden_state,
                                      _main_output(_torch_outputs(pt_model, ids, mask)))
    assert all(e < TOL for e in errors.values()), errors
    return errors


@pytest.mark.parametrize("arch", ROBERTA_ARCHS)
def test_roberta_tiny_parity(checkpoint, arch):
    folder, pt_model = checkpoint(arch, **TINY_ROBERTA, num_labels=2 if "QuestionAnswering" in arch else 3)
    check_roberta(folder, pt_model, TINY_ROBERTA["vocab_size"], arch)


@pytest.mark.parametrize("arch", ROBERTA_ARCHS)
def test_roberta_base_size_parity(checkpoint, arch):
    folder, pt_model = checkpoint(arch, **BASE_ROBERTA)
    check_roberta(folder, pt_model, BASE_ROBERTA["vocab_size"], arch, length=24, batch=2)


def test_roberta_positions_skip_padding(checkpoint):
    """Left padding shifts nothing: a sentence's outputs do not depend on padding before it."""
    folder, _ = checkpoint("RobertaModel", **TINY_ROBERTA)
    model = dj.from_pretrained(folder)
    ids = np.array([[0, 5, 6, 7, 2]])
    padded = np.array([[1, 1, 0, 5, 6, 7, 2]])
    alone = model(ids).last_hidden_state
    shifted = model(padded, (padded != 1).astype(np.int64)).last_hidden_state
    assert _max_err(alone[0], shifted[0, 2:]) < 1e-5
    with pytest.raises(dj.UserError, match="64 positions"):  # 66 - pad id 1 - 1
        model(np.full((1, 65), 5))


def _gpt2_batch(vocab_size, batch, length, left: bool):
    ids, mask = random_batch(vocab_size, batch=batch, length=length)
    if left:
        mask = mask[:, ::-1].copy()
    return ids, mask


def check_gpt2(folder, pt_model, vocab_size, arch, length=11, batch=3):
    errors = {}
    model = dj.from_pretrained(folder)
    assert model.architecture.name == arch
    assert not model.load_report.missing and not model.load_report.unused
    for left in (False, True):
        ids, mask = _gpt2_batch(vocab_size, batch, length, left)
        real = mask.astype(bool)
        side = "left" if left else "right"
        pt = _torch_outputs(pt_model, ids, mask)
        for name, err in _errors(model(ids, mask, output_hidden_states=True, output_attentions=True), pt,
                                 real).items():
            errors[f"{side}_{name}"] = err
    assert all(e < TOL for e in errors.values()), errors
    return errors


@pytest.mark.parametrize("arch", GPT2_ARCHS)
def test_gpt2_tiny_parity(checkpoint, arch):
    folder, pt_model = checkpoint(arch, **TINY_GPT2)
    check_gpt2(folder, pt_model, TINY_GPT2["vocab_size"], arch)


@pytest.mark.parametrize("arch", GPT2_ARCHS)
def test_gpt2_base_size_parity(checkpoint, arch):
    folder, pt_model = checkpoint(arch, **BASE_GPT2)
    check_gpt2(folder, pt_model, 50257, arch, length=24, batch=2)


@pytest.mark.parametrize("arch", ["RobertaForMaskedLM", "GPT2LMHeadModel", "RobertaForQuestionAnswering"])
def test_round_trip_is_bit_exact(checkpoint, tmp_path, arch):
    """Ours -> safetensors -> transformers: every tensor equal to the bit, and ours again."""
    import transformers
    from safetensors.numpy import load_file

    config = TINY_GPT2 if arch.startswith("GPT2") else TINY_ROBERTA
    folder, pt_model = checkpoint(arch, **config)
    dj.from_pretrained(folder).save_pretrained(tmp_path / "ours")
    back = getattr(transformers, arch).from_pretrained(tmp_path / "ours").eval()
    theirs = pt_model.state_dict()
    for key, value in back.state_dict().items():
        assert torch.equal(value, theirs[key]), key
    written = load_file(str(tmp_path / "ours" / "model.safetensors"))
    again = dj.from_pretrained(tmp_path / "ours")
    assert not again.load_report.missing and not again.load_report.unused
    for key, value in dj.from_pretrained(folder).state_dict().items():
        assert np.array_equal(value, written[key]), key


@pytest.mark.parametrize("arch, config", [("GPT2LMHeadModel", TINY_GPT2), ("RobertaForMaskedLM", TINY_ROBERTA)])
def test_remat_gives_the_same_gradients_with_dropout(checkpoint, arch, config):
    """`remat=True` (what long-sequence training uses) recomputes each layer: same values, same gradients."""
    import jax
    import jax.numpy as jnp

    folder, _ = checkpoint(arch, **config)
    model = dj.from_pretrained(folder)
    ids, mask = _gpt2_batch(config["vocab_size"], 3, 11, left=False)
    grads = []
    for remat in (False, True):
        module = model.architecture.build(model.config, remat=remat)

        def loss(params):
            out = module.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask), deterministic=False,
                               rngs={"dropout": jax.random.key(0)})
            return jnp.sum(out.logits ** 2)

        grads.append(jax.grad(loss)(model.params))
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)  # measured 1.2e-6
