"""Read and write weight files as flat `{pytorch_key: np.ndarray}` state dicts.

Formats: `model.safetensors`, sharded safetensors with `model.safetensors.index.json`,
`pytorch_model.bin` (torch is imported only here, and loads with `weights_only=True`), and the
former transformers Flax `flax_model.msgpack`. `open_state_dict` leaves safetensors tensors in
their files, for hosts that need only their own devices' slices (weights/lazy.py). Writes are
atomic: a crash never leaves a half-written file under the final name. They also stream: the
safetensors header needs only shapes and dtypes, so tensors (arrays, device arrays or `FileTensor`s
still in the file being converted) are read, cast and written one at a time, and converting a model
never holds a second copy of it. Sharded output is named, split and indexed as transformers does.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
from typing import Any, Iterable, Mapping

import numpy as np

from distilbert_jax.errors import UserError
from distilbert_jax.weights.lazy import FileTensor, _dtypes, open_safetensors

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


def write_safetensors(state: Mapping[str, Any], path: str, dtype: Any = None) -> int:
    """Write `state` as one safetensors file, floating tensors cast to `dtype` if given; returns the
    bytes of tensor data. Only the tensor being written is ever copied out of its source."""
    names = {dt: name for name, dt in _dtypes().items()}
    # widest dtypes first, as the safetensors library orders them, so every tensor starts aligned
    order = sorted(state, key=lambda key: -_stored_dtype(state[key].dtype, dtype).itemsize)
    entries, offset = {}, 0
    for key in order:
        value = state[key]
        stored = _stored_dtype(value.dtype, dtype)
        size = math.prod(value.shape) * stored.itemsize
        entries[key] = {"dtype": names[stored], "shape": list(value.shape), "data_offsets": [offset, offset + size]}
        offset += size
    header = json.dumps({"__metadata__": {"format": "pt"}, **entries}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data starts 8-byte aligned, as the safetensors library writes it
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        for key in order:
            f.write(_host_array(state[key], _stored_dtype(state[key].dtype, dtype)).reshape(-1).view(np.uint8).data)
    return offset


def write_weights(state: Mapping[str, Any], directory: str, *, dtype: Any = None,
                  max_shard_size: int | str = "50GB") -> list[str]:
    """`model.safetensors`, or shards `model-0000k-of-0000n.safetensors` of at most `max_shard_size`
    each plus `model.safetensors.index.json`, split and named as transformers' `save_pretrained`
    does (a tensor larger than the limit gets a shard of its own). Weight files of an earlier save
    that the new ones replace are removed, so a stale file never shadows them. Returns the names."""
    limit = parse_size(max_shard_size)
    shards: list[list[str]] = []
    current: list[str] = []
    filled = total_size = 0
    for key, value in state.items():  # huggingface_hub's split_state_dict_into_shards, step for step
        size = math.prod(value.shape) * _stored_dtype(value.dtype, dtype).itemsize
        total_size += size
        if size > limit:
            shards.append([key])
            continue
        if filled + size > limit:
            shards.append(current)
            current, filled = [], 0
        current.append(key)
        filled += size
    if current:
        shards.append(current)
    if len(shards) <= 1:
        names = [SAFETENSORS]
        write_safetensors(state, os.path.join(directory, SAFETENSORS), dtype)
    else:
        names = [f"model-{k:05d}-of-{len(shards):05d}.safetensors" for k in range(1, len(shards) + 1)]
        for name, keys in zip(names, shards):
            write_safetensors({key: state[key] for key in keys}, os.path.join(directory, name), dtype)
        index = {"metadata": {"total_parameters": sum(math.prod(v.shape) for v in state.values()),
                              "total_size": total_size},
                 "weight_map": {key: name for name, keys in zip(names, shards) for key in keys}}
        with atomic_path(os.path.join(directory, SAFETENSORS_INDEX)) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
        names.append(SAFETENSORS_INDEX)
    for stale in os.listdir(directory):
        if (stale in (SAFETENSORS, SAFETENSORS_INDEX) or _SHARD.fullmatch(stale)) and stale not in names:
            os.remove(os.path.join(directory, stale))
    return names


_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string as transformers reads `max_shard_size`: "500MB", "2GB" (powers
    of ten, as huggingface_hub parses them) or "1GiB" (powers of two)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]i?b)\s*", size, re.IGNORECASE) if isinstance(size, str) else None
    n = int(float(match[1]) * _UNITS[match[2].upper()]) if match else size
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise UserError(f"max shard size {size!r} is not a size; give bytes or a string like 500MB, 2GB or 1GiB")
    return int(n)


def stored_dtype_name(state: Mapping[str, Any], dtype: Any = None) -> str:
    """The dtype config.json records for weights written with `dtype`: that of the first floating
    tensor, as transformers records its model's."""
    for value in state.values():
        stored = _stored_dtype(value.dtype, dtype)
        if _is_float(stored):
            return stored.name
    return "float32"


def _is_float(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"  # ml_dtypes' floats are not np.floating


def _stored_dtype(source: Any, dtype: Any) -> np.dtype:
    """`dtype` for floating tensors when asked (a bf16 file of an f32 model), else the tensor's own."""
    source = np.dtype(source)
    if dtype is None or not _is_float(source):
        return source
    from distilbert_jax.precision import dtype_name

    name = dtype_name(dtype)
    return _dtypes()["BF16"] if name == "bfloat16" else np.dtype(name)


def _host_array(value: Any, dtype: np.dtype) -> np.ndarray:
    """One tensor as C-ordered host bytes of `dtype`; a `FileTensor` is cast as it is read."""
    if isinstance(value, FileTensor):
        value = value.astype(dtype)[...]
    return np.ascontiguousarray(np.asarray(value).astype(dtype, copy=False))


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
