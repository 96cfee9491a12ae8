"""A prepared dataset split, memory-mapped: sequence i is tokens[offsets[i]:offsets[i+1]].

Opening costs nothing whatever the corpus size (the OS pages tokens in as batches touch them);
only the int64 offsets (8 bytes per sequence) are read when `lengths` is first asked for.
Everything is checked against the manifest on open, so a truncated copy or a folder from a
different format version is a clear error, not wrong training data.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from distilbert_jax.data.prepare import (COUNTS, FORMAT, FORMAT_VERSION, MANIFEST, SPLITS, offsets_file,
                                         token_dtype, tokens_file)
from distilbert_jax.errors import UserError

_PREPARE_HINT = "prepare it with `distilbert-jax prepare-data`"


def _read_manifest(directory: str) -> dict:
    if not os.path.isdir(directory):
        raise UserError(f"dataset folder {directory} does not exist; {_PREPARE_HINT}")
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise UserError(f"{directory} is not a prepared dataset (no {MANIFEST}); {_PREPARE_HINT}")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not readable JSON ({err}); prepare the dataset again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not a {FORMAT} manifest; {_PREPARE_HINT}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{directory} was prepared in format version {manifest.get('format_version')!r}, "
                        f"this code reads version {FORMAT_VERSION}; prepare the dataset again")
    return manifest


class TokenDataset:
    """One split of a prepared dataset. `ds[i]` is an int32 array [CLS] ... [SEP]."""

    def __init__(self, directory: str, split: str, manifest: dict, tokens: np.ndarray, offsets: np.ndarray):
        self.directory, self.split, self.manifest = directory, split, manifest
        self.tokens, self.offsets = tokens, offsets
        self.vocab_size = int(manifest["vocab_size"])
        self.special_ids = {k: int(v) for k, v in manifest["special_ids"].items()}

    @classmethod
    def open(cls, directory, split: str = "train") -> "TokenDataset":
        directory = os.fspath(directory)
        if split not in SPLITS:
            raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        manifest = _read_manifest(directory)
        try:
            vocab_size = int(manifest["vocab_size"])
            expected = manifest["splits"][split]["sequences"], manifest["splits"][split]["tokens"]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{directory}/{MANIFEST} lacks vocab_size or split sizes; "
                            "prepare the dataset again") from None
        dtype = token_dtype(vocab_size)
        tokens_path = os.path.join(directory, tokens_file(split))
        offsets_path = os.path.join(directory, offsets_file(split))
        for path in (tokens_path, offsets_path):
            if not os.path.isfile(path):
                raise UserError(f"{path} is missing; the dataset is incomplete, prepare it again")
        try:
            offsets = np.load(offsets_path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise UserError(f"{offsets_path} is not a readable .npy file ({err}); prepare the dataset again") from None
        size = os.path.getsize(tokens_path)
        n_tokens = size // dtype.itemsize
        if (offsets.ndim != 1 or offsets.dtype != np.int64 or len(offsets) != expected[0] + 1
                or size != expected[1] * dtype.itemsize or n_tokens != expected[1] or int(offsets[-1]) != n_tokens):
            raise UserError(f"{directory}: the {split} files do not match the manifest ({len(offsets) - 1} sequences "
                            f"and {n_tokens} tokens on disk, {expected[0]} and {expected[1]} expected); "
                            "the copy is truncated or mixed up, prepare it again")
        # np.memmap refuses empty files (a held-out split of 0 sequences): an empty array is the same thing.
        tokens = np.memmap(tokens_path, dtype=dtype, mode="r") if size else np.zeros(0, dtype)
        return cls(directory, split, manifest, tokens, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i) -> np.ndarray:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"sequence {i} out of range for {n} sequences")
        i %= n
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]], np.int32)

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(np.asarray(self.offsets)).astype(np.int64)

    @functools.cached_property
    def counts(self) -> np.ndarray:
        """Token counts over the train split (what masking weights are computed from)."""
        path = os.path.join(self.directory, COUNTS)
        try:
            counts = np.load(path)
        except (OSError, ValueError) as err:
            raise UserError(f"{path} is missing or unreadable ({err}); prepare the dataset again") from None
        if counts.shape != (self.vocab_size,):
            raise UserError(f"{path} has shape {counts.shape}, expected ({self.vocab_size},); "
                            "prepare the dataset again")
        return counts

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def max_length(self) -> int:
        return int(self.lengths.max()) if len(self) else 0

    pad_id = property(lambda self: self.special_ids["pad"])
    unk_id = property(lambda self: self.special_ids["unk"])
    cls_id = property(lambda self: self.special_ids["cls"])
    sep_id = property(lambda self: self.special_ids["sep"])
    mask_id = property(lambda self: self.special_ids["mask"])

    def __repr__(self) -> str:
        return f"TokenDataset({self.directory!r}, split={self.split!r}, sequences={len(self)})"
