"""RoBERTa (Liu et al. 2019), the teacher of DistilRoBERTa: BERT's encoder with other embeddings and heads.

The layers are BERT's, parameter for parameter, so only what differs lives here: position ids
that count from `pad_token_id + 1` and leave padding at `pad_token_id` (fairseq's
`make_positions`, as transformers computes them), one token type in released files, the
`lm_head` (dense, GELU, `layer_norm`, decoder tied to the word embeddings, bias) and the
sequence-classification head on `<s>` (dense, tanh, `out_proj`) instead of BERT's pooler.
Paths mirror transformers' PyTorch names (`roberta/encoder/layer/0/...`, `lm_head/dense`).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from distilbert_jax import precision
from distilbert_jax.config import RobertaConfig
from distilbert_jax.models import bert, layers
from distilbert_jax.models.outputs import ModelOutput


class Embeddings(bert.Embeddings):
    config: RobertaConfig

    @property
    def position_pad_id(self):
        return self.config.pad_token_id

    def position_ids(self, input_ids):
        real = (input_ids != self.config.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(real, axis=1) * real + self.config.pad_token_id


class RobertaModule(bert.BertModule):
    embeddings_cls = Embeddings


class _LMHead(bert._Module):
    """`lm_head`: dense -> GELU -> layer_norm -> decoder (tied to the word embeddings) + bias."""

    @nn.compact
    def __call__(self, h, word_embeddings=None, features_only: bool = False):
        cfg = self.config
        h = self._dense(cfg.hidden_size, "dense", ("embed", "hidden"))(h)
        h = self._norm("layer_norm")(layers.activation("gelu")(h))
        bias = layers.bias(self, cfg.vocab_size, self.param_dtype)
        if features_only:
            return h
        if word_embeddings is None:
            kernel, _ = layers.VocabProjector(cfg.vocab_size, cfg.initializer_range, self.param_dtype,
                                              with_bias=False, name="decoder")(h.shape[-1])
            word_embeddings = kernel.T
        return precision.vocab_logits(h, word_embeddings, bias, cfg.vocab_size)[..., : cfg.vocab_size]


class _RobertaHeads:
    """Where every RoBERTa head model keeps its encoder."""

    base_name = "roberta"
    encoder_cls = RobertaModule


class RobertaForMaskedLMModule(_RobertaHeads, bert.BertForMaskedLMModule):
    def mlm_head(self):
        return _LMHead(self.config, **self._shared(), name="lm_head")


class _ClassificationHead(bert._Module):
    """`classifier`: the `<s>` state -> dropout -> dense -> tanh -> dropout -> out_proj."""

    @nn.compact
    def __call__(self, h, deterministic: bool):
        cfg = self.config
        rate = cfg.hidden_dropout_prob if cfg.classifier_dropout is None else cfg.classifier_dropout
        x = nn.Dropout(rate)(h[:, 0], deterministic=deterministic)
        x = jnp.tanh(self._dense(cfg.hidden_size, "dense", ("embed", "hidden"))(x))
        x = nn.Dropout(rate)(x, deterministic=deterministic)
        return self._dense(cfg.num_labels, "out_proj", ("hidden", "classes"))(x)


class RobertaForSequenceClassificationModule(_RobertaHeads, bert._WithEncoder):
    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False) -> ModelOutput:
        out = self.encode(input_ids, attention_mask, token_type_ids, head_mask, deterministic, output_attentions,
                          output_hidden_states)
        logits = _ClassificationHead(self.config, **self._shared(), name="classifier")(
            out.last_hidden_state, deterministic)
        return out.replace(logits=logits)


class RobertaForMultipleChoiceModule(_RobertaHeads, bert.BertForMultipleChoiceModule):
    pass


class RobertaForTokenClassificationModule(_RobertaHeads, bert.BertForTokenClassificationModule):
    pass


class RobertaForQuestionAnsweringModule(_RobertaHeads, bert.BertForQuestionAnsweringModule):
    pass
