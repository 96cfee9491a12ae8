"""The PyTorch side of experiments/bench_distill.py: the reference distiller's step, eager.

`_losses` restates transformers/examples/research_projects/distillation/distiller.py `Distiller.step`
(alpha_mse = 0) for both of its students: masked (DistilBERT: CE on the MLM labels) and causal
(DistilGPT2: both models called without an attention mask, as the reference does, which changes
nothing at real positions of right-padded rows; the CE on logits[:, :-1] against labels[:, 1:], the
labels being the ids with padding set to -100).
"""

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


class TorchWorker:
    """The reference distiller's step (transformers' classes, eager); one process per shape."""

    def __init__(self, spec: dict):
        import torch
        import transformers

        self.torch = torch
        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(SEED)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        family = FAMILIES[spec.get("family", "bert")]  # device_check.py builds specs without one
        self.causal, self.lm_loss = family.causal, family.lm_loss
        load = lambda name, folder: getattr(transformers, name).from_pretrained(folder).to(self.device)
        self.teacher = load(family.teacher, spec["teacher_dir"]).eval()
        self.student = load(family.student, spec["student_dir"])
        self.student.train()
        self.attention = self.student.config._attn_implementation
        self.bf16 = spec["torch_bf16"]
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6,
                                           weight_decay=0.0)
        warmup = int(round(0.05 * TOTAL_UPDATES))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(  # transformers' get_linear_schedule_with_warmup
            self.optimizer, lambda s: s / warmup if s < warmup else max(0.0, (TOTAL_UPDATES - s) /
                                                                         (TOTAL_UPDATES - warmup)))
        self.ce_loss_fct = torch.nn.KLDivLoss(reduction="batchmean")
        self.lm_loss_fct = torch.nn.CrossEntropyLoss(ignore_index=-100)
        self.cosine_loss_fct = torch.nn.CosineEmbeddingLoss(reduction="mean")
        self.temperature, self.alpha_ce, self.alpha_lm, self.alpha_cos = 2.0, 5.0, 2.0, 1.0
        data = np.load(spec["batch_file"])
        to = lambda a: torch.from_numpy(a.astype(np.int64)).to(self.device)
        self.input_ids, self.attn_mask = to(data["masked_ids"]), to(data["attention_mask"]).bool()
        # causal: the reference's prepare_batch_clm labels (the step shifts them); masked: the MLM labels
        self.labels = self.input_ids.masked_fill(~self.attn_mask, -100) if self.causal else to(data["labels"])

    def _sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def _losses(self, input_ids, attn_mask, lm_labels) -> dict:
        """Distiller.step of the reference (transformers/examples/research_projects/distillation), alpha_mse = 0."""
        torch = self.torch
        autocast = torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16)
        model_mask = None if self.causal else attn_mask
        with autocast:
            student_outputs = self.student(input_ids=input_ids, attention_mask=model_mask, output_hidden_states=True)
            with torch.no_grad():
                teacher_outputs = self.teacher(input_ids=input_ids, attention_mask=model_mask,
                                               output_hidden_states=True)
        s_logits, s_hidden_states = student_outputs["logits"].float(), student_outputs["hidden_states"]
        t_logits, t_hidden_states = teacher_outputs["logits"].float(), teacher_outputs["hidden_states"]
        mask = attn_mask.unsqueeze(-1).expand_as(s_logits)  # restrict_ce_to_mask=False
        s_logits_slct = torch.masked_select(s_logits, mask).view(-1, s_logits.size(-1))
        t_logits_slct = torch.masked_select(t_logits, mask).view(-1, s_logits.size(-1))
        loss_ce = self.ce_loss_fct(
            torch.nn.functional.log_softmax(s_logits_slct / self.temperature, dim=-1),
            torch.nn.functional.softmax(t_logits_slct / self.temperature, dim=-1),
        ) * self.temperature ** 2
        if self.causal:
            shift_logits, shift_labels = s_logits[..., :-1, :].contiguous(), lm_labels[..., 1:].contiguous()
            loss_lm = self.lm_loss_fct(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1))
        else:
            loss_lm = self.lm_loss_fct(s_logits.view(-1, s_logits.size(-1)), lm_labels.view(-1))
        s_hidden, t_hidden = s_hidden_states[-1].float(), t_hidden_states[-1].float()
        mask = attn_mask.unsqueeze(-1).expand_as(s_hidden)
        dim = s_hidden.size(-1)
        s_hidden_slct = torch.masked_select(s_hidden, mask).view(-1, dim)
        t_hidden_slct = torch.masked_select(t_hidden, mask).view(-1, dim)
        target = s_hidden_slct.new(s_hidden_slct.size(0)).fill_(1)
        loss_cos = self.cosine_loss_fct(s_hidden_slct, t_hidden_slct, target)
        loss = self.alpha_ce * loss_ce + self.alpha_lm * loss_lm + self.alpha_cos * loss_cos
        return {"loss": loss, "loss_ce": loss_ce, self.lm_loss: loss_lm, "loss_cos": loss_cos}

    def _optimize(self, loss, on_grads=None) -> float:
        loss.backward()
        if on_grads is not None:
            on_grads()
        grad_norm = self.torch.nn.utils.clip_grad_norm_(self.student.parameters(), 5.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.scheduler.step()
        return float(grad_norm)

    def check(self) -> dict:
        """One step with dropout off, on the state as loaded (weights restored afterwards)."""
        saved = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
        self.student.eval()
        parts = self._losses(self.input_ids, self.attn_mask, self.labels)
        out = {k: float(v.detach()) for k, v in parts.items()}

        def exact_norm():  # torch's float32 norm of a 23M-entry tensor (the embedding gradient) is off by ~1e-3
            grads = [p.grad for p in self.student.parameters() if p.grad is not None]
            out["grad_norm"] = float(sum(g.double().square().sum() for g in grads).sqrt())

        out["clip_grad_norm_"] = self._optimize(parts["loss"], exact_norm)
        out["targets"] = int(((self.labels[:, 1:] if self.causal else self.labels) != -100).sum())
        self.student.load_state_dict(saved)
        self.student.train()
        return out

    def setup(self) -> dict:
        """Start the memory watch; the parent's warm-up step is this worker's first."""
        self.rss_before = _rss_kb()[0]
        self.rss_reset = _reset_peak_rss()
        if self.device == "cuda":
            self.torch.cuda.reset_peak_memory_stats()
        return {"attention": self.attention, "device": self.device, "threads": self.torch.get_num_threads()}

    def step(self) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        parts = self._losses(self.input_ids, self.attn_mask, self.labels)
        self._optimize(parts["loss"])
        self._sync()
        return {"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "loss": float(parts["loss"].detach())}

    def breakdown(self, repeats: int) -> dict:
        torch = self.torch

        def timeit(fn):
            fn()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                self._sync()
                times.append(time.perf_counter() - t0)
            return {"s": statistics.median(times)}

        def teacher():
            with torch.no_grad():
                self.teacher(input_ids=self.input_ids, attention_mask=self.attn_mask, output_hidden_states=True)

        def student_fwd_bwd():
            self._losses(self.input_ids, self.attn_mask, self.labels)["loss"].backward()

        def optimizer():
            for p in self.student.parameters():
                p.grad = torch.zeros_like(p) if p.grad is None else p.grad
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), 5.0)
            self.optimizer.step()

        return {"teacher forward": timeit(teacher), "whole step minus optimizer": timeit(student_fwd_bwd),
                "optimizer": timeit(optimizer)}

    def finish(self) -> dict:
        out = _rss_report(self.rss_before, self.rss_reset)
        if self.device == "cuda":
            out["cuda_peak_bytes"] = int(self.torch.cuda.max_memory_allocated())
        return out
