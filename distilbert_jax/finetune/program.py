"""The fine-tuning step's arguments from shapes alone, for compiling it without any weights.

The batch a head's step takes (`batch_shapes`) is what `finetune.batches.collate` builds, so
`program.jit_step(make_train_step(...)).lower(*abstract_inputs(...)[0])` is the program a
fine-tuning run executes on that mesh (tests/test_scaling.py reads it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distilbert_jax.training import program


def batch_shapes(kind: str, batch: int, length: int) -> dict[str, tuple[tuple[int, ...], object]]:
    tokens, rows = ((batch, length), jnp.int32), ((batch,), jnp.int32)
    shapes = {"input_ids": tokens, "attention_mask": tokens, "token_type_ids": tokens,
              "weight": ((batch,), jnp.float32)}
    if kind == "classification":
        shapes["label"] = rows
    elif kind == "regression":
        shapes["label"] = ((batch,), jnp.float32)
    elif kind == "token":
        shapes["token_labels"] = tokens
    elif kind == "span":
        shapes["start_positions"] = shapes["end_positions"] = rows
    return shapes


def abstract_inputs(architecture, module, kind: str, tx, mesh, *, batch: int, length: int,
                    allow_replication: bool = True) -> tuple[tuple, object]:
    """((state, batch, key) of a head's step as ShapeDtypeStructs, the state's shardings)."""
    abstract, state_sh = program.abstract_state(tx, architecture.abstract_params(module), mesh,
                                                architecture.param_axes(module), allow_replication=allow_replication)
    args = (program.structs(abstract, state_sh), program.batch_structs(batch_shapes(kind, batch, length), mesh),
            program.replicated_struct((), jax.random.key(0).dtype, mesh))
    return args, state_sh
