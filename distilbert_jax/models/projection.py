"""Where the masked-LM vocabulary projection of each family lives in its parameter tree.

Training never materialises [batch, length, vocab] logits for teacher and student at once: the
model stops at the MLM features (`features_only=True`) and the loss multiplies them by the
projection a chunk of positions at a time. This is the one place that knows the weights' paths.
"""

from __future__ import annotations

import jax

from distilbert_jax.config import AnyConfig, DistilBertConfig


def projection_weights(params: dict, config: AnyConfig) -> tuple[jax.Array, jax.Array]:
    """(table [vocab, dim], bias [vocab]) such that logits = features @ table.T + bias."""
    if isinstance(config, DistilBertConfig):
        bias = params["vocab_projector"]["bias"]
        if config.tie_word_embeddings:
            return params["distilbert"]["embeddings"]["word_embeddings"]["embedding"], bias
        return params["vocab_projector"]["kernel"].T, bias
    bias = params["cls"]["predictions"]["bias"]
    if config.tie_word_embeddings:
        return params["bert"]["embeddings"]["word_embeddings"]["embedding"], bias
    return params["cls"]["predictions"]["decoder"]["kernel"].T, bias
