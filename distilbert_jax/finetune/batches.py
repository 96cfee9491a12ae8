"""Padded batches of fine-tuning features, for training (shuffled, resumable) and for prediction.

Training reuses the distillation loader's epoch plan (seeded per-epoch shuffle, length-grouped
batches, bucket padding, a row slice per process, exact position in checkpoints) and only builds
different arrays from it: token types, and the targets of the task. Every batch has the same
number of rows; rows past the data are empty (`weight` 0), so shapes stay static.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from distilbert_jax.data.buckets import bucket_length
from distilbert_jax.data.loader import BatchLoader
from distilbert_jax.finetune.examples import IGNORE_INDEX, Features

_EMPTY = -1


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureBatch:
    arrays: dict[str, np.ndarray]
    epoch: int
    index: int


def collate(features: Features, rows: np.ndarray, length: int, pad_id: int) -> dict[str, np.ndarray]:
    """Rows `rows` of `features` (-1: an empty row) padded to `length` tokens."""
    n = len(rows)
    out = {"input_ids": np.full((n, length), pad_id, np.int32), "attention_mask": np.zeros((n, length), np.int32),
           "token_type_ids": np.zeros((n, length), np.int32), "weight": np.zeros((n,), np.float32)}
    targets = features.targets
    if "label" in targets:
        labels = np.asarray(targets["label"])
        out["label"] = np.zeros((n,), np.float32) if labels.dtype.kind == "f" else np.full((n,), -1, np.int32)
    if "token_labels" in targets:
        out["token_labels"] = np.full((n, length), IGNORE_INDEX, np.int32)
    for key in ("start_positions", "end_positions"):
        if key in targets:
            out[key] = np.zeros((n,), np.int32)
    for r, i in enumerate(rows):
        if i == _EMPTY:
            continue
        ids = features.input_ids[i]
        k = len(ids)
        out["input_ids"][r, :k] = ids
        out["attention_mask"][r, :k] = 1
        out["token_type_ids"][r, :k] = features.token_type_ids[i]
        out["weight"][r] = 1.0
        if "label" in out:
            out["label"][r] = targets["label"][i]
        if "token_labels" in out:
            out["token_labels"][r, :k] = targets["token_labels"][i]
        for key in ("start_positions", "end_positions"):
            if key in out:
                out[key][r] = targets[key][i]
    if "label" in out and out["label"].dtype.kind == "f":
        out["weight"] *= np.isfinite(out["label"])  # unlabelled regression rows take no loss
        out["label"] = np.nan_to_num(out["label"])
    return out


class FeatureLoader(BatchLoader):
    """`BatchLoader`'s plan over `Features`; yields `FeatureBatch`es of this process's rows."""

    def __init__(self, features: Features, *, pad_id: int, **kwargs):
        super().__init__(features, pad_id=pad_id, **kwargs)

    def make_batch(self, epoch: int, index: int) -> FeatureBatch:
        rows = self.epoch_plan(epoch)[index]
        real = rows[rows != _EMPTY]
        length = bucket_length(int(self.lengths[real].max()), self.buckets)
        mine = rows[self.process_index * self.rows:(self.process_index + 1) * self.rows]
        return FeatureBatch(collate(self.dataset, mine, length, self.pad_id), int(epoch), int(index))


def prediction_batches(features: Features, *, batch_size: int, buckets: tuple[int, ...], pad_id: int,
                       process_index: int = 0, process_count: int = 1):
    """(rows, arrays) over every feature once, shortest first so little is padded; `rows` are the
    global batch's feature indices (-1 for empty rows), `arrays` this process's share of them."""
    order = np.argsort(features.lengths, kind="stable")
    per_process = batch_size // process_count
    for start in range(0, len(order), batch_size):
        rows = np.full(batch_size, _EMPTY, np.int64)
        chunk = order[start:start + batch_size]
        rows[:len(chunk)] = chunk
        length = bucket_length(int(features.lengths[chunk].max()), buckets)
        mine = rows[process_index * per_process:(process_index + 1) * per_process]
        yield rows, collate(features, mine, length, pad_id)
