"""The one bucket policy: every padded shape in the project is a bucket length from here.

XLA compiles one program per input shape, so texts are padded up to the smallest bucket that
holds the longest of a batch. Inference, fine-tuning and distillation batches, and the
tokenizer's `bucket_lengths`, all pick their length with `bucket_length`; lists are clipped to a
model's or a dataset's longest sequence with `buckets_up_to` and `clip_to_longest`.
"""

from __future__ import annotations

from typing import Sequence

from distilbert_jax.errors import UserError

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding `length` tokens."""
    for b in sorted(buckets):
        if length <= b:
            return b
    raise UserError(f"input of {length} tokens is longer than the largest bucket ({max(buckets)} tokens)")


def buckets_up_to(max_length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> tuple[int, ...]:
    """The buckets below a maximum length, which is always a bucket itself."""
    return tuple(b for b in sorted(buckets) if b < max_length) + (max_length,)


def clip_to_longest(buckets: Sequence[int], longest: int) -> tuple[int, ...]:
    """Keep the buckets below the longest sequence plus the first one that holds it: larger ones
    would never be used, and keeping the listed values keeps shapes tile-friendly."""
    values = sorted(set(buckets))
    if not values:
        raise UserError("buckets must name at least one length")
    if values[-1] < longest:
        raise UserError(f"the dataset has sequences of {longest} tokens but the largest bucket is {values[-1]}; "
                        "add a bucket at least that long")
    return tuple(b for b in values if b < longest) + (bucket_length(longest, values),)
