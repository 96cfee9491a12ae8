"""BERT, the distillation teacher: token-type embeddings, 12 post-LayerNorm layers, pooler, heads.

Paths follow the former transformers Flax classes (`bert/encoder/layer/0/attention/self/query`,
`cls/predictions/transform/dense`), which mirror the PyTorch names one-to-one.
"""

from __future__ import annotations


import flax.linen as nn
import jax.numpy as jnp

from distilbert_jax import precision, sharding
from distilbert_jax.config import BertConfig
from distilbert_jax.models import layers
from distilbert_jax.models.attention import DotProductAttention
from distilbert_jax.models.outputs import ModelOutput


class _Module(layers.FamilyModule):
    config: BertConfig

    def _embed(self, num: int, name: str, rows: str, pad_id: int | None = None) -> nn.Embed:
        return layers.embed(num, self.config.hidden_size, std=self.config.initializer_range, dtype=self.dtype,
                            param_dtype=self.param_dtype, name=name, axes=(rows, "embed"), pad_id=pad_id)

    def _dropout(self, x, deterministic: bool):
        return nn.Dropout(self.config.hidden_dropout_prob)(x, deterministic=deterministic)


class Embeddings(_Module):
    position_pad_id = None  # the position table row initialised to zero (RoBERTa's padding position)

    def position_ids(self, input_ids):
        return jnp.arange(input_ids.shape[1])[None]

    @nn.compact
    def __call__(self, input_ids, token_type_ids, deterministic: bool = True):
        cfg = self.config
        x = self._embed(cfg.vocab_size, "word_embeddings", "vocab", cfg.pad_token_id)(input_ids)
        positions = self.position_ids(input_ids)
        x = x + self._embed(cfg.max_position_embeddings, "position_embeddings", "positions",
                            self.position_pad_id)(positions)
        x = x + self._embed(cfg.type_vocab_size, "token_type_embeddings", "types")(token_type_ids)
        return self._dropout(self._norm("LayerNorm")(x), deterministic)


class _SelfAttention(_Module):
    @nn.compact
    def __call__(self, x, attention_mask, head_mask, deterministic, output_attentions):
        cfg = self.config
        q, k, v = (layers.split_heads(self._dense(cfg.hidden_size, n, ("embed", "heads"))(x), cfg.num_attention_heads)
                   for n in ("query", "key", "value"))
        attention = DotProductAttention(cfg.attention_probs_dropout_prob, dtype=self.dtype,
                                        implementation=self.attention)
        context, probs = attention(
            q, k, v, attention_mask, head_mask, deterministic, output_attentions
        )
        return layers.merge_heads(context), probs


class _Output(_Module):
    """dense -> dropout -> LayerNorm(x + residual): both `attention/output` and `output`."""

    input_axis: str = "mlp"  # "heads" after attention

    @nn.compact
    def __call__(self, x, residual, deterministic):
        x = self._dropout(self._dense(self.config.hidden_size, "dense", (self.input_axis, "embed"))(x), deterministic)
        return self._norm("LayerNorm")(x + residual)


class _Attention(_Module):
    @nn.compact
    def __call__(self, x, attention_mask, head_mask, deterministic, output_attentions):
        context, probs = _SelfAttention(self.config, **self._shared(), name="self")(
            x, attention_mask, head_mask, deterministic, output_attentions
        )
        output = _Output(self.config, **self._shared(), input_axis="heads", name="output")
        return output(context, x, deterministic), probs


class _Intermediate(_Module):
    @nn.compact
    def __call__(self, x):
        h = self._dense(self.config.intermediate_size, "dense", ("embed", "mlp"))(x)
        return layers.activation(self.config.hidden_act)(h)


class BertLayer(_Module):
    @nn.compact
    def __call__(self, x, attention_mask, head_mask=None, deterministic: bool = True, output_attentions: bool = False):
        x, probs = _Attention(self.config, **self._shared(), name="attention")(
            x, attention_mask, head_mask, deterministic, output_attentions
        )
        h = _Intermediate(self.config, **self._shared(), name="intermediate")(x)
        return _Output(self.config, **self._shared(), name="output")(h, x, deterministic), probs


class _LayerStack(_Module):
    remat: bool = False

    @nn.compact
    def __call__(self, x, attention_mask, head_mask, deterministic, output_attentions, output_hidden_states):
        layer_cls = nn.remat(BertLayer, static_argnums=(4, 5)) if self.remat else BertLayer
        hidden_states, attentions = [], []
        x = sharding.constrain(x)  # activations stay split over the batch: FSDP gathers weights, not them
        for i in range(self.config.num_hidden_layers):
            if output_hidden_states:
                hidden_states.append(x)
            x, probs = layer_cls(self.config, **self._shared(), name=str(i))(
                x, attention_mask, layers.layer_head_mask(head_mask, i), deterministic, output_attentions
            )
            x = sharding.constrain(x)
            if output_attentions:
                attentions.append(probs)
        if output_hidden_states:
            hidden_states.append(x)
        return x, tuple(hidden_states) or None, tuple(attentions) or None


class _Encoder(_Module):
    remat: bool = False

    @nn.compact
    def __call__(self, *args):
        return _LayerStack(self.config, **self._shared(), remat=self.remat, name="layer")(*args)


