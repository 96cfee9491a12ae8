"""Held-out masked-LM accuracy and perplexity, the demo's yardstick for teacher, student and baseline.

Every model is scored on the same positions: the first `batches` held-out batches in a fixed
order, masked uniformly (every real non-special token equally likely, 15%, 80/10/10) from a
fixed key per batch. Perplexity is exp of the mean cross-entropy over all masked targets.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from distilbert_jax.data.loader import BatchLoader
from distilbert_jax.distill.step import Masking, Model, make_eval_step
from distilbert_jax.training import program
from distilbert_jax.training.mesh import global_batch, replicated

EVAL_SEED = 20191002  # the paper's arXiv date: any fixed number, the same for every model


def make_evaluator(model: Model, masking: Masking, mesh):
    """The jitted eval step; build it once per run, so evaluating again compiles nothing."""
    return jax.jit(program.in_mesh(make_eval_step(model, masking), mesh), out_shardings=replicated(mesh))


def evaluate(step, params, heldout, mesh, tables: dict, *, batch_size: int, batches: int,
             buckets) -> dict[str, float]:
    """`step` from make_evaluator; sums over the first `batches` held-out batches."""
    loader = BatchLoader(heldout, batch_size=batch_size, seed=0, buckets=buckets, process_index=jax.process_index(),
                         process_count=jax.process_count(), prefetch=0)
    key = jax.random.key(EVAL_SEED)
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for batch in loader.epoch_batches(0):
        if batch.index >= batches:
            break
        arrays = global_batch({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}, mesh)
        sums = jax.device_get(step(params, arrays, tables, jax.random.fold_in(key, batch.index)))
        for k in totals:
            totals[k] += float(sums[k])
    n = max(totals["count"], 1.0)
    loss = totals["loss_sum"] / n
    return {"mlm_loss": loss, "mlm_accuracy": totals["correct"] / n, "perplexity": math.exp(min(loss, 50.0)),
            "targets": int(totals["count"])}


def mask_tables(dataset, *, smoothing: float, random_from_vocab: bool) -> dict[str, np.ndarray]:
    """Token weights for training (count**-smoothing), uniform weights for evaluation, replacements."""
    from distilbert_jax.data.masking import token_weights

    special = sorted(set(dataset.special_ids.values()))
    tables = {"weights": token_weights(dataset.counts, special, smoothing=smoothing),
              "uniform_weights": token_weights(dataset.counts, special, smoothing=0.0)}
    if not random_from_vocab:
        tables["replacement_ids"] = np.setdiff1d(np.arange(dataset.vocab_size), special).astype(np.int32)
    return tables
