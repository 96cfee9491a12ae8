"""JAX's persistent compilation cache, so a second run of the same command skips XLA compiles.

The CLI enables it before anything is compiled. The folder is `$DISTILBERT_JAX_CACHE`, else
`~/.cache/distilbert_jax/xla`; `DISTILBERT_JAX_CACHE=off` disables it.
"""

from __future__ import annotations

import os

import jax


def default_dir() -> str | None:
    value = os.environ.get("DISTILBERT_JAX_CACHE")
    if value == "off":
        return None
    return value or os.path.join(os.path.expanduser("~"), ".cache", "distilbert_jax", "xla")


def enable(directory: str | None = None) -> str | None:
    directory = directory or default_dir()
    if directory is None:
        return None
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None  # a read-only home is not a reason to fail; we only lose the cache
    jax.config.update("jax_compilation_cache_dir", directory)
    # Small CPU programs compile in well under JAX's default 1 s threshold; cache them all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
