"""Generation with a key-value cache: greedy equal to transformers' `generate`, sampling filters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import distilbert_jax as dj
from conftest import BASE_GPT2, TINY_GPT2
from distilbert_jax.inference.generate import GenerationConfig, Generator, filter_logits, generate

PROMPT = 7


def _prompts(vocab_size: int, pad_id: int, left: bool = True):
    """Three prompts of 7, 5 and 3 real tokens, padded with `pad_id` on the left (or right)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(6, min(vocab_size, 1000), (3, PROMPT))
    mask = np.ones_like(ids)
    mask[1, :2] = 0
    mask[2, :4] = 0
    if not left:
        mask = np.stack([np.roll(row, -int((row == 0).sum())) for row in mask])
        ids = np.stack([np.roll(row, -int((m == 0).sum())) for row, m in zip(ids, mask[:, ::-1])])
    return np.where(mask == 1, ids, pad_id), mask


def _theirs(pt_model, ids, mask, pad_id, **kwargs):
    with torch.no_grad():
        return pt_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                                 pad_token_id=pad_id, **kwargs).numpy()


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_greedy_equals_transformers_for_20_tokens(checkpoint, size):
    config = dict(TINY_GPT2, eos_token_id=5, bos_token_id=5) if size == "tiny" else BASE_GPT2
    folder, pt_model = checkpoint("GPT2LMHeadModel", **config)
    model = dj.from_pretrained(folder)
    eos = model.config.eos_token_id
    ids, mask = _prompts(model.config.vocab_size, eos)
    ours = generate(model, ids, mask, max_new_tokens=20)
    theirs = _theirs(pt_model, ids, mask, eos, max_new_tokens=20)
    assert ours.shape == theirs.shape == (3, PROMPT + 20)
    np.testing.assert_array_equal(ours, theirs)
    assert len(set(ours[:, PROMPT:].ravel().tolist())) > 3  # not one token repeated: the cache is exercised


def test_stops_at_eos_and_pads_finished_rows_as_transformers(checkpoint):
    folder, pt_model = checkpoint("GPT2LMHeadModel", **TINY_GPT2, eos_token_id=5, bos_token_id=5)
    model = dj.from_pretrained(folder)
    ids, mask = _prompts(model.config.vocab_size, 0)
    free = generate(model, ids, mask, max_new_tokens=20, eos_token_id=-1)
    row = free[0, PROMPT:]
    step = int(np.flatnonzero(row != row[0])[0])  # row 0 first emits this token after some steps
    eos = int(row[step])
    ours = generate(model, ids, mask, max_new_tokens=20, eos_token_id=eos, pad_token_id=0)
    theirs = _theirs(pt_model, ids, mask, 0, max_new_tokens=20, eos_token_id=eos)
    np.testing.assert_array_equal(ours, theirs)
    assert step > 0 and ours[0, PROMPT + step] == eos and (ours[0, PROMPT + step + 1:] == 0).all()


def test_right_padding_gives_the_same_tokens(checkpoint):
    folder, _ = checkpoint("GPT2LMHeadModel", **TINY_GPT2, eos_token_id=5, bos_token_id=5)
    model = dj.from_pretrained(folder)
    left_ids, left_mask = _prompts(model.config.vocab_size, 5, left=True)
    right_ids, right_mask = _prompts(model.config.vocab_size, 5, left=False)
    assert [list(r[m == 1]) for r, m in zip(left_ids, left_mask)] == [list(r[m == 1]) for r, m in
                                                                      zip(right_ids, right_mask)]
    left = generate(model, left_ids, left_mask, max_new_tokens=12)[:, PROMPT:]
    right = generate(model, right_ids, right_mask, max_new_tokens=12)[:, PROMPT:]
    np.testing.assert_array_equal(left, right)


def test_sampling_is_seeded_and_top_k_1_is_greedy(checkpoint):
    folder, _ = checkpoint("GPT2LMHeadModel", **TINY_GPT2, eos_token_id=5, bos_token_id=5)
    generator = Generator(dj.from_pretrained(folder), GenerationConfig(max_new_tokens=10, eos_token_id=-1))
    ids, mask = _prompts(99, 5)
    greedy = generator(ids, mask)
    np.testing.assert_array_equal(generator(ids, mask, do_sample=True, top_k=1, seed=3), greedy)
    a = generator(ids, mask, do_sample=True, temperature=2.0, top_k=0, seed=1)
    b = generator(ids, mask, do_sample=True, temperature=2.0, top_k=0, seed=1)
    c = generator(ids, mask, do_sample=True, temperature=2.0, top_k=0, seed=2)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any() and (a != greedy).any()


def test_filters_keep_what_they_should():
    logits = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda **kw: np.isfinite(np.asarray(filter_logits(logits, GenerationConfig(**kw))))[0].tolist()
    assert kept(top_k=2) == [True, True, False, False, False]
    assert kept(top_k=0, top_p=0.7) == [True, True, False, False, False]  # 0.5 + 0.2 reaches 0.7
    assert kept(top_k=0, top_p=0.71) == [True, True, True, False, False]
    assert kept(top_k=0, top_p=0.3) == [True, False, False, False, False]  # always the most likely one
    assert kept(top_k=0, top_p=1.0) == [True] * 5
    # sampled tokens stay inside the filter: 2000 draws from top-k 2 never leave {0, 1}
    draws = jax.random.categorical(jax.random.key(0), filter_logits(jnp.repeat(logits, 2000, 0),
                                                                     GenerationConfig(top_k=2)))
    assert set(np.asarray(draws).tolist()) == {0, 1}


def test_generation_errors(checkpoint):
    folder, _ = checkpoint("GPT2LMHeadModel", **TINY_GPT2)
    model = dj.from_pretrained(folder)
    with pytest.raises(dj.UserError, match="exceeds the model's 64 positions"):
        generate(model, np.ones((1, 60), np.int64), max_new_tokens=5)
    with pytest.raises(dj.UserError, match="no real token"):
        generate(model, np.ones((2, 4), np.int64), np.array([[1, 1, 1, 1], [0, 0, 0, 0]]))
    with pytest.raises(dj.UserError, match="top_p"):
        generate(model, np.ones((1, 4), np.int64), do_sample=True, top_p=0.0)
    base, _ = checkpoint("GPT2Model", **TINY_GPT2)
    with pytest.raises(dj.UserError, match="causal-lm"):
        Generator(dj.from_pretrained(base))
