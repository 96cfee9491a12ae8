"""GPT-2 (Radford et al. 2019), the teacher of DistilGPT2: a decoder of pre-LayerNorm blocks.

Parameter paths mirror transformers' PyTorch names (`transformer/h/0/attn/c_attn`, `ln_f`,
`lm_head`). GPT-2's `Conv1D` layers store their weight [in, out], the transpose of a Linear; our
`Conv1D` keeps its kernel [out, in], as the former transformers Flax classes did, so the one
conversion rule (kernel = weight.T) holds for every family and old `flax_model.msgpack` files load.

Without a cache, attention takes the forms of models/attention.py with a causal mask (chunked
tiles, which never hold [B, H, L, L] and carry the dropout, on CPU and in training; cuDNN/XLA's
fused kernels for inference on accelerators; the materialised form for attention maps). With a
`KVCache` (generation) it is causal over *slots*: the new tokens take the next free slots and
attend to every filled slot at or before their own whose `attention_mask` is 1. Position ids are
separate (transformers' `generate` counts them from the first real token, so left padding shifts
nothing).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from distilbert_jax import precision, sharding
from distilbert_jax.config import GPT2Config
from distilbert_jax.models import layers
from distilbert_jax.models.attention import DotProductAttention
from distilbert_jax.models.outputs import ModelOutput


@flax.struct.dataclass
class KVCache:
    """Keys and values of every layer for `size` slots, which slots hold real tokens, and how many
    slots are filled. Static shapes: one compiled decoding step serves every position."""

    keys: tuple  # per layer [B, size, H, D]
    values: tuple
    mask: jax.Array  # [B, size] int32: 1 where a filled slot holds a real (not padding) token
    length: jax.Array  # int32 scalar: slots filled so far

    @classmethod
    def empty(cls, config: GPT2Config, batch: int, size: int, dtype: Any = jnp.float32) -> "KVCache":
        shape = (batch, size, config.n_head, config.n_embd // config.n_head)
        zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layer))
        return cls(zeros, zeros, jnp.zeros((batch, size), jnp.int32), jnp.zeros((), jnp.int32))


class _Module(layers.FamilyModule):
    config: GPT2Config


class Conv1D(nn.Module):
    """transformers' Conv1D (x @ W + b with W [in, out]), holding its kernel as W.T = [out, in]."""

    features: int
    std: float
    axes: tuple[str | None, str | None]  # of the kernel as stored: (out, in)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", sharding.partitioned(nn.initializers.normal(stddev=self.std), self.axes),
                            (self.features, x.shape[-1]), self.param_dtype)
        bias = self.param("bias", sharding.partitioned(nn.initializers.zeros, self.axes[:1]), (self.features,),
                          self.param_dtype)
        y = jnp.einsum("...i,oi->...o", x.astype(self.dtype), kernel.astype(self.dtype))
        return y + bias.astype(self.dtype)


