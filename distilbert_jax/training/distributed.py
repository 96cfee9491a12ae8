"""Multi-host start-up: one `jax.distributed.initialize` for every way a cluster starts processes.

The same command runs on every host; what this module reads decides how they join (`plan`):

- JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID,
  set explicitly (a Kubernetes Indexed Job may leave JAX_PROCESS_ID out: JOB_COMPLETION_INDEX is
  the process index there);
- a cluster JAX detects itself, through `jax.distributed.initialize()` with no arguments: SLURM
  (`srun`: SLURM_JOB_ID, SLURM_NTASKS, SLURM_PROCID, ...), Open MPI (`mpirun`: OMPI_MCA_orte_hnp_uri,
  OMPI_COMM_WORLD_SIZE), and Cloud TPU VMs (the metadata server), as MaxText does on a slice;
- otherwise one process, which never waits for a coordinator (nor does a SLURM or MPI job of one
  task).

A half-configured environment (a process count without an address, a SLURM step whose variables
are incomplete) is a one-line error rather than a hang or a silent solo run. On CPU the processes
exchange data over gloo, so local processes behave like hosts (the tests run them so).
DISTILBERT_JAX_HEARTBEAT_S sets how long the others wait for a process that died (JAX's default:
100 s) before failing with its index.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Mapping

import jax

from distilbert_jax.errors import UserError

_initialized = False
_EXPLICIT = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
# What JAX's SLURM detection reads (jax/_src/clusters/slurm_cluster.py)
_SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
HEARTBEAT_ENV = "DISTILBERT_JAX_HEARTBEAT_S"


def _int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise UserError(f"{name}={environ[name]!r} must be an integer") from None


def plan(environ: Mapping[str, str] = os.environ) -> tuple[str, dict]:
    """(how, arguments for jax.distributed.initialize): how is "single", "explicit", "slurm",
    "mpi" or "tpu". Reads the environment only; raises a UserError for a half-configured one."""
    explicit = {name: environ[name] for name in _EXPLICIT if environ.get(name)}
    if "JAX_PROCESS_ID" not in explicit and "JOB_COMPLETION_INDEX" in environ and explicit:
        explicit["JAX_PROCESS_ID"] = environ["JOB_COMPLETION_INDEX"]  # a Kubernetes Indexed Job
    if explicit:
        missing = [name for name in _EXPLICIT if name not in explicit]
        if missing:
            raise UserError(f"{', '.join(sorted(explicit))} set but {', '.join(missing)} not: set all of "
                            "JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and "
                            "JAX_PROCESS_ID on every process, or none of them")
        count, index = _int(explicit, "JAX_NUM_PROCESSES"), _int(explicit, "JAX_PROCESS_ID")
        if not 0 <= index < count:
            raise UserError(f"JAX_PROCESS_ID={index} must be in [0, JAX_NUM_PROCESSES={count})")
        if count == 1:
            return "single", {}
        return "explicit", {"coordinator_address": explicit["JAX_COORDINATOR_ADDRESS"], "num_processes": count,
                            "process_id": index}
    if "SLURM_JOB_ID" in environ and "SLURM_NTASKS" in environ:
        if _int(environ, "SLURM_NTASKS") <= 1:
            return "single", {}
        missing = [name for name in _SLURM if name not in environ]
        if missing:
            raise UserError(f"a SLURM job of {environ['SLURM_NTASKS']} tasks without {', '.join(missing)}: start "
                            "one process per task with srun (srun distilbert-jax ...), not from the batch script")
        return "slurm", {}
    if "OMPI_MCA_orte_hnp_uri" in environ:
        return ("mpi", {}) if int(environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1 else ("single", {})
    from distilbert_jax.host_settings import expected_platform

    if expected_platform() == "tpu":
        return "tpu", {}  # JAX reads the slice's hosts from the TPU metadata; one host is a slice of one
    return "single", {}


def initialize() -> str:
    """Join the run's other processes (once per process); returns how (see `plan`)."""
    global _initialized
    how, kwargs = plan()
    if _initialized or how == "single":
        return how
    if os.environ.get(HEARTBEAT_ENV):
        kwargs["heartbeat_timeout_seconds"] = _int(os.environ, HEARTBEAT_ENV)
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as err:
        raise UserError(f"joining the other processes ({how}) failed: {str(err).splitlines()[0]}") from None
    _initialized = True
    return how


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (a no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# What a collective reports when a peer vanished (gloo on CPU, NCCL on GPU, the coordination service)
_LOST_PEER = ("gloo", "nccl", "connection", "unavailable", "heartbeat", "deadline_exceeded", "peer")


def is_lost_peer(err: BaseException) -> bool:
    """A runtime error of a multi-process run that says another process went away."""
    return (jax.process_count() > 1 and isinstance(err, jax.errors.JaxRuntimeError)
            and any(word in str(err).lower() for word in _LOST_PEER))


def exit_lost_peer(err: BaseException) -> None:
    """One line instead of a traceback, the lost processes named once the coordinator knows them
    (within the heartbeat timeout), then exit 1 at once: a normal exit would wait at JAX's shutdown
    barrier for the process that died. Checkpoints are whole or absent (Orbax renames a finished
    one into place), so the same command resumes from the last one."""
    first = str(err).strip().splitlines()[0][:240] if str(err).strip() else type(err).__name__
    print(f"error: a collective with the other processes failed ({first}); waiting for the coordinator to "
          "name the process that went away", file=sys.stderr, flush=True)
    lost = _lost_processes(int(os.environ.get(HEARTBEAT_ENV) or 100) + 5)
    who = f"process {', '.join(map(str, lost))} of {jax.process_count()}" if lost else "another process"
    print(f"error: {who} stopped responding; its log (WORKDIR/logs/process-N.log) or the scheduler says why. "
          "The last checkpoint is intact: run the same command again on every host to resume",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def _lost_processes(timeout: float) -> list[int]:
    """The processes the coordination service no longer hears from ([] if it cannot say). JAX's own
    error polling may end this process first, with a message that names them too."""
    try:
        from jax._src import distributed as jax_distributed  # get_live_nodes has no public wrapper

        client, count = jax_distributed.global_state.client, jax.process_count()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lost = sorted(set(range(count)) - set(client.get_live_nodes(list(range(count)))))
            if lost:
                return lost
            time.sleep(0.5)
    except Exception:  # noqa: BLE001 (a private API: any failure means "cannot say")
        pass
    return []
