"""A train step as one compiled program, built the same way for a run and for a measurement.

Every trainer jits its step here (`jit_step`: shardings out, state donated), and the same
function compiles from shapes alone (`abstract_state`, `structs`): no weights are made, so a
test can read the per-device program of a step on 8 fake CPU devices, and
`experiments/scaling_projection.py` the base-size step on 64, from the program a run executes.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from distilbert_jax.training.mesh import batch_sharding, replicated, tree_shardings
from distilbert_jax.training.state import TrainState


def init_state_fn(tx) -> Callable:
    def init_state(params):
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return init_state


def fresh_params(model, shardings) -> Any:
    """A `from_config(..., lazy=True)` model's random parameters, made already split over the mesh
    (MaxText's way: the init jitted with `out_shardings`), so no device ever holds them whole. JAX's
    partitionable threefry draws the values an unsplit init draws."""
    init = functools.partial(model.architecture.init_params, model.module)
    return jax.jit(init, out_shardings=shardings)(jax.random.key(model.init_seed))


def abstract_state(tx, params, mesh, axes, *, allow_replication: bool = True) -> tuple[Any, Any]:
    """(the TrainState of `params` as ShapeDtypeStructs, its NamedShardings from the parameters'
    declared logical `axes` and the rules)."""
    abstract = jax.eval_shape(init_state_fn(tx), params)
    return abstract, tree_shardings(abstract, mesh, axes, allow_replication=allow_replication)


def structs(tree, shardings) -> Any:
    """ShapeDtypeStructs carrying `shardings`: a target for restoring or compiling."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def batch_structs(shapes: dict[str, tuple[tuple[int, ...], Any]], mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """{name: (shape, dtype)} -> global batch inputs split over the batch axes."""
    return {name: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, len(shape)))
            for name, (shape, dtype) in shapes.items()}


def replicated_struct(shape, dtype, mesh) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=replicated(mesh))


def in_mesh(fn: Callable, mesh) -> Callable:
    """`fn` traced inside `mesh`, so the models' activation constraints (sharding.constrain) apply."""

    @functools.wraps(fn)
    def traced(*args):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args)

    return traced


def jit_step(step: Callable, mesh, state_shardings) -> Callable:
    """(state, ...) -> (state, metrics): state donated and laid out by the rules, metrics replicated."""
    return jax.jit(in_mesh(step, mesh), out_shardings=(state_shardings, replicated(mesh)), donate_argnums=0)