class _Attention(_Module):
    layer: int = 0

    @nn.compact
    def __call__(self, x, key_mask, head_mask, deterministic, output_attentions, cache=None):
        cfg = self.config
        d = cfg.n_embd
        qkv = self._conv(3 * d, "c_attn", ("heads", "embed"))(x)
        q, k, v = (layers.split_heads(t, cfg.n_head) for t in jnp.split(qkv, 3, axis=-1))
        if cache is not None:  # write the new keys and values into their slots, attend to all slots
            keys, values, start = cache
            k = jax.lax.dynamic_update_slice_in_dim(keys, k.astype(keys.dtype), start, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(values, v.astype(values.dtype), start, axis=1)
        head_dim = d // cfg.n_head
        scale = head_dim ** -0.5 if cfg.scale_attn_weights else 1.0
        if cfg.scale_attn_by_inverse_layer_idx:
            scale /= self.layer + 1
        if scale != head_dim ** -0.5:  # attention.py scales by 1/sqrt(head_dim) itself
            q = q * jnp.asarray(scale * head_dim ** 0.5, q.dtype)
        # Without a cache, every form of models/attention.py (chunked tiles with dropout, cuDNN/XLA
        # fused); a cache holds more slots than queries, which only the materialised form takes.
        form = self.attention if cache is None else "materialised"
        attention = DotProductAttention(cfg.attn_pdrop, dtype=self.dtype, implementation=form, causal=True)
        context, probs = attention(q, k.astype(q.dtype), v.astype(q.dtype), key_mask, head_mask, deterministic,
                                   output_attentions, query_start=0 if cache is None else cache[2])
        return self._project(context, deterministic), probs, (k, v)

    def _project(self, context, deterministic):
        """c_proj of the merged heads, then the residual dropout."""
        out = self._conv(self.config.n_embd, "c_proj", ("embed", "heads"))(layers.merge_heads(context))
        return nn.Dropout(self.config.resid_pdrop)(out, deterministic=deterministic)

    def _conv(self, features, name, axes):
        return Conv1D(features, self.config.initializer_range, axes, self.dtype, self.param_dtype, name=name)


class _MLP(_Module):
    @nn.compact
    def __call__(self, x, deterministic):
        cfg = self.config
        conv = lambda n, name, axes: Conv1D(n, cfg.initializer_range, axes, self.dtype, self.param_dtype, name=name)
        h = layers.activation(cfg.activation_function)(conv(cfg.intermediate_size, "c_fc", ("mlp", "embed"))(x))
        return nn.Dropout(cfg.resid_pdrop)(conv(cfg.n_embd, "c_proj", ("embed", "mlp"))(h), deterministic=deterministic)


class Block(_Module):
    """x + attn(ln_1(x)), then + mlp(ln_2(.)): GPT-2's pre-LayerNorm block."""

    layer: int = 0

    @nn.compact
    def __call__(self, x, key_mask, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, cache=None):
        attn, probs, kv = _Attention(self.config, **self._shared(), layer=self.layer, name="attn")(
            self._norm("ln_1")(x), key_mask, head_mask, deterministic, output_attentions, cache)
        x = x + attn
        x = x + _MLP(self.config, **self._shared(), name="mlp")(self._norm("ln_2")(x), deterministic)
        return x, probs, kv


class _Blocks(_Module):
    """`h`: the blocks, named 0..n_layer-1 under it as in the PyTorch module list."""

    remat: bool = False

    @nn.compact
    def __call__(self, x, key_mask, head_mask, deterministic, output_attentions, output_hidden_states,
                 cache):
        # static: deterministic, output_attentions (argument 0 is the module itself)
        block_cls = nn.remat(Block, static_argnums=(4, 5)) if self.remat else Block
        hidden_states, attentions, keys, values = [], [], [], []
        x = sharding.constrain(x)
        for i in range(self.config.n_layer):
            if output_hidden_states:
                hidden_states.append(x)
            layer_cache = None if cache is None else (cache[0][i], cache[1][i], cache[2])
            x, probs, (k, v) = block_cls(self.config, **self._shared(), layer=i, name=str(i))(
                x, key_mask, layers.layer_head_mask(head_mask, i), deterministic, output_attentions,
                layer_cache)
            x = sharding.constrain(x)
            attentions.append(probs)
            keys.append(k)
            values.append(v)
        return x, hidden_states, attentions, keys, values


class GPT2Module(_Module):
    """`GPT2Model`: token + position embeddings, `n_layer` blocks, final `ln_f`.

    `cache` (a `KVCache`) makes it a decoding step: the inputs fill the next slots, and the output
    carries the updated cache in `past_key_values`. `position_ids` default to the slot numbers,
    as transformers' forward has them.
    """

    remat: bool = False

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False, position_ids=None,
                 cache: KVCache | None = None) -> ModelOutput:
        cfg = self.config
        layers.check_input(input_ids, cfg.max_positions)
        length = input_ids.shape[1]
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        start = jnp.zeros((), jnp.int32) if cache is None else cache.length
        if position_ids is None:  # the slots the inputs fill
            position_ids = (start + jnp.arange(length))[None]
        key_mask = attention_mask
        if cache is not None:
            key_mask = jax.lax.dynamic_update_slice_in_dim(cache.mask, attention_mask.astype(jnp.int32), start, 1)
        wte = self._embed(cfg.vocab_size, "wte", "vocab")
        x = wte(input_ids) + self._embed(cfg.max_position_embeddings, "wpe", "positions")(position_ids)
        if token_type_ids is not None:  # GPT-2 embeds token types with its word table
            x = x + wte(token_type_ids)
        x = nn.Dropout(cfg.embd_pdrop)(x, deterministic=deterministic)
        x, hidden_states, attentions, keys, values = _Blocks(cfg, **self._shared(), remat=self.remat, name="h")(
            x, key_mask, head_mask, deterministic, output_attentions, output_hidden_states,
            None if cache is None else (cache.keys, cache.values, start))
        x = self._norm("ln_f")(x)
        if output_hidden_states:
            hidden_states.append(x)
        new_cache = None if cache is None else KVCache(tuple(keys), tuple(values), key_mask, start + length)
        return ModelOutput(last_hidden_state=x, hidden_states=tuple(hidden_states) or None,
                           attentions=tuple(attentions) if output_attentions else None, past_key_values=new_cache)

    def _embed(self, num: int, name: str, rows: str) -> nn.Embed:
        return layers.embed(num, self.config.n_embd, std=self.config.initializer_range, dtype=self.dtype,
                            param_dtype=self.param_dtype, name=name, axes=(rows, "embed"))


class GPT2LMHeadModule(_Module):
    """`GPT2LMHeadModel`: the decoder and `lm_head`, tied to `wte` (no bias).

    `features_only` stops before the vocabulary projection, as the masked-LM classes do, so the
    causal distillation loss can project a chunk of positions at a time (see losses.py).
    """

    remat: bool = False

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False, features_only: bool = False,
                 position_ids=None, cache: KVCache | None = None) -> ModelOutput:
        cfg = self.config
        out = GPT2Module(cfg, **self._shared(), remat=self.remat, name="transformer")(
            input_ids, attention_mask, token_type_ids, head_mask, deterministic, output_attentions,
            output_hidden_states, position_ids, cache)
        if cfg.tie_word_embeddings:
            table = sharding.unbox(self.variables["params"]["transformer"]["wte"]["embedding"])
        else:
            kernel, _ = layers.VocabProjector(cfg.vocab_size, cfg.initializer_range, self.param_dtype,
                                              with_bias=False, name="lm_head")(cfg.n_embd)
            table = kernel.T
        if features_only:
            return out.replace(mlm_features=out.last_hidden_state)
        logits = precision.vocab_logits(out.last_hidden_state, table, None, cfg.vocab_size)[..., : cfg.vocab_size]
        return out.replace(logits=logits)
