"""`distilbert-jax verify`: passes on every class, fails on one wrong number, and says why in one line."""

from __future__ import annotations

import math
import shutil
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import (BERT_ARCHS, DISTILBERT_ARCHS, GPT2_ARCHS, ROBERTA_ARCHS, TINY_BERT, TINY_DISTILBERT,
                      TINY_GPT2, TINY_ROBERTA)
from distilbert_jax.cli import main as cli_main
from distilbert_jax.weights import files
from distilbert_jax.weights.verify import compare, verify

WITH_TOKENIZER = ("MaskedLM", "QuestionAnswering", "MultipleChoice")  # the others run on random ids


def _folder(checkpoint, arch):
    tiny = dict(TINY_DISTILBERT if arch.startswith("DistilBert") else TINY_BERT)
    tokenizer = arch.endswith(WITH_TOKENIZER)
    if tokenizer:
        tiny["vocab_size"] = 30522  # the bert-base-uncased vocabulary the tokenizer files hold
    return checkpoint(arch, tokenizer=tokenizer, **tiny)[0]


@pytest.mark.parametrize("arch", DISTILBERT_ARCHS + BERT_ARCHS)
def test_every_class_passes_with_float32_noise_only(checkpoint, arch):
    result = verify(_folder(checkpoint, arch))
    assert result.passed and result.architecture == arch
    names = {c.name for c in result.checks}
    expected = {"BertModel": {"last_hidden_state", "pooler_output"}, "DistilBertModel": {"last_hidden_state"}}
    assert names == expected.get(arch, {"start_logits", "end_logits"} if "QuestionAnswering" in arch else {"logits"})
    assert result.worst.max_abs < 2e-6  # measured: at most 1e-6
    for check in result.checks:
        if check.name.endswith("logits"):
            assert check.top_k == 1.0 and check.kl < 1e-12, check
    assert ("tokenized by the folder's tokenizer" in result.inputs) == arch.endswith(WITH_TOKENIZER)
    if "MultipleChoice" in arch:
        assert ", 2, " in result.inputs  # [B, C, L]


@pytest.mark.parametrize("arch", ROBERTA_ARCHS + GPT2_ARCHS)
def test_roberta_and_gpt2_verify_by_the_same_code(checkpoint, arch):
    """Padding id 1 (RoBERTa's positions count from it) and none at all (GPT-2): real tokens only."""
    config = TINY_GPT2 if arch.startswith("GPT2") else TINY_ROBERTA
    folder, _ = checkpoint(arch, **config, num_labels=2 if "QuestionAnswering" in arch else 3)
    result = verify(folder)
    assert result.passed and result.architecture == arch
    assert result.worst.max_abs < 2e-6  # measured 1.2e-07 (masked and causal LM heads)


def test_a_corrupted_tensor_fails_with_exit_1_naming_the_output(checkpoint, tmp_path, capsys):
    source, converted = _folder(checkpoint, "BertForMaskedLM"), str(tmp_path / "converted")
    assert cli_main(["convert", source, converted]) == 0
    assert cli_main(["verify", converted, "--reference", source]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("OK: every output of BertForMaskedLM")
    state = load_file(tmp_path / "converted" / files.SAFETENSORS)
    state["bert.encoder.layer.1.attention.self.value.weight"][3, 5] += 0.5  # one value of one tensor
    save_file(state, tmp_path / "converted" / files.SAFETENSORS, metadata={"format": "pt"})
    assert cli_main(["verify", converted, "--reference", source]) == 1
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert verdict.startswith("FAIL: logits differs from transformers' BertForMaskedLM by ")
    assert float(verdict.split(" by ")[1].split()[0]) > 1e-3  # measured 9.0e-03: 90x the tolerance
    # without its source, the file is read alike by both frameworks, wrong value and all
    assert cli_main(["verify", converted]) == 0


def test_texts_file_and_a_folder_without_tokenizer(checkpoint, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("A first line.\n\n  Zweite Zeile, mit Umlauten: äöü.  \n")
    assert cli_main(["verify", _folder(checkpoint, "DistilBertForMaskedLM"), "--texts", str(texts)]) == 0
    assert "2 texts tokenized by the folder's tokenizer" in capsys.readouterr().out
    assert cli_main(["verify", _folder(checkpoint, "DistilBertModel"), "--atol", "1e-5"]) == 0
    assert "no tokenizer in the folder: random ids (seed 0)" in capsys.readouterr().out


def _error_line(capsys, argv) -> str:
    capsys.readouterr()  # what making the checkpoints printed
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_cli_errors_are_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    folder = _folder(checkpoint, "DistilBertForMaskedLM")
    assert "cannot read texts" in _error_line(capsys, ["verify", folder, "--texts", str(tmp_path / "none.txt")])
    (tmp_path / "empty.txt").write_text("\n\n")
    assert "holds no texts" in _error_line(capsys, ["verify", folder, "--texts", str(tmp_path / "empty.txt")])
    assert "lacks classifier." in _error_line(capsys, ["verify", folder, "--task", "token-classification"])
    # tokenizer files of another model: ids beyond the embedding table
    mismatched = tmp_path / "mismatched"
    shutil.copytree(_folder(checkpoint, "DistilBertModel"), mismatched)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{folder}/{name}", mismatched)
    assert "vocab_size 99" in _error_line(capsys, ["verify", str(mismatched)])
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    assert "pip install torch transformers" in _error_line(capsys, ["verify", folder])


def test_compare_measures_real_positions_only():
    real = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    theirs = np.array([[1.0, 0.0, 0.5, 0.0], [2.0, 0.0, 0.0, 0.0]])
    ours = theirs + np.array([[0, 0, 0, 9.0], [0, 0, 9.0, 9.0]])  # differs at padding only
    check = compare("start_logits", ours, theirs, real)  # a distribution over the sequence
    assert check.max_abs == 0.0 and check.top_k == 1.0 and check.kl == 0.0 and check.k == 3
    # KL(torch || ours) over two classes, against the formula
    check = compare("logits", np.array([[math.log(3.0), 0.0]]), np.array([[1.0, 0.0]]), np.ones((1, 7)))
    p, q = np.array([math.e, 1]) / (math.e + 1), np.array([0.75, 0.25])
    assert check.k == 1 and check.top_k == 1.0
    assert check.kl == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-12)
    assert check.max_abs == pytest.approx(math.log(3.0) - 1)
    # per-token outputs: a NaN at a real position fails, at padding it does not count
    hidden = np.zeros((2, 4, 3))
    bad = hidden.copy()
    bad[1, 3] = np.nan
    assert compare("last_hidden_state", bad, hidden, real).max_abs == 0.0
    bad[1, 0, 2] = np.nan
    assert math.isnan(compare("last_hidden_state", bad, hidden, real).max_abs)
    assert math.isnan(compare("last_hidden_state", hidden, bad, real).max_abs)  # on either side
