"""Dynamic loss scaling for float16 training, as an optax wrapper around the optimizer.

float16 stops at 6e-5 (normal) / 6e-8 (subnormal): most of a transformer's gradients lie below
that and flush to zero. The step multiplies the loss by `scale` before differentiating (every
gradient with it) and this transformation divides the gradients back before the optimizer sees
them. If any gradient overflowed (inf/NaN), the micro-batch is dropped (no update, the inner
optimizer's state, accumulation included, is left as it was) and the scale halves; after
`period` finite micro-batches in a row it doubles. These are the constants of jmp's
DynamicLossScale and of PyTorch's GradScaler (2^15 start, x2 every 2000, /2 on overflow), the
recipe the released DistilBERT run used through apex on V100s.

The state lives inside the optimizer state, so it is checkpointed, sharded (replicated scalars)
and resumed with it, and no trainer carries a second piece of state. bfloat16 has float32's
exponent range and needs none of this.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class LossScaleState(NamedTuple):
    scale: jax.Array  # float32 scalar: the loss is multiplied by it before differentiation
    good_steps: jax.Array  # int32 scalar: finite micro-batches since the scale last changed
    inner: Any  # the wrapped optimizer's state


def dynamic_loss_scale(inner: optax.GradientTransformation, initial: float = 2.0 ** 15, period: int = 2000,
                       factor: float = 2.0, min_scale: float = 1.0) -> optax.GradientTransformation:
    """`inner` fed with gradients of a scaled loss: unscale, skip non-finite, adapt the scale."""

    def init(params):
        return LossScaleState(jnp.asarray(initial, jnp.float32), jnp.zeros((), jnp.int32), inner.init(params))

    def update(grads, state: LossScaleState, params=None):
        grads = jax.tree.map(lambda g: g.astype(jnp.float32) / state.scale, grads)
        finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        updates, inner_state = inner.update(grads, state.inner, params)
        updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
        inner_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), inner_state, state.inner)
        grow = finite & (state.good_steps + 1 >= period)
        scale = jnp.where(finite, jnp.where(grow, state.scale * factor, state.scale),
                          jnp.maximum(state.scale / factor, min_scale))
        good_steps = jnp.where(finite & ~grow, state.good_steps + 1, 0).astype(jnp.int32)
        return updates, LossScaleState(scale, good_steps, inner_state)

    return optax.GradientTransformation(init, update)


def current_scale(opt_state) -> jax.Array | None:
    """The loss scale a train step multiplies its loss by; None when training is not loss-scaled."""
    return opt_state.scale if isinstance(opt_state, LossScaleState) else None


def scaled_value_and_grad(loss_fn, opt_state):
    """`jax.value_and_grad(loss_fn, has_aux=True)` with the loss scaled for differentiation when
    the optimizer is loss-scaled: returns ((loss, aux), grads, grad_norm), loss and norm unscaled."""
    scale = current_scale(opt_state)
    if scale is None:
        def value_and_grad(params):
            out, grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            return out, grads, optax.global_norm(grads)
        return value_and_grad

    def scaled(params):
        loss, aux = loss_fn(params)
        return loss * scale.astype(loss.dtype), (loss, aux)

    def value_and_grad(params):
        (_, out), grads = jax.value_and_grad(scaled, has_aux=True)(params)
        return out, grads, optax.global_norm(grads) / scale

    return value_and_grad


def scale_metrics(opt_state) -> dict:
    """{"loss_scale": scale} after the update, for the logs of a loss-scaled run; {} otherwise."""
    scale = current_scale(opt_state)
    return {} if scale is None else {"loss_scale": scale}
