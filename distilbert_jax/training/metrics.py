"""Training metrics: one JSON line per log call, TensorBoard scalars, and PNG learning curves.

`metrics.jsonl` is the record of a run: one `{"step", "split", "time", **values}` object per
line, flushed as it is written, so a killed run loses nothing that was logged; `read_metrics`
skips the half-written last line such a kill can leave. TensorBoard event files (tensorboardX)
are a view of the same numbers. Only process 0 writes, so a multi-host run logs once.

Resuming: records logged after the last checkpoint and before a crash would be logged again,
so `MetricsLogger(..., resume_step=N)` first drops every record with step > N (rewriting the
file atomically) and tells TensorBoard to discard its events from step N + 1 on (`purge_step`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Iterable

import numpy as np

from distilbert_jax.errors import UserError
from distilbert_jax.weights.files import atomic_path

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
PROCESS_LOG_DIR = "logs"
_RESERVED = ("step", "split", "time")


class MetricsLogger:
    """Append metrics of `directory`'s run to `metrics.jsonl` and TensorBoard; see the module docstring."""

    def __init__(self, directory: str, *, tensorboard: bool = True, process_index: int = 0, process_count: int = 1,
                 resume_step: int | None = None):
        self.directory = directory
        self.path = os.path.join(directory, METRICS_FILE)
        self._file = None
        self._writer = None
        # several processes: each keeps its own log (warnings, errors, where it ran) in logs/
        self._process_log = _process_log(directory, process_index) if process_count > 1 else None
        if process_index != 0:
            return
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot write metrics to {directory}: {err.strerror}; choose a writable folder") from None
        _drop_records_after(self.path, resume_step)
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else int(resume_step) + 1
            # event files are named by the second and the host: a writer opened in the same second
            # (a quick resume) would truncate the previous file without a suffix of its own
            suffix = f".{time.time_ns() % 10**9:09d}"
            self._writer = SummaryWriter(os.path.join(directory, TENSORBOARD_DIR), purge_step=purge, flush_secs=30,
                                         filename_suffix=suffix)

    def log(self, step: int, values: dict[str, float], *, split: str = "train") -> None:
        """Write one record; values are converted to float (a NaN loss is kept, as NaN)."""
        if self._file is None:
            return
        clash = [k for k in values if k in _RESERVED]
        if clash:
            raise ValueError(f"metric names {clash} are reserved for the record itself; rename them")
        scalars = {name: float(value) for name, value in values.items()}
        record = {"step": int(step), "split": split, "time": time.time(), **scalars}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for name, value in scalars.items():
                self._writer.add_scalar(f"{split}/{name}", value, int(step))

    def close(self) -> None:
        if self._process_log is not None:
            logging.getLogger("distilbert_jax").removeHandler(self._process_log)
            self._process_log.close()
            self._process_log = None
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _split_lines(text: str, path: str) -> list[tuple[str, dict]]:
    """(raw line, record) pairs; an unreadable last line (a killed write) is dropped."""
    lines = [line for line in text.split("\n") if line.strip()]
    out = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise UserError(f"{path} line {number} is not JSON; fix or delete that line") from None
        out.append((line, record))
    return out


def _process_log(directory: str, process_index: int) -> logging.Handler:
    """logs/process-N.log: this process's warnings and errors (the package logger's), timestamped."""
    folder = os.path.join(directory, PROCESS_LOG_DIR)
    os.makedirs(folder, exist_ok=True)
    handler = logging.FileHandler(os.path.join(folder, f"process-{process_index}.log"), encoding="utf-8")
    handler.setFormatter(logging.Formatter(f"%(asctime)s process {process_index} %(levelname)s: %(message)s"))
    logging.getLogger("distilbert_jax").addHandler(handler)
    return handler


def _drop_records_after(path: str, step: int | None) -> None:
    """Rewrite `path` without records after `step` and without a half-written last line."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        text = f.read()
    kept = [(line, r) for line, r in _split_lines(text, path) if step is None or r.get("step", 0) <= step]
    new_text = "".join(line + "\n" for line, _ in kept)
    if new_text != text:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(new_text)


def read_metrics(path: str) -> list[dict]:
    """Records of a `metrics.jsonl` (or of the run folder holding one), in file order."""
    if os.path.isdir(path):
        path = os.path.join(path, METRICS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise UserError(
            f"cannot read metrics {path}: {err.strerror}; point at a run folder or its {METRICS_FILE}"
        ) from None
    return [record for _, record in _split_lines(text, path)]


def moving_average(values: Iterable[float], window: int) -> np.ndarray:
    """Trailing mean over the last `window` points (fewer at the start), same length as `values`."""
    v = np.asarray(list(values), dtype=np.float64)
    if window <= 1 or v.size == 0:
        return v
    sums = np.cumsum(np.concatenate([[0.0], v]))
    ends = np.arange(1, v.size + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def plot_curves(records_by_run: dict[str, list[dict]], path: str, *, keys: Iterable[str] = ("loss",),
                split: str = "train", title: str | None = None, smooth: int = 1,
                lines: dict[str, dict[str, float]] | None = None) -> str:
    """One PNG, one panel per key, x = step, one line per run; `smooth` > 1 adds a moving average.

    With smoothing the raw points are drawn faintly under the smoothed line, so spikes stay
    visible. Runs without a key are left out of that panel. `lines` draws labelled horizontal
    references per key (`{"mlm_accuracy": {"most frequent token": 0.05}}`). Written atomically;
    returns `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    keys = list(keys)
    series = {key: {} for key in keys}
    for run, records in records_by_run.items():
        rows = sorted((r for r in records if r.get("split") == split), key=lambda r: r["step"])
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            points = [(s, v) for s, v in points if math.isfinite(v)]
            if points:
                series[key][run] = points
    if not any(series.values()):
        raise UserError(f"no {split!r} records with {', '.join(keys)} in runs {', '.join(records_by_run) or '(none)'}")

    fig = Figure(figsize=(6.4, 3.2 * len(keys)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
    colors = {run: f"C{index % 10}" for index, run in enumerate(records_by_run)}  # a run keeps its colour
    for ax, key in zip(axes, keys):
        for run, points in series[key].items():
            steps = np.array([s for s, _ in points])
            values = np.array([v for _, v in points], dtype=np.float64)
            color = colors[run]
            if smooth > 1:
                ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
                values = moving_average(values, smooth)
            ax.plot(steps, values, color=color, linewidth=1.6, label=run)
        for label, value in (lines or {}).get(key, {}).items():
            ax.axhline(value, color="0.35", linestyle="--", linewidth=1.0, label=label)
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        if series[key]:
            ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("step")
    heading = title or f"{split} curves"
    fig.suptitle(heading + (f" (moving average of {smooth})" if smooth > 1 else ""))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
