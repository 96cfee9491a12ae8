"""Static shapes for inference: a stream of texts of every length compiles a handful of programs."""

from __future__ import annotations

import numpy as np
import pytest

import distilbert_jax as dj
from distilbert_jax.inference.batching import DEFAULT_BUCKETS, bucket_length, buckets_up_to, padded_batches
from distilbert_jax.inference.embeddings import SentenceEmbedder

TINY_REAL_VOCAB = dict(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=128)


def test_padded_batches_cover_every_sequence_once_in_few_shapes():
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(1, 50, n)) for n in rng.integers(1, 130, 200)]
    shapes, seen = set(), []
    for batch in padded_batches(seqs, batch_size=16, buckets=buckets_up_to(130), pad_id=0):
        shapes.add(batch.input_ids.shape)
        for row, i in enumerate(batch.index):
            n = len(seqs[i])
            assert batch.input_ids[row, :n].tolist() == seqs[i] and batch.attention_mask[row].sum() == n
        assert not batch.attention_mask[len(batch.index):].any()  # padding rows are all padding
        seen += batch.index
    assert sorted(seen) == list(range(200))
    assert len(shapes) <= len(buckets_up_to(130)) + 1


def test_bucket_rules():
    assert bucket_length(1, DEFAULT_BUCKETS) == 16 and bucket_length(17, DEFAULT_BUCKETS) == 32
    assert buckets_up_to(100) == (16, 32, 64, 100)
    with pytest.raises(dj.UserError, match="longer than the largest bucket"):
        bucket_length(513, DEFAULT_BUCKETS)


def test_no_recompiles_after_warm_up(checkpoint):
    folder, _ = checkpoint("DistilBertForMaskedLM", seed=3, tokenizer=True, **TINY_REAL_VOCAB)
    embedder = SentenceEmbedder(dj.from_pretrained(folder, task="base"), batch_size=8)
    rng = np.random.default_rng(1)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    texts = [" ".join(rng.choice(words, n)) for n in rng.integers(1, 100, 64)]
    embedder(texts)
    warm = embedder._embed._cache_size()
    assert warm <= 2 * len(buckets_up_to(128))  # (bucket, rows) pairs actually used
    for seed in range(2, 5):  # new texts, same length range: nothing new to compile
        rng = np.random.default_rng(seed)
        embedder([" ".join(rng.choice(words, n)) for n in rng.integers(1, 100, 64)])
    assert embedder._embed._cache_size() == warm
