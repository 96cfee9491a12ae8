"""Dynamic rare-token MLM masking: exact counts, eligibility, the 80/10/10 split, sampling in
proportion to the token weights (without replacement), determinism under jit."""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest

from distilbert_jax.data.masking import mask_tokens, token_weights
from distilbert_jax.errors import UserError

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = (PAD, CLS, SEP, MASK)
VOCAB = 60


def batch(seed=0, rows=4, length=24):
    """[CLS] tokens [SEP] rows of ragged length (the last row all padding), ids >= 4."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((rows, length), np.int32)
    mask = np.zeros((rows, length), np.int32)
    for r, n in enumerate([length, length - 5, 7, 0][:rows]):
        if n:
            ids[r, :n] = [CLS, *rng.integers(4, VOCAB, n - 2), SEP]
            mask[r, :n] = 1
    return ids, mask


def weights(smoothing=0.7, seed=0):
    counts = np.random.default_rng(seed).integers(0, 5000, VOCAB)
    return token_weights(counts, SPECIALS, smoothing)


# One compiled program per input shape, shared by the tests (eager dispatch costs more here).
masking = jax.jit(functools.partial(mask_tokens, mask_id=MASK), static_argnames="mlm_probability")


@functools.partial(jax.jit, static_argnames="mlm_probability")
def _many(keys, ids, mask, w, mlm_probability=0.15, **kwargs):
    return jax.vmap(lambda k: mask_tokens(k, ids, mask, w, mask_id=MASK, mlm_probability=mlm_probability,
                                          **kwargs))(keys)


def draws(ids, mask, w, n, seed=0, **kwargs):
    """n independent maskings of the same batch: ([n, B, L], [n, B, L]) numpy."""
    out = _many(jax.random.split(jax.random.key(seed), n), ids, mask, w, **kwargs)
    return tuple(np.asarray(o) for o in out)


def test_token_weights():
    counts = np.array([7, 0, 1, 1000, 10, 3])
    w = token_weights(counts, [0, 5])
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, [0, 1, 1, 1000 ** -0.7, 10 ** -0.7, 0], rtol=1e-6)
    np.testing.assert_array_equal(token_weights(counts, [0, 5], smoothing=0.0), [0, 1, 1, 1, 1, 0])
    with pytest.raises(UserError, match="outside the vocabulary"):
        token_weights(counts, [6])


def test_count_labels_and_eligibility():
    ids, mask = batch()
    masked, labels = draws(ids, mask, weights(), 200)
    chosen = labels != -100
    n = math.ceil(0.15 * mask.sum())
    assert n == -(-3 * int(mask.sum()) // 20)
    assert np.all(chosen.sum(axis=(1, 2)) == n)
    assert not chosen[:, mask == 0].any()  # never padding
    assert not np.isin(np.broadcast_to(ids, chosen.shape)[chosen], SPECIALS).any()  # never [CLS]/[SEP]
    np.testing.assert_array_equal(labels[chosen], np.broadcast_to(ids, labels.shape)[chosen])
    np.testing.assert_array_equal(masked[~chosen], np.broadcast_to(ids, masked.shape)[~chosen])
    assert masked.dtype == labels.dtype == ids.dtype


@pytest.mark.parametrize("real, expected", [(100, 15), (20, 3), (7, 2), (1, 1), (0, 0)])
def test_count_is_exact_ceiling(real, expected):
    ids = np.zeros((1, 128), np.int32)
    ids[0, :real] = 10
    mask = (ids > 0).astype(np.int32)
    _, labels = masking(jax.random.key(1), ids, mask, np.ones(VOCAB, np.float32))
    assert int((np.asarray(labels) != -100).sum()) == expected


def test_fewer_eligible_than_needed_chooses_them_all():
    ids = np.array([[CLS, 10, SEP, CLS, SEP, CLS, SEP, CLS, SEP, CLS, SEP, 11, SEP]], np.int32)
    mask = np.ones_like(ids)
    _, labels = masking(jax.random.key(0), ids, mask, weights(), mlm_probability=0.5)
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(labels) != -100), [1, 11])


def test_80_10_10_split_and_replacements():
    ids, mask = batch(seed=1)
    replacement = np.arange(40, 60)
    keep = np.where(np.isin(ids, replacement), 4, ids)  # originals never among the replacements
    masked, labels = draws(keep, mask, weights(), 1000, replacement_ids=replacement)
    chosen = labels != -100
    new = masked[chosen]
    total = new.size
    shares = [(new == MASK).mean(), np.isin(new, replacement).mean(), (new == labels[chosen]).mean()]
    for share, p in zip(shares, [0.8, 0.1, 0.1]):
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / total), (shares, total)
    assert sum(shares) == pytest.approx(1.0)

    # Without replacement_ids the random token is uniform over the whole vocabulary, as the reference.
    masked, labels = draws(keep, mask, weights(), 1000, seed=1, mask_prob=0.0, random_prob=1.0)
    new = masked[labels != -100]
    assert new.min() >= 0 and new.max() < VOCAB
    counts = np.bincount(new, minlength=VOCAB)
    expected = new.size / VOCAB
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected)), counts


def single_draw_row(rare_count=1, frequent_count=1000, frequent=200):
    """One rare token among many frequent ones and a proportion that masks exactly one position."""
    counts = np.ones(VOCAB, np.int64)
    counts[10], counts[11] = rare_count, frequent_count
    ids = np.array([[CLS, 10] + [11] * frequent + [SEP]], np.int32)
    return counts, ids, np.ones_like(ids), 1 / ids.size


@pytest.mark.parametrize("smoothing", [0.7, 0.0])
def test_single_draw_follows_the_weights(smoothing):
    counts, ids, mask, p = single_draw_row()
    w = token_weights(counts, SPECIALS, smoothing)
    _, labels = draws(ids, mask, w, 4000, seed=2, mlm_probability=p)
    assert np.all((labels != -100).sum(axis=(1, 2)) == 1)
    rare_share = (labels[:, 0, 1] == 10).mean()
    ratio = 1000.0 ** smoothing  # w_rare / w_frequent: about 126 at 0.7, 1 when uniform
    expected = ratio / (ratio + 200)
    se = math.sqrt(expected * (1 - expected) / 4000)
    assert abs(rare_share - expected) < 4 * se, (rare_share, expected)


def test_draws_without_replacement_in_proportion():
    """Two of three tokens: P({a, b}) is that of sequential draws without replacement."""
    counts = np.ones(VOCAB, np.int64)
    counts[[10, 11, 12]] = [1, 10, 100]
    w = token_weights(counts, SPECIALS, 0.7)
    ids = np.array([[CLS, 10, 11, 12, SEP]], np.int32)
    _, labels = draws(ids, np.ones_like(ids), w, 6000, seed=3, mlm_probability=0.4)  # ceil(0.4 * 5) = 2
    chosen = labels[:, 0, 1:4] != -100
    assert np.all(chosen.sum(1) == 2)
    a = w[[10, 11, 12]].astype(np.float64)
    total = a.sum()
    for left_out in range(3):
        i, j = [k for k in range(3) if k != left_out]
        p = a[i] / total * a[j] / (total - a[i]) + a[j] / total * a[i] / (total - a[j])
        share = (~chosen[:, left_out]).mean()
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / 6000), (left_out, share, p)


def test_jit_determinism_and_all_pad_rows():
    ids, mask = batch(rows=4)
    assert mask[3].sum() == 0
    fn = masking
    w = weights()
    first = fn(jax.random.key(7), ids, mask, w)
    again = fn(jax.random.key(7), ids, mask, w)
    other = fn(jax.random.fold_in(jax.random.key(7), 1), ids, mask, w)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(first[1]), np.asarray(other[1]))
    eager = mask_tokens(jax.random.key(7), ids, mask, w, mask_id=MASK)
    np.testing.assert_array_equal(np.asarray(eager[1]), np.asarray(first[1]))
    assert np.all(np.asarray(first[1])[3] == -100) and np.all(np.asarray(first[0])[3] == PAD)

    nothing = fn(jax.random.key(0), np.zeros_like(ids), np.zeros_like(mask), w)
    assert np.all(np.asarray(nothing[1]) == -100)
