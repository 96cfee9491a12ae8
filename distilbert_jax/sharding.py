"""The one table of logical-axis rules: how every parameter and activation maps onto the mesh.

Models name the axes of what they create (`layers.dense(..., axes=("embed", "mlp"))`, through
Flax's `nn.with_logical_partitioning`) and of the activations they hand from layer to layer
(`constrain(x, ACTIVATION)`); they never mention a mesh axis. `RULES` is the only place that
maps a logical axis to mesh axes (MaxText's `logical_axis_rules`), so the two layouts of the
brief are two mesh shapes of the same code:

* data-parallel ("pmap-style"): mesh (data=N, fsdp=1); `embed` maps to an axis of size 1, so
  every parameter is whole on every device and only the batch is split;
* fully sharded ("pjit-style"): mesh (data=1, fsdp=N); every matrix is split over `fsdp` along
  its model dimension (`embed`), optimizer state alike, and XLA gathers a layer's weights where
  a matmul needs them while activations stay split over the batch.

Outside a mesh (`jax.set_mesh`), `constrain` does nothing, so inference and single-device code
run the models as plain Flax modules.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")  # the leading (batch) dimension of every input and activation

# logical axis -> mesh axis or axes (None: replicated).
RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": BATCH_AXES,  # activations and inputs
    "length": None,
    "act_embed": None,
    "embed": "fsdp",  # the model dimension of every matrix: what FSDP splits
    "vocab": None,
    "positions": None,
    "types": None,
    "heads": None,  # q/k/v outputs and the attention output's input
    "mlp": None,
    "hidden": None,  # the output of a square D -> D layer (poolers, MLM transform, pre-classifier)
    "classes": None,
    "norm": None,  # LayerNorm scales and biases
}

ACTIVATION = ("batch", "length", "act_embed")


def partitioned(init: Callable, axes: tuple[str | None, ...]) -> Callable:
    """An initializer whose parameter carries its logical axes (read back by `declared_axes`)."""
    unknown = [a for a in axes if a is not None and a not in RULES]
    if unknown:
        raise ValueError(f"logical axes {unknown} are not in sharding.RULES")
    return nn.with_logical_partitioning(init, axes)


def mesh_spec(logical: tuple[str | None, ...]) -> PartitionSpec:
    return PartitionSpec(*(RULES.get(a) if a is not None else None for a in logical))


def constrain(x, logical: tuple[str | None, ...] = ACTIVATION):
    """Pin an activation's layout by its logical axes; a no-op outside a mesh context."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(MESH_AXES) <= set(mesh.axis_names):
        return x
    return jax.lax.with_sharding_constraint(x, mesh_spec(logical))


def declared_axes(module, dummy_input_ids) -> dict[tuple[str, ...], tuple[str | None, ...]]:
    """{parameter path: logical axes} as the module declares them when it creates its parameters."""
    from flax.traverse_util import flatten_dict

    boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), dummy_input_ids)["params"])
    out = {}
    for path, leaf in flatten_dict(boxed, is_leaf=lambda _, x: isinstance(x, nn.LogicallyPartitioned)).items():
        if isinstance(leaf, nn.LogicallyPartitioned):
            out[path] = tuple(leaf.names)
        else:
            raise ValueError(f"parameter {'/'.join(path)} was created without logical axes; declare them with "
                             "sharding.partitioned")
    return out


def unbox(tree: Any) -> Any:
    """Plain arrays (or ShapeDtypeStructs) from a freshly initialised, axis-annotated tree."""
    return nn.unbox(tree)
