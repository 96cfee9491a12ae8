"""Tensors that stay in their weight file until a device asks for its slice.

On a cluster every host opens the same `model.safetensors`, but each should hold only what its
own devices need: in the fully sharded layout that is 1/hosts of every matrix. A `FileTensor`
is a memory-mapped view of one tensor of the file (safetensors is a JSON header and raw
little-endian bytes, so a view costs nothing); `tensor[index]` copies out just that block, in
the orientation and dtype the model wants (a PyTorch Linear weight is read transposed as a Flax
kernel without ever building the whole transpose). `training.mesh.place` calls it once per
device shard, so a host reads only its devices' slices. `bytes_read()` counts what this
process copied out of weight files: the measure of host memory that tests assert on.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any

import numpy as np

from distilbert_jax.errors import UserError

_READ = [0]  # bytes copied out of weight files by this process


def bytes_read() -> int:
    return _READ[0]


def _dtypes() -> dict[str, np.dtype]:
    import ml_dtypes  # ships with JAX: the 16- and 8-bit floats NumPy lacks

    return {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
            "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
            "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
            "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U64": np.dtype("<u8"), "U32": np.dtype("<u4"),
            "U16": np.dtype("<u2"), "U8": np.dtype("u1"), "BOOL": np.dtype("?")}


class FileTensor:
    """A read-only tensor backed by a file mapping: `shape`, `dtype`, `[index]` and `np.asarray`.

    `.T` and `.astype` return new views (nothing is read); indexing returns a fresh NumPy array
    holding only the block asked for.
    """

    __slots__ = ("_stored", "_transposed", "shape", "dtype")

    def __init__(self, stored: np.ndarray, dtype: Any = None, transposed: bool = False):
        self._stored = stored
        self._transposed = transposed
        self.shape = tuple(stored.shape[::-1] if transposed else stored.shape)
        self.dtype = np.dtype(dtype if dtype is not None else stored.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def T(self) -> "FileTensor":  # noqa: N802 (NumPy's name)
        return FileTensor(self._stored, self.dtype, not self._transposed)

    def astype(self, dtype: Any) -> "FileTensor":
        return FileTensor(self._stored, dtype, self._transposed)

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        if self._transposed:
            index = tuple(reversed(index + (slice(None),) * (self.ndim - len(index))))
            block = self._stored[index].T
        else:
            block = self._stored[index]
        out = np.array(block, dtype=self.dtype, copy=True)
        _READ[0] += out.nbytes
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"FileTensor(shape={self.shape}, dtype={self.dtype})"


def open_safetensors(path: str) -> dict[str, FileTensor]:
    """{key: FileTensor} of a safetensors file, read by mapping it: no tensor data is read yet."""
    bad = f"{path} is not a readable safetensors file"
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise UserError(f"{bad} (it is {size} bytes long); re-download or re-convert it")
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                raise UserError(f"{bad} (its header claims {length} bytes); re-download or re-convert it")
            header = json.loads(f.read(length))
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{bad} (its header is not JSON: {err}); re-download or re-convert it") from None
    header.pop("__metadata__", None)
    start = 8 + length
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=start) if size > start else np.zeros(0, np.uint8)
    dtypes = _dtypes()
    out = {}
    for key, entry in header.items():
        try:
            dtype, shape, (begin, end) = dtypes[entry["dtype"]], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{bad}: tensor {key} has an unknown dtype or no shape/offsets "
                            f"({entry!r:.120}); re-convert it") from None
        if end - begin != math.prod(shape) * dtype.itemsize or not 0 <= begin <= end <= data.size:
            raise UserError(f"{bad}: tensor {key} of shape {shape} does not fit its byte range [{begin}, {end}) "
                            "(a truncated download?); re-download or re-convert it")
        out[key] = FileTensor(data[begin:end].view(dtype).reshape(shape))
    return out
