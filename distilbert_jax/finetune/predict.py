"""Run a model over every feature once and hand back per-feature outputs in feature order.

Used for dev evaluation during training, for the `evaluate` command and for test predictions.
Batches are sorted by length and padded to the bucket lengths, so a dev set compiles one program
per bucket; outputs come back replicated, so every process of a multi-host run sees all of them
and can score (only process 0 writes files).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from distilbert_jax.finetune.batches import prediction_batches
from distilbert_jax.finetune.examples import Features
from distilbert_jax.finetune.step import make_predict_step
from distilbert_jax.training import program
from distilbert_jax.training.mesh import global_batch, replicated


@dataclasses.dataclass
class Outputs:
    """Per feature: `logits` [labels] rows, or `predictions` [len_i] ids (NER), or span logits
    [len_i] each; `loss` is the mean dev loss when the features carry targets."""
    values: dict[str, list[np.ndarray] | np.ndarray]
    loss: float | None


def make_predictor(module, kind: str, mesh):
    return jax.jit(program.in_mesh(make_predict_step(module, kind), mesh), out_shardings=replicated(mesh))


def predict(predictor, params, features: Features, mesh, *, kind: str, batch_size: int, buckets: tuple[int, ...],
            pad_id: int, with_targets: bool = True) -> Outputs:
    if batch_size % jax.process_count():
        raise ValueError(f"eval batch size {batch_size} must split over {jax.process_count()} processes")
    n = len(features)
    per_feature: dict[str, list] = {}
    loss_sum, loss_count = 0.0, 0
    lengths = features.lengths
    for rows, arrays in prediction_batches(features, batch_size=batch_size, buckets=buckets, pad_id=pad_id,
                                           process_index=jax.process_index(), process_count=jax.process_count()):
        if not with_targets:
            arrays = {k: arrays[k] for k in ("input_ids", "attention_mask", "token_type_ids", "weight")}
        result = jax.device_get(predictor(params, global_batch(arrays, mesh)))
        loss_sum += float(result.pop("loss_sum"))
        loss_count += int(result.pop("loss_count"))
        for key, value in result.items():
            column = per_feature.setdefault(key, [None] * n)
            for r, i in enumerate(rows):
                if i >= 0:
                    column[i] = value[r, :lengths[i]] if kind in ("token", "span") else value[r]
    values = {k: (np.stack(v) if kind not in ("token", "span") else v) for k, v in per_feature.items()}
    return Outputs(values, loss_sum / max(loss_count, 1) if with_targets and loss_count else None)


def predict_split(task, predictor, params, encoded, mesh, config, pad_id: int, *,
                  score: bool = True) -> tuple[list, dict[str, float]]:
    """(one prediction per example, the task's scores and the dev loss) for one encoded split.
    Unlabelled splits (test, ax) are predicted without targets and get no scores."""
    labelled = not encoded.split.startswith(("test", "ax"))
    outputs = predict(predictor, params, encoded.features, mesh, kind=task.kind, batch_size=config.eval_batch_size,
                      buckets=config.bucket_lengths, pad_id=pad_id, with_targets=labelled)
    predictions = task.decode(encoded, outputs.values)
    scores = task.score(encoded, predictions) if score and labelled else {}
    if score and outputs.loss is not None:
        scores["loss"] = outputs.loss
    return predictions, scores
