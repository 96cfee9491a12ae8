"""Multi-host start-up: `jax.distributed.initialize` from the environment, a no-op for one process.

Set JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID on
every process (or run under a cluster JAX detects itself: SLURM, Open MPI, Cloud TPU). On CPU the
processes exchange data over gloo, so two local processes behave like two hosts.
"""

from __future__ import annotations

import os

import jax

from distilbert_jax.errors import UserError

_initialized = False


def initialize() -> None:
    global _initialized
    if _initialized:
        return
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return  # one process: nothing to join
    try:
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
        process_id = int(os.environ["JAX_PROCESS_ID"])
    except (KeyError, ValueError):
        raise UserError("JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and JAX_PROCESS_ID must be "
                        "set to integers on every process too") from None
    jax.distributed.initialize(address, num_processes=num_processes, process_id=process_id)
    _initialized = True


def is_primary() -> bool:
    return jax.process_index() == 0
