"""`train(config)`: a whole distillation (or MLM) run, resumable, on every device of every host.

What is distillation's own: the teacher and student, the masking tables, the held-out
evaluation, the step. The loop is the one every run uses (training/loop.py): the host never
waits inside it, a NaN stops the run before any checkpoint could store it, Ctrl-C (SIGINT)
finishes the step in flight, saves and returns. Running the same command again resumes bit
for bit, because the data position, the RNG (seed folded with the step) and the optimizer's
accumulator are all in the checkpoint.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax

from distilbert_jax.data.dataset import TokenDataset
from distilbert_jax.data.loader import BatchLoader
from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.distill.evaluate import evaluate, make_evaluator, mask_tables
from distilbert_jax.distill.step import LossWeights, Masking, Model, make_train_step
from distilbert_jax.distill.teacher_student import check_compatible, load_teacher, make_student
from distilbert_jax.errors import UserError
from distilbert_jax.pretrained import PretrainedModel
from distilbert_jax.training import distributed, program
from distilbert_jax.training.checkpoint import Checkpointer
from distilbert_jax.training.export import export
from distilbert_jax.training.loop import (LoopSpec, announce, planned_updates, run_facts, run_loop,
                                          update_learning_rate, write_json)
from distilbert_jax.training.flops import device_peak_flops, distillation_step_flops
from distilbert_jax.training.mesh import (check_batch_divisible, global_batch, make_mesh, place, replicated,
                                          tree_shardings)
from distilbert_jax.training.metrics import MetricsLogger, plot_curves, read_metrics
from distilbert_jax.training.optimizer import learning_rate_schedule, make_optimizer

log = logging.getLogger("distilbert_jax")

# Fields that may differ between a checkpoint's config and the resuming run. `data` may move: the
# data fingerprint, checked separately, says whether it is still the same data.
_RESUMABLE_CHANGES = {"data", "workdir", "progress", "log_every", "eval_every", "eval_batches", "checkpoint_every",
                      "keep_checkpoints", "mesh.data", "mesh.fsdp", "mesh.allow_replication", "shard_teacher",
                      "remat"}


def train(config: DistillConfig, *, teacher: PretrainedModel | None = None, student: PretrainedModel | None = None,
          stop_at_step: int | None = None, guard=None) -> dict[str, Any]:
    """Run (or resume) `config`; returns the results that are also written to workdir/results.json.

    `teacher`/`student` skip loading when the caller has the models already (the demo).
    `stop_at_step` behaves like Ctrl-C after that many micro-batches (tests of exact resume);
    `guard` wraps the loop between its read points (see training/loop.py; tests pass a strict one).
    """
    distributed.initialize()
    primary = jax.process_index() == 0
    workdir = config.workdir
    dataset = TokenDataset.open(config.data, "train")
    heldout = TokenDataset.open(config.data, "heldout")
    if teacher is None and config.objective == "distill":
        teacher = load_teacher(config)
    if config.objective != "distill":
        teacher = None
    student = student if student is not None else make_student(config, teacher)
    check_compatible(teacher, student, dataset)
    objective = _check_objective(config, student)

    dtype, attention = config.policy.compute_dtype, config.attention
    s_model = Model(student.architecture.build(student.config, dtype=dtype, remat=config.remat, attention=attention),
                    student.config)
    t_model = Model(teacher.architecture.build(teacher.config, dtype=dtype, attention=attention),
                    teacher.config) if teacher else None

    mesh = make_mesh(config.mesh)
    check_batch_divisible(config.batch_size, mesh)
    loader = BatchLoader(dataset, batch_size=config.batch_size, seed=config.seed, buckets=config.buckets,
                         process_index=jax.process_index(), process_count=jax.process_count())
    total_updates = planned_updates(config.epochs, loader.batches_per_epoch, config.optimizer.accumulate,
                                    config.max_updates)
    total_steps = total_updates * config.optimizer.accumulate
    tx = make_optimizer(config.optimizer, total_updates, loss_scaling=config.policy.needs_loss_scaling)
    schedule = learning_rate_schedule(config.optimizer, total_updates)

    abstract, state_sh = program.abstract_state(tx, student.params, mesh, s_model.param_axes(),
                                                allow_replication=config.mesh.allow_replication)
    params = (program.fresh_params(student, state_sh.params) if student.uninitialised  # student_init="random"
              else place(student.params, state_sh.params))
    state = jax.jit(program.init_state_fn(tx), out_shardings=state_sh, donate_argnums=0)(params)
    del params  # donated: the state holds the only copy
    teacher_params = None
    if teacher is not None:
        teacher_params = place(teacher.params, tree_shardings(teacher.params, mesh, t_model.param_axes(),
                                                              replicate=not config.shard_teacher,
                                                              allow_replication=config.mesh.allow_replication))
    tables = mask_tables(dataset, smoothing=config.mlm_smoothing, random_from_vocab=config.random_from_vocab)
    tables = place(tables, jax.tree.map(lambda _: replicated(mesh), tables))
    mask_id = dataset.special_ids.get("mask")  # None for a causal model's data: nothing is masked
    masking = Masking(mask_id, config.mlm_probability, config.mask_prob, config.random_prob)
    weights = config.loss if teacher is not None else LossWeights.mlm_only(config.loss.chunk_size)
    step_fn = program.jit_step(make_train_step(s_model, t_model, tx, weights, masking, dropout=config.dropout,
                                               mesh=mesh, frozen=config.freeze), mesh, state_sh)
    key = jax.random.key(config.seed)
    evaluator = make_evaluator(s_model, mask_id, mesh)

    if primary:
        try:
            os.makedirs(workdir, exist_ok=True)
        except OSError as err:  # e.g. a path under a regular file: one error line, not a traceback
            raise UserError(f"cannot create the run folder {workdir}: {err.strerror or err}; "
                            "choose a writable folder") from None
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    start = checkpointer.latest_step()
    if start is not None:
        target = program.structs(abstract, state_sh)
        state, data_state, saved = checkpointer.restore(target)
        _check_resume(saved, config, data_state, dataset)
        loader.restore(data_state["loader"])
        log.warning("resuming %s from step %d", workdir, start)
    if primary:
        write_json(os.path.join(workdir, "config.json"), config.to_dict())
    logger = MetricsLogger(workdir, process_index=jax.process_index(), process_count=jax.process_count(),
                           resume_step=start)
    facts = run_facts(mesh)
    announce(config.name, facts)

    peak = device_peak_flops(config.policy.compute) if config.progress else None
    t_flops = teacher.config if teacher is not None else None

    def on_update(step: int, every: int) -> bool:
        update, boundary = divmod(step, config.optimizer.accumulate)
        return boundary == 0 and bool(every) and update % every == 0

    spec = LoopSpec(
        name=config.name, total_steps=total_steps,
        step=lambda state, arrays: step_fn(state, arrays, teacher_params, tables, key),
        batches=loader,
        put=lambda batch: global_batch({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}, mesh),
        data_state=lambda batch: {"loader": loader.state() if batch is None else loader.state_after(batch),
                                  "data_fingerprint": dataset.fingerprint},
        flops=lambda arrays: distillation_step_flops(student.config, t_flops, *arrays["input_ids"].shape),
        learning_rate=update_learning_rate(schedule, config.optimizer.accumulate),
        log_every=config.log_every,
        save_at=lambda step: on_update(step, config.checkpoint_every),
        eval_at=lambda step: on_update(step, config.eval_every) and step < total_steps,
        evaluate=lambda state, step: logger.log(
            step, _eval(evaluator, state.params, heldout, mesh, tables, config, objective), split="heldout"),
        progress=config.progress, config=config.to_dict())
    done = run_loop(spec, state, int(start or 0), checkpointer, logger, peak=peak, stop_at_step=stop_at_step,
                    guard=guard)
    state, step, interrupted, elapsed = done.state, done.step, done.interrupted, done.seconds

    results: dict[str, Any] = {"name": config.name, "objective": config.objective, "steps": step,
                               "updates": step // config.optimizer.accumulate, "total_updates": total_updates,
                               "interrupted": interrupted, "seconds": elapsed,
                               "data_fingerprint": dataset.fingerprint, "model": student.architecture.name,
                               "parameters": student.num_parameters, "train": done.train, **facts}
    if interrupted:
        print(f"stopped at step {step} of {total_steps}; checkpoint saved in {workdir}/checkpoints: "
              "run the same command again to resume", flush=True)
    else:
        results["heldout"] = _eval(evaluator, state.params, heldout, mesh, tables, config, objective)
        logger.log(step, results["heldout"], split="heldout")
        results["exported"] = export(student, state.params, os.path.join(workdir, "final"))
    logger.close()
    if primary:
        write_json(os.path.join(workdir, "results.json"), {**results, "config": config.to_dict()})
        records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
        if records:
            results["plot"] = plot_curves({config.name: records}, os.path.join(workdir, "loss.png"),
                                          keys=_plot_keys(teacher is not None, objective), title=config.name)
    results["state"] = state
    return results


def _eval(evaluator, params, heldout, mesh, tables, config, objective: str) -> dict[str, float]:
    if len(heldout) == 0:
        log.warning("the held-out split is empty: no evaluation")
        return {}
    return evaluate(evaluator, params, heldout, mesh, tables, batch_size=config.batch_size,
                    batches=config.eval_batches, buckets=config.buckets, objective=objective)


def _check_objective(config: DistillConfig, student: PretrainedModel) -> str:
    """"mlm" or "clm", the student's own LM objective; the config's loss weights must fit it."""
    causal = student.architecture.task == "causal-lm"
    objective = "clm" if causal else "mlm"
    if config.objective in ("mlm", "clm") and config.objective != objective:
        raise UserError(f"objective {config.objective!r} does not fit the {student.architecture.name} student; "
                        f"use --set objective={objective}")
    lm_weight, other = ("alpha_clm", "alpha_mlm") if causal else ("alpha_mlm", "alpha_clm")
    if config.objective == "distill" and getattr(config.loss, other) != 0:
        raise UserError(f"loss.{other} does not apply to a {student.architecture.name} student; set loss.{other}=0 "
                        f"and weigh its own LM loss with loss.{lm_weight}"
                        + (" (preset: experiments/configs/distilgpt2.py)" if causal else ""))
    return objective


def _check_resume(saved: dict, config: DistillConfig, data_state: dict, dataset) -> None:
    if data_state.get("data_fingerprint") != dataset.fingerprint:
        raise UserError(f"the checkpoint in {config.workdir} was trained on other data (fingerprint "
                        f"{data_state.get('data_fingerprint')}); use a new workdir or the same data")
    changed = config.changed_from(saved, _RESUMABLE_CHANGES)
    if changed:
        raise UserError(f"resuming {config.workdir} with a different config ({', '.join(changed)}); "
                        "use the saved config.json or a new workdir")


def _plot_keys(distill: bool, objective: str = "mlm") -> tuple[str, ...]:
    return ("loss", "loss_ce", f"loss_{objective}", "loss_cos") if distill else ("loss",)
