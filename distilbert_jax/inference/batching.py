"""Pad token lists into a few static shapes.

XLA compiles one program per input shape. Lengths are rounded up to a bucket and the number
of rows to a power of two (capped at the batch size), so any stream of texts runs on at most
len(buckets) * log2(batch_size) programs, and a second run finds them in the persistent cache.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from distilbert_jax.data.buckets import DEFAULT_BUCKETS, bucket_length, buckets_up_to  # noqa: F401 (re-exported)
from distilbert_jax.errors import UserError

def _rows(n: int, batch_size: int) -> int:
    return min(batch_size, 1 << max(n - 1, 0).bit_length())


@dataclasses.dataclass
class Batch:
    index: list[int]  # positions of these rows in the caller's list; padding rows are not listed
    input_ids: np.ndarray  # [rows, bucket] int32
    attention_mask: np.ndarray  # [rows, bucket] int32


def padded_batches(sequences: Sequence[Sequence[int]], *, batch_size: int, buckets: Sequence[int],
                   pad_id: int) -> Iterator[Batch]:
    """Group sequences of similar length (sorted), pad each group to its bucket and row count."""
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        length = bucket_length(max(len(sequences[i]) for i in index), buckets)
        rows = _rows(len(index), batch_size)
        ids = np.full((rows, length), pad_id, np.int32)
        mask = np.zeros((rows, length), np.int32)
        for row, i in enumerate(index):
            seq = sequences[i]
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        yield Batch(index, ids, mask)
