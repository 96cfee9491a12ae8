"""The command line: JSON outputs, one-line errors with exit status 2, and compiled-program reuse."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_DISTILBERT
from distilbert_jax.cli import main

TINY_REAL_VOCAB = dict(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=128)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, env=None):
    """The real process, as a user runs it: exit status, stdout, stderr."""
    full_env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "distilbert_jax.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def mlm(checkpoint):
    return checkpoint("DistilBertForMaskedLM", seed=3, tokenizer=True, **TINY_REAL_VOCAB)[0]


def test_fill_mask_prints_json_lines(mlm, capsys):
    assert main(["fill-mask", "--model", mlm, "--top-k", "3", "Paris is the [MASK] of France.",
                 "two [MASK] masks [MASK]"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["Paris is the [MASK] of France.", "two [MASK] masks [MASK]"]
    assert len(lines[0]["predictions"]) == 3 and {"score", "token", "token_str", "sequence"} <= set(
        lines[0]["predictions"][0])
    assert len(lines[1]["predictions"]) == 2 and len(lines[1]["predictions"][0]) == 3  # one list per mask
    scores = [p["score"] for p in lines[0]["predictions"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1


def test_embed_prints_unit_vectors(mlm, capsys, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("first line\n\nsecond line\n")
    assert main(["embed", "--model", mlm, "--input", str(texts), "a third"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["a third", "first line", "second line"]
    for line in lines:
        assert len(line["embedding"]) == 32 and np.isclose(np.linalg.norm(line["embedding"]), 1.0, atol=1e-5)


@pytest.mark.parametrize("case", ["missing-folder", "no-mask", "empty", "too-long", "corrupt-weights",
                                  "config-mismatch", "no-tokenizer", "bad-task"])
def test_user_errors_are_one_line_with_exit_2(mlm, checkpoint, tmp_path, capsys, case):
    args = {
        "missing-folder": ["fill-mask", "--model", str(tmp_path / "nowhere"), "a [MASK]"],
        "no-mask": ["fill-mask", "--model", mlm, "nothing to fill here"],
        "empty": ["fill-mask", "--model", mlm],
        "too-long": ["fill-mask", "--model", mlm, "word " * 300 + "[MASK]"],
        "corrupt-weights": ["embed", "--model", str(tmp_path), "x"],
        "config-mismatch": ["embed", "--model", str(tmp_path), "x"],
        "no-tokenizer": ["embed", "--model", checkpoint("DistilBertModel", **TINY_DISTILBERT)[0], "x"],
        "bad-task": ["convert", mlm, str(tmp_path / "out"), "--task", "translation"],
    }[case]
    if case in ("corrupt-weights", "config-mismatch"):
        shutil.copytree(mlm, tmp_path, dirs_exist_ok=True)
        if case == "corrupt-weights":
            with open(tmp_path / "model.safetensors", "r+b") as f:
                f.truncate(1000)
        else:
            config = json.loads((tmp_path / "config.json").read_text())
            config["n_layers"] = 3
            (tmp_path / "config.json").write_text(json.dumps(config))
    capsys.readouterr()  # drop what building the fixtures printed
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err


def test_real_process_error_has_no_traceback(tmp_path):
    code, out, err = run_cli("embed", "--model", str(tmp_path / "missing"), "hello")
    assert code == 2 and out == "" and err.strip().startswith("error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_second_run_reuses_compiled_programs(mlm, tmp_path):
    """The persistent compilation cache: the second identical command compiles nothing new."""
    env = {"DISTILBERT_JAX_CACHE": str(tmp_path / "xla"), "JAX_LOG_COMPILES": "1"}
    args = ("fill-mask", "--model", mlm, "--top-k", "2", "short [MASK]", "a longer text " * 5 + "[MASK]")
    code, out1, err1 = run_cli(*args, env=env)
    assert code == 0, err1
    entries = sorted(os.listdir(tmp_path / "xla"))
    assert entries and err1.count("Persistent compilation cache hit") == 0
    code, out2, err2 = run_cli(*args, env=env)
    assert code == 0 and out2 == out1
    assert err2.count("Persistent compilation cache hit") == len([e for e in entries if e.endswith("-cache")])
    assert sorted(os.listdir(tmp_path / "xla")) == entries  # nothing new was compiled and written


def test_demo_runs_offline_on_real_weights(tmp_path):
    code, out, err = run_cli("demo", "--output", str(tmp_path))
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    top = {hit["query"]: hit["top"][0]["text"] for hit in results["search"]}
    assert top["A man is eating pasta."] == "A man is eating food."
    assert top["A primate plays music."] == "A monkey is playing drums."
    assert abs(results["search"][0]["top"][0]["score"] - 0.7035) < 1e-3  # sentence-transformers' published value
    assert (tmp_path / "similarity.png").stat().st_size > 10_000
