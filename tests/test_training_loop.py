"""The one training loop: the host never reads the device between log, evaluation and checkpoint
points, the next batch is on the device before the step that precedes it runs, a NaN stops the run
before a checkpoint could keep it, and throughput is reported per device."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distilbert_jax.training.checkpoint import Checkpointer
from distilbert_jax.training.loop import (LoopSpec, TrainingDiverged, Window, on_device, planned_updates,
                                          run_loop)
from distilbert_jax.training.metrics import MetricsLogger, read_metrics
from device_reads import DeviceRead, no_device_reads

TOTAL = 12


class Batch:
    def __init__(self, index: int):
        self.index, self.values = index, np.full((4, 8), index, np.float32)


def _spec(events: list, *, poison_at: int | None = None, log_every: int = 4, read_inside: bool = False,
          save_every: int = 6) -> LoopSpec:
    @jax.jit
    def step(state, arrays):
        loss = jnp.mean(arrays["x"]) + state["w"]
        if poison_at is not None:
            loss = jnp.where(arrays["x"][0, 0] == poison_at, jnp.nan, loss)
        return {"w": state["w"] + 1.0}, {"loss": loss, "grad_norm": jnp.float32(1.0), "tokens": jnp.float32(32.0)}

    def put(batch):
        events.append(("put", batch.index))
        return {"x": jax.device_put(batch.values)}

    def run_step(state, arrays):
        events.append(("step", len([e for e in events if e[0] == "step"])))
        state, metrics = step(state, arrays)
        if read_inside:
            float(metrics["loss"])  # what the loop must never do between points
        return state, metrics

    return LoopSpec(name="toy", total_steps=TOTAL, step=run_step, batches=(Batch(i) for i in range(100)), put=put,
                    data_state=lambda batch: {"next": 0 if batch is None else batch.index + 1},
                    flops=lambda arrays: 1e6, learning_rate=lambda step: 1e-3, log_every=log_every,
                    save_at=lambda step: step % save_every == 0, progress=False)


def _run(tmp_path, spec, **kwargs):
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"), keep=5)
    logger = MetricsLogger(str(tmp_path), tensorboard=False)
    try:
        return run_loop(spec, {"w": jnp.float32(0.0)}, 0, checkpointer, logger, peak=1e9, **kwargs)
    finally:
        logger.close()


def test_no_device_read_between_points_and_the_next_batch_goes_up_first(tmp_path):
    events: list = []
    done = _run(tmp_path, _spec(events), guard=no_device_reads)
    assert done.step == TOTAL and not done.interrupted and float(done.state["w"]) == TOTAL
    puts = [i for kind, i in events if kind == "put"]
    steps = [i for kind, i in events if kind == "step"]
    assert steps == list(range(TOTAL))
    # batch k + 1 is on its way to the device before step k is dispatched
    for k in range(TOTAL):
        assert events.index(("put", k + 1)) < events.index(("step", k))
    assert puts == list(range(TOTAL + 1))  # one batch ahead, no more
    records = [r for r in read_metrics(str(tmp_path)) if r["split"] == "train"]
    assert [r["step"] for r in records] == [4, 8, 12]
    assert records[0]["loss"] == pytest.approx(np.mean([2 * i for i in range(4)]))  # every step counted once
    with Checkpointer(str(tmp_path / "checkpoints")) as checkpoints:
        assert checkpoints.all_steps() == [6, 12]


def test_the_guard_catches_a_read_between_points(tmp_path):
    with pytest.raises(DeviceRead, match="device-to-host read"):
        _run(tmp_path, _spec([], read_inside=True), guard=no_device_reads)


def test_a_nan_is_caught_at_the_next_point_and_never_saved(tmp_path):
    # step 8's loss is NaN (batch 7); the log point at step 8 reads it before the save at step 12
    with pytest.raises(TrainingDiverged, match="loss became nan at step 8; the last good checkpoint is step 6"):
        _run(tmp_path, _spec([], poison_at=7), guard=no_device_reads)
    with Checkpointer(str(tmp_path / "checkpoints")) as checkpoints:
        assert checkpoints.all_steps() == [6]


def test_a_checkpoint_point_reads_before_saving(tmp_path):
    # logs every 10 steps only: the save at step 6 must still see step 5's NaN and refuse to write
    with pytest.raises(TrainingDiverged, match="loss became nan at step 5; no checkpoint was written yet"):
        _run(tmp_path, _spec([], poison_at=4, log_every=10), guard=no_device_reads)
    assert not os.path.isdir(tmp_path / "checkpoints" / "6")


def test_throughput_is_per_device():
    window = Window(devices=8)
    window.add({"loss": 1.0, "tokens": 800.0, "flops": 8e9})
    window.t0 -= 1.0  # one second
    values = window.flush(lr=0.1, peak=1e9)
    assert values["tokens_per_s"] == pytest.approx(800, rel=0.05)
    assert values["tokens_per_s_per_device"] == pytest.approx(100, rel=0.05)
    assert values["mfu"] == pytest.approx(1.0, rel=0.05)  # each device did 1e9 FLOPs in a second, its peak


@pytest.mark.parametrize("epochs, per_epoch, accumulate, expected", [
    (3.0, 10, 1, 30), (3.0, 10, 3, 9), (0.5, 10, 3, 2), (1.0, 2, 5, 1), (2.5, 7, 2, 8)])
def test_planned_updates_count_whole_updates_per_epoch(epochs, per_epoch, accumulate, expected):
    assert planned_updates(epochs, per_epoch, accumulate, None) == expected
    assert planned_updates(epochs, per_epoch, accumulate, 5) == 5
    assert expected == max(1, math.ceil(epochs * max(per_epoch // accumulate, 1)))


def test_on_device_reads_one_batch_ahead_and_stops_with_the_data():
    seen: list = []
    out = list(on_device(range(5), lambda b: seen.append(b) or b * 10))
    assert out == [(b, b * 10) for b in range(5)] and seen == list(range(5))
