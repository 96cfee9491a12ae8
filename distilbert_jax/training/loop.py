"""Pieces of a training loop that every trainer here shares.

Ctrl-C handling (finish the step in flight, save, return), the one-step-late check of the
scalars that stops a run on a NaN before any checkpoint stores it, throughput windows with MFU,
the export of trained parameters as an HF-format folder, and atomic JSON run files.
"""

from __future__ import annotations

import json
import math
import signal
import time

import jax
import numpy as np

from distilbert_jax.errors import UserError
from distilbert_jax.pretrained import PretrainedModel


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class StopFlag:
    """First Ctrl-C asks the loop to stop after the current step; a second one aborts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def checked(pending, checkpointer) -> dict[str, float]:
    step, metrics, flops = pending
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    # A NaN gradient with a finite loss would reach the parameters in this very step (and the
    # checkpoint that follows it) while the loss turns NaN only one step later: check both.
    bad = next((k for k in ("loss", "grad_norm") if not math.isfinite(values.get(k, 0.0))), None)
    if bad is not None:
        last = checkpointer.latest_step()
        checkpointer.close()
        kept = f"the last good checkpoint is step {last}" if last is not None else "no checkpoint was written yet"
        what = "loss" if bad == "loss" else "gradient norm"
        raise TrainingDiverged(f"the {what} became {values[bad]} at step {step}; {kept}. Lower learning_rate, "
                               "raise warmup_fraction, or train in float32")
    values["flops"] = flops
    return values


class Window:
    """Averages of the per-step scalars since the last log line, plus throughput."""

    def __init__(self):
        self.rows: list[dict] = []
        self.t0 = time.time()
        self.all_tokens = 0.0
        self.all_flops = 0.0
        self.steps = 0

    def add(self, values: dict) -> None:
        self.rows.append(values)
        self.all_tokens += values["tokens"]
        self.all_flops += values["flops"]
        self.steps += 1

    def flush(self, *, lr: float, peak: float | None) -> dict[str, float]:
        now = time.time()
        dt = max(now - self.t0, 1e-9)
        rows, self.rows, self.t0 = self.rows, [], now
        out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("tokens", "flops", "targets")}
        out["tokens_per_s"] = sum(r["tokens"] for r in rows) / dt
        out["lr"] = lr
        if peak:
            out["mfu"] = sum(r["flops"] for r in rows) / dt / peak
        return out

    def totals(self, elapsed: float, peak: float | None) -> dict[str, float]:
        out = {"tokens": self.all_tokens, "tokens_per_s": self.all_tokens / max(elapsed, 1e-9)}
        if peak:
            out["mfu"] = self.all_flops / max(elapsed, 1e-9) / peak
            out["matmul_peak_flops"] = peak
        return out


def export(model: PretrainedModel, params, directory: str) -> str:
    """The trained model as an HF-format folder (PyTorch key names), written by process 0."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() == 0:
        PretrainedModel(model.config, model.architecture, jax.device_get(params),
                        tokenizer=model.tokenizer).save_pretrained(directory)
    return directory


def write_json(path: str, data: dict) -> None:
    from distilbert_jax.weights.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=float)
