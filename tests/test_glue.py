"""GLUE: every task's reader on files in the official layouts, bad rows skipped with their line,
submission files the GLUE server accepts, and metrics equal to scikit-learn's and scipy's."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from distilbert_jax.errors import UserError
from distilbert_jax.finetune import metrics as M
from distilbert_jax.finetune import glue
from distilbert_jax.finetune.glue import (GLUE_TASKS, eval_splits, glue_task, read_glue,
                                          write_glue_submission)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
GLUE = os.path.join(FIXTURES, "glue")
BAD = os.path.join(FIXTURES, "glue_bad")

# (task, split, rows, guid, text_a starts, text_b starts, label) of the first example
FIRST = [
    ("cola", "train", 6, "train-1", "Our friends won't", None, "1"),
    ("cola", "dev", 4, "dev-1", "The sailors rode", None, "1"),
    ("cola", "test", 3, "0", "Bill whistled", None, None),
    ("sst2", "train", 64, "train-2", "a wonderful and moving", None, "1"),
    ("sst2", "dev", 32, "dev-2", "the music is terrible", None, "0"),
    ("sst2", "test", 4, "0", "uneasy mishmash", None, None),
    ("mrpc", "train", 5, "train-2", "Amrozi accused", "Referring to him", "1"),
    ("mrpc", "dev", 3, "dev-2", "He said the foodservice", '" The foodservice', "1"),
    ("mrpc", "test", 3, "0", "PCCW 's chief", "Current Chief", None),
    ("qqp", "train", 5, "133273", "How is the life", "Which level", "0"),
    ("qqp", "dev", 3, "201359", "Why are African", "Why are hispanics", "0"),
    ("qqp", "test", 3, "0", "Why am I mentally", "Find the remainder", None),
    ("stsb", "train", 5, "0", "A plane is taking off.", "An air plane", 5.0),
    ("stsb", "dev", 3, "0", "A man with a hard hat", "A man wearing", 5.0),
    ("stsb", "test", 3, "0", "A girl is styling", "A girl is brushing", None),
    ("mnli", "train", 6, "0", "Conceptually cream", "Product and geography", "neutral"),
    ("mnli", "dev_matched", 3, "0", "The new rights", "Everyone really likes", "neutral"),
    ("mnli", "dev_mismatched", 4, "0", "Your contribution", "Your contributions were", "contradiction"),
    ("mnli", "test_matched", 2, "0", "Hierbas", "Hierbas is a name", None),
    ("mnli", "test_mismatched", 2, "0", "What have you decided", "So what's", None),
    ("qnli", "train", 4, "0", "When did the third", "Unlike the two", "not_entailment"),
    ("qnli", "dev", 3, "0", "What came into force", "As of that day", "entailment"),
    ("qnli", "test", 2, "0", "What organization", "For some decades", None),
    ("rte", "train", 4, "0", "No Weapons", "Weapons of Mass", "not_entailment"),
    ("rte", "dev", 3, "0", "Dana Reeve", "Christopher Reeve had", "not_entailment"),
    ("rte", "test", 2, "0", "Mangla was", "Shukla is related", None),
    ("wnli", "train", 4, "0", "I stuck a pin", "The carrot had", "1"),
    ("wnli", "dev", 2, "0", "The drain is clogged", "The hair has", "0"),
    ("wnli", "test", 2, "0", "Maude and Dora", "Horses ran away when Maude", None),
    ("ax", "test", 3, "0", "The cat sat", "The cat did not", None),
]


@pytest.mark.parametrize("task,split,rows,guid,text_a,text_b,label", FIRST)
def test_reader_reads_each_official_layout(task, split, rows, guid, text_a, text_b, label):
    result = read_glue(task, GLUE, split)
    assert len(result.examples) == rows and result.skipped == []
    first = result.examples[0]
    assert first.guid == guid and first.text_a.startswith(text_a) and first.label == label
    assert first.text_b is None if text_b is None else first.text_b.startswith(text_b)
    folder = GLUE_TASKS[task].folder
    line = 1 if (task == "cola" and split != "test") else 2  # CoLA train/dev have no header
    assert first.source == f"{os.path.join(GLUE, folder)}/{split}.tsv:{line}"
    # the task's own folder works as data_dir too, with the same result
    assert read_glue(task, os.path.join(GLUE, folder), split).examples == result.examples


def test_test_rows_carry_the_index_column_as_guid():
    assert [e.guid for e in read_glue("mrpc", GLUE, "test").examples] == ["0", "1", "2"]
    assert [e.guid for e in read_glue("qqp", GLUE, "test").examples] == ["0", "1", "2"]
    assert all(e.label is None for e in read_glue("stsb", GLUE, "test").examples)


def test_labels_and_splits_follow_the_old_transformers_processors():
    assert GLUE_TASKS["mnli"].labels == ("contradiction", "entailment", "neutral")
    assert GLUE_TASKS["ax"].labels == GLUE_TASKS["mnli"].labels
    assert GLUE_TASKS["qnli"].labels == GLUE_TASKS["rte"].labels == ("entailment", "not_entailment")
    assert all(GLUE_TASKS[t].labels == ("0", "1") for t in ("cola", "sst2", "mrpc", "qqp", "wnli"))
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert GLUE_TASKS["mnli"].label_id("neutral") == 2
    assert glue_task("SST-2") is GLUE_TASKS["sst2"] and glue_task("STS-B") is GLUE_TASKS["stsb"]
    assert eval_splits("mnli") == ("dev_matched", "dev_mismatched") and eval_splits("rte") == ("dev",)
    assert glue.test_splits("mnli") == ("test_matched", "test_mismatched") and eval_splits("ax") == ()
    # "dev" of MNLI is the matched dev set, "test" the matched test set
    assert read_glue("mnli", GLUE, "dev").examples == read_glue("mnli", GLUE, "dev_matched").examples
    assert read_glue("mnli", GLUE, "test").examples == read_glue("mnli", GLUE, "test_matched").examples
    assert [e.label for e in read_glue("mnli", GLUE, "dev_mismatched").examples] == [
        "contradiction", "contradiction", "entailment", "entailment"]


def test_quotes_and_byte_order_mark_are_read_as_text():
    rte = read_glue("rte", GLUE, "train").examples
    assert rte[2].text_a.startswith('"Herceptin was') and len(rte) == 4  # an unbalanced quote stays
    mrpc = read_glue("mrpc", GLUE, "train").examples  # header starts with a BOM, as MRPC's does
    assert [e.label for e in mrpc] == ["1", "0", "1", "0", "1"]
    assert read_glue("sst2", GLUE, "train").examples[0].text_a.endswith("family .")  # trailing space gone


def test_sst2_fixture_is_balanced_shuffled_and_cued():
    positive = {"great", "wonderful", "loved", "excellent", "beautiful", "brilliant", "enjoyed", "best",
                "amazing", "delightful", "charming", "fun"}
    negative = {"awful", "boring", "hated", "terrible", "dull", "worst", "stupid", "painful", "annoying",
                "poor", "waste", "wasted"}
    for split, n in (("train", 64), ("dev", 32)):
        examples = read_glue("sst2", GLUE, split).examples
        labels = [e.label for e in examples]
        assert len(examples) == n and labels.count("1") == labels.count("0") == n // 2
        assert 4 < sum(a != b for a, b in zip(labels, labels[1:]))  # not sorted by label
        for e in examples:
            words = set(e.text_a.split())
            assert 4 <= len(words - {".", ","}) <= 12
            cue, other = (positive, negative) if e.label == "1" else (negative, positive)
            assert words & cue and not words & other, e.text_a


def test_bad_rows_are_skipped_with_file_and_line(caplog):
    path = os.path.join(BAD, "RTE", "train.tsv")
    with caplog.at_level(logging.WARNING, logger="distilbert_jax"):
        result = read_glue("rte", BAD, "train")
    assert [e.guid for e in result.examples] == ["0", "3", "6"]
    assert result.examples[2].source == f"{path}:9"  # the blank line 7 still counts
    assert result.skipped == [
        f"{path}:3: expected 4 tab-separated fields, found 2; row skipped",
        f"{path}:4: label 'maybe' is not one of entailment, not_entailment; row skipped",
        f"{path}:6: empty 'sentence2'; row skipped",
        f"{path}:8: not valid UTF-8; row skipped",
    ]
    assert sum("row skipped" in r.message for r in caplog.records) == 4

    path = os.path.join(BAD, "STS-B", "train.tsv")
    result = read_glue("stsb", os.path.join(BAD, "STS-B"), "train")
    assert [(e.guid, e.label) for e in result.examples] == [("0", 5.0), ("4", 4.25)]
    assert result.skipped == [
        f"{path}:3: score 'high' is not a number; row skipped",
        f"{path}:4: score '7.5' is outside [0, 5]; row skipped",
        f"{path}:5: expected 10 tab-separated fields, found 11; row skipped",
    ]


def test_unusable_input_raises_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"RTE/dev\.tsv: no such file; the \.tsv files in .*RTE are: train\.tsv"):
        read_glue("rte", BAD, "dev")
    with pytest.raises(UserError, match=r"dev_matched\.tsv: header has no column 'gold_label' \(columns: index, "
                                        r"sentence1, sentence2, label\)"):
        read_glue("mnli", BAD, "dev")
    with pytest.raises(UserError, match=r"no usable examples in .*SST-2/dev\.tsv"):
        read_glue("sst2", BAD, "dev")
    with pytest.raises(UserError, match="unknown GLUE task 'sst3'; known tasks: cola, sst2, mrpc, qqp, stsb, mnli"):
        read_glue("sst3", GLUE, "train")
    with pytest.raises(UserError, match="GLUE rte has no split 'dev_matched'; its splits are: train, dev, test"):
        read_glue("rte", GLUE, "dev_matched")
    with pytest.raises(UserError, match="is the SST-2 folder but the task is cola"):
        read_glue("cola", os.path.join(GLUE, "SST-2"), "train")
    with pytest.raises(UserError, match=f"no CoLA folder in {tmp_path}"):
        read_glue("cola", tmp_path, "train")
    with pytest.raises(UserError) as error:
        read_glue("rte", BAD, "dev")
    assert "\n" not in str(error.value)  # one line, as the CLI prints it


def test_diagnostic_set_as_the_download_script_saves_it(tmp_path):
    os.makedirs(tmp_path / "diagnostic")
    shutil.copy(os.path.join(GLUE, "AX", "test.tsv"), tmp_path / "diagnostic" / "diagnostic.tsv")
    examples = read_glue("ax", tmp_path, "test").examples
    assert [e.guid for e in examples] == ["0", "1", "2"] and examples[1].text_a == "The cat did not sit on the mat."


def _read_tsv(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f]


def test_submission_files_round_trip(tmp_path):
    examples = read_glue("sst2", GLUE, "test").examples
    path = write_glue_submission("sst2", "test", [e.guid for e in examples], ["1", "0", 1, 0], tmp_path)
    assert os.path.basename(path) == "SST-2.tsv"
    assert _read_tsv(path) == [["index", "prediction"], ["0", "1"], ["1", "0"], ["2", "1"], ["3", "0"]]

    for split, name in (("test_matched", "MNLI-m.tsv"), ("test_mismatched", "MNLI-mm.tsv")):
        guids = [e.guid for e in read_glue("mnli", GLUE, split).examples]
        path = write_glue_submission("mnli", split, guids, ["neutral", 0], tmp_path)
        assert os.path.basename(path) == name
        assert _read_tsv(path)[1:] == [["0", "neutral"], ["1", "contradiction"]]
    path = write_glue_submission("ax", "test", ["0", "1", "2"], ["entailment"] * 3, tmp_path)
    assert os.path.basename(path) == "AX.tsv" and len(_read_tsv(path)) == 4

    path = write_glue_submission("stsb", "test", ["0", "1", "2", "3"], [-0.4, 2.34567, 5.7, np.float32(3.0)], tmp_path)
    assert _read_tsv(path) == [["index", "prediction"], ["0", "0.000"], ["1", "2.346"], ["2", "5.000"], ["3", "3.000"]]
    assert sorted(os.listdir(tmp_path)) == ["AX.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "SST-2.tsv", "STS-B.tsv"]

    names = {t: write_glue_submission(t, glue.test_splits(t)[0], ["0"], [0.0 if t == "stsb" else 0], tmp_path / "all")
             for t in GLUE_TASKS}
    assert sorted(os.path.basename(p) for p in names.values()) == sorted(
        ["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "QNLI.tsv", "RTE.tsv",
         "WNLI.tsv", "AX.tsv"])
    with pytest.raises(UserError, match="GLUE rte dev is not submitted"):
        write_glue_submission("rte", "dev", ["0"], ["entailment"], tmp_path)
    with pytest.raises(ValueError, match="'maybe' is not a rte label"):
        write_glue_submission("rte", "test", ["0"], ["maybe"], tmp_path)
    with pytest.raises(ValueError, match="2 guids but 1 predictions"):
        write_glue_submission("rte", "test", ["0", "1"], ["entailment"], tmp_path)


# ---- metrics -------------------------------------------------------------------------------------

def _random_cases(seed=0, n_cases=300):
    """Class predictions/labels: sizes from 1, few and many classes, ties, constant vectors."""
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        n = int(rng.integers(1, 60)) if i % 3 else int(rng.integers(60, 2000))
        k = int(rng.integers(2, 5)) if i % 4 else 2
        y = rng.integers(0, k, n)
        p = np.where(rng.random(n) < rng.random(), y, rng.integers(0, k, n))
        if i % 10 == 0:
            p = np.full(n, int(rng.integers(0, k)))  # constant predictions
        if i % 15 == 0:
            y = np.full(n, 1)  # constant labels
        yield p, y, k


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_classification_metrics_match_scikit_learn():
    for p, y, k in _random_cases():
        assert M.accuracy(p, y) == pytest.approx(sklearn.metrics.accuracy_score(y, p), abs=1e-12)
        assert M.matthews_corrcoef(p, y) == pytest.approx(sklearn.metrics.matthews_corrcoef(y, p), abs=1e-9)
        pb, yb = (p == 1).astype(int), (y == 1).astype(int)
        assert M.f1_binary(pb, yb) == pytest.approx(sklearn.metrics.f1_score(yb, pb, zero_division=0.0), abs=1e-9)
    assert M.matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0  # undefined -> 0.0, as scikit-learn
    assert M.matthews_corrcoef([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert M.matthews_corrcoef([1, 0, 0, 1], [0, 1, 1, 0]) == pytest.approx(-1.0)
    assert M.f1_binary([0, 0], [0, 0]) == 0.0 and M.f1_binary([1, 0, 1], [1, 1, 0]) == pytest.approx(0.5)


def test_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(1)
    for i in range(200):
        n = int(rng.integers(3, 400))
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n) * rng.random()
        if i % 2:  # many ties, like STS-B gold scores on a 0.2 grid
            x, y = np.round(x * 2) / 2, np.round(y * 5) / 5
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        assert M.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-9)
        assert M.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-9)
        assert np.array_equal(M.average_ranks(y), scipy.stats.rankdata(y))
    assert np.isnan(M.pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))  # constant: NaN, as scipy
    assert np.isnan(M.spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]))
    expected = scipy.stats.spearmanr([1, 2, 3, 4], [10, 20, 20, 40])[0]
    assert M.spearman([1, 2, 3, 4], [10, 20, 20, 40]) == pytest.approx(expected, abs=1e-12)


def test_glue_metrics_names_and_values():
    y = np.array([0, 1, 1, 0, 1, 1])
    p = np.array([0, 1, 0, 0, 1, 0])
    assert M.glue_metrics("cola", p, y) == {"mcc": pytest.approx(sklearn.metrics.matthews_corrcoef(y, p))}
    assert M.glue_metrics("mrpc", p, y) == {"accuracy": pytest.approx(4 / 6), "f1": pytest.approx(2 * 2 / (2 * 2 + 2))}
    assert set(M.glue_metrics("qqp", p, y)) == {"accuracy", "f1"}
    for task in ("sst2", "mnli", "qnli", "rte", "wnli"):
        assert M.glue_metrics(task, p, y) == {"accuracy": pytest.approx(4 / 6)}
    s = M.glue_metrics("STS-B", [0.1, 2.0, 3.5, 4.9], [0.0, 2.5, 3.0, 5.0])
    assert set(s) == {"pearson", "spearman"} and s["spearman"] == pytest.approx(1.0)
    # label names, as the reader gives them, mean their index in the task's label list
    assert M.glue_metrics("rte", ["entailment", "not_entailment"], [0, 0]) == {"accuracy": 0.5}
    assert M.glue_metrics("mrpc", ["1", "1", "0"], ["1", "0", "0"])["f1"] == pytest.approx(2 / 3)
    with pytest.raises(UserError, match="unknown GLUE task"):
        M.glue_metrics("squad", p, y)


def test_task_and_glue_scores():
    assert M.task_score("mrpc", {"accuracy": 0.8, "f1": 0.9}) == pytest.approx(0.85)
    assert M.task_score("stsb", {"pearson": 0.86, "spearman": 0.88}) == pytest.approx(0.87)
    with pytest.raises(UserError, match="metrics for qqp lack f1"):
        M.task_score("qqp", {"accuracy": 0.9})
    distilbert = {"cola": 51.3, "mnli": 82.2, "mrpc": 87.5, "qnli": 89.2, "qqp": 88.5, "rte": 59.9,
                  "sst2": 91.3, "stsb": 86.9, "wnli": 56.3}  # DistilBERT paper, table 1: 77.0
    assert round(M.glue_score(distilbert), 1) == 77.0
    # BERT-base on the GLUE leaderboard (78.3): task score = mean of its metrics, MNLI = (m + mm) / 2
    bert_base = {"cola": 52.1, "sst2": 93.5, "mrpc": (88.9 + 84.8) / 2, "stsb": (85.8 + 87.1) / 2,
                 "qqp": (71.2 + 89.2) / 2, "mnli_matched": 84.6, "mnli_mismatched": 83.4, "qnli": 90.5,
                 "rte": 66.4, "wnli": 65.1}
    assert round(M.glue_score(bert_base), 1) == 78.3
    renamed = {{"mnli_matched": "MNLI-m", "mnli_mismatched": "MNLI-mm", "sst2": "SST-2"}.get(k, k): v
               for k, v in bert_base.items()}
    assert M.glue_score(renamed) == pytest.approx(M.glue_score(bert_base), abs=1e-12)
    with pytest.raises(UserError, match="missing: qnli, rte, wnli"):
        M.glue_score({k: v for k, v in distilbert.items() if k not in ("qnli", "rte", "wnli")})
    with pytest.raises(UserError, match="needs both 'mnli_matched' and 'mnli_mismatched'"):
        M.glue_score({k: v for k, v in bert_base.items() if k != "mnli_mismatched"})
    with pytest.raises(UserError, match="AX is the diagnostic set"):
        M.glue_score({**distilbert, "ax": 40.0})


def test_partial_glue_average_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="distilbert_jax"):
        score = M.glue_score({"sst2": 0.9, "rte": 0.6}, require_all=False)
    assert score == pytest.approx(0.75)
    assert "partial GLUE average over 2 of 9 tasks" in caplog.text and "missing: cola, mrpc" in caplog.text
