"""The distillation step's arguments from shapes alone, for compiling it without any weights.

`abstract_inputs` gives (state, batch, teacher params, masking tables, key) as ShapeDtypeStructs
laid out as a run lays them out, so `program.jit_step(make_train_step(...)).lower(*inputs)` is the
per-device program a run on that mesh executes: tests/test_scaling.py and
`experiments/scaling_projection.py` measure it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from distilbert_jax.distill.step import Model
from distilbert_jax.training import program
from distilbert_jax.training.mesh import tree_shardings


def abstract_inputs(student: Model, teacher: Model | None, tx, mesh, *, batch: int, length: int,
                    shard_teacher: bool = False, allow_replication: bool = True) -> tuple[tuple, Any]:
    """((state, batch, teacher_params, tables, key) as ShapeDtypeStructs, the state's shardings)."""
    abstract, state_sh = program.abstract_state(tx, student.abstract_params(), mesh,
                                                student.param_axes(), allow_replication=allow_replication)
    rows = ((batch, length), jnp.int32)
    arrays = program.batch_structs({"input_ids": rows, "attention_mask": rows}, mesh)
    t_params = None
    if teacher is not None:
        t_abstract = teacher.abstract_params()
        t_params = program.structs(t_abstract, tree_shardings(t_abstract, mesh, teacher.param_axes(),
                                                              replicate=not shard_teacher,
                                                              allow_replication=allow_replication))
    vocab = student.config.vocab_size
    tables = {"weights": program.replicated_struct((vocab,), jnp.float32, mesh),
              "replacement_ids": program.replicated_struct((vocab - 5,), jnp.int32, mesh)}
    key = program.replicated_struct((), jax.random.key(0).dtype, mesh)
    return (program.structs(abstract, state_sh), arrays, t_params, tables, key), state_sh
