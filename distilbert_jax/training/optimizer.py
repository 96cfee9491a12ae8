"""AdamW with linear warmup and decay, global-norm clipping and gradient accumulation.

The released DistilBERT run: AdamW(0.9, 0.98, eps 1e-6), no weight decay, peak 5e-4 reached
linearly over 5% of the updates then decayed linearly to 0, clipping at global norm 5.0, and
2,000 sequences per update through accumulation. When weight decay is on it skips biases and
LayerNorm parameters, as the reference does. Accumulation is `optax.MultiSteps`: each call of
the train step consumes one micro-batch (of whatever bucket length) and every `accumulate`-th
call applies the averaged gradient; its accumulator is kept in float32.
"""

from __future__ import annotations

import dataclasses

import jax
import optax

from distilbert_jax.training.loss_scale import dynamic_loss_scale


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float = 5e-4
    warmup_fraction: float = 0.05
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 0.0
    max_grad_norm: float = 5.0
    accumulate: int = 1


def learning_rate_schedule(cfg: OptimizerConfig, total_updates: int) -> optax.Schedule:
    total = max(int(total_updates), 1)
    warmup = int(round(cfg.warmup_fraction * total))
    decay = optax.linear_schedule(cfg.learning_rate, 0.0, max(total - warmup, 1))
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, warmup), decay], [warmup])


def decay_mask(params):
    """True for matrices (weight decay applies), False for biases and LayerNorm scales."""
    return jax.tree.map(lambda x: x.ndim > 1, params)


def make_optimizer(cfg: OptimizerConfig, total_updates: int, *,
                   loss_scaling: bool = False) -> optax.GradientTransformation:
    """`loss_scaling` (float16 compute): wrapped in dynamic loss scaling (training/loss_scale.py)."""
    schedule = learning_rate_schedule(cfg, total_updates)
    chain = []
    if cfg.max_grad_norm and cfg.max_grad_norm > 0:
        chain.append(optax.clip_by_global_norm(cfg.max_grad_norm))
    chain.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             mask=decay_mask))
    tx = optax.chain(*chain)
    if cfg.accumulate > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.accumulate)
    return dynamic_loss_scale(tx) if loss_scaling else tx
