"""The JAX side of experiments/bench_distill.py: the production train step, timed in its own process."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the repo, for `experiments.` and `distilbert_jax` from a checkout

from distill_bench_common import *  # noqa: F401,F403  (inputs, constants, RSS probes)
from distill_bench_common import _reset_peak_rss, _rss_kb, _rss_report  # noqa: F401


class JaxWorker:
    """The production step, jitted with the state donated; one process per (shape, dtype)."""

    def __init__(self, spec: dict):
        import jax
        import jax.numpy as jnp

        import distilbert_jax as dj
        from distilbert_jax.distill.step import LossWeights, Masking, Model, make_train_step
        from distilbert_jax.training.state import TrainState
        from distilbert_jax.training.optimizer import OptimizerConfig, make_optimizer

        self.jax = jax
        family = FAMILIES[spec.get("family", "bert")]  # device_check.py builds specs without one
        teacher = dj.from_pretrained(spec["teacher_dir"], task=family.task)
        student = dj.from_pretrained(spec["student_dir"], task=family.task)
        dtype = jnp.dtype(spec["dtype"]).type
        self.s_model = Model(student.architecture.build(student.config, dtype=dtype), student.config)
        self.t_model = Model(teacher.architecture.build(teacher.config, dtype=dtype), teacher.config)
        self.tx = make_optimizer(OptimizerConfig(), TOTAL_UPDATES)
        self.loss = LossWeights(chunk_size=spec["chunk_size"], **dict(family.alphas))
        self.masking = Masking(mask_id=-1 if family.causal else family.mask_id)  # a causal step masks nothing
        self.make_train_step, self.TrainState = make_train_step, TrainState
        data = np.load(spec["batch_file"])
        self.batch = jax.device_put({"input_ids": data["input_ids"], "attention_mask": data["attention_mask"]})
        self.tables = jax.device_put({"weights": data["weights"], "replacement_ids": data["replacement_ids"]})
        self.teacher_params = teacher.params
        self.student_params = student.params  # each fresh state is a copy (the step donates its state)
        self.key = jax.random.key(SEED)
        self.step_fn = jax.jit(make_train_step(self.s_model, self.t_model, self.tx, self.loss, self.masking,
                                               dropout=True), donate_argnums=0)

    def _state(self):
        params = self.jax.tree.map(self.jax.numpy.copy, self.student_params)
        return self.TrainState(step=self.jax.numpy.zeros((), self.jax.numpy.int32), params=params,
                               opt_state=self.tx.init(params))

    def check(self) -> dict:
        """One step with dropout off (its own compile) on a fresh state: the losses PyTorch must match."""
        fn = self.jax.jit(self.make_train_step(self.s_model, self.t_model, self.tx, self.loss, self.masking,
                                               dropout=False), donate_argnums=0)
        _, metrics = fn(self._state(), self.batch, self.teacher_params, self.tables, self.key)
        return {k: float(v) for k, v in self.jax.device_get(metrics).items()}

    def setup(self) -> dict:
        args = (self._state(), self.batch, self.teacher_params, self.tables, self.key)
        t0 = time.perf_counter()
        lowered = self.step_fn.lower(*args)
        t1 = time.perf_counter()
        self.compiled = lowered.compile()
        t2 = time.perf_counter()
        mem = self.compiled.memory_analysis()
        memory = None
        if mem is not None:
            memory = {k: int(getattr(mem, k + "_size_in_bytes", 0) or 0)
                      for k in ("argument", "output", "temp", "alias", "generated_code")}
            memory["total"] = memory["argument"] + memory["output"] + memory["temp"] - memory["alias"]
        self.state = args[0]
        del self.student_params, lowered  # only the state's copy stays resident, as in the trainer
        self.rss_before = _rss_kb()[0]
        self.rss_reset = _reset_peak_rss()
        t3 = time.perf_counter()
        metrics = self._run()
        first = time.perf_counter() - t3
        return {"lower_s": t1 - t0, "compile_s": t2 - t1, "first_step_s": first, "memory": memory,
                "first_metrics": metrics, "device": str(self.jax.devices()[0].device_kind),
                "platform": self.jax.devices()[0].platform}

    def _run(self) -> dict:
        self.state, metrics = self.compiled(self.state, self.batch, self.teacher_params, self.tables, self.key)
        self.jax.block_until_ready((self.state, metrics))
        return {k: float(v) for k, v in self.jax.device_get(metrics).items()}

    def step(self) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        metrics = self._run()
        return {"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "loss": metrics["loss"]}

    def breakdown(self, repeats: int) -> dict:
        return jax_breakdown(self, repeats)

    def finish(self) -> dict:
        return _rss_report(self.rss_before, self.rss_reset)


def jax_breakdown(w: JaxWorker, repeats: int) -> dict:
    """Seconds of each piece of the step jitted alone, the way the step composes them.

    masking (causal: the next-token labels); teacher forward (features + hidden states); student
    forward+backward with the chunked loss (teacher outputs given); the chunked loss alone,
    forward+backward with respect to the student's features, table and hidden state; the optimizer
    update alone.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from distilbert_jax.data.masking import mask_tokens
    from distilbert_jax.losses import chunked_distillation_loss, next_token_labels
    from distilbert_jax.models.projection import projection_weights

    loss, masking, s_model, t_model, tx = w.loss, w.masking, w.s_model, w.t_model, w.tx
    alpha_lm = loss.alpha_clm if s_model.causal else loss.alpha_mlm
    params = w.state.params
    batch, tables, tparams = w.batch, w.tables, w.teacher_params
    ids, mask = batch["input_ids"], batch["attention_mask"]
    key = jax.random.key(SEED)

    def do_mask(key, ids, mask, tables):
        if s_model.causal:
            return ids, next_token_labels(ids, mask)
        return mask_tokens(key, ids, mask, tables["weights"], mask_id=masking.mask_id,
                           replacement_ids=tables["replacement_ids"])

    def teacher_fwd(tparams, ids, mask):
        out = t_model.features(tparams, ids, mask, deterministic=True)
        return out.mlm_features, out.last_hidden_state

    def loss_of(feat, table, bias, hidden, t_feat, t_table, t_bias, t_hidden, labels, mask):
        return chunked_distillation_loss(feat, table, bias, t_feat, t_table, t_bias, hidden, t_hidden, labels, mask,
                                         temperature=loss.temperature, alpha_ce=loss.alpha_ce,
                                         alpha_mlm=alpha_lm, alpha_cos=loss.alpha_cos,
                                         alpha_mse=loss.alpha_mse, chunk_size=loss.chunk_size)[0]

    def student_fwd_bwd(params, ids, mask, labels, t_feat, t_hidden, tparams, key):
        t_table, t_bias = projection_weights(tparams, t_model.config)

        def f(params):
            out = s_model.features(params, ids, mask, deterministic=False, rngs={"dropout": key})
            table, bias = projection_weights(params, s_model.config)
            return loss_of(out.mlm_features, table, bias, out.last_hidden_state, t_feat, t_table, t_bias, t_hidden,
                           labels, mask)

        return jax.value_and_grad(f)(params)

    def student_fwd(params, ids, mask, key):
        out = s_model.features(params, ids, mask, deterministic=False, rngs={"dropout": key})
        return out.mlm_features, out.last_hidden_state

    def loss_fwd_bwd(feat, table, bias, hidden, t_feat, t_hidden, tparams, labels, mask):
        t_table, t_bias = projection_weights(tparams, t_model.config)
        return jax.value_and_grad(loss_of, argnums=(0, 1, 2, 3))(feat, table, bias, hidden, t_feat, t_table, t_bias,
                                                                 t_hidden, labels, mask)

    def update(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, optax.global_norm(grads)

    def timeit(fn, *args):
        fn = jax.jit(fn)
        t0 = time.perf_counter()
        compiled = fn.lower(*args).compile()
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(compiled(*args))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - t0)
        return out, {"s": statistics.median(times), "compile_s": compile_s}

    result = {}
    (m_ids, labels), result["masking"] = timeit(do_mask, key, ids, mask, tables)
    (t_feat, t_hidden), result["teacher forward"] = timeit(teacher_fwd, tparams, m_ids, mask)
    (_, grads), result["student fwd+bwd+loss"] = timeit(student_fwd_bwd, params, m_ids, mask, labels, t_feat,
                                                        t_hidden, tparams, key)
    (s_feat, s_hidden), result["student forward"] = timeit(student_fwd, params, m_ids, mask, key)
    table, bias = projection_weights(params, s_model.config)
    _, result["chunked loss fwd+bwd"] = timeit(loss_fwd_bwd, s_feat, table, bias, s_hidden, t_feat, t_hidden,
                                               tparams, labels, mask)
    _, result["optimizer"] = timeit(update, grads, tx.init(params), params)
    return result
