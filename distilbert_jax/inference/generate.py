"""Text generation for GPT-2 models: greedy, or sampled with temperature, top-k and top-p.

One compiled program per (batch, prompt length, settings): the prompt fills a `KVCache` in one
call (only each row's last real position meets the vocabulary projection), then `lax.scan`
decodes one token per step against the cache, so step t costs one position, not t. Shapes are
static: the cache has `prompt + max_new_tokens` slots from the start.

Greedy decoding equals transformers' `generate(do_sample=False)` token for token, with padding
on the left (transformers' convention) or on the right: positions count real tokens only, as
transformers computes them from the attention mask. A row that emits `eos_token_id` is finished
and gets `pad_token_id` afterwards; the output is cut after the step at which every row finished.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax import precision
from distilbert_jax.config import GPT2Config
from distilbert_jax.errors import UserError
from distilbert_jax.models.gpt2 import KVCache
from distilbert_jax.models.projection import projection_weights


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """transformers' names and defaults (`do_sample=False`: greedy; top_k 50 applies only when sampling)."""

    max_new_tokens: int = 20
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50  # 0: no top-k filter
    top_p: float = 1.0
    eos_token_id: int | None = None  # None: the model's; -1: never stop early
    pad_token_id: int | None = None  # None: the eos id, as transformers falls back to

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.do_sample and not self.temperature > 0:
            raise UserError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UserError(f"top_k must be >= 0, got {self.top_k}")


def filter_logits(logits: jax.Array, settings: GenerationConfig) -> jax.Array:
    """Temperature, then top-k, then top-p (nucleus), in the order transformers' warpers run;
    removed tokens get -inf. The top-p cut keeps the smallest set of most likely tokens whose
    probability reaches top_p (always at least one)."""
    logits = logits / settings.temperature
    if settings.top_k > 0 and settings.top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, settings.top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if settings.top_p < 1.0:
        ordered = jnp.sort(logits, axis=-1)[..., ::-1]
        before = jnp.cumsum(jax.nn.softmax(ordered, axis=-1), axis=-1) - jax.nn.softmax(ordered, axis=-1)
        # the smallest logit still kept: the last sorted token whose mass before it is < top_p
        kept = jnp.sum(before < settings.top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(ordered, kept - 1, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def _next_token(logits, key, settings: GenerationConfig):
    if not settings.do_sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits, settings), axis=-1).astype(jnp.int32)


def _generate(module, config: GPT2Config, dtype, settings: GenerationConfig, eos: int, pad: int, params, ids, mask,
              key):
    batch, length = ids.shape
    table, bias = projection_weights(params, config)

    def logits_of(features):
        return precision.vocab_logits(features, table, bias, config.vocab_size)[..., : config.vocab_size]

    cache = KVCache.empty(config, batch, length + settings.max_new_tokens, dtype)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    out = module.apply({"params": params}, ids, mask, features_only=True, position_ids=positions, cache=cache)
    last = length - 1 - jnp.argmax(mask[:, ::-1], axis=1)  # each row's last real token
    features = jnp.take_along_axis(out.mlm_features, last[:, None, None], axis=1)[:, 0]
    keys = jax.random.split(key, settings.max_new_tokens)
    token = _next_token(logits_of(features), keys[0], settings)
    done = token == eos
    position = mask.sum(axis=1).astype(jnp.int32)

    def step(carry, key):
        token, done, position, cache = carry
        out = module.apply({"params": params}, token[:, None], jnp.ones_like(token)[:, None], features_only=True,
                           position_ids=position[:, None], cache=cache)
        new = _next_token(logits_of(out.mlm_features[:, 0]), key, settings)
        new = jnp.where(done, pad, new)
        return (new, done | (new == eos), position + 1, out.past_key_values), (new, done)

    _, (tokens, was_done) = jax.lax.scan(step, (token, done, position, out.past_key_values), keys[1:])
    tokens = jnp.concatenate([token[None], tokens], axis=0).T  # [B, max_new_tokens]
    finished = jnp.concatenate([jnp.zeros((1, batch), bool), was_done], axis=0).T  # finished before each step
    return tokens, finished


class Generator:
    """`Generator(model)(input_ids, attention_mask)` -> [B, prompt + new] int ids, like `generate`.

    Compiled functions are kept per instance and close over the module, not the model, so a
    dropped Generator frees its model.
    """

    def __init__(self, model, settings: GenerationConfig | None = None):
        if not isinstance(model.config, GPT2Config) or model.architecture.task != "causal-lm":
            raise UserError(f"generation needs a causal language model (GPT2LMHeadModel); "
                            f"{model.architecture.name} is not one: load it with task='causal-lm'")
        self.model = model
        self.settings = settings or GenerationConfig()
        self._compiled: dict = {}

    def _program(self, settings: GenerationConfig, eos: int, pad: int):
        key = (settings, eos, pad)
        if key not in self._compiled:
            fn = functools.partial(_generate, self.model.module, self.model.config, self.model.dtype, settings,
                                   eos, pad)
            self._compiled[key] = jax.jit(fn)
        return self._compiled[key]

    def __call__(self, input_ids, attention_mask=None, *, seed: int = 0, **overrides) -> np.ndarray:
        settings = dataclasses.replace(self.settings, **overrides)
        settings.check()
        ids = np.asarray(input_ids, np.int32)
        if ids.ndim == 1:
            ids = ids[None]
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int32).reshape(ids.shape)
        if (mask.sum(axis=1) == 0).any():
            raise UserError("a prompt has no real token (its attention_mask is all 0); give each row at least one")
        limit = self.model.config.max_positions
        if ids.shape[1] + settings.max_new_tokens > limit:
            raise UserError(f"prompt of {ids.shape[1]} tokens + {settings.max_new_tokens} new ones exceeds the "
                            f"model's {limit} positions; shorten the prompt or lower max_new_tokens")
        eos = self.model.config.eos_token_id if settings.eos_token_id is None else settings.eos_token_id
        pad = eos if settings.pad_token_id is None else settings.pad_token_id
        pad = 0 if pad is None or pad < 0 else pad
        tokens, finished = self._program(settings, -1 if eos is None else eos, pad)(
            self.model._ready(), jnp.asarray(ids), jnp.asarray(mask), jax.random.key(seed))
        tokens, finished = np.asarray(tokens), np.asarray(finished)
        all_done = np.flatnonzero(finished.all(axis=0))
        steps = int(all_done[0]) if all_done.size else settings.max_new_tokens
        return np.concatenate([ids, tokens[:, :steps]], axis=1)


def generate(model, input_ids, attention_mask=None, *, seed: int = 0, **settings) -> np.ndarray:
    """One-off `Generator(model)(...)`; keep a Generator to reuse its compiled program."""
    return Generator(model, GenerationConfig(**settings))(input_ids, attention_mask, seed=seed)
