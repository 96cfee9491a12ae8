"""The one training loop every kind of run plugs into, and the pieces it is made of.

Distillation, MLM pretraining and fine-tuning differ in their step, their batches and what they
do at evaluation points; `run_loop` is the rest, once (Flax examples / MaxText shape):

* The host never waits inside the loop. Each step is dispatched and the loop moves on: the
  step's metrics stay on the device, and the next batch is put on the device while the step
  runs (`on_device`). Device values are read only at log, evaluation and checkpoint points, in
  one transfer for every step since the last read. `guard` (a context manager factory, e.g.
  `lambda: jax.transfer_guard("disallow")`) wraps everything between those points, which is how
  a test proves there is no other read.
* A NaN or infinite loss or gradient norm stops the run. The check is on the values read at
  those points, and a checkpoint point reads them before saving, so a diverged state is never
  written: the last checkpoint on disk is always a good one.
* Ctrl-C or SIGTERM (how clusters preempt) finishes the step in flight, saves and returns; a
  second signal aborts. With several processes the stop is agreed: each process's request is
  combined with the others' at every log point (`any_process`), so all stop after the same step
  and save one checkpoint together, whichever host was signalled.
* Throughput per device: tokens/s and MFU from each device's share of the step's FLOPs against
  one device's peak (`flops.device_peak_flops`), in the progress bar, metrics.jsonl and results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import time
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np

from distilbert_jax.errors import UserError


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class StopFlag:
    """The first Ctrl-C or SIGTERM asks the loop to stop at its next agreement point; a second one
    aborts at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is true on any: one all-gather of one number per process."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.max(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def check_finite(step: int, values: dict[str, float], checkpointer) -> None:
    """Stop on a non-finite loss or gradient norm, naming the step and the last good checkpoint.

    A NaN gradient with a finite loss would reach the parameters in this very step (and the
    checkpoint that follows it) while the loss turns NaN only one step later: check both. Under
    loss scaling (float16) an overflowed gradient is expected and never applied (loss_scale.py),
    so only the loss is checked there.
    """
    watched = ("loss",) if "loss_scale" in values else ("loss", "grad_norm")
    bad = next((k for k in watched if not math.isfinite(values.get(k, 0.0))), None)
    if bad is None:
        return
    last = checkpointer.latest_step()
    checkpointer.close()
    kept = f"the last good checkpoint is step {last}" if last is not None else "no checkpoint was written yet"
    what = "loss" if bad == "loss" else "gradient norm"
    raise TrainingDiverged(f"the {what} became {values[bad]} at step {step}; {kept}. Lower learning_rate, "
                           "raise warmup_fraction, or train in float32")


class Window:
    """Averages of the per-step scalars since the last log line, plus throughput per device."""

    def __init__(self, devices: int = 1):
        self.devices = max(int(devices), 1)
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
        out["tokens_per_s_per_device"] = out["tokens_per_s"] / self.devices
        out["lr"] = lr
        if peak:
            out["mfu"] = sum(r["flops"] for r in rows) / self.devices / dt / peak
        return out

    def totals(self, elapsed: float, peak: float | None) -> dict[str, float]:
        elapsed = max(elapsed, 1e-9)
        out = {"tokens": self.all_tokens, "tokens_per_s": self.all_tokens / elapsed,
               "tokens_per_s_per_device": self.all_tokens / elapsed / self.devices, "devices": self.devices}
        if peak:
            out["mfu"] = self.all_flops / self.devices / elapsed / peak
            out["peak_flops_per_device"] = peak
        return out


def on_device(batches: Iterable, put: Callable[[Any], Any], ahead: int = 1) -> Iterator[tuple[Any, Any]]:
    """(batch, its device arrays), with the next `ahead` batches already put on the devices.

    The loop asks for batch k + 1 right after dispatching step k, so its host-to-device copy
    runs while the step computes; the step never waits for its input.
    """
    queue: list = []
    it = iter(batches)
    while True:
        while len(queue) <= ahead:
            try:
                batch = next(it)
            except StopIteration:
                break
            queue.append((batch, put(batch)))
        if not queue:
            return
        yield queue.pop(0)


@dataclasses.dataclass
class LoopSpec:
    """What a kind of run plugs into `run_loop`."""

    name: str  # the progress bar's label
    total_steps: int  # micro-batches
    step: Callable  # (state, device arrays) -> (state, metrics on the device)
    batches: Iterable  # host batches of this process's rows, from the run's position on
    put: Callable  # host batch -> device arrays (global, split over the batch axes)
    data_state: Callable[[Any], dict]  # batch just consumed (None: none yet) -> what a checkpoint keeps
    flops: Callable[[dict], float]  # device arrays -> analytic FLOPs of one step on them (whole mesh)
    learning_rate: Callable[[int], float]  # step -> the learning rate its update used
    log_every: int
    save_at: Callable[[int], bool]  # step -> save a checkpoint after it
    eval_at: Callable[[int], bool] = lambda step: False
    evaluate: Callable[[Any, int], None] | None = None  # (state, step): score and log, at eval points
    postfix: Callable[[dict], dict] = lambda values: {}  # extra progress-bar fields
    progress: bool = True
    config: dict = dataclasses.field(default_factory=dict)  # saved with every checkpoint


