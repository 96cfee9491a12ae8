"""glibc malloc settings that stop a CPU training step from page-faulting its own buffers every call.

XLA's CPU runtime (and PyTorch's) allocates each step's large buffers with malloc. glibc serves
anything over 32 MB (and, by its dynamic threshold, smaller blocks too) with a fresh mmap and
returns it with munmap on free, so every step touches brand-new pages: a base-size 8 x 512
forward took 477k minor page faults (1.9 GB of zeroed pages) per call, and a distillation step
spent about a third of its time there. Keeping freed memory in the heap (no mmap, no trimming,
one arena so the worker threads reuse it too) removes the faults: measured on the 2-core CPUs,
the 8 x 128 distillation step went from 7.3 s to 4.7 s (JAX) and 9.6 s to 5.0 s (PyTorch in the
same settings), the 8 x 512 forward from 3.4 s to 2.7 s. The cost is that the process keeps its
peak heap until it exits, as it would under tcmalloc or jemalloc, the allocators MaxText and
PyTorch's CPU guides recommend preloading for the same reason.

The CLI (through host_settings.configure) and the benchmarks call `tune_malloc()` first thing; a
library user may call it too. `DISTILBERT_JAX_MALLOC=system` leaves malloc alone. It is a no-op
off glibc, and when JAX will run on a GPU or TPU (host_settings.expected_platform).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

ENV = "DISTILBERT_JAX_MALLOC"
_applied: bool | None = None


def tune_malloc(system: bool = False) -> bool:
    """Apply the settings once per process; True if they are in effect.

    system=True leaves malloc alone here and, through the environment, in child processes
    (the benchmarks' workers), as `DISTILBERT_JAX_MALLOC=system` does.
    """
    global _applied
    if system:
        os.environ[ENV] = "system"
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV, "").lower() in ("system", "off", "0"):
        return False
    from distilbert_jax.host_settings import expected_platform

    if expected_platform() != "cpu":  # device buffers are not malloc's: nothing to gain off CPU
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # -1 disables trimming; mallopt returns 1 on success
    _applied = all(mallopt(param, value) == 1
                   for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
    return _applied


def malloc_setting() -> str:
    """What the benchmarks print and record: which malloc behaviour the figures were measured under."""
    return "tuned (glibc: no mmap, no trim, one arena)" if _applied else "system default"
