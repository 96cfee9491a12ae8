"""Multi-host start-up and stopping (training/distributed.py, training/loop.py) with local processes.

How processes join is read from the environment (`plan`: explicit JAX_* variables, SLURM, Open
MPI, one process); a stop asked on any one process (SIGTERM, Ctrl-C) stops every process after
the same step; a process that dies makes the others fail, naming it, instead of hanging.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from distilbert_jax.errors import UserError
from distilbert_jax.training.distributed import plan
from subprocess_jax import SLURM_PORTS, child_env, free_port, slurm_env

EXPLICIT = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2"}


@pytest.mark.parametrize("environ,how,kwargs", [
    ({}, "single", {}),
    (EXPLICIT, "explicit", {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2}),
    ({**EXPLICIT, "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"}, "single", {}),
    # a Kubernetes Indexed Job: the completion index is the process index
    ({"JAX_COORDINATOR_ADDRESS": "job-0.svc:1234", "JAX_NUM_PROCESSES": "2", "JOB_COMPLETION_INDEX": "1"},
     "explicit", {"coordinator_address": "job-0.svc:1234", "num_processes": 2, "process_id": 1}),
    (slurm_env(2, 1, 62000), "slurm", {}),
    ({**slurm_env(1, 0, 62000)}, "single", {}),  # `srun -n 1`, or a batch script of one task
    ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "8"}, "mpi", {}),
    ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "1"}, "single", {}),
    ({**slurm_env(2, 0, 62000), **EXPLICIT}, "explicit",  # explicit variables win over detection
     {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2}),
])
def test_plan(environ, how, kwargs, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert plan(environ) == (how, kwargs)


@pytest.mark.parametrize("environ,message", [
    ({"JAX_NUM_PROCESSES": "2"}, "JAX_NUM_PROCESSES set but JAX_COORDINATOR_ADDRESS, JAX_PROCESS_ID not"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"}, "JAX_PROCESS_ID not"),
    ({**EXPLICIT, "JAX_PROCESS_ID": "4"}, r"must be in \[0, JAX_NUM_PROCESSES=4\)"),
    ({**EXPLICIT, "JAX_NUM_PROCESSES": "four"}, "must be an integer"),
    # sbatch runs the script once, without a step's node list: a 4-task job must be started by srun
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}, "with srun"),
])
def test_half_configured_environment_is_one_line(environ, message):
    with pytest.raises(UserError, match=message) as err:
        plan(environ)
    assert "\n" not in str(err.value)


# A loop of cheap steps, as every kind of run drives it, in each of N processes. Process 1 writes
# MARK after its step 7, so the parent can signal it mid-run.
LOOP = r"""
import json, os, sys, time
from distilbert_jax.training import distributed
how = distributed.initialize()
import jax, jax.numpy as jnp
from distilbert_jax.training.loop import LoopSpec, run_loop

MARK = sys.argv[1]

class Checkpoints:
    saves = []
    def save(self, step, state, **kwargs): self.saves.append(step)
    def wait(self): pass
    def close(self): pass
    def latest_step(self): return self.saves[-1] if self.saves else None

class Log:
    def log(self, step, values): pass
    def close(self): pass

def step(state, arrays):
    time.sleep(0.05)
    if jax.process_index() == 1 and state == 7:
        open(MARK, "w").close()
    return state + 1, {"loss": jnp.float32(1.0), "tokens": jnp.float32(arrays)}

spec = LoopSpec(name="loop", total_steps=400, step=step, batches=range(400), put=lambda b: b,
                data_state=lambda b: {}, flops=lambda a: 0.0, learning_rate=lambda s: 0.0, log_every=5,
                save_at=lambda s: False, progress=False)
checkpoints = Checkpoints()
done = run_loop(spec, 0, 0, checkpoints, Log(), peak=None)
print(json.dumps({"how": how, "process": jax.process_index(), "processes": jax.process_count(),
                  "step": done.step, "interrupted": done.interrupted, "saves": checkpoints.saves}))
"""


def _start(tmp_path, processes: int, extra: dict | None = None):
    port = free_port(*SLURM_PORTS)
    mark = str(tmp_path / "mark")
    procs = []
    for i in range(processes):
        env = child_env(1, **slurm_env(processes, i, port), DISTILBERT_JAX_HEARTBEAT_S="10", **(extra or {}))
        procs.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(LOOP), mark], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 240
    while not os.path.exists(mark):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            [p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
        time.sleep(0.05)
    return procs


def _finish(procs, timeout: float):
    t0 = time.monotonic()
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"a process still ran {timeout} s after the signal: it hangs")
        outs.append((p.returncode, out, err))
    return outs, time.monotonic() - t0


def test_sigterm_on_one_process_stops_every_process_after_the_same_step(tmp_path):
    procs = _start(tmp_path, 2)
    procs[1].send_signal(signal.SIGTERM)  # what a cluster sends a preempted host
    outs, seconds = _finish(procs, timeout=120)
    results = []
    for code, out, err in outs:
        assert code == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["how"] for r in results] == ["slurm", "slurm"] and all(r["processes"] == 2 for r in results)
    steps = {r["step"] for r in results}
    assert len(steps) == 1 and all(r["interrupted"] for r in results)
    step = steps.pop()
    assert step % 5 == 0 and 8 <= step < 400  # at the first log point after the signal
    assert all(r["saves"] == [step] for r in results)  # one checkpoint, saved together


def test_a_killed_process_makes_the_others_fail_naming_it(tmp_path):
    procs = _start(tmp_path, 2)
    procs[1].send_signal(signal.SIGKILL)
    outs, seconds = _finish(procs[:1], timeout=150)
    code, out, err = outs[0]
    procs[1].wait()
    assert code != 0 and seconds < 150
    lowered = err.lower()
    assert ("task 1" in lowered or "process 1" in lowered or "/task:1" in lowered), err[-3000:]
