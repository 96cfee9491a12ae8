"""Process settings that depend on the backend, applied before JAX creates it: `configure()`.

- CPU: the glibc malloc tuning of host_malloc.py (XLA's CPU runtime allocates every step's
  buffers with malloc; without it each step page-faults fresh memory). On a GPU or TPU host the
  device buffers are not malloc's, and one arena with no trimming would only keep the host
  process's peak heap for nothing, so it is not applied there.
- NVIDIA GPU: the XLA flags of the JAX GPU performance guide and MaxText's GPU configs that
  matter for this kind of step, each added only when XLA_FLAGS does not already name it (a
  user's value always wins). All are accepted by the XLA of jax 0.10 and 0.11 (an unknown flag
  aborts the process, so flags removed from XLA, such as xla_gpu_enable_async_collectives or
  xla_gpu_graph_level, are not here).

XLA reads XLA_FLAGS once, when the backend is created, so the platform is inferred without
creating it: JAX_PLATFORMS if set, else whether a CUDA plugin and an NVIDIA device are present.
(`jax.distributed.initialize` must also run before the backend exists.)
"""

from __future__ import annotations

import glob
import importlib.util
import os

from distilbert_jax import host_malloc

# (flag, value, why)
GPU_XLA_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("xla_gpu_enable_latency_hiding_scheduler", "true",
     "schedule collectives to overlap compute (gradient all-reduce, FSDP all-gathers)"),
    ("xla_gpu_enable_triton_gemm", "false", "cuBLAS for every GEMM, as MaxText's GPU configs set"),
    ("xla_gpu_all_reduce_combine_threshold_bytes", "134217728",
     "combine small all-reduces into 128 MiB ones (one all-reduce for a layer's gradients)"),
    ("xla_gpu_all_gather_combine_threshold_bytes", "134217728",
     "FSDP: gather at least a layer's weights at once"),
    ("xla_gpu_reduce_scatter_combine_threshold_bytes", "134217728", "FSDP: the same for gradients"),
)

_CUDA_PLUGINS = ("jax_cuda13_plugin", "jax_cuda12_plugin", "jax_plugins.xla_cuda13", "jax_plugins.xla_cuda12")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def expected_platform() -> str:
    """"cpu", "gpu" or "tpu": the platform JAX will pick, without initialising any backend."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        first = platforms.split(",")[0].strip()
        return {"cuda": "gpu", "rocm": "gpu"}.get(first, first)
    if any(_has_module(m) for m in _CUDA_PLUGINS) and os.path.exists("/dev/nvidiactl"):
        return "gpu"
    if _has_module("libtpu") and (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
        return "tpu"
    return "cpu"


def add_gpu_xla_flags(environ=os.environ) -> list[str]:
    """Append the GPU_XLA_FLAGS that XLA_FLAGS does not name yet; returns those added."""
    current = environ.get("XLA_FLAGS", "")
    named = {part.lstrip("-").split("=", 1)[0] for part in current.split()}
    added = [f"--{flag}={value}" for flag, value, _ in GPU_XLA_FLAGS if flag not in named]
    if added:
        environ["XLA_FLAGS"] = " ".join(filter(None, [current.strip(), *added]))
    return added


def configure(platform: str | None = None) -> dict:
    """Apply the settings of `platform` (default: the expected one) once, before the first
    computation; returns what was done, for benchmarks and run records."""
    platform = platform or expected_platform()
    done = {"platform": platform, "malloc": "system default", "xla_flags_added": []}
    if platform == "cpu":
        host_malloc.tune_malloc()
        done["malloc"] = host_malloc.malloc_setting()
    elif platform == "gpu":
        done["xla_flags_added"] = add_gpu_xla_flags()
    return done