class BertModule(_Module):
    """The bare encoder; with `add_pooling_layer` also `pooler_output` = tanh(dense(h[:, 0]))."""

    add_pooling_layer: bool = True
    remat: bool = False
    embeddings_cls = Embeddings  # RoBERTa swaps in its position ids

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False) -> ModelOutput:
        layers.check_input(input_ids, self.config.max_positions)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings_cls(self.config, **self._shared(), name="embeddings")(
            input_ids, token_type_ids, deterministic
        )
        x, hidden, attn = _Encoder(self.config, **self._shared(), remat=self.remat, name="encoder")(
            x, attention_mask, head_mask, deterministic, output_attentions, output_hidden_states
        )
        pooled = None
        if self.add_pooling_layer:
            pooled = jnp.tanh(_Pooler(self.config, **self._shared(), name="pooler")(x[:, 0]))
        return ModelOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden, attentions=attn)


class _Pooler(_Module):
    @nn.compact
    def __call__(self, x):
        return self._dense(self.config.hidden_size, "dense", ("embed", "hidden"))(x)


class _WithEncoder(_Module):
    remat: bool = False
    pooled: bool = False  # whether the head reads the pooler output
    base_name = "bert"  # where the encoder sits in a head model's tree (and its files' key prefix)
    encoder_cls = BertModule

    def encode(self, input_ids, attention_mask, token_type_ids, head_mask, deterministic, output_attentions,
               output_hidden_states):
        return self.encoder_cls(self.config, **self._shared(), add_pooling_layer=self.pooled, remat=self.remat,
                                name=self.base_name)(
            input_ids, attention_mask, token_type_ids, head_mask, deterministic, output_attentions,
            output_hidden_states,
        )

    def _head_dropout(self, x, deterministic):
        rate = self.config.classifier_dropout
        rate = self.config.hidden_dropout_prob if rate is None else rate
        return nn.Dropout(rate)(x, deterministic=deterministic)


class _PredictionHead(_Module):
    """`cls/predictions`: transform (dense, act, LayerNorm), then the decoder tied to the word embeddings."""

    @nn.compact
    def __call__(self, h, word_embeddings=None, features_only: bool = False):
        cfg = self.config
        h = _Transform(cfg, **self._shared(), name="transform")(h)
        bias = layers.bias(self, cfg.vocab_size, self.param_dtype)
        if features_only:
            return h
        if word_embeddings is None:
            kernel, _ = layers.VocabProjector(cfg.vocab_size, cfg.initializer_range, self.param_dtype, with_bias=False,
                                              name="decoder")(h.shape[-1])
            word_embeddings = kernel.T
        return precision.vocab_logits(h, word_embeddings, bias, cfg.vocab_size)[..., : cfg.vocab_size]


class _Transform(_Module):
    @nn.compact
    def __call__(self, h):
        h = self._dense(self.config.hidden_size, "dense", ("embed", "hidden"))(h)
        h = layers.activation(self.config.hidden_act)(h)
        return self._norm("LayerNorm")(h)


class _MLMHead(_Module):
    @nn.compact
    def __call__(self, h, word_embeddings=None, features_only: bool = False):
        return _PredictionHead(self.config, **self._shared(), name="predictions")(
            h, word_embeddings, features_only)


class BertForMaskedLMModule(_WithEncoder):
    def mlm_head(self):
        return _MLMHead(self.config, **self._shared(), name="cls")

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False,
                 features_only: bool = False) -> ModelOutput:
        """`features_only`: stop before the [.., V] projection (losses apply it in chunks; see losses.py)."""
        out = self.encode(input_ids, attention_mask, token_type_ids, head_mask, deterministic, output_attentions,
                          output_hidden_states)
        table = None
        if self.config.tie_word_embeddings:
            table = sharding.unbox(
                self.variables["params"][self.base_name]["embeddings"]["word_embeddings"]["embedding"])
        head = self.mlm_head()
        if features_only:
            return out.replace(mlm_features=head(out.last_hidden_state, table, features_only=True))
        return out.replace(logits=head(out.last_hidden_state, table))


class BertForSequenceClassificationModule(_WithEncoder):
    pooled: bool = True

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False) -> ModelOutput:
        out = self.encode(input_ids, attention_mask, token_type_ids, head_mask, deterministic, output_attentions,
                          output_hidden_states)
        h = self._head_dropout(out.pooler_output, deterministic)
        return out.replace(logits=self._dense(self.config.num_labels, "classifier", ("hidden", "classes"))(h))


class BertForMultipleChoiceModule(_WithEncoder):
    pooled: bool = True

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False) -> ModelOutput:
        batch, choices = input_ids.shape[:2]
        flat = lambda a: None if a is None else a.reshape(batch * choices, *a.shape[2:])
        out = self.encode(flat(input_ids), flat(attention_mask), flat(token_type_ids), head_mask, deterministic,
                          output_attentions, output_hidden_states)
        pooled = self._head_dropout(out.pooler_output, deterministic)
        logits = self._dense(1, "classifier", ("hidden", "classes"))(pooled)
        return out.replace(logits=logits.reshape(batch, choices))


class BertForTokenClassificationModule(_WithEncoder):
    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False) -> ModelOutput:
        out = self.encode(input_ids, attention_mask, token_type_ids, head_mask, deterministic, output_attentions,
                          output_hidden_states)
        h = self._head_dropout(out.last_hidden_state, deterministic)
        return out.replace(logits=self._dense(self.config.num_labels, "classifier", ("embed", "classes"))(h))


class BertForQuestionAnsweringModule(_WithEncoder):
    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False) -> ModelOutput:
        out = self.encode(input_ids, attention_mask, token_type_ids, head_mask, deterministic, output_attentions,
                          output_hidden_states)
        logits = self._dense(2, "qa_outputs", ("embed", "classes"))(out.last_hidden_state)
        return out.replace(logits=logits, start_logits=logits[..., 0], end_logits=logits[..., 1])
