"""The malloc settings the CLI applies: a repeated jitted step stops page-faulting its buffers.

Counted in minor page faults (what the settings remove), not in seconds, so the test does not
depend on the load of a shared machine. Each case runs in a fresh interpreter: the settings are
process-wide and cannot be undone.
"""

from __future__ import annotations

import sys

import pytest

from subprocess_jax import run_python

STEP = """
import json, resource
from distilbert_jax.host_malloc import tune_malloc
applied = tune_malloc()
import jax, jax.numpy as jnp
x = jnp.ones((64, 1024, 1024), jnp.float32)  # 256 MB: XLA's output and temporaries are as large
step = jax.jit(lambda a: (a * 2.0 + 1.0).sum(0) + a[0])
step(x).block_until_ready()
step(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step(x).block_until_ready()
per_call = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4
print(json.dumps({"applied": applied, "faults_per_call": per_call}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_tuned_malloc_removes_per_step_page_faults():
    system = run_python(STEP, devices=1, env={"DISTILBERT_JAX_MALLOC": "system"})
    tuned = run_python(STEP, devices=1)
    assert system["applied"] is False and tuned["applied"] is True
    assert system["faults_per_call"] > 1000, system  # every call maps its buffers afresh
    assert tuned["faults_per_call"] < 0.1 * system["faults_per_call"], (tuned, system)


def test_system_choice_reaches_child_processes():
    """The benchmarks' --system-malloc: off here, and off in the workers they start."""
    out = run_python("""
import json, os, subprocess, sys
from distilbert_jax.host_malloc import tune_malloc
here = tune_malloc(system=True)
child = subprocess.run([sys.executable, "-c", "from distilbert_jax.host_malloc import tune_malloc; print(tune_malloc())"],
                       capture_output=True, text=True, check=True).stdout.strip()
print(json.dumps({"here": here, "child": child}))
""", devices=1)
    assert out == {"here": False, "child": "False"}
