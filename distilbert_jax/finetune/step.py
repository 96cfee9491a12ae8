"""The fine-tuning train step and prediction step, one pair for every head: pure, jitted once per shape.

    state, metrics = train_step(state, batch, key)
    outputs = predict_step(params, batch)

The losses are the ones transformers' heads compute (cross-entropy over labels, mean squared
error for a one-output regression head such as STS-B, token cross-entropy skipping IGNORE_INDEX,
the mean of start and end cross-entropy for spans), in float32, as a masked sum divided by
max(count, 1), so empty padding rows change nothing. One difference on purpose: span logits at
padding positions are masked out of both loss and prediction, which makes results independent
of the padded length (transformers pads SQuAD to 384 and lets padding compete).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from distilbert_jax.finetune.examples import IGNORE_INDEX
from distilbert_jax.training.loss_scale import scale_metrics, scaled_value_and_grad
from distilbert_jax.training.state import TrainState

KINDS = ("classification", "regression", "token", "span")
_NEG = jnp.finfo(jnp.float32).min


def _forward(module, params, batch: dict, *, deterministic: bool, rngs=None):
    return module.apply({"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                        None, deterministic, rngs=rngs or {})


def _span_logits(out, attention_mask):
    valid = attention_mask.astype(bool)
    return (jnp.where(valid, out.start_logits.astype(jnp.float32), _NEG),
            jnp.where(valid, out.end_logits.astype(jnp.float32), _NEG))


def loss_terms(kind: str, out, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(sum of per-item losses, number of items) for one batch; items are rows, or tokens for NER."""
    weight = batch["weight"]
    if kind == "classification":
        logits = out.logits.astype(jnp.float32)
        valid = (batch["label"] >= 0) & (weight > 0)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(batch["label"], 0))
        return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(valid)
    if kind == "regression":
        error = out.logits.astype(jnp.float32)[:, 0] - batch["label"]
        return jnp.sum(weight * error * error), jnp.sum(weight > 0)
    if kind == "token":
        labels = batch["token_labels"]
        valid = labels != IGNORE_INDEX
        nll = optax.softmax_cross_entropy_with_integer_labels(out.logits.astype(jnp.float32), jnp.maximum(labels, 0))
        return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(valid)
    if kind == "span":
        start, end = _span_logits(out, batch["attention_mask"])
        nll = (optax.softmax_cross_entropy_with_integer_labels(start, batch["start_positions"])
               + optax.softmax_cross_entropy_with_integer_labels(end, batch["end_positions"])) / 2
        return jnp.sum(weight * nll), jnp.sum(weight > 0)
    raise ValueError(f"unknown head kind {kind!r}; one of {KINDS}")


def make_train_step(module, kind: str, tx: optax.GradientTransformation, *, dropout: bool = True) -> Callable:
    def train_step(state: TrainState, batch: dict, key: jax.Array):
        rngs = {"dropout": jax.random.fold_in(key, state.step)} if dropout else None

        def loss_fn(params):
            out = _forward(module, params, batch, deterministic=not dropout, rngs=rngs)
            total, count = loss_terms(kind, out, batch)
            return total / jnp.maximum(count, 1).astype(jnp.float32), count

        (loss, count), grads, grad_norm = scaled_value_and_grad(loss_fn, state.opt_state)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": grad_norm, "items": count.astype(jnp.float32),
                   "tokens": jnp.sum(batch["attention_mask"]).astype(jnp.float32), **scale_metrics(opt_state)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_predict_step(module, kind: str) -> Callable:
    """What post-processing needs, and no more (arg-max ids for NER, not [B, L, labels] logits)."""

    def predict_step(params, batch: dict):
        out = _forward(module, params, batch, deterministic=True)
        total, count = loss_terms(kind, out, batch) if _has_targets(kind, batch) else (jnp.float32(0), jnp.int32(0))
        result = {"loss_sum": total, "loss_count": count}
        if kind == "span":
            result["start_logits"], result["end_logits"] = _span_logits(out, batch["attention_mask"])
        elif kind == "token":
            result["predictions"] = jnp.argmax(out.logits, axis=-1).astype(jnp.int32)
        else:
            result["logits"] = out.logits.astype(jnp.float32)
        return result

    return predict_step


def _has_targets(kind: str, batch: dict) -> bool:
    needed = {"classification": "label", "regression": "label", "token": "token_labels", "span": "start_positions"}
    return needed[kind] in batch
