"""Achievable dense-matmul throughput on this machine (the yardstick for bench_forward.py).

    from experiments.matmul_peak import measure_matmul_peak
    peak = measure_matmul_peak("float32")          # FLOP/s of a jitted jnp.dot, n x n @ n x n

`python experiments/matmul_peak.py` prints the JAX peak for float32 and bfloat16 and torch's
matmul for comparison. One n x n @ n x n product is 2 n^3 FLOPs; the reported figure is the
best of `repeats` timed runs (each averaging `inner` back-to-back products) after a warm-up,
so it measures what XLA's CPU GEMM can reach, not the noise of a shared machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from distilbert_jax.training.flops import inner_iterations, measure_matmul_peak  # one implementation

__all__ = ["measure_matmul_peak", "measure_torch_matmul_peak", "parse_shapes", "torch_bf16_rate"]


def measure_torch_matmul_peak(dtype: str = "float32", n: int = 2048, repeats: int = 5, inner: int | None = None,
                              threads: int | None = None) -> float:
    """The same measurement with `torch.matmul` (eager), for comparison."""
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)
    tdtype = getattr(torch, dtype)
    inner = inner or inner_iterations(n)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(tdtype)
    b = torch.randn(n, n, generator=g).to(tdtype)
    with torch.inference_mode():
        torch.matmul(a, b)
        torch.matmul(a, b)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(inner):
                torch.matmul(a, b)
            best = min(best, (time.perf_counter() - t0) / inner)
    return 2.0 * n**3 / best


def torch_bf16_rate(rows: int = 1024) -> float:
    """FLOP/s of one warm bf16 torch Linear of BERT's FFN size: enough to predict a bf16 run's time.

    Without native bf16 matmul (AVX512-BF16/AMX) torch's bf16 is many times slower than f32; the
    benchmarks use this to skip rows that would take minutes.
    """
    import torch

    x = torch.randn(rows, 768, dtype=torch.bfloat16)
    w = torch.randn(3072, 768, dtype=torch.bfloat16)
    with torch.inference_mode():
        torch.nn.functional.linear(x, w)
        t0 = time.perf_counter()
        torch.nn.functional.linear(x, w)
        return 2 * rows * 768 * 3072 / (time.perf_counter() - t0)


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """`--shapes 8x128,2x512` -> [(8, 128), (2, 512)] (an argparse type: bad text is a usage error)."""
    try:
        shapes = [tuple(int(n) for n in part.lower().split("x")) for part in text.split(",") if part.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(f"{text!r}: give BATCHxLENGTH pairs, e.g. 8x128,2x512")
    return shapes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2048, help="matrix size (default 2048)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-torch", action="store_true", help="skip the torch comparison")
    args = p.parse_args(argv)

    import jax

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, n={args.n}")
    for dtype in ("float32", "bfloat16"):
        flops = measure_matmul_peak(dtype, args.n, args.repeats)
        print(f"jax   jnp.dot      {dtype:9s} {flops / 1e9:8.1f} GFLOP/s")
    if not args.no_torch:
        import torch

        for dtype in ("float32", "bfloat16"):
            flops = measure_torch_matmul_peak(dtype, args.n, args.repeats)
            print(f"torch torch.matmul {dtype:9s} {flops / 1e9:8.1f} GFLOP/s  ({torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
