"""Backend-aware process settings (host_settings.py): malloc tuning on CPU only, GPU XLA flags
only where the user has not set them, and flags this jax's XLA accepts."""

from __future__ import annotations

import pytest

from distilbert_jax import host_settings
from subprocess_jax import run_python


@pytest.mark.parametrize("platforms,expected", [("cpu", "cpu"), ("cuda", "gpu"), ("cuda,cpu", "gpu"),
                                                ("gpu", "gpu"), ("tpu", "tpu")])
def test_platform_from_jax_platforms(monkeypatch, platforms, expected):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert host_settings.expected_platform() == expected


def test_gpu_flags_added_only_where_unset():
    env = {"XLA_FLAGS": "--xla_gpu_enable_triton_gemm=true --xla_dump_to=/tmp/x"}
    added = host_settings.add_gpu_xla_flags(env)
    assert len(added) == len(host_settings.GPU_XLA_FLAGS) - 1
    assert "--xla_gpu_enable_triton_gemm=true" in env["XLA_FLAGS"]  # the user's value stays
    assert "--xla_gpu_enable_triton_gemm=false" not in env["XLA_FLAGS"]
    assert env["XLA_FLAGS"].startswith("--xla_gpu_enable_triton_gemm=true --xla_dump_to=/tmp/x ")
    assert host_settings.add_gpu_xla_flags(env) == []  # a second call adds nothing
    fresh: dict[str, str] = {}
    assert len(host_settings.add_gpu_xla_flags(fresh)) == len(host_settings.GPU_XLA_FLAGS)


def test_this_xla_accepts_every_gpu_flag():
    """XLA aborts on a flag it does not know; these must parse in this jax (the CPU build parses the
    same DebugOptions as the CUDA one), or `configure()` would kill every GPU run."""
    flags = " ".join(f"--{flag}={value}" for flag, value, _ in host_settings.GPU_XLA_FLAGS)
    out = run_python("""
import json, jax.numpy as jnp
print(json.dumps({"sum": float(jnp.arange(4.0).sum())}))
""", devices=1, env={"XLA_FLAGS": flags})
    assert out == {"sum": 6.0}


def test_configure_per_platform():
    """On a GPU host: XLA flags, no malloc tuning; on CPU: malloc tuning, no flags. Each in a fresh
    process (both settings are process-wide); JAX_PLATFORMS stands in for the hardware."""
    code = """
import json, os
from distilbert_jax import host_settings
done = host_settings.configure()
print(json.dumps({**done, "xla_flags": os.environ.get("XLA_FLAGS", "")}))
"""
    gpu = run_python(code, devices=1, env={"JAX_PLATFORMS": "cuda", "XLA_FLAGS": ""})
    assert gpu["platform"] == "gpu" and gpu["malloc"] == "system default"
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in gpu["xla_flags"]
    cpu = run_python(code, devices=1, env={"XLA_FLAGS": ""})
    assert cpu["platform"] == "cpu" and cpu["malloc"].startswith("tuned") and cpu["xla_flags"] == ""
