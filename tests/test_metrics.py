"""Metrics: JSON lines, TensorBoard scalars, killed-run tolerance, resume truncation, PNG curves."""

from __future__ import annotations

import glob
import math
import os
import struct

import numpy as np
import pytest

from distilbert_jax.errors import UserError
from distilbert_jax.training.metrics import MetricsLogger, moving_average, plot_curves, read_metrics


def tensorboard_events(directory: str) -> list:
    """Parse TFRecord event files: [u64 length][u32 crc][Event proto][u32 crc] per record."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            events.append(event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length]))
            offset += 12 + length + 4
    return events


def tensorboard_scalars(directory: str) -> dict[str, list[tuple[int, float]]]:
    scalars: dict[str, list[tuple[int, float]]] = {}
    for event in tensorboard_events(directory):
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_log_writes_json_lines_and_tensorboard(tmp_path):
    run = str(tmp_path / "run")
    with MetricsLogger(run) as log:
        log.log(1, {"loss": 2.5, "loss_ce": np.float32(1.25)})
        log.log(2, {"loss": 2.0, "lr": 1e-4})
        log.log(2, {"loss": 3.0}, split="eval")
        # every line is on disk before close: a crash here would lose nothing
        with open(os.path.join(run, "metrics.jsonl")) as f:
            assert len(f.read().splitlines()) == 3
    records = read_metrics(run)
    assert [(r["step"], r["split"]) for r in records] == [(1, "train"), (2, "train"), (2, "eval")]
    assert records[0]["loss"] == 2.5 and records[0]["loss_ce"] == 1.25
    assert records[1]["lr"] == 1e-4 and records[2]["loss"] == 3.0
    assert all(isinstance(r["time"], float) and r["time"] > 1.6e9 for r in records)

    event_files = glob.glob(os.path.join(run, "tensorboard", "events.out.tfevents.*"))
    assert len(event_files) == 1
    with open(event_files[0], "rb") as f:
        assert b"train/loss" in f.read()
    scalars = tensorboard_scalars(os.path.join(run, "tensorboard"))
    assert scalars["train/loss"] == [(1, 2.5), (2, 2.0)]
    assert scalars["train/loss_ce"] == [(1, 1.25)]
    assert scalars["eval/loss"] == [(2, 3.0)]
    assert scalars["train/lr"][0][0] == 2 and math.isclose(scalars["train/lr"][0][1], 1e-4, rel_tol=1e-6)


def test_only_process_zero_writes(tmp_path):
    log = MetricsLogger(str(tmp_path / "run"), process_index=1)
    log.log(1, {"loss": 1.0})
    log.close()
    assert not os.path.exists(tmp_path / "run")


def test_reserved_names_are_refused(tmp_path):
    with MetricsLogger(str(tmp_path / "run"), tensorboard=False) as log:
        with pytest.raises(ValueError, match="reserved"):
            log.log(1, {"step": 3.0})


def test_truncated_last_line_is_tolerated_and_repaired_on_append(tmp_path):
    run = tmp_path / "run"
    with MetricsLogger(str(run), tensorboard=False) as log:
        for step in (1, 2, 3):
            log.log(step, {"loss": float(step)})
    path = run / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"step": 4, "split": "train", "lo')  # the process was killed mid-write
    assert [r["step"] for r in read_metrics(str(path))] == [1, 2, 3]
    with MetricsLogger(str(run), tensorboard=False) as log:  # appending must not glue onto the fragment
        log.log(4, {"loss": 4.0})
    assert [(r["step"], r["loss"]) for r in read_metrics(str(run))] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]


def test_corrupt_middle_line_and_missing_file_are_user_errors(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(UserError, match="line 2 is not JSON"):
        read_metrics(str(path))
    with pytest.raises(UserError, match="cannot read metrics"):
        read_metrics(str(tmp_path / "nowhere"))


def test_resume_drops_records_after_the_checkpoint(tmp_path):
    run = str(tmp_path / "run")
    with MetricsLogger(run) as log:
        for step in range(1, 8):
            log.log(step, {"loss": 10.0 - step})
        log.log(5, {"loss": 1.0}, split="eval")
        log.log(7, {"loss": 0.5}, split="eval")
    # crash after step 7; the last checkpoint was step 5: steps 6 and 7 will be run again
    with MetricsLogger(run, resume_step=5) as log:
        assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 5]
        for step in (6, 7, 8):
            log.log(step, {"loss": 100.0 + step})
    records = read_metrics(run)
    train = [(r["step"], r["loss"]) for r in records if r["split"] == "train"]
    assert train == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0), (5, 5.0), (6, 106.0), (7, 107.0), (8, 108.0)]
    assert [(r["step"], r["loss"]) for r in records if r["split"] == "eval"] == [(5, 1.0)]
    assert len(glob.glob(os.path.join(run, "tensorboard", "events.out.tfevents.*"))) == 2
    scalars = tensorboard_scalars(os.path.join(run, "tensorboard"))  # both files, in order
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6, 7, 6, 7, 8]
    # the resumed writer starts with a SessionLog START at step 6: TensorBoard hides the old 6 and 7
    from tensorboardX.proto import event_pb2

    starts = [e.step for e in tensorboard_events(os.path.join(run, "tensorboard"))
              if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START]
    assert starts == [6]


def test_moving_average_is_a_trailing_mean():
    np.testing.assert_allclose(moving_average([1, 2, 3, 4, 5], 3), [1, 1.5, 2, 3, 4])
    np.testing.assert_allclose(moving_average([1, 2, 3], 1), [1, 2, 3])


def test_plot_curves_writes_a_png_with_several_runs(tmp_path):
    rng = np.random.default_rng(0)
    steps = np.arange(0, 400, 4)
    runs = {}
    for name, scale in (("teacher", 1.0), ("distilled student", 1.3), ("baseline", 1.8)):
        loss = scale * 8 * np.exp(-steps / 150) + scale + rng.normal(0, 0.2, steps.size)
        runs[name] = [{"step": int(s), "split": "train", "loss": float(v), "loss_mlm": float(v / 2)}
                      for s, v in zip(steps, loss)]
    runs["baseline"].append({"step": 400, "split": "train", "loss": float("nan")})  # skipped, not plotted
    runs["teacher"] = [dict(r, loss_mlm=None) for r in runs["teacher"]]  # no mlm curve for it
    path = str(tmp_path / "plots" / "curves.png")
    os.makedirs(os.path.dirname(path))
    assert plot_curves(runs, path, keys=("loss", "loss_mlm"), title="tiny distillation", smooth=5) == path
    with open(path, "rb") as f:
        png = f.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (640, 640)  # 6.4 in x (3.2 in per panel x 2 panels) at 100 dpi
    assert len(png) > 20_000
    assert sorted(os.listdir(tmp_path / "plots")) == ["curves.png"]  # no temporary file left


def test_plot_curves_without_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no 'eval' records with loss"):
        plot_curves({"run": [{"step": 1, "split": "train", "loss": 1.0}]}, str(tmp_path / "x.png"), split="eval")
