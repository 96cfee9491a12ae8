"""The one device mesh and the one table of sharding rules every training run uses.

The mesh has two axes, `data` and `fsdp`; the batch is split over both. Parameters carry logical
axis names derived from their path (`q_lin/kernel` is [embed, heads], `lin2/kernel` is [mlp,
embed], ...) and `RULES` maps logical names to mesh axes. Only `embed` maps to a mesh axis, `fsdp`,
so the two layouts the brief asks for are two mesh shapes of the same code:

* data-parallel ("pmap-style"): mesh (data=N, fsdp=1), every parameter replicated;
* fully sharded ("pjit-style"): mesh (data=1, fsdp=N), every matrix split over `fsdp` along its
  model dimension, optimizer state alike, gathered by XLA where a matmul needs it.

Axes whose size does not divide the mesh axis stay replicated (tiny test vocabularies), so any
model runs on any mesh. Optimizer states are sharded by the same rules: their leaves sit under
the same parameter names.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from distilbert_jax.errors import UserError

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")  # the leading (batch) dimension of every input

# logical axis -> mesh axis (None: replicated). The one table of sharding rules.
RULES: dict[str, str | None] = {
    "embed": "fsdp",
    "vocab": None,
    "heads": None,
    "mlp": None,
    "positions": None,
}

# (parameter-name fragment, leaf) -> logical axes of a 2-D leaf; matched against the path's names.
_MATRIX_AXES: tuple[tuple[tuple[str, ...], tuple[str | None, str | None]], ...] = (
    (("word_embeddings",), ("vocab", "embed")),
    (("position_embeddings",), ("positions", "embed")),
    (("token_type_embeddings",), (None, "embed")),
    (("q_lin",), ("embed", "heads")), (("k_lin",), ("embed", "heads")), (("v_lin",), ("embed", "heads")),
    (("query",), ("embed", "heads")), (("key",), ("embed", "heads")), (("value",), ("embed", "heads")),
    (("out_lin",), ("heads", "embed")), (("attention", "output", "dense"), ("heads", "embed")),
    (("lin1",), ("embed", "mlp")), (("intermediate", "dense"), ("embed", "mlp")),
    (("lin2",), ("mlp", "embed")), (("output", "dense"), ("mlp", "embed")),
    (("vocab_projector",), ("embed", "vocab")), (("decoder",), ("embed", "vocab")),
)


@dataclasses.dataclass(frozen=True)
class MeshShape:
    """`-1` for one axis fills it with the remaining devices (MaxText's convention)."""

    data: int = -1
    fsdp: int = 1

    def resolve(self, num_devices: int) -> tuple[int, int]:
        data, fsdp = self.data, self.fsdp
        if data == -1 and fsdp == -1:
            raise UserError("mesh: at most one of mesh_data and mesh_fsdp may be -1")
        if data == -1:
            data = num_devices // max(fsdp, 1)
        if fsdp == -1:
            fsdp = num_devices // max(data, 1)
        if data < 1 or fsdp < 1 or data * fsdp != num_devices:
            raise UserError(
                f"mesh data={self.data} x fsdp={self.fsdp} does not use the {num_devices} devices; "
                f"choose sizes whose product is {num_devices} (or -1 for one of them)"
            )
        return data, fsdp


def make_mesh(shape: MeshShape = MeshShape(), devices=None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    data, fsdp = shape.resolve(len(devices))
    grid = np.asarray(devices, dtype=object).reshape(data, fsdp)
    return Mesh(grid, AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def _names(path) -> tuple[str, ...]:
    out = []
    for entry in path:
        key = getattr(entry, "key", getattr(entry, "name", None))
        if isinstance(key, str):
            out.append(key)
    return tuple(out)


def _contains(names: tuple[str, ...], fragment: tuple[str, ...]) -> bool:
    n = len(fragment)
    return any(names[i : i + n] == fragment for i in range(len(names) - n + 1))


def logical_axes(names: tuple[str, ...], ndim: int) -> tuple[str | None, ...]:
    """Logical axes of a parameter (or of an optimizer-state leaf under that parameter's name)."""
    if ndim == 2:
        for fragment, axes in _MATRIX_AXES:
            if _contains(names, fragment):
                return axes
        if names and names[-1] == "kernel":
            return ("embed", None)  # heads and poolers: [dim, outputs]
    if ndim == 1 and names and names[-1] in ("scale", "bias"):
        return (None,)
    return (None,) * ndim


def spec_for(names: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    axes = []
    for size, logical in zip(shape, logical_axes(names, len(shape))):
        mesh_axis = RULES.get(logical) if logical else None
        if mesh_axis is not None and size % mesh.shape[mesh_axis] != 0:
            mesh_axis = None  # indivisible: replicate this dimension rather than fail
        axes.append(mesh_axis)
    return PartitionSpec(*axes)


def tree_shardings(tree: Any, mesh: Mesh, *, replicate: bool = False) -> Any:
    """NamedShardings for a pytree of arrays or ShapeDtypeStructs (params, optimizer state)."""

    def one(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        if replicate or not shape:
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, spec_for(_names(path), shape, mesh))

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows -> one global array per input, split over the batch axes.

    With one process this is a device_put; with several, each process passes its own rows and
    JAX stitches them together without any host gathering the whole batch.
    """
    out = {}
    for name, value in local.items():
        sharding = batch_sharding(mesh, value.ndim)
        out[name] = jax.make_array_from_process_local_data(sharding, value)
    return out


def check_batch_divisible(global_rows: int, mesh: Mesh) -> None:
    ways = math.prod(mesh.shape[a] for a in BATCH_AXES)
    if global_rows % ways:
        raise UserError(
            f"batch_size={global_rows} does not split over the {ways} devices of the batch axes; "
            f"use a multiple of {ways}"
        )
