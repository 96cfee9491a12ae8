"""The trained model as an HF-format folder, written by process 0 from every host's shards.

`process_allgather` would give every host the whole model; on a cluster only process 0 writes the
folder, so only process 0 should hold it. Each process writes the shards its devices own (one
replica of each) to `<folder>.parts/process-N.safetensors` on the run's shared filesystem (the one
Orbax already needs for checkpoints); after a barrier process 0 reads them back by memory map,
assembles one parameter at a time and writes the folder; a second barrier holds the others until
the folder exists. With one process this is a `device_get`.
"""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from distilbert_jax.pretrained import PretrainedModel
from distilbert_jax.training.distributed import barrier
from distilbert_jax.weights import files
from distilbert_jax.weights.lazy import open_safetensors


def export(model: PretrainedModel, params, directory: str) -> str:
    """`params` (global arrays) saved as `model`'s architecture in `directory`, by process 0."""
    if jax.process_count() == 1:
        host = jax.device_get(params)
    else:
        host = gather_to_primary(params, directory + ".parts")
    if jax.process_index() == 0:
        PretrainedModel(model.config, model.architecture, host, tokenizer=model.tokenizer).save_pretrained(directory)
    barrier(f"export {directory}")
    return directory


def _block_key(path: str, index: tuple[slice, ...], shape: tuple[int, ...]) -> str:
    bounds = ",".join(f"{s.start or 0}:{size if s.stop is None else s.stop}" for s, size in zip(index, shape))
    return f"{path}@{bounds}"


def gather_to_primary(params, parts: str):
    """The whole `params` tree as NumPy on process 0 (None elsewhere), through shard files in `parts`."""
    flat = flatten_dict(params, sep="/")
    mine = {}
    for path, array in flat.items():
        for shard in array.addressable_shards:
            if shard.replica_id == 0:  # one copy of each block, written by whichever host owns it
                mine[_block_key(path, shard.index, array.shape)] = np.asarray(shard.data)
    if jax.process_index() == 0:
        shutil.rmtree(parts, ignore_errors=True)  # pieces of an earlier, interrupted export
    barrier(f"clear {parts}")
    files.write_safetensors(mine, os.path.join(parts, f"process-{jax.process_index()}.safetensors"))
    barrier(f"write {parts}")
    if jax.process_index() != 0:
        return None
    pieces: dict[str, list] = {}
    for name in sorted(os.listdir(parts)):
        for key, block in open_safetensors(os.path.join(parts, name)).items():
            path, bounds = key.rsplit("@", 1)
            index = tuple(slice(*map(int, b.split(":"))) for b in bounds.split(",")) if bounds else ()
            pieces.setdefault(path, []).append((index, block))
    whole = {}
    for path, array in flat.items():
        out = np.empty(array.shape, array.dtype)
        covered = 0
        for index, block in pieces.pop(path, []):
            out[index] = block[...]
            covered += block.size
        if covered != out.size:
            raise RuntimeError(f"export: the shards of {path} cover {covered} of its {out.size} values")
        whole[path] = out
    shutil.rmtree(parts, ignore_errors=True)
    return unflatten_dict(whole, sep="/")
