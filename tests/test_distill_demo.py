"""The main job end to end at toy size: corpus, vocabulary, teacher, distilled student, baseline.

The full demo (`distilbert-jax distill`) runs the same code with bigger numbers; here every size
is shrunk so the pipeline finishes in about a minute, and the checks are the ones the demo
itself promises: the student beats the no-teacher baseline, the results and plots are written,
and the exported student is a folder transformers loads.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from distilbert_jax.distill.demo import DemoConfig, format_table

TOY = dict(corpus_bytes=60_000, vocab_size=500, hidden=32, heads=4, ffn=64, teacher_layers=4, student_layers=(0, 3),
           teacher_updates=40, student_updates=20, batch_size=16, eval_batches=4, eval_every=10, progress=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Run through the command line, as `distilbert-jax distill --workdir OUT --set k=v ...` does."""
    from distilbert_jax.cli import main

    out = tmp_path_factory.mktemp("demo")
    overrides = [arg for key, value in TOY.items() for arg in ("--set", f"{key}={value!r}")]
    assert main(["distill", "--workdir", str(out), *overrides]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_the_command_line_sizes_are_the_ones_run(demo):
    out, results = demo
    assert results["demo"] == {**json.loads(json.dumps(dataclasses.asdict(DemoConfig(output=str(out), **TOY))))}


def test_student_beats_baseline_and_table_is_written(demo):
    out, results = demo
    table = results["table"]
    assert set(table) == {"teacher", "distilled student", "baseline (no teacher)"}
    student, baseline, teacher = table["distilled student"], table["baseline (no teacher)"], table["teacher"]
    assert results["student_beats_baseline"] and student["perplexity"] < baseline["perplexity"]
    assert student["parameters"] == baseline["parameters"] < teacher["parameters"]
    assert student["targets"] == baseline["targets"] == teacher["targets"] > 0  # the same held-out positions
    saved = json.loads((out / "results.json").read_text())
    assert saved["table"] == json.loads(json.dumps(table)) and saved["demo"]["hidden"] == 32
    assert "| distilled student |" in format_table(table)


def test_runs_keep_config_metrics_and_plots(demo):
    out, results = demo
    for run in ("teacher", "student", "baseline"):
        config = json.loads((out / run / "config.json").read_text())
        assert config["name"] == run and config["seed"] == 56
        lines = (out / run / "metrics.jsonl").read_text().splitlines()
        assert any(json.loads(line)["split"] == "heldout" for line in lines)
    assert json.loads((out / "student" / "config.json").read_text())["loss"]["alpha_ce"] == 5.0
    assert json.loads((out / "baseline" / "config.json").read_text())["objective"] == "mlm"
    for png in results["plots"]:
        data = open(png, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_exported_student_loads_in_transformers(demo):
    import torch
    import transformers

    out, _ = demo
    folder = out / "student" / "final"
    model, info = transformers.DistilBertForMaskedLM.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    import distilbert_jax as dj

    ours = dj.from_pretrained(folder)
    ids = np.array([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        expected = model.eval()(torch.tensor(ids)).logits.numpy()
    assert np.max(np.abs(np.asarray(ours(ids).logits) - expected)) < 1e-4
