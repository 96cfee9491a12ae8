"""DistilBERT (Sanh et al. 2019): embeddings without token types, 6 post-LayerNorm blocks, heads.

Parameter paths follow the former transformers Flax classes exactly
(`distilbert/transformer/layer/0/attention/q_lin/kernel`) so the converter is a renaming table.
Position embeddings are always a parameter: with `sinusoidal_pos_embds` it is initialised to the
sinusoid table and kept out of the gradient, which is what PyTorch does and what its files hold.
"""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp

from distilbert_jax import precision, sharding
from distilbert_jax.config import DistilBertConfig
from distilbert_jax.models import layers
from distilbert_jax.models.attention import DotProductAttention
from distilbert_jax.models.outputs import ModelOutput


class _Module(layers.FamilyModule):
    config: DistilBertConfig


class Embeddings(_Module):
    @nn.compact
    def __call__(self, input_ids, deterministic: bool = True):
        cfg = self.config
        words = layers.embed(
            cfg.vocab_size, cfg.dim, std=cfg.initializer_range, dtype=self.dtype, param_dtype=self.param_dtype,
            name="word_embeddings", axes=("vocab", "embed"), pad_id=cfg.pad_token_id,
        )(input_ids)
        if cfg.sinusoidal_pos_embds:
            sinusoid = sharding.partitioned(
                lambda *_: layers.sinusoidal_table(cfg.max_position_embeddings, cfg.dim), ("positions", "embed"))
            table = sharding.unbox(self.param("position_embeddings", lambda key: {"embedding": sinusoid(key)}))[
                "embedding"]
            positions = jax.lax.stop_gradient(table[: input_ids.shape[1]]).astype(self.dtype)[None]
        else:
            positions = layers.embed(
                cfg.max_position_embeddings, cfg.dim, std=cfg.initializer_range, dtype=self.dtype,
                param_dtype=self.param_dtype, name="position_embeddings", axes=("positions", "embed"),
            )(jnp.arange(input_ids.shape[1])[None])
        x = self._norm("LayerNorm")(words + positions)
        return nn.Dropout(cfg.dropout)(x, deterministic=deterministic)


class MultiHeadSelfAttention(_Module):
    @nn.compact
    def __call__(self, x, attention_mask, head_mask=None, deterministic: bool = True, output_attentions: bool = False):
        cfg = self.config
        q, k, v = (layers.split_heads(self._dense(cfg.dim, n, ("embed", "heads"))(x), cfg.n_heads)
                   for n in ("q_lin", "k_lin", "v_lin"))
        attention = DotProductAttention(cfg.attention_dropout, dtype=self.dtype, implementation=self.attention)
        context, probs = attention(
            q, k, v, attention_mask, head_mask, deterministic, output_attentions
        )
        return self._dense(cfg.dim, "out_lin", ("heads", "embed"))(layers.merge_heads(context)), probs


class FFN(_Module):
    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        cfg = self.config
        h = layers.activation(cfg.activation)(self._dense(cfg.hidden_dim, "lin1", ("embed", "mlp"))(x))
        h = self._dense(cfg.dim, "lin2", ("mlp", "embed"))(h)
        return nn.Dropout(cfg.dropout)(h, deterministic=deterministic)


class TransformerBlock(_Module):
    @nn.compact
    def __call__(self, x, attention_mask, head_mask=None, deterministic: bool = True, output_attentions: bool = False):
        attn, probs = MultiHeadSelfAttention(self.config, **self._shared(), name="attention")(
            x, attention_mask, head_mask, deterministic, output_attentions
        )
        x = self._norm("sa_layer_norm")(x + attn)
        x = self._norm("output_layer_norm")(x + FFN(self.config, **self._shared(), name="ffn")(x, deterministic))
        return x, probs


class _LayerStack(_Module):
    """`transformer/layer/{i}`: the extra `layer` level is in every existing checkpoint."""

    remat: bool = False

    @nn.compact
    def __call__(self, x, attention_mask, head_mask, deterministic, output_attentions, output_hidden_states):
        block_cls = nn.remat(TransformerBlock, static_argnums=(4, 5)) if self.remat else TransformerBlock
        hidden_states, attentions = [], []
        x = sharding.constrain(x)  # activations stay split over the batch: FSDP gathers weights, not them
        for i in range(self.config.n_layers):
            if output_hidden_states:
                hidden_states.append(x)
            x, probs = block_cls(self.config, **self._shared(), name=str(i))(
                x, attention_mask, layers.layer_head_mask(head_mask, i), deterministic, output_attentions
            )
            x = sharding.constrain(x)
            if output_attentions:
                attentions.append(probs)
        if output_hidden_states:
            hidden_states.append(x)
        return x, tuple(hidden_states) or None, tuple(attentions) or None


class Transformer(_Module):
    remat: bool = False

    @nn.compact
    def __call__(self, *args):
        return _LayerStack(self.config, **self._shared(), remat=self.remat, name="layer")(*args)


