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

from distilbert_jax.distill.demo import REFERENCE, DemoConfig, format_table, summary

TOY = dict(corpus_bytes=60_000, vocab_size=500, hidden=32, heads=4, ffn=64, teacher_layers=4, student_layers=(0, 3),
           teacher_updates=40, student_updates=20, batch_size=16, eval_batches=4, eval_every=10, progress=False,
           buckets=(64,))  # one sequence length: one compile per step, the demo runs twice here


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
    assert set(table) == {"teacher", "distilled student", "baseline (no teacher)", REFERENCE}
    student, baseline, teacher = table["distilled student"], table["baseline (no teacher)"], table["teacher"]
    assert results["student_beats_baseline"] and student["perplexity"] < baseline["perplexity"]
    assert student["parameters"] == baseline["parameters"] < teacher["parameters"]
    # the same held-out positions for every row, the reference's included
    assert student["targets"] == baseline["targets"] == teacher["targets"] == table[REFERENCE]["targets"] > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["table"] == json.loads(json.dumps(table)) and saved["demo"]["hidden"] == 32
    text = format_table(table)
    assert "| distilled student |" in text and "x reference" in text
    assert f"| {REFERENCE} | - | {table[REFERENCE]['mlm_accuracy']:.2%} | 1.00 |" in text
    assert results["summary"] == summary(table) and "most-frequent-token reference" in results["summary"]


def test_the_reference_row_is_the_most_frequent_training_token(demo):
    """Recomputed here from the data: the held-out targets (the same batches, keys and masking the
    models are scored with), of which the reference gets right those equal to the most frequent
    training token, with the unigram distribution's perplexity."""
    import jax

    from distilbert_jax.data.dataset import TokenDataset
    from distilbert_jax.data.loader import BatchLoader
    from distilbert_jax.data.masking import mask_tokens
    from distilbert_jax.distill.evaluate import EVAL_SEED, mask_tables, unigram_log_probs

    out, results = demo
    config = DemoConfig(output=str(out), **TOY)
    dataset, heldout = TokenDataset.open(str(out / "data"), "train"), TokenDataset.open(str(out / "data"), "heldout")
    specials = list(dataset.special_ids.values())
    top = int(np.argmax(np.where(np.isin(np.arange(dataset.vocab_size), specials), -1, dataset.counts)))
    log_probs = unigram_log_probs(dataset)
    assert int(np.argmax(log_probs)) == top
    tables = mask_tables(dataset, smoothing=0.7, random_from_vocab=False)
    loader = BatchLoader(heldout, batch_size=config.batch_size, seed=0, buckets=config.buckets, prefetch=0)
    targets = []
    for batch in loader.epoch_batches(0):
        if batch.index >= config.eval_batches:
            break
        _, labels = mask_tokens(jax.random.fold_in(jax.random.key(EVAL_SEED), batch.index), batch.input_ids,
                                batch.attention_mask, tables["uniform_weights"], mask_id=dataset.mask_id,
                                replacement_ids=tables["replacement_ids"])
        labels = np.asarray(labels)
        targets.extend(labels[labels != -100].tolist())
    targets = np.asarray(targets)
    reference = results["table"][REFERENCE]
    assert reference["targets"] == targets.size > 0
    assert reference["mlm_accuracy"] == pytest.approx(np.mean(targets == top), abs=1e-7)
    assert reference["perplexity"] == pytest.approx(np.exp(-np.mean(log_probs[targets])), rel=1e-5)
    assert 0.0 < reference["mlm_accuracy"] < 0.2  # the most frequent token is a few percent of the targets


def test_two_runs_write_the_same_table_to_the_last_digit(demo, tmp_path):
    """The vocabulary is trained deterministically and everything after it is seeded: a second run
    from scratch reproduces the vocabulary, the data and every number of the table."""
    from distilbert_jax.cli import main

    out, results = demo
    overrides = [arg for key, value in TOY.items() for arg in ("--set", f"{key}={value!r}")]
    assert main(["distill", "--workdir", str(tmp_path), *overrides]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "data" / "vocab.txt").read_text() == (out / "data" / "vocab.txt").read_text()
    assert again["data_fingerprint"] == results["data_fingerprint"]
    assert again["table"] == results["table"]


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
