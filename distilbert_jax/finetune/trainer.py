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
import math
import os
import shutil
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from distilbert_jax.errors import UserError
from distilbert_jax.finetune.batches import FeatureLoader
from distilbert_jax.finetune.predict import make_predictor, predict_split
from distilbert_jax.finetune.step import make_train_step
from distilbert_jax.pretrained import PretrainedModel, as_dtype
from distilbert_jax.training.checkpoint import Checkpointer
from distilbert_jax.training.flops import encoder_forward_flops, measure_matmul_peak
from distilbert_jax.training.loop import StopFlag, Window, checked, export, write_json
from distilbert_jax.training.mesh import (check_batch_divisible, global_batch, make_mesh, replicated,
                                          tree_shardings)
from distilbert_jax.training.metrics import MetricsLogger
from distilbert_jax.training.optimizer import learning_rate_schedule, make_optimizer
from distilbert_jax.training.state import TrainState

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
    key = (model.architecture.name, model.config, config.compute_dtype, kind, config.optimizer, total_updates,
           config.dropout, mesh)
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    module = model.architecture.build(model.config, dtype=as_dtype(config.compute_dtype))
    tx = make_optimizer(config.optimizer, total_updates)

    def init_state(params):
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    abstract = jax.eval_shape(init_state, model.params)
    state_sh = tree_shardings(abstract, mesh)
    fns = _Functions(
        init=jax.jit(init_state, out_shardings=state_sh),
        step=jax.jit(make_train_step(module, kind, tx, dropout=config.dropout),
                     out_shardings=(state_sh, replicated(mesh)), donate_argnums=0),
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
    total_updates = config.max_updates or max(1, math.ceil(config.epochs * per_epoch / config.accumulate))
    total_steps = total_updates * config.accumulate
    eval_steps = (config.eval_every * config.accumulate) if config.eval_every else per_epoch
    schedule = learning_rate_schedule(config.optimizer, total_updates)
    fns = compiled_functions(model, config, task.kind, total_updates, mesh)
    state = fns.init(jax.device_put(model.params, fns.state_shardings.params))
    step_fn, predictor, abstract, state_sh = fns.step, fns.predictor, fns.abstract, fns.state_shardings
    key = jax.random.key(seed)
    metric, higher = selection(task, config)
    first_split = next(iter(evals), None)

    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    search = {"best": None, "best_step": None, "best_metrics": None, "history": []}
    start = checkpointer.latest_step()
    if start is not None:
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)
        state, data_state, _ = checkpointer.restore(target)
        loader.restore(data_state["loader"])
        search = data_state["search"]
        log.warning("resuming %s from step %d", workdir, start)
    logger = MetricsLogger(workdir, process_index=jax.process_index(), resume_step=start)
    peak = measure_matmul_peak(config.compute_dtype, n=1024, repeats=3) if config.progress else None

    def evaluate_now(step: int) -> None:
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

    from tqdm.auto import tqdm

    step = int(start or 0)
    bar = tqdm(total=total_steps, initial=step, disable=not (config.progress and primary), unit="batch",
               desc=f"{config.name} seed {seed}", dynamic_ncols=True)
    window, pending, interrupted = Window(), None, False
    t_start = time.time()
    it = iter(loader)
    try:
        with StopFlag() as stop:
            while step < total_steps:
                if stop.requested or (stop_at_step is not None and step >= stop_at_step):
                    interrupted = True
                    break
                arrays = global_batch(next(it).arrays, mesh)
                state, metrics = step_fn(state, arrays, key)
                step += 1
                rows, length = arrays["input_ids"].shape
                flops = 3 * encoder_forward_flops(model.config, rows, length)
                if pending is not None:
                    window.add(checked(pending, checkpointer))
                pending = (step, metrics, flops)
                if step % config.log_every == 0 or step == total_steps:
                    window.add(checked(pending, checkpointer))
                    pending = None
                    values = window.flush(lr=float(schedule(max(step // config.accumulate - 1, 0))), peak=peak)
                    logger.log(step, values)
                    bar.set_postfix(loss=f"{values['loss']:.3f}",
                                    **({metric: f"{search['best']:.4f}"} if search["best"] is not None else {}))
                bar.update(1)
                if step % eval_steps == 0 or step == total_steps:
                    if pending is not None:
                        window.add(checked(pending, checkpointer))
                        pending = None
                    if evals:
                        evaluate_now(step)
                    checkpointer.save(step, state, data_state={"loader": loader.state(), "search": search},
                                      config=config.to_dict())
        if pending is not None:
            window.add(checked(pending, checkpointer))
        checkpointer.save(step, state, data_state={"loader": loader.state(), "search": search},
                          config=config.to_dict())
        checkpointer.wait()
    finally:
        bar.close()
        checkpointer.close()
        logger.close()
    if not interrupted and not evals:  # nothing to select on: the last model is the model
        _replace_dir(lambda d: export(model, state.params, d), os.path.join(workdir, BEST_DIR))
    elapsed = time.time() - t_start
    results = {"seed": seed, "steps": step, "total_steps": total_steps, "updates": step // config.accumulate,
               "epochs": step / per_epoch, "interrupted": interrupted, "seconds": elapsed,
               "select_metric": metric, "best_step": search["best_step"], "best": search["best_metrics"],
               "history": search["history"], "train": window.totals(elapsed, peak),
               "model_dir": os.path.join(workdir, BEST_DIR)}
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
