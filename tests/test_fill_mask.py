"""Fill-mask against transformers' pipeline("fill-mask") on the same weights and vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
import transformers

import distilbert_jax as dj
from distilbert_jax.inference.fill_mask import FillMask

TINY_REAL_VOCAB = dict(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=128)
TEXTS = ["The capital of France is [MASK].", "Hello, my [MASK] is John and I like [MASK] a lot.",
         "[MASK]", "Café au lait, s'il vous [MASK]!"]


@pytest.fixture(scope="module")
def pair(checkpoint):
    folder, _ = checkpoint("DistilBertForMaskedLM", seed=7, tokenizer=True, **TINY_REAL_VOCAB)
    pipe = transformers.pipeline("fill-mask", model=folder, tokenizer=folder, framework="pt") \
        if "framework" in transformers.pipeline.__code__.co_varnames else transformers.pipeline(
            "fill-mask", model=folder, tokenizer=folder)
    return FillMask(dj.from_pretrained(folder), batch_size=4), pipe


def _assert_same(ours, theirs):
    if isinstance(theirs[0], list):  # several masks
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _assert_same(a, b)
        return
    assert [p["token"] for p in ours] == [p["token"] for p in theirs]
    assert [p["token_str"] for p in ours] == [p["token_str"] for p in theirs]
    assert [p["sequence"] for p in ours] == [p["sequence"] for p in theirs]
    np.testing.assert_allclose([p["score"] for p in ours], [p["score"] for p in theirs], atol=1e-5, rtol=0)


@pytest.mark.parametrize("top_k", [1, 5])
def test_matches_pipeline_text_by_text(pair, top_k):
    ours, pipe = pair
    for text in TEXTS:
        _assert_same(ours(text, top_k=top_k), pipe(text, top_k=top_k))


def test_batch_of_mixed_lengths_matches(pair):
    ours, pipe = pair
    texts = TEXTS + ["a " * 40 + "[MASK] end", "short [MASK]"]
    got = ours(texts, top_k=3)
    assert len(got) == len(texts)
    for text, result in zip(texts, got):
        _assert_same(result, pipe(text, top_k=3))


def test_targets(pair):
    ours, pipe = pair
    text = "The capital of France is [MASK]."
    _assert_same(ours(text, targets=["paris", "london", "rome"]), pipe(text, targets=["paris", "london", "rome"]))


def test_errors(pair):
    ours, _ = pair
    with pytest.raises(dj.UserError, match=r"no \[MASK\]"):
        ours("there is nothing to fill")
    with pytest.raises(dj.UserError, match="no text"):
        ours([])
    with pytest.raises(dj.UserError, match="longer than the model's maximum of 128"):
        ours("word " * 200 + "[MASK]")
