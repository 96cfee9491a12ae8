"""Read and write weight files as flat `{pytorch_key: np.ndarray}` state dicts.

Formats: `model.safetensors`, sharded safetensors with `model.safetensors.index.json`,
`pytorch_model.bin` (torch is imported only here, and loads with `weights_only=True`), and the
former transformers Flax `flax_model.msgpack`. `open_state_dict` leaves safetensors tensors in
their files, for hosts that need only their own devices' slices (weights/lazy.py). Writes are
atomic: a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Iterable

import numpy as np

from distilbert_jax.errors import UserError
from distilbert_jax.weights.lazy import FileTensor, open_safetensors

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
FLAX_MSGPACK = "flax_model.msgpack"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, PYTORCH_BIN, FLAX_MSGPACK)  # in order of preference


def find_weight_file(directory: str) -> str:
    for name in WEIGHT_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise UserError(
        f"no weights in {directory}: expected one of {', '.join(WEIGHT_FILES)}; "
        "point at a folder written by save_pretrained"
    )


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Any supported weight file -> PyTorch-named arrays (msgpack trees are renamed on the way)."""
    return {key: np.asarray(value) for key, value in open_state_dict(path).items()}


def open_state_dict(path: str) -> dict[str, "np.ndarray | FileTensor"]:
    """Like `read_state_dict`, but safetensors tensors stay in their files as `FileTensor`s, read
    by slices when placed on devices (see weights/lazy.py); `.bin` and `.msgpack` files cannot be
    read in part, so they are read whole."""
    name = os.path.basename(path)
    if name.endswith(".index.json"):
        return _open_sharded(path)
    if name.endswith(".safetensors"):
        return open_safetensors(path)
    if name.endswith(".msgpack"):
        from distilbert_jax.weights.keymap import flax_to_state_dict

        return flax_to_state_dict(read_msgpack(path))
    if name.endswith(".bin") or name.endswith(".pt") or name.endswith(".pth"):
        return _read_torch(path)
    raise UserError(f"{path}: unknown weight format; use .safetensors, .bin or .msgpack")


def _open_sharded(index_path: str) -> dict[str, FileTensor]:
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"{index_path} is not a safetensors index with a weight_map ({err})") from None
    directory = os.path.dirname(index_path)
    state: dict[str, FileTensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(directory, shard)
        if not os.path.isfile(shard_path):
            raise UserError(f"{index_path} names shard {shard}, which is missing from {directory}")
        state.update(open_safetensors(shard_path))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise UserError(f"{index_path} lists {len(missing)} tensors not found in its shards, e.g. {missing[0]}")
    return state


def _read_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise UserError(
            f"reading {path} needs PyTorch (pip install torch); or convert it to model.safetensors first"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    out = {}
    for key, tensor in state.items():
        if not hasattr(tensor, "detach"):
            continue
        tensor = tensor.detach()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        out[key] = tensor.numpy()
    return out


def read_msgpack(path: str) -> dict:
    from flax import serialization

    try:
        with open(path, "rb") as f:
            return serialization.msgpack_restore(f.read())
    except Exception as err:  # msgpack raises several unrelated types
        raise UserError(f"{path} is not a readable Flax msgpack file ({type(err).__name__}: {err})") from None


def write_safetensors(state: dict[str, np.ndarray], path: str) -> None:
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(v) for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})


def write_msgpack(params: dict, path: str) -> None:
    from flax import serialization

    data = serialization.msgpack_serialize(_to_numpy_tree(params))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def _to_numpy_tree(tree):
    if isinstance(tree, dict):
        return {k: _to_numpy_tree(v) for k, v in tree.items()}
    return np.asarray(tree)


class atomic_path:
    """`with atomic_path(final) as tmp:` write tmp; it is renamed onto `final` only on success."""

    def __init__(self, path: str):
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        except OSError as err:
            raise UserError(f"cannot write to {directory}: {err.strerror}; choose a writable folder") from None
        os.close(fd)

    def __enter__(self) -> str:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)


def list_files(directory: str, names: Iterable[str]) -> list[str]:
    return [n for n in names if os.path.isfile(os.path.join(directory, n))]
