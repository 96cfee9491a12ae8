"""The compiled-program walker counts what XLA's own cost analysis misses: loop bodies times their
trip counts, collectives by kind, and nothing twice."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from distilbert_jax.training.hlo_cost import program_cost


def _scan_of_matmuls(trips: int):
    def f(x, w):
        def body(carry, xi):
            return carry + jnp.sum(jnp.tanh(xi @ w)), None

        return jax.lax.scan(body, 0.0, x.reshape(trips, -1, x.shape[-1]))[0]

    return f


@pytest.mark.parametrize("trips", [1, 3, 8])
def test_loop_bodies_count_once_per_trip(trips):
    x, w = jnp.ones((24, 16)), jnp.ones((16, 40))
    compiled = jax.jit(_scan_of_matmuls(trips)).lower(x, w).compile()
    cost = program_cost(compiled)
    assert cost.unknown_trip_counts == 0
    assert cost.matmul_flops == 2 * 24 * 16 * 40  # every row multiplied once, whatever the chunking
    assert not cost.collectives and cost.memory["argument"] == (24 * 16 + 16 * 40) * 4


def test_gradient_adds_the_backward_matmuls():
    x, w = jnp.ones((24, 16)), jnp.ones((16, 40))
    compiled = jax.jit(jax.grad(_scan_of_matmuls(4), argnums=1)).lower(x, w).compile()
    # forward x @ w, and the backward's x^T @ g for w (x's gradient is not asked for)
    assert program_cost(compiled).matmul_flops == 2 * (2 * 24 * 16 * 40)
