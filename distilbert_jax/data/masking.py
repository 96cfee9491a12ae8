"""Dynamic MLM masking that favours rare tokens, as DistilBERT's reference distiller does it.

Each batch is masked afresh inside the jitted train step (RECIPE.md, "Masking"):

- n = ceil(mlm_probability * real tokens in the whole batch), [CLS] and [SEP] counted;
- n positions are drawn over the whole batch without replacement, with probability proportional
  to w[token] = max(count, 1) ** -smoothing (specials and padding 0), so rare tokens are masked
  more often than under uniform masking;
- each chosen position becomes [MASK] (mask_prob), a random token (random_prob) or stays;
- labels are the original ids there and -100 elsewhere.

Shapes are static: the draw is the Gumbel-top-k trick (log w + Gumbel noise, keep the n
largest), which is exactly sequential sampling without replacement proportional to w, with n a
traced number. The result depends only on the key, so a resumed run that folds (seed, step)
into it masks every batch as the interrupted run did.
"""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax.errors import UserError
from distilbert_jax.losses import IGNORE_INDEX



def token_weights(counts: np.ndarray, special_ids, smoothing: float = 0.7) -> np.ndarray:
    """float32 [V] sampling weights max(count, 1) ** -smoothing, 0 for the special ids.

    smoothing=0 gives uniform masking over non-special tokens; the reference uses 0.7. Unseen
    tokens count as seen once, so they are the most likely to be masked if they ever appear.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise UserError(f"token counts must be a non-empty 1-D array (one count per vocabulary id), "
                        f"got shape {counts.shape}")
    if smoothing < 0:
        raise UserError(f"mlm smoothing must be >= 0 (0 is uniform, 0.7 the reference), got {smoothing}")
    special = np.asarray(list(special_ids) if not np.isscalar(special_ids) else [special_ids], np.int64)
    bad = special[(special < 0) | (special >= counts.size)]
    if bad.size:
        raise UserError(f"special token ids {bad.tolist()} are outside the vocabulary of {counts.size}")
    weights = np.maximum(counts.astype(np.float64), 1.0) ** -float(smoothing)
    weights[special] = 0.0
    return weights.astype(np.float32)


def mask_count(n_real, mlm_probability):
    """ceil(mlm_probability * n_real) without float rounding: 15% of 100 tokens is 15, never 16.

    A static proportion is used as a fraction a/b (to 4 decimal places, more than any config
    needs) in int32 arithmetic; a traced one falls back to float32.
    """
    if isinstance(mlm_probability, jax.Array) or not isinstance(mlm_probability, (int, float, np.floating)):
        return jnp.ceil(jnp.asarray(mlm_probability, jnp.float32) * n_real).astype(jnp.int32)
    if not 0 <= mlm_probability <= 1:
        raise UserError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
    frac = Fraction(float(mlm_probability)).limit_denominator(10_000)
    a, b = frac.numerator, frac.denominator
    q, r = n_real // b, n_real % b  # r * a < b * b <= 1e8: no int32 overflow
    return q * a + (r * a + b - 1) // b


def mask_tokens(rng, input_ids, attention_mask, weights, *, mask_id: int, mlm_probability=0.15,
                mask_prob=0.8, random_prob=0.1, replacement_ids=None):
    """(masked_input_ids, labels) for one batch; jittable, all shapes static.

    input_ids, attention_mask: [B, L]. weights: float32 [V] from `token_weights` (its length is
    the vocabulary size). A chosen position gets `mask_id` with probability mask_prob, a random
    token with probability random_prob, and keeps its token otherwise. The random token is
    uniform over `replacement_ids` (e.g. the non-special ids: an improvement on the reference)
    when given, else uniform over the whole vocabulary [0, V) as the reference draws it, specials
    and the original token included. Padding (attention_mask 0) and weight-0 tokens are never
    chosen; if fewer than n positions qualify, all of them are. mlm_probability should be a
    Python number (it is then exact); the key alone decides the result.
    """
    input_ids = jnp.asarray(input_ids)
    attention_mask = jnp.asarray(attention_mask)
    weights = jnp.asarray(weights, jnp.float32)
    if input_ids.shape != attention_mask.shape or input_ids.ndim != 2:
        raise UserError(f"input_ids and attention_mask must both be [batch, length]; got "
                        f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
    k_pick, k_action, k_random = jax.random.split(rng, 3)
    real = attention_mask.astype(bool)
    n = mask_count(jnp.sum(real, dtype=jnp.int32), mlm_probability)

    # Gumbel-top-k: the n largest log w + G over eligible positions, ranked by a stable sort so
    # exactly min(n, eligible) positions are chosen even when two keys tie.
    w = weights[input_ids]
    eligible = real & (w > 0)
    gumbel = jax.random.gumbel(k_pick, input_ids.shape, jnp.float32)
    keys = jnp.where(eligible, jnp.log(jnp.where(eligible, w, 1.0)) + gumbel, -jnp.inf).reshape(-1)
    order = jnp.argsort(-keys, stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
    chosen = (rank.reshape(input_ids.shape) < n) & eligible

    u = jax.random.uniform(k_action, input_ids.shape)
    to_mask = chosen & (u < mask_prob)
    to_random = chosen & (u >= mask_prob) & (u < mask_prob + random_prob)
    if replacement_ids is None:
        random_tokens = jax.random.randint(k_random, input_ids.shape, 0, weights.shape[0], input_ids.dtype)
    else:
        candidates = jnp.asarray(replacement_ids).astype(input_ids.dtype).reshape(-1)
        if candidates.size == 0:
            raise UserError("replacement_ids is empty; give at least one token id, or None for the whole vocabulary")
        random_tokens = candidates[jax.random.randint(k_random, input_ids.shape, 0, candidates.size)]

    masked = jnp.where(to_mask, jnp.asarray(mask_id, input_ids.dtype), input_ids)
    masked = jnp.where(to_random, random_tokens, masked)
    labels = jnp.where(chosen, input_ids, jnp.asarray(IGNORE_INDEX, input_ids.dtype))
    return masked, labels