@dataclasses.dataclass
class LoopResult:
    state: Any
    step: int
    interrupted: bool
    seconds: float
    train: dict[str, float]  # totals: tokens, tokens/s (whole and per device), MFU


def run_loop(spec: LoopSpec, state, start: int, checkpointer, logger, *, peak: float | None,
             stop_at_step: int | None = None, guard: Callable[[], Any] | None = None) -> LoopResult:
    """Train from micro-batch `start` to `spec.total_steps`; see the module docstring.

    `stop_at_step` behaves like Ctrl-C after that many micro-batches (tests of exact resume);
    `guard()` is entered around everything between read points.
    """
    from tqdm.auto import tqdm

    step = start
    primary = jax.process_index() == 0
    bar = tqdm(total=spec.total_steps, initial=step, disable=not (spec.progress and primary), unit="batch",
               desc=spec.name, dynamic_ncols=True)
    window = Window(jax.device_count())
    pending: list[tuple[int, Any, float]] = []  # (step, device metrics, flops) not yet read
    data_state = spec.data_state(None)
    interrupted = False
    t_start = time.time()

    def read() -> None:
        """Every pending step's metrics in one transfer; stop on a NaN before anything is saved."""
        if not pending:
            return
        fetched = jax.device_get([m for _, m, _ in pending])
        for (at, _, flops), metrics in zip(pending, fetched):
            values = {k: float(v) for k, v in metrics.items()}
            check_finite(at, values, checkpointer)
            window.add({**values, "flops": flops})
        pending.clear()

    def save() -> None:
        read()
        checkpointer.save(step, state, data_state=data_state, config=spec.config)

    batches = on_device(spec.batches, spec.put)
    quiet = guard or contextlib.nullcontext
    # one process decides alone at every step; several agree at log points, which every process reaches
    agree_every = 1 if jax.process_count() == 1 else spec.log_every
    try:
        with StopFlag() as stop:
            while step < spec.total_steps:
                asked = step % agree_every == 0 and any_process(stop.requested)
                if asked or (stop_at_step is not None and step >= stop_at_step):
                    interrupted = True
                    break
                with quiet():
                    batch, arrays = next(batches)
                    state, metrics = spec.step(state, arrays)
                    step += 1
                    pending.append((step, metrics, spec.flops(arrays)))
                    data_state = spec.data_state(batch)
                bar.update(1)
                if step % spec.log_every == 0 or step == spec.total_steps:
                    read()
                    values = window.flush(lr=spec.learning_rate(step), peak=peak)
                    logger.log(step, values)
                    bar.set_postfix(loss=f"{values['loss']:.3f}",
                                    tok_s_dev=f"{values['tokens_per_s_per_device']:.0f}",
                                    **({"mfu": f"{values['mfu']:.0%}"} if "mfu" in values else {}),
                                    **spec.postfix(values))
                if spec.evaluate is not None and spec.eval_at(step):
                    read()
                    spec.evaluate(state, step)
                if spec.save_at(step):
                    save()
        # Not forced: when this step is saved already (a finished run run again, or a save just made),
        # the same state is on disk and rewriting it would only risk it.
        save()
        checkpointer.wait()
    except BaseException:
        logger.close()  # a diverged or failed run still leaves complete metrics files
        raise
    finally:
        bar.close()
        checkpointer.close()
    elapsed = time.time() - t_start
    return LoopResult(state, step, interrupted, elapsed, window.totals(elapsed, peak))


def planned_updates(epochs: float, batches_per_epoch: int, accumulate: int, max_updates: int | None) -> int:
    """Optimizer updates of a run, as transformers' Trainer counts them: whole updates per epoch
    (a partial accumulation at an epoch's end is not one), times the epochs, rounded up."""
    if max_updates:
        return int(max_updates)
    per_epoch = max(batches_per_epoch // accumulate, 1)
    return max(1, math.ceil(epochs * per_epoch))


def update_learning_rate(schedule, accumulate: int) -> Callable[[int], float]:
    """step -> the learning rate of the last update applied by then (for log lines)."""
    return lambda step: float(schedule(max(step // accumulate - 1, 0)))


def run_facts(mesh) -> dict[str, Any]:
    """Where a run ran: processes, devices and the mesh (results.json and the first log line)."""
    return {"process_count": jax.process_count(), "process_index": jax.process_index(),
            "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
            "device_kind": jax.devices()[0].device_kind, "mesh": {k: int(v) for k, v in mesh.shape.items()}}


def announce(name: str, facts: dict[str, Any]) -> None:
    """The run's first log line: processes, this one's index, devices and the mesh (with several
    processes a warning, so every process's stderr and logs/process-N.log carry it)."""
    level = logging.WARNING if facts["process_count"] > 1 else logging.INFO
    logging.getLogger("distilbert_jax").log(
        level, "%s: %d process(es), this is %d; %d devices (%d local, %s); mesh %s", name, facts["process_count"],
        facts["process_index"], facts["device_count"], facts["local_device_count"], facts["device_kind"],
        facts["mesh"])


def write_json(path: str, data: dict) -> None:
    from distilbert_jax.weights.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=float)
