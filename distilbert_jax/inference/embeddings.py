"""Sentence embeddings: mean pooling over the attention mask (sentence-transformers' default) or
the first ([CLS]) token, optionally L2-normalised, so cosine similarity is a dot product."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax.errors import UserError
from distilbert_jax.inference.batching import buckets_up_to, padded_batches

POOLINGS = ("mean", "cls")


def pool(hidden: jax.Array, attention_mask: jax.Array, pooling: str) -> jax.Array:
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        weights = attention_mask.astype(hidden.dtype)[..., None]
        return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)
    raise UserError(f"pooling {pooling!r} is not supported; use one of {', '.join(POOLINGS)}")


def _embed(module, pooling: str, normalize: bool, params, ids, mask):
    """Only the encoder's last layer is used: XLA drops a head's projection from the program."""
    out = module.apply({"params": params}, ids, mask)
    vec = pool(out.last_hidden_state.astype(jnp.float32), mask, pooling)
    if normalize:
        vec = vec / jnp.maximum(jnp.linalg.norm(vec, axis=-1, keepdims=True), 1e-12)
    return vec


class SentenceEmbedder:
    def __init__(self, model, *, pooling: str = "mean", normalize: bool = True, batch_size: int = 32,
                 max_length: int | None = None, truncate: bool = False, buckets: Sequence[int] | None = None):
        if pooling not in POOLINGS:
            raise UserError(f"pooling {pooling!r} is not supported; use one of {', '.join(POOLINGS)}")
        if model.tokenizer is None:
            raise UserError("embeddings need tokenizer files (tokenizer.json or vocab.txt) beside the model")
        self.model = model
        self.pooling = pooling
        self.normalize = normalize
        self.batch_size = batch_size
        self.max_length = min(max_length or model.config.max_positions, model.config.max_positions)
        self.truncate = truncate
        self.buckets = tuple(buckets or buckets_up_to(self.max_length))
        # Over the module, not `self` or the model: a dropped embedder frees its model.
        self._embed = jax.jit(functools.partial(_embed, model.module, pooling, normalize))

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """[len(texts), hidden] float32 (a single text gives [hidden])."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if not texts:
            raise UserError("no text given: pass at least one text to embed")
        encoded = []
        for text in texts:
            ids = self.model.tokenizer.encode(text)
            if len(ids) > self.max_length:
                if not self.truncate:
                    raise UserError(f"text of {len(ids)} tokens is longer than the maximum {self.max_length}; "
                                    "shorten it or pass truncate=True (--truncate)")
                ids = ids[: self.max_length - 1] + ids[-1:]  # keep the final [SEP]
            encoded.append(ids)
        out = np.zeros((len(texts), self.model.config.hidden_size), np.float32)
        for batch in padded_batches(encoded, batch_size=self.batch_size, buckets=self.buckets,
                                    pad_id=self.model.tokenizer.pad_token_id):
            vecs = np.asarray(self._embed(self.model.params, batch.input_ids, batch.attention_mask))
            out[batch.index] = vecs[: len(batch.index)]
        return out[0] if single else out
