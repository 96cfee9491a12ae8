"""The paper's fine-tuning table as data (experiments/configs/finetune_paper.py) and the script that
prints ours beside the published numbers (experiments/results_table.py)."""

from __future__ import annotations

import json
import os
import sys

import pytest

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
sys.path[:0] = [EXPERIMENTS, os.path.join(EXPERIMENTS, "configs")]

import finetune_paper as paper  # noqa: E402
import results_table  # noqa: E402

from distilbert_jax.finetune.metrics import glue_score  # noqa: E402
from distilbert_jax.finetune.tasks import task_names  # noqa: E402


@pytest.mark.parametrize("model", ["distilbert", "bert"])
def test_published_glue_score_is_the_mean_of_the_nine_tasks(model):
    published = paper.PUBLISHED[model]
    assert glue_score({t: published[t] for t in paper.GLUE}) == pytest.approx(published["score"], abs=0.05)


def test_every_run_is_a_valid_config():
    data = {"glue": "g", "imdb": "i", "squad": "s"}
    for model in paper.MODELS:
        for task in paper.RUNS:
            config = paper.config_for(model, task, data, "out")
            assert config.task in task_names()
            assert config.seeds == (1, 2, 3, 4, 5)
            assert config.output == os.path.join("out", model, task)
    squad = paper.config_for("distilbert", "squad", data, "out")
    assert (squad.sequence_length, squad.doc_stride, squad.optimizer.learning_rate, squad.data) == (384, 128, 3e-5, "s")
    assert paper.config_for("bert", "imdb", data, "out").task == "classification"


def _write(root, model, task, median, seeds=5):
    folder = os.path.join(root, model, task)
    os.makedirs(folder)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({"median": median, "seeds": [{}] * seeds, "interrupted": False}, f)


def test_table_cells_are_task_scores_in_percent(tmp_path):
    root = str(tmp_path)
    for task in paper.GLUE:
        metrics = {"cola": {"mcc": 0.5}, "mrpc": {"accuracy": 0.8, "f1": 0.9}, "qqp": {"accuracy": 0.8, "f1": 0.7},
                   "stsb": {"pearson": 0.86, "spearman": 0.84}}.get(task, {"accuracy": 0.9})
        median = ({"dev_matched": {"accuracy": 0.82}, "dev_mismatched": {"accuracy": 0.84}} if task == "mnli"
                  else {"dev": {**metrics, "loss": 0.3}})
        _write(root, "distilbert", task, median)
    _write(root, "distilbert", "squad", {"dev": {"exact_match": 0.777, "f1": 0.858}})
    cells, details = results_table.cells(root, "distilbert")
    assert cells["mrpc"] == pytest.approx(85.0) and cells["stsb"] == pytest.approx(85.0)
    assert cells["mnli"] == pytest.approx(83.0) and cells["cola"] == pytest.approx(50.0)
    expected = (50 + 83 + 85 + 90 + 75 + 90 + 90 + 85 + 90) / 9
    assert cells["score"] == pytest.approx(expected)
    assert (cells["squad_em"], cells["squad_f1"]) == (pytest.approx(77.7), pytest.approx(85.8))
    table = results_table.markdown_table(root)
    ours = next(line for line in table.splitlines() if "distilbert-base-uncased (ours" in line)
    assert ours.split(" | ")[1:4] == [f"{expected:.1f}", "50.0", "83.0"]
    assert "| distilbert-base-uncased (published) | 77.0 | 51.3 |" in table
    assert "MNLI: matched 82.00, mismatched 84.00 (5 seeds)" in table
    bert = next(line for line in table.splitlines() if line.startswith("| bert-base-uncased (ours"))
    assert bert.count("—") == len(results_table.COLUMNS)


def test_no_glue_score_without_all_nine_tasks(tmp_path):
    _write(str(tmp_path), "bert", "rte", {"dev": {"accuracy": 0.7}})
    cells, _ = results_table.cells(str(tmp_path), "bert")
    assert cells == {"rte": pytest.approx(70.0)}


def test_run_script_lists_the_runs_whose_data_was_given(capsys):
    import run_paper_table

    assert run_paper_table.main(["--glue", "g", "--tasks", "rte,squad", "--models", "bert", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["distilbert-jax finetune --config experiments/configs/finetune_paper.py --task rte "
                                "--data g --model bert-base-uncased --output runs/paper/bert/rte"]
    assert "skipping bert squad: no --squad folder given" in err
