"""The one device mesh every run uses, and parameter shardings from the declared logical axes.

The mesh has two axes, `data` and `fsdp`, built topology-aware by `jax.make_mesh` (devices of one
host are adjacent along `fsdp`, hosts follow each other along `data`). What goes where is not
decided here: models declare each parameter's logical axes when they create it, and
`distilbert_jax.sharding.RULES` maps logical axes to mesh axes (see that module for the two
layouts). `tree_shardings` applies the rules to any tree whose leaves sit under parameter names:
the parameters themselves, the optimizer's moments and accumulators, a whole TrainState.

A dimension the mesh axis does not divide is an error that names the parameter, its shape and
the axis; `allow_replication=True` keeps such a dimension whole instead (tiny test models).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from distilbert_jax.errors import UserError
from distilbert_jax.sharding import BATCH_AXES, MESH_AXES, RULES
from distilbert_jax.weights.lazy import FileTensor

Axes = dict[tuple[str, ...], tuple[str | None, ...]]  # {parameter path: logical axes}


@dataclasses.dataclass(frozen=True)
class MeshShape:
    """`-1` for one axis fills it with the remaining devices (MaxText's convention)."""

    data: int = -1
    fsdp: int = 1
    allow_replication: bool = True  # False: a parameter dimension the mesh does not divide is an error

    def resolve(self, num_devices: int) -> tuple[int, int]:
        data, fsdp = self.data, self.fsdp
        if data == -1 and fsdp == -1:
            raise UserError("mesh: at most one of mesh.data and mesh.fsdp may be -1")
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
    """The (data, fsdp) mesh over `devices` (default: all of them, every host's).

    `jax.make_mesh` orders the devices by their interconnect, so `fsdp`, the axis that moves
    the most bytes (every layer's weights), runs within a host, and `data` across hosts.
    """
    devices = list(devices if devices is not None else jax.devices())
    data, fsdp = shape.resolve(len(devices))
    types = (AxisType.Auto, AxisType.Auto)
    hosts = len({d.process_index for d in devices})
    try:
        if hosts > 1 and data % hosts == 0:  # each host a block of `data`, its devices along fsdp
            from jax.experimental import mesh_utils

            grid = mesh_utils.create_hybrid_device_mesh((data // hosts, fsdp), (hosts, 1), devices,
                                                        process_is_granule=True)
            return Mesh(grid, MESH_AXES, axis_types=types)
        return jax.make_mesh((data, fsdp), MESH_AXES, axis_types=types, devices=devices)
    except (ValueError, RuntimeError, AssertionError):  # a layout they cannot tile (NotImplemented too): device order
        pass
    grid = np.asarray(devices, dtype=object).reshape(data, fsdp)
    return Mesh(grid, MESH_AXES, axis_types=types)


def _names(path) -> tuple[str, ...]:
    out = []
    for entry in path:
        key = getattr(entry, "key", getattr(entry, "name", None))
        if isinstance(key, str):
            out.append(key)
    return tuple(out)


def _declared(names: tuple[str, ...], axes: Axes) -> tuple[str | None, ...] | None:
    """The logical axes of the parameter whose path ends `names` (optimizer leaves sit under it)."""
    for start in range(len(names)):
        found = axes.get(names[start:])
        if found is not None:
            return found
    return None


def spec_for(names: tuple[str, ...], shape: tuple[int, ...], logical: tuple[str | None, ...], mesh: Mesh, *,
             allow_replication: bool = True) -> PartitionSpec:
    """The mesh layout of one leaf from its logical axes and the rules, checked for divisibility."""
    spec = []
    for size, name in zip(shape, logical):
        mesh_axis = RULES.get(name) if name is not None else None
        ways = 1 if mesh_axis is None else math.prod(
            mesh.shape[a] for a in ((mesh_axis,) if isinstance(mesh_axis, str) else mesh_axis))
        if size % ways:
            if not allow_replication:
                raise UserError(
                    f"parameter {'/'.join(names)} of shape {tuple(shape)}: its {name} dimension ({size}) does not "
                    f"split over the {ways} devices of mesh axis {mesh_axis}; choose a mesh size that divides it, "
                    "or allow replication (--set mesh.allow_replication=True) to keep that dimension whole")
            mesh_axis = None
        spec.append(mesh_axis)
    return PartitionSpec(*spec)


def tree_shardings(tree: Any, mesh: Mesh, axes: Axes | None = None, *, replicate: bool = False,
                   allow_replication: bool = True) -> Any:
    """NamedShardings for a pytree of arrays or ShapeDtypeStructs whose leaves sit under parameter
    names (params, optimizer state, a TrainState); `axes` from `Architecture.param_axes`.
    Leaves that are no parameter's (step counters) and everything under `replicate` stay whole."""

    def one(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        names = _names(path)
        logical = None if replicate or not shape or axes is None else _declared(names, axes)
        if logical is None or len(logical) != len(shape):
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, spec_for(names, shape, logical, mesh, allow_replication=allow_replication))

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


def place(tree: Any, shardings: Any) -> Any:
    """Host arrays or `FileTensor`s (a lazy load) onto their shardings, each process building only
    the shards of its own devices.

    `jax.device_put` of a host value onto a sharding that spans processes first checks that every
    process passed the same value, by gathering it from every process: the whole model through
    every host at start-up. Here each process cuts its devices' slices from its own copy or, for a
    `FileTensor`, reads just those slices from the weight file (once per distinct slice: devices
    that replicate a block share one read), and nothing crosses hosts.
    """
    single = jax.process_count() == 1

    def put(value, sharding):
        if single and not isinstance(value, FileTensor):
            return jax.device_put(value, sharding)
        host = value if isinstance(value, FileTensor) else np.asarray(value)
        blocks: dict[str, np.ndarray] = {}

        def block(index):
            key = repr(index)
            if key not in blocks:
                blocks[key] = host[index]
            return blocks[key]

        return jax.make_array_from_callback(host.shape, sharding, block)

    return jax.tree.map(put, tree, shardings)


def check_batch_divisible(global_rows: int, mesh: Mesh) -> None:
    ways = math.prod(mesh.shape[a] for a in BATCH_AXES)
    if global_rows % ways:
        raise UserError(
            f"batch_size={global_rows} does not split over the {ways} devices of the batch axes; "
            f"use a multiple of {ways}"
        )
