"""Analytic FLOPs of our encoders and the measured matmul peak they are compared against.

MFU here is model FLOPs (matmuls only, as MaxText and the PaLM paper count them) divided by what
a plain jitted matmul reaches on the same device, measured in the same process: on a shared
2-core CPU a datasheet peak would mean nothing.
"""

from __future__ import annotations

import time

import numpy as np

from distilbert_jax.config import AnyConfig


def encoder_forward_flops(config: AnyConfig, batch: int, length: int, *, mlm_head: bool = False,
                          layers: int | None = None) -> float:
    """Matmul FLOPs of one forward pass over `batch` x `length` tokens (padding included).

    Per layer: q, k, v, out projections 4*d*d and the FFN 2*d*f multiply-adds per token, plus
    attention scores and context 2*L*d per token. The MLM head adds the transform (d*d) and the
    vocabulary projection (d*V) per token. One multiply-add is 2 FLOPs.
    """
    d, f, v = config.hidden_size, _ffn(config), config.vocab_size
    n = config.num_layers if layers is None else layers
    tokens = batch * length
    per_layer = 2 * tokens * (4 * d * d + 2 * d * f) + 2 * 2 * batch * length * length * d
    total = n * per_layer
    if mlm_head:
        total += 2 * tokens * (d * d + d * v)
    return float(total)


def _ffn(config: AnyConfig) -> int:
    return getattr(config, "hidden_dim", None) or config.intermediate_size


def distillation_step_flops(student: AnyConfig, teacher: AnyConfig | None, batch: int, length: int) -> float:
    """Teacher forward (1x) + student forward and backward (3x), MLM heads included."""
    flops = 3 * encoder_forward_flops(student, batch, length, mlm_head=True)
    if teacher is not None:
        flops += encoder_forward_flops(teacher, batch, length, mlm_head=True)
    return flops


def inner_iterations(n: int) -> int:
    return max(1, int(round((2048 / n) ** 3)))  # ~0.2-0.5 s per timed run on a 2-core CPU


def measure_matmul_peak(dtype: str = "float32", n: int = 2048, repeats: int = 5, inner: int | None = None) -> float:
    """FLOP/s of a jitted `jnp.dot` of two n x n matrices of `dtype`, best of `repeats` runs."""
    import jax
    import jax.numpy as jnp

    jdtype = jnp.dtype(dtype)
    inner = inner or inner_iterations(n)
    rng = np.random.default_rng(0)
    a = jax.device_put(jnp.asarray(rng.standard_normal((n, n), np.float32), jdtype))
    b = jax.device_put(jnp.asarray(rng.standard_normal((n, n), np.float32), jdtype))
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()  # compile
    dot(a, b).block_until_ready()  # warm caches and the thread pool
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            out = dot(a, b)
        out.block_until_ready()
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2.0 * n**3 / best
