"""`train(config)`: a whole distillation (or MLM) run, resumable, on every device of every host.

Shape of the loop (Flax examples / MaxText): build the mesh, place the models by the sharding
rules, compile one pure step per bucket length, then feed it micro-batches. The host never
waits on the step it has just dispatched: it reads the previous step's scalars, which also
catches a NaN one step late, before any checkpoint could store it. Ctrl-C (SIGINT) finishes the
step in flight, saves, and returns; running the same command again resumes bit for bit,
because the data position, the RNG (seed folded with the step) and the optimizer's accumulator
are all in the checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp

from distilbert_jax.data.dataset import TokenDataset
from distilbert_jax.data.loader import BatchLoader
from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.distill.evaluate import evaluate, make_evaluator, mask_tables
from distilbert_jax.distill.step import LossWeights, Masking, Model, make_train_step
from distilbert_jax.training.state import TrainState
from distilbert_jax.distill.teacher_student import check_compatible, load_teacher, make_student
from distilbert_jax.errors import UserError
from distilbert_jax.pretrained import PretrainedModel, as_dtype
from distilbert_jax.training import distributed
from distilbert_jax.training.checkpoint import Checkpointer
from distilbert_jax.training.loop import StopFlag, Window, checked, export, write_json
from distilbert_jax.training.flops import distillation_step_flops, measure_matmul_peak
from distilbert_jax.training.mesh import (check_batch_divisible, global_batch, make_mesh, replicated,
                                          tree_shardings)
from distilbert_jax.training.metrics import MetricsLogger, plot_curves, read_metrics
from distilbert_jax.training.optimizer import learning_rate_schedule, make_optimizer

log = logging.getLogger("distilbert_jax")

# Fields that may differ between a checkpoint's config and the resuming run. `data` may move: the
# data fingerprint, checked separately, says whether it is still the same data.
_RESUMABLE_CHANGES = {"data", "workdir", "progress", "log_every", "eval_every", "eval_batches", "checkpoint_every",
                      "keep_checkpoints", "mesh_data", "mesh_fsdp", "shard_teacher", "remat"}


def train(config: DistillConfig, *, teacher: PretrainedModel | None = None, student: PretrainedModel | None = None,
          stop_at_step: int | None = None) -> dict[str, Any]:
    """Run (or resume) `config`; returns the results that are also written to workdir/results.json.

    `teacher`/`student` skip loading when the caller has the models already (the demo).
    `stop_at_step` behaves like Ctrl-C after that many micro-batches (tests of exact resume).
    """
    distributed.initialize()
    primary = jax.process_index() == 0
    workdir = config.workdir
    dataset = TokenDataset.open(config.data, "train")
    heldout = TokenDataset.open(config.data, "heldout")
    if teacher is None and config.objective == "distill":
        teacher = load_teacher(config)
    if config.objective == "mlm":
        teacher = None
    student = student if student is not None else make_student(config, teacher)
    check_compatible(teacher, student, dataset)

    dtype = as_dtype(config.compute_dtype)
    s_model = Model(student.architecture.build(student.config, dtype=dtype, remat=config.remat), student.config)
    t_model = Model(teacher.architecture.build(teacher.config, dtype=dtype), teacher.config) if teacher else None

    mesh = make_mesh(config.mesh)
    check_batch_divisible(config.batch_size, mesh)
    loader = BatchLoader(dataset, batch_size=config.batch_size, seed=config.seed, buckets=config.buckets,
                         process_index=jax.process_index(), process_count=jax.process_count())
    total_updates = config.max_updates or max(1, int(config.epochs * loader.batches_per_epoch // config.accumulate))
    total_steps = total_updates * config.accumulate
    tx = make_optimizer(config.optimizer, total_updates)
    schedule = learning_rate_schedule(config.optimizer, total_updates)

    def init_state(params):
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    abstract = jax.eval_shape(init_state, student.params)
    state_sh = tree_shardings(abstract, mesh)
    state = jax.jit(init_state, out_shardings=state_sh)(jax.device_put(student.params, state_sh.params))
    teacher_params = None
    if teacher is not None:
        teacher_params = jax.device_put(teacher.params,
                                        tree_shardings(teacher.params, mesh, replicate=not config.shard_teacher))
    tables = jax.device_put(mask_tables(dataset, smoothing=config.mlm_smoothing,
                                        random_from_vocab=config.random_from_vocab), replicated(mesh))
    masking = Masking(dataset.mask_id, config.mlm_probability, config.mask_prob, config.random_prob)
    weights = (LossWeights(config.temperature, config.alpha_ce, config.alpha_mlm, config.alpha_cos, config.alpha_mse,
                           config.restrict_ce_to_mask, config.loss_chunk_size)
               if teacher is not None else LossWeights.mlm_only(config.loss_chunk_size))
    step_fn = jax.jit(make_train_step(s_model, t_model, tx, weights, masking, dropout=config.dropout),
                      out_shardings=(state_sh, replicated(mesh)), donate_argnums=0)
    key = jax.random.key(config.seed)
    evaluator = make_evaluator(s_model, masking, mesh)

    if primary:
        try:
            os.makedirs(workdir, exist_ok=True)
        except OSError as err:  # e.g. a path under a regular file: one error line, not a traceback
            raise UserError(f"cannot create the run folder {workdir}: {err.strerror or err}; "
                            "choose a writable folder") from None
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    start = checkpointer.latest_step()
    if start is not None:
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)
        state, data_state, saved = checkpointer.restore(target)
        _check_resume(saved, config, data_state, dataset)
        loader.restore(data_state["loader"])
        log.warning("resuming %s from step %d", workdir, start)
    if primary:
        write_json(os.path.join(workdir, "config.json"), config.to_dict())
    logger = MetricsLogger(workdir, process_index=jax.process_index(), resume_step=start)

    peak = measure_matmul_peak(config.compute_dtype, n=1024, repeats=3) if config.progress else None
    step = int(start or 0)
    t_flops = teacher.config if teacher is not None else None
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=not (config.progress and primary), unit="batch",
               desc=config.name, dynamic_ncols=True)
    window = Window()
    pending = None
    data_state = {"loader": loader.state(), "data_fingerprint": dataset.fingerprint}
    interrupted = False
    t_start = time.time()
    it = iter(loader)
    try:
        with StopFlag() as stop:
            while step < total_steps:
                if stop.requested or (stop_at_step is not None and step >= stop_at_step):
                    interrupted = True
                    break
                batch = next(it)
                arrays = global_batch({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}, mesh)
                state, metrics = step_fn(state, arrays, teacher_params, tables, key)
                step += 1
                data_state = {"loader": loader.state(), "data_fingerprint": dataset.fingerprint}
                flops = distillation_step_flops(student.config, t_flops, *arrays["input_ids"].shape)
                if pending is not None:
                    window.add(checked(pending, checkpointer))
                pending = (step, metrics, flops)
                update, boundary = divmod(step, config.accumulate)
                if step % config.log_every == 0 or step == total_steps:
                    window.add(checked(pending, checkpointer))
                    pending = None
                    values = window.flush(lr=float(schedule(max(update - 1, 0))), peak=peak)
                    logger.log(step, values)
                    bar.set_postfix(loss=f"{values['loss']:.3f}", tok_s=f"{values['tokens_per_s']:.0f}",
                                    **({"mfu": f"{values['mfu']:.0%}"} if "mfu" in values else {}))
                bar.update(1)
                if boundary == 0 and config.checkpoint_every and update % config.checkpoint_every == 0:
                    if pending is not None:
                        window.add(checked(pending, checkpointer))
                        pending = None
                    checkpointer.save(step, state, data_state=data_state, config=config.to_dict())
                if boundary == 0 and config.eval_every and update % config.eval_every == 0 and step < total_steps:
                    logger.log(step, _eval(evaluator, state.params, heldout, mesh, tables, config),
                               split="heldout")
        if pending is not None:
            window.add(checked(pending, checkpointer))
        # Not forced: when this step is saved already (a finished run run again, or a save just made),
        # the same state is on disk and rewriting it would only risk it.
        checkpointer.save(step, state, data_state=data_state, config=config.to_dict())
        checkpointer.wait()
    except BaseException:
        logger.close()  # a diverged or failed run still leaves complete metrics files
        raise
    finally:
        bar.close()
        checkpointer.close()
    elapsed = time.time() - t_start

    results: dict[str, Any] = {"name": config.name, "objective": config.objective, "steps": step,
                               "updates": step // config.accumulate, "total_updates": total_updates,
                               "interrupted": interrupted, "seconds": elapsed,
                               "data_fingerprint": dataset.fingerprint, "model": student.architecture.name,
                               "parameters": student.num_parameters, "train": window.totals(elapsed, peak)}
    if interrupted:
        print(f"stopped at step {step} of {total_steps}; checkpoint saved in {workdir}/checkpoints: "
              "run the same command again to resume", flush=True)
    else:
        results["heldout"] = _eval(evaluator, state.params, heldout, mesh, tables, config)
        logger.log(step, results["heldout"], split="heldout")
        results["exported"] = export(student, state.params, os.path.join(workdir, "final"))
    logger.close()
    if primary:
        write_json(os.path.join(workdir, "results.json"), {**results, "config": config.to_dict()})
        records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
        if records:
            results["plot"] = plot_curves({config.name: records}, os.path.join(workdir, "loss.png"),
                                          keys=_plot_keys(teacher is not None), title=config.name)
    results["state"] = state
    return results


def _eval(evaluator, params, heldout, mesh, tables, config) -> dict[str, float]:
    if len(heldout) == 0:
        log.warning("the held-out split is empty: no evaluation")
        return {}
    return evaluate(evaluator, params, heldout, mesh, tables, batch_size=config.batch_size,
                    batches=config.eval_batches, buckets=config.buckets)


def _check_resume(saved: dict, config: DistillConfig, data_state: dict, dataset) -> None:
    if data_state.get("data_fingerprint") != dataset.fingerprint:
        raise UserError(f"the checkpoint in {config.workdir} was trained on other data (fingerprint "
                        f"{data_state.get('data_fingerprint')}); use a new workdir or the same data")
    changed = sorted(k for k, v in config.to_dict().items() if k not in _RESUMABLE_CHANGES and saved.get(k) != v)
    if changed:
        raise UserError(f"resuming {config.workdir} with a different config ({', '.join(changed)}); "
                        "use the saved config.json or a new workdir")


def _plot_keys(distill: bool) -> tuple[str, ...]:
    return ("loss", "loss_ce", "loss_mlm", "loss_cos") if distill else ("loss",)
