"""Where the masked-LM vocabulary projection of each family lives in its parameter tree.

Training never materialises [batch, length, vocab] logits for teacher and student at once: the
model stops at the MLM features (`features_only=True`) and the loss multiplies them by the
projection a chunk of positions at a time. This is the one place that knows the weights' paths.
"""

from __future__ import annotations

import jax

from distilbert_jax.config import AnyConfig, DistilBertConfig, GPT2Config, RobertaConfig


def projection_weights(params: dict, config: AnyConfig) -> tuple[jax.Array, jax.Array | None]:
    """(table [vocab, dim], bias [vocab] or None) such that logits = features @ table.T + bias.

    GPT-2's `lm_head` has no bias (None)."""
    if isinstance(config, GPT2Config):
        if config.tie_word_embeddings:
            return params["transformer"]["wte"]["embedding"], None
        return params["lm_head"]["kernel"].T, None
    if isinstance(config, RobertaConfig):
        bias = params["lm_head"]["bias"]
        if config.tie_word_embeddings:
            return params["roberta"]["embeddings"]["word_embeddings"]["embedding"], bias
        return params["lm_head"]["decoder"]["kernel"].T, bias
    if isinstance(config, DistilBertConfig):
        bias = params["vocab_projector"]["bias"]
        if config.tie_word_embeddings:
            return params["distilbert"]["embeddings"]["word_embeddings"]["embedding"], bias
        return params["vocab_projector"]["kernel"].T, bias
    bias = params["cls"]["predictions"]["bias"]
    if config.tie_word_embeddings:
        return params["bert"]["embeddings"]["word_embeddings"]["embedding"], bias
    return params["cls"]["predictions"]["decoder"]["kernel"].T, bias