class DistilBertModule(_Module):
    """The bare encoder: `last_hidden_state` [B, L, dim]."""

    remat: bool = False

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False) -> ModelOutput:
        del token_type_ids  # DistilBERT has no segment embeddings
        layers.check_input(input_ids, self.config.max_positions)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        x = Embeddings(self.config, **self._shared(), name="embeddings")(input_ids, deterministic)
        x, hidden, attn = Transformer(self.config, **self._shared(), remat=self.remat, name="transformer")(
            x, attention_mask, head_mask, deterministic, output_attentions, output_hidden_states
        )
        return ModelOutput(last_hidden_state=x, hidden_states=hidden, attentions=attn)


class _WithEncoder(_Module):
    remat: bool = False

    def encode(self, input_ids, attention_mask, head_mask, deterministic, output_attentions, output_hidden_states):
        return DistilBertModule(self.config, **self._shared(), remat=self.remat, name="distilbert")(
            input_ids, attention_mask, None, head_mask, deterministic, output_attentions, output_hidden_states
        )


class DistilBertForMaskedLMModule(_WithEncoder):
    """MLM head: vocab_transform -> activation -> vocab_layer_norm -> projector tied to the word embeddings."""

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False,
                 features_only: bool = False) -> ModelOutput:
        """`features_only`: stop before the [.., V] projection (losses apply it in chunks; see losses.py)."""
        out = self.encode(input_ids, attention_mask, head_mask, deterministic, output_attentions, output_hidden_states)
        h = self.mlm_features(out.last_hidden_state)
        if features_only:
            return out.replace(mlm_features=h)
        return out.replace(logits=self.project(h))

    @nn.nowrap
    def mlm_features(self, hidden):
        h = self._dense(self.config.dim, "vocab_transform", ("embed", "hidden"))(hidden)
        h = layers.activation(self.config.activation)(h)
        return self._norm("vocab_layer_norm")(h)

    @nn.nowrap
    def project(self, h):
        """Vocabulary logits, float32. Exposed so losses can apply it in chunks instead of all at once."""
        cfg = self.config
        projector = layers.VocabProjector(cfg.vocab_size, cfg.initializer_range, self.param_dtype,
                                          with_kernel=not cfg.tie_word_embeddings, name="vocab_projector")
        kernel, bias = projector(h.shape[-1])
        table = kernel.T if kernel is not None else sharding.unbox(
            self.variables["params"]["distilbert"]["embeddings"]["word_embeddings"]["embedding"])
        return precision.vocab_logits(h, table, bias, cfg.vocab_size)[..., : cfg.vocab_size]


class DistilBertForSequenceClassificationModule(_WithEncoder):
    """First-token pooling -> pre_classifier -> ReLU -> dropout -> classifier (num_labels; 1 for regression)."""

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False) -> ModelOutput:
        out = self.encode(input_ids, attention_mask, head_mask, deterministic, output_attentions, output_hidden_states)
        return out.replace(logits=self.classify(out.last_hidden_state[:, 0], self.config.num_labels, deterministic))

    @nn.nowrap
    def classify(self, pooled, num_outputs: int, deterministic: bool):
        pooled = jax.nn.relu(self._dense(self.config.dim, "pre_classifier", ("embed", "hidden"))(pooled))
        pooled = nn.Dropout(self.config.seq_classif_dropout)(pooled, deterministic=deterministic)
        return self._dense(num_outputs, "classifier", ("hidden", "classes"))(pooled)


class DistilBertForMultipleChoiceModule(DistilBertForSequenceClassificationModule):
    """Inputs [B, choices, L]; every choice is scored by the classification head with one output."""

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False) -> ModelOutput:
        batch, choices = input_ids.shape[:2]
        flat = lambda a: None if a is None else a.reshape(batch * choices, *a.shape[2:])
        out = self.encode(flat(input_ids), flat(attention_mask), head_mask, deterministic, output_attentions,
                          output_hidden_states)
        logits = self.classify(out.last_hidden_state[:, 0], 1, deterministic)
        return out.replace(logits=logits.reshape(batch, choices))


class DistilBertForTokenClassificationModule(_WithEncoder):
    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False) -> ModelOutput:
        out = self.encode(input_ids, attention_mask, head_mask, deterministic, output_attentions, output_hidden_states)
        h = nn.Dropout(self.config.dropout)(out.last_hidden_state, deterministic=deterministic)
        return out.replace(logits=self._dense(self.config.num_labels, "classifier", ("embed", "classes"))(h))


class DistilBertForQuestionAnsweringModule(_WithEncoder):
    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False) -> ModelOutput:
        out = self.encode(input_ids, attention_mask, head_mask, deterministic, output_attentions, output_hidden_states)
        h = nn.Dropout(self.config.qa_dropout)(out.last_hidden_state, deterministic=deterministic)
        logits = self._dense(2, "qa_outputs", ("embed", "classes"))(h)
        return out.replace(logits=logits, start_logits=logits[..., 0], end_logits=logits[..., 1])
