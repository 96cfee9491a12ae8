"""Held-out masked-LM (or next-token) accuracy and perplexity: the yardstick for teacher, student and baseline.

Every model is scored on the same positions: the first `batches` held-out batches in a fixed
order, masked uniformly (every real non-special token equally likely, 15%, 80/10/10, whatever
rate the run trained with) from a fixed key per batch. Perplexity is exp of the mean
cross-entropy over all masked targets.
`reference` scores the model-free floor on those positions: the training tokens' unigram
distribution, whose accuracy is that of always answering the most frequent token.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from distilbert_jax.data.loader import BatchLoader
from distilbert_jax.distill.step import Masking, Model, make_eval_step, make_reference_step
from distilbert_jax.training import program
from distilbert_jax.training.mesh import global_batch, place, replicated

EVAL_SEED = 20191002  # the paper's arXiv date: any fixed number, the same for every model


def eval_masking(mask_id: int) -> Masking:
    """BERT's masking (15%, 80/10/10) whatever a run trains with: a teacher pretrained with
    another rate is scored on the positions its student and the baseline are."""
    return Masking(mask_id, 0.15, 0.8, 0.1)


def make_evaluator(model: Model, mask_id: int, mesh):
    """The jitted eval step; build it once per run, so evaluating again compiles nothing."""
    return jax.jit(program.in_mesh(make_eval_step(model, eval_masking(mask_id)), mesh),
                   out_shardings=replicated(mesh))


def reference(dataset, heldout, mesh, tables: dict, *, batch_size: int, batches: int, buckets,
              objective: str = "mlm") -> dict[str, float]:
    """The unigram predictor's held-out scores on the positions `evaluate` uses (same batches, keys)."""
    masking = eval_masking(dataset.special_ids.get("mask"))
    step = jax.jit(make_reference_step(masking, causal=objective == "clm"), out_shardings=replicated(mesh))
    log_probs = place(unigram_log_probs(dataset, targets_special=objective == "clm"), replicated(mesh))
    return evaluate(step, log_probs, heldout, mesh, tables, batch_size=batch_size, batches=batches, buckets=buckets,
                    objective=objective)


def unigram_log_probs(dataset, targets_special: bool = False) -> np.ndarray:
    """log p(token) from the training split's counts, add-one smoothed over the non-special tokens
    (a held-out token the training text never had still gets a finite loss); special tokens are
    never masked-LM targets and get log 0 = -inf's stand-in, -1e9, unless `targets_special` (a
    causal model predicts the closing `<|endoftext|>` too)."""
    counts = dataset.counts.astype(np.float64) + 1.0
    if not targets_special:
        counts[sorted(set(dataset.special_ids.values()))] = 0.0
    probs = counts / counts.sum()
    return np.where(probs > 0, np.log(np.maximum(probs, 1e-300)), -1e9).astype(np.float32)


def evaluate(step, params, heldout, mesh, tables: dict, *, batch_size: int, batches: int,
             buckets, objective: str = "mlm") -> dict[str, float]:
    """`step` from make_evaluator; sums over the first `batches` held-out batches. `objective`
    names the scores ("mlm" or "clm": a causal model is scored on every next token)."""
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
    return {f"{objective}_loss": loss, f"{objective}_accuracy": totals["correct"] / n,
            "perplexity": math.exp(min(loss, 50.0)), "targets": int(totals["count"])}


def mask_tables(dataset, *, smoothing: float, random_from_vocab: bool) -> dict[str, np.ndarray]:
    """Token weights for training (count**-smoothing), uniform weights for evaluation, replacements."""
    from distilbert_jax.data.masking import token_weights

    special = sorted(set(dataset.special_ids.values()))
    tables = {"weights": token_weights(dataset.counts, special, smoothing=smoothing),
              "uniform_weights": token_weights(dataset.counts, special, smoothing=0.0)}
    if not random_from_vocab:
        tables["replacement_ids"] = np.setdiff1d(np.arange(dataset.vocab_size), special).astype(np.int32)
    return tables


def reference_for(config, objective: str = "mlm") -> dict[str, float]:
    """`reference` on the held-out positions a run of `config` (a DistillConfig) is scored on."""
    from distilbert_jax.data.dataset import TokenDataset
    from distilbert_jax.training.mesh import make_mesh

    dataset, heldout = TokenDataset.open(config.data, "train"), TokenDataset.open(config.data, "heldout")
    mesh = make_mesh(config.mesh)
    tables = mask_tables(dataset, smoothing=config.mlm_smoothing, random_from_vocab=config.random_from_vocab)
    tables = place(tables, jax.tree.map(lambda _: replicated(mesh), tables))  # no cross-host check, as the trainer
    return reference(dataset, heldout, mesh, tables, batch_size=config.batch_size,
                     batches=config.eval_batches, buckets=config.buckets, objective=objective)
