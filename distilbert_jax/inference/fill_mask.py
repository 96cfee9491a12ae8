"""Fill-mask with the output format of transformers' `pipeline("fill-mask")`.

For each text: a list of `{"score", "token", "token_str", "sequence"}` (top_k of them) when it
has one mask, a list of such lists when it has several. As in the pipeline, a one-mask
`sequence` is decoded without special tokens and a several-mask one keeps them (the other
masks stay visible).

Only what is returned is computed: the model stops at its MLM features (`features_only=True`), the
masked positions are gathered, and only they meet the vocabulary projection, softmax and top-k, so
a batch costs [rows, masks, vocab] logits, never [rows, length, vocab] (tests/test_api.py reads
the compiled program to prove it). The jitted functions close over the module, never over `self`
or the model, so a dropped FillMask frees its model.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax import precision
from distilbert_jax.errors import UserError
from distilbert_jax.inference.batching import buckets_up_to, padded_batches
from distilbert_jax.models.projection import projection_weights


def masked_probs(module, config, params, ids, mask, positions):
    """Vocabulary probabilities [rows, masks, vocab] at `positions` [rows, masks] only."""
    features = module.apply({"params": params}, ids, mask, features_only=True).mlm_features
    picked = jnp.take_along_axis(features, positions[..., None], axis=1)
    table, bias = projection_weights(params, config)
    logits = precision.vocab_logits(picked, table, bias, config.vocab_size)[..., : config.vocab_size]
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def _top_k(module, config, params, ids, mask, positions, *, k: int):
    return jax.lax.top_k(masked_probs(module, config, params, ids, mask, positions), k)


def _target_probs(module, config, params, ids, mask, positions, targets):
    return masked_probs(module, config, params, ids, mask, positions)[..., targets]


def mask_positions(input_ids: np.ndarray, mask_id: int) -> np.ndarray:
    """[rows, M] positions of each row's masks in order, M the most any row has rounded up to a power
    of two (few compiled shapes); unused slots point at position 0 and are never read."""
    counts = (input_ids == mask_id).sum(1)
    width = 1 << max(int(counts.max()) - 1, 0).bit_length()
    out = np.zeros((input_ids.shape[0], width), np.int32)
    for row, ids in enumerate(input_ids):
        found = np.flatnonzero(ids == mask_id)
        out[row, : len(found)] = found
    return out


class FillMask:
    def __init__(self, model, *, batch_size: int = 8, buckets: Sequence[int] | None = None):
        if model.architecture.task != "masked-lm":
            raise UserError(f"fill-mask needs a masked-LM model, got {model.architecture.name}; "
                            "load it with task='masked-lm'")
        if model.tokenizer is None:
            raise UserError("fill-mask needs tokenizer files (tokenizer.json or vocab.txt) beside the model")
        self.model = model
        self.tokenizer = model.tokenizer
        self.batch_size = batch_size
        self.buckets = tuple(buckets or buckets_up_to(model.config.max_positions))
        self._top_k = jax.jit(functools.partial(_top_k, model.module, model.config), static_argnames=("k",))
        self._target_probs = jax.jit(functools.partial(_target_probs, model.module, model.config))

    def __call__(self, texts: str | Sequence[str], top_k: int = 5, targets: Sequence[str] | None = None) -> Any:
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if not texts:
            raise UserError("no text given: pass at least one text containing " + self.tokenizer.mask_token)
        if top_k < 1:
            raise UserError(f"top_k must be at least 1, got {top_k}")
        mask_id = self.tokenizer.mask_token_id
        encoded = [self.tokenizer.encode(t) for t in texts]
        limit = self.model.config.max_positions
        for text, ids in zip(texts, encoded):
            if len(ids) > limit:
                raise UserError(f"text of {len(ids)} tokens is longer than the model's maximum of {limit}; "
                                f"shorten {text[:40]!r}...")
            if mask_id not in ids:
                raise UserError(f"no {self.tokenizer.mask_token} in {text[:60]!r}: fill-mask needs a mask to fill")
        target_ids = self._target_ids(targets)
        k = min(top_k, self.model.config.vocab_size if target_ids is None else len(target_ids))
        results: list[Any] = [None] * len(texts)
        for batch in padded_batches(encoded, batch_size=self.batch_size, buckets=self.buckets,
                                    pad_id=self.tokenizer.pad_token_id):
            positions = mask_positions(batch.input_ids, mask_id)
            if target_ids is None:
                values, indices = jax.device_get(self._top_k(self.model.params, batch.input_ids,
                                                             batch.attention_mask, positions, k=k))
            else:
                probs = np.asarray(self._target_probs(self.model.params, batch.input_ids, batch.attention_mask,
                                                      positions, jnp.asarray(target_ids)))
                order = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
                values = np.take_along_axis(probs, order, -1)
                indices = np.asarray(target_ids)[order]
            for row, i in enumerate(batch.index):
                results[i] = self._format(encoded[i], values[row], indices[row])
        return results[0] if single else results

    def _target_ids(self, targets: Sequence[str] | None) -> list[int] | None:
        if targets is None:
            return None
        ids = []
        for word in targets:
            pieces = self.tokenizer.encode(word, add_special_tokens=False)
            if not pieces:
                raise UserError(f"target {word!r} is empty after tokenization")
            ids.append(pieces[0])  # as the pipeline does: the first word piece
        return ids

    def _format(self, ids: list[int], values: np.ndarray, indices: np.ndarray) -> Any:
        """`values`/`indices` [masks, k]: row j for the text's j-th mask."""
        mask_id = self.tokenizer.mask_token_id
        positions = [p for p, t in enumerate(ids) if t == mask_id]
        single_mask = len(positions) == 1
        per_mask = []
        for j, p in enumerate(positions):
            row = []
            for score, token in zip(values[j].tolist(), indices[j].tolist()):
                filled = list(ids)
                filled[p] = token
                row.append({
                    "score": float(score),
                    "token": int(token),
                    "token_str": self.tokenizer.decode([token]),
                    "sequence": self.tokenizer.decode(filled, skip_special_tokens=single_mask),
                })
            per_mask.append(row)
        return per_mask[0] if single_mask else per_mask
