"""One seed of a fine-tuning run: train, evaluate on dev, keep the best model; resumable.

The loop is the distillation trainer's (training/loop.py): one jitted step per bucket length
over a (data, fsdp) mesh, donated state, the previous step's scalars read while the next runs,
Ctrl-C saves and returns, a NaN stops the run before a checkpoint could keep it. What is new:
dev evaluation once per epoch (or every `eval_every` updates) with the task's own metrics, and
best-model selection on one of them. The best model is exported as an HF-format folder
(`best/`) the moment it is found, replacing the previous one atomically, and the search's state
(best value, its step, every evaluation so far) travels in the checkpoint, so a resumed run
selects exactly as an uninterrupted one.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
from typing import Any, NamedTuple

import jax

from distilbert_jax.errors import UserError
from distilbert_jax.finetune.batches import FeatureLoader
from distilbert_jax.finetune.predict import make_predictor, predict_split
from distilbert_jax.finetune.step import make_train_step
from distilbert_jax.pretrained import PretrainedModel
from distilbert_jax.training.checkpoint import Checkpointer
from distilbert_jax.training.flops import device_peak_flops, encoder_forward_flops
from distilbert_jax.training.export import export
from distilbert_jax.training.loop import (LoopSpec, announce, planned_updates, run_facts, run_loop,
                                          update_learning_rate, write_json)
from distilbert_jax.training import program
from distilbert_jax.training.mesh import check_batch_divisible, global_batch, make_mesh, place
from distilbert_jax.training.metrics import MetricsLogger
from distilbert_jax.training.optimizer import learning_rate_schedule, make_optimizer

log = logging.getLogger("distilbert_jax")

BEST_DIR = "best"


def evaluate_splits(task, predictor, params, evals: dict, mesh, config, pad_id: int) -> dict[str, dict[str, float]]:
    """{split: metrics} over every dev split, with the dev loss."""
    out = {}
    for split, encoded in evals.items():
        out[split] = predict_split(task, predictor, params, encoded, mesh, config, pad_id)[1]
    return out


def selection(task, config) -> tuple[str, bool]:
    """(metric, higher_is_better) that picks the best checkpoint."""
    metric = config.select_metric or task.main_metric
    return metric, metric != "loss"


class _Functions(NamedTuple):
    init: Any
    step: Any
    predictor: Any
    abstract: Any
    state_shardings: Any


_COMPILED: collections.OrderedDict = collections.OrderedDict()


def compiled_functions(model: PretrainedModel, config, kind: str, total_updates: int, mesh) -> _Functions:
    """The jitted init, train and predict functions, shared by every seed of a run (and by later
    runs in the process with the same shapes), so five seeds compile once, not five times."""
    key = (model.architecture.name, model.config, config.precision, config.attention, kind, config.optimizer,
           total_updates, config.dropout, config.mesh, mesh)
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    module = model.architecture.build(model.config, dtype=config.policy.compute_dtype, attention=config.attention)
    tx = make_optimizer(config.optimizer, total_updates, loss_scaling=config.policy.needs_loss_scaling)

    abstract, state_sh = program.abstract_state(tx, model.params, mesh, model.architecture.param_axes(module),
                                                allow_replication=config.mesh.allow_replication)
    fns = _Functions(
        init=jax.jit(program.init_state_fn(tx), out_shardings=state_sh),
        step=program.jit_step(make_train_step(module, kind, tx, dropout=config.dropout), mesh, state_sh),
        predictor=make_predictor(module, kind, mesh), abstract=abstract, state_shardings=state_sh)
    _COMPILED[key] = fns
    while len(_COMPILED) > 4:
        _COMPILED.popitem(last=False)
    return fns


def train_seed(config, task, model: PretrainedModel, train_set, evals: dict, seed: int, workdir: str, *,
               pad_id: int, stop_at_step: int | None = None) -> dict[str, Any]:
    """Train `model` (already carrying this seed's fresh head) on `train_set`; returns the seed's results."""
    primary = jax.process_index() == 0
    mesh = make_mesh(config.mesh)
    check_batch_divisible(config.batch_size, mesh)
    check_batch_divisible(config.eval_batch_size, mesh)
    loader = FeatureLoader(train_set.features, pad_id=pad_id, batch_size=config.batch_size, seed=seed,
                           buckets=config.bucket_lengths, process_index=jax.process_index(),
                           process_count=jax.process_count())
    per_epoch = loader.batches_per_epoch
    total_updates = planned_updates(config.epochs, per_epoch, config.optimizer.accumulate, config.max_updates)
    total_steps = total_updates * config.optimizer.accumulate
    eval_steps = (config.eval_every * config.optimizer.accumulate) if config.eval_every else per_epoch
    schedule = learning_rate_schedule(config.optimizer, total_updates)
    fns = compiled_functions(model, config, task.kind, total_updates, mesh)
    state = fns.init(place(model.params, fns.state_shardings.params))
    step_fn, predictor, abstract, state_sh = fns.step, fns.predictor, fns.abstract, fns.state_shardings
    key = jax.random.key(seed)
    metric, higher = selection(task, config)
    first_split = next(iter(evals), None)

    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    search = {"best": None, "best_step": None, "best_metrics": None, "history": []}
    start = checkpointer.latest_step()
    if start is not None:
        target = program.structs(abstract, state_sh)
        state, data_state, _ = checkpointer.restore(target)
        loader.restore(data_state["loader"])
        search = data_state["search"]
        log.warning("resuming %s from step %d", workdir, start)
    logger = MetricsLogger(workdir, process_index=jax.process_index(), process_count=jax.process_count(),
                           resume_step=start)
    announce(f"{config.name} seed {seed}", run_facts(mesh))
    peak = device_peak_flops(config.policy.compute) if config.progress else None

    def evaluate_now(state, step: int) -> None:
        scores = evaluate_splits(task, predictor, state.params, evals, mesh, config, pad_id)
        for split, values in scores.items():
            logger.log(step, values, split=split)
        search["history"].append({"step": step, **scores})
        if first_split is None:
            return
        value = scores[first_split].get(metric)
        if value is None:
            raise UserError(f"select_metric {metric!r} is not a {task.name} metric; "
                            f"use one of {', '.join(sorted(scores[first_split]))}")
        if search["best"] is None or (value > search["best"] if higher else value < search["best"]):
            search.update(best=value, best_step=step, best_metrics=scores)
            _replace_dir(lambda d: export(model, state.params, d), os.path.join(workdir, BEST_DIR))

    def eval_point(step: int) -> bool:
        return step % eval_steps == 0 or step == total_steps

    def encoder_flops(arrays) -> float:
        return 3 * encoder_forward_flops(model.config, *arrays["input_ids"].shape[:2])

    spec = LoopSpec(
        name=f"{config.name} seed {seed}", total_steps=total_steps,
        step=lambda state, arrays: step_fn(state, arrays, key),
        batches=loader, put=lambda batch: global_batch(batch.arrays, mesh),
        data_state=lambda batch: {"loader": loader.state() if batch is None else loader.state_after(batch),
                                  "search": search},
        flops=encoder_flops, learning_rate=update_learning_rate(schedule, config.optimizer.accumulate),
        log_every=config.log_every, save_at=eval_point, eval_at=eval_point,
        evaluate=evaluate_now if evals else None,
        postfix=lambda values: {metric: f"{search['best']:.4f}"} if search["best"] is not None else {},
        progress=config.progress, config=config.to_dict())
    try:
        done = run_loop(spec, state, int(start or 0), checkpointer, logger, peak=peak, stop_at_step=stop_at_step)
    finally:
        logger.close()
    state, step, interrupted = done.state, done.step, done.interrupted
    if not interrupted and not evals:  # nothing to select on: the last model is the model
        _replace_dir(lambda d: export(model, state.params, d), os.path.join(workdir, BEST_DIR))
    results = {"seed": seed, "steps": step, "total_steps": total_steps, "updates": step // config.optimizer.accumulate,
               "epochs": step / per_epoch, "interrupted": interrupted, "seconds": done.seconds,
               "select_metric": metric, "best_step": search["best_step"], "best": search["best_metrics"],
               "history": search["history"], "train": done.train, "model_dir": os.path.join(workdir, BEST_DIR),
               **run_facts(mesh)}
    if primary and not interrupted:
        write_json(os.path.join(workdir, "results.json"), results)
    return results


def _replace_dir(write, directory: str) -> None:
    """Write a folder next to `directory`, then swap it in: a crash leaves the old or the new one."""
    fresh, old = directory + ".new", directory + ".old"
    if jax.process_index() == 0:
        shutil.rmtree(fresh, ignore_errors=True)
    write(fresh)
    if jax.process_index() != 0:
        return
    if os.path.isdir(directory):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(fresh, directory)
    shutil.rmtree(old, ignore_errors=True)


def recover_best_dir(workdir: str) -> None:
    """After a crash mid-swap `best` may be missing while `best.old` is complete: put it back."""
    directory = os.path.join(workdir, BEST_DIR)
    if not os.path.isdir(directory) and os.path.isdir(directory + ".old"):
        os.replace(directory + ".old", directory)
