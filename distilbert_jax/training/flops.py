"""Analytic FLOPs of our encoders and the per-device peak they are compared against.

MFU is model FLOPs (matmuls only, as MaxText and the PaLM paper count them) per device per
second over one device's peak. On accelerators the peak is the datasheet's dense matmul rate
(`DATASHEET_PEAKS`); on a CPU, or a device the table does not know, it is what a plain jitted
matmul reaches on that device, measured in the same process: on a shared 2-core CPU a
datasheet peak would mean nothing.
"""

from __future__ import annotations

import time

import numpy as np

from distilbert_jax.config import AnyConfig, GPT2Config


def encoder_forward_flops(config: AnyConfig, batch: int, length: int, *, mlm_head: bool = False,
                          layers: int | None = None) -> float:
    """Matmul FLOPs of one forward pass over `batch` x `length` tokens (padding included).

    Per layer: q, k, v, out projections 4*d*d and the FFN 2*d*f multiply-adds per token, plus
    attention scores and context 2*L*d per token. The LM head adds the vocabulary projection (d*V)
    per token and, in the encoders' MLM heads, their transform (d*d; GPT-2's head has none). One
    multiply-add is 2 FLOPs. A causal model's attention is counted whole, as it is computed.
    """
    d, f, v = config.hidden_size, _ffn(config), config.vocab_size
    n = config.num_layers if layers is None else layers
    tokens = batch * length
    per_layer = 2 * tokens * (4 * d * d + 2 * d * f) + 2 * 2 * batch * length * length * d
    total = n * per_layer
    if mlm_head:
        transform = 0 if isinstance(config, GPT2Config) else d * d
        total += 2 * tokens * (transform + d * v)
    return float(total)


def _ffn(config: AnyConfig) -> int:
    return getattr(config, "hidden_dim", None) or config.intermediate_size


def distillation_step_flops(student: AnyConfig, teacher: AnyConfig | None, batch: int, length: int) -> float:
    """Teacher forward (1x) + student forward and backward (3x), MLM heads included."""
    flops = 3 * encoder_forward_flops(student, batch, length, mlm_head=True)
    if teacher is not None:
        flops += encoder_forward_flops(teacher, batch, length, mlm_head=True)
    return flops


# Dense (no sparsity) matmul peaks per device, FLOP/s, from the vendors' datasheets. f32 on NVIDIA
# is the plain (non-TF32) rate; TPUs publish bf16 only (their f32 matmuls are multi-pass bf16).
DATASHEET_PEAKS: dict[str, dict[str, float]] = {
    "H100": {"bfloat16": 989e12, "float32": 67e12},  # SXM5
    "H200": {"bfloat16": 989e12, "float32": 67e12},  # SXM, same compute as the H100 SXM
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},  # SXM4
    "TPU v4": {"bfloat16": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12},  # v5e
    "TPU v5e": {"bfloat16": 197e12},
    "TPU v5p": {"bfloat16": 459e12},
    "TPU v5": {"bfloat16": 459e12},  # v5p reports itself as "TPU v5"
}


def datasheet_peak(device_kind: str, dtype: str) -> float | None:
    """The datasheet peak of a device kind (as `jax.devices()[0].device_kind` names it), or None."""
    for name in sorted(DATASHEET_PEAKS, key=len, reverse=True):  # "TPU v5 lite" before "TPU v5"
        if name.lower() in device_kind.lower():
            table = DATASHEET_PEAKS[name]
            return table.get(dtype, table.get("bfloat16"))
    return None


def device_peak_flops(dtype: str = "float32") -> float:
    """One device's matmul peak: the datasheet's for a known accelerator, else measured here."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        peak = datasheet_peak(device.device_kind, dtype)
        if peak is not None:
            return peak
    return measure_matmul_peak(dtype, n=1024, repeats=3)


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
