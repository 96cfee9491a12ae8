"""Run a snippet of Python in a fresh interpreter with N CPU devices (or as one of N processes).

`--xla_force_host_platform_device_count` must be set before jax is imported, and the test
process has imported jax already, so multi-device and multi-host checks run in children. The
child prints one JSON object as its last stdout line; that object is returned.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env(devices: int = 8, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.path.join(REPO, "tests"), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def run_python(code: str, *, devices: int = 8, timeout: float = 600, env: dict[str, str] | None = None,
               cwd: str | None = None) -> dict:
    """Run `code` with `devices` CPU devices; return the JSON object it printed last."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=child_env(devices, **(env or {})), cwd=cwd)
    if proc.returncode != 0:
        raise AssertionError(f"child failed with exit {proc.returncode}:\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise AssertionError(f"child printed nothing; stderr:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


_GIVEN: set[int] = set()  # ports handed out already: their coordinators may not have bound them yet


def free_port(low: int = 0, high: int = 0) -> int:
    """A TCP port free on 127.0.0.1 now and not handed out before: any (the default), or one in [low, high]."""
    import socket

    for _ in range(64):
        for port in ([0] if not low else range(low, high + 1)):
            if port in _GIVEN:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                port = s.getsockname()[1]
            if port not in _GIVEN:
                _GIVEN.add(port)
                return port
    raise RuntimeError(f"no free port in [{low}, {high}]")


# JAX's SLURM detection puts the coordinator on the first node of SLURM_STEP_NODELIST, at port
# SLURM_JOB_ID % 4096 + 61440 (jax/_src/clusters/slurm_cluster.py).
SLURM_PORTS = (61440, 65535)


def slurm_env(processes: int, index: int, port: int) -> dict[str, str]:
    """The variables `srun -n PROCESSES` gives task INDEX on one node, for a job whose coordinator
    port (as JAX derives it) is `port`."""
    return {"SLURM_JOB_ID": str(port - SLURM_PORTS[0]), "SLURM_STEP_NODELIST": "localhost",
            "SLURM_NTASKS": str(processes), "SLURM_PROCID": str(index), "SLURM_LOCALID": str(index),
            "SLURM_STEP_NUM_NODES": "1"}
