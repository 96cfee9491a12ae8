"""Fine-tuning end to end on the hand-written fixtures: it learns, it selects, it resumes exactly, and
what it saves gives the same predictions in transformers' PyTorch classes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics

import numpy as np
import pytest
import torch
import transformers

from conftest import minilm_dir
from distilbert_jax.cli import main
from distilbert_jax.errors import UserError
from distilbert_jax.finetune import runner
from distilbert_jax.finetune.config import FinetuneConfig
from distilbert_jax.finetune.runner import evaluate_model, finetune
from distilbert_jax.pretrained import from_pretrained
from distilbert_jax.training.metrics import read_metrics

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TINY = dict(vocab_size=30522, max_position_embeddings=128)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random masked-LM checkpoints with the real bert-base-uncased vocabulary."""
    out = {}
    for name, cls, cfg in (
        ("distilbert", transformers.DistilBertForMaskedLM,
         transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, **TINY)),
        ("bert", transformers.BertForMaskedLM,
         transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                                 **TINY)),
    ):
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(name)
        cls(cfg).save_pretrained(folder)
        for f in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(minilm_dir(), f), folder)
        out[name] = str(folder)
    return out


def config(model, output, **changes) -> FinetuneConfig:
    base = dict(model=model, output=str(output), batch_size=16, eval_batch_size=16, learning_rate=3e-3,
                warmup_fraction=0.1, progress=False, log_every=2)
    return FinetuneConfig().replace(**{**base, **changes})


def sst2(models, output, **changes):
    changes = {"epochs": 8, "learning_rate": 1e-2, **changes}
    return config(models["distilbert"], output, task="sst2", data=os.path.join(FIXTURES, "glue"), **changes)


@pytest.fixture(scope="module")
def sst2_run(models, tmp_path_factory):
    cfg = sst2(models, tmp_path_factory.mktemp("sst2") / "out")
    return cfg, finetune(cfg)


def test_sst2_learns(sst2_run):
    cfg, results = sst2_run
    assert results["median"]["dev"]["accuracy"] >= 0.8  # 32 balanced dev rows: chance is 0.5
    records = [r for r in read_metrics(os.path.join(cfg.output, "seeds", "seed-42")) if r["split"] == "train"]
    first, last = np.mean([r["loss"] for r in records[:3]]), np.mean([r["loss"] for r in records[-3:]])
    assert last < first / 2, (first, last)
    dev = [r for r in read_metrics(os.path.join(cfg.output, "seeds", "seed-42")) if r["split"] == "dev"]
    assert len(dev) == 8  # once per epoch
    best = max(dev, key=lambda r: r["accuracy"])
    assert results["seeds"][0]["best"]["dev"]["accuracy"] == best["accuracy"]
    assert results["seeds"][0]["best_step"] == min(r["step"] for r in dev if r["accuracy"] == best["accuracy"])
    for name in ("loss.png", "dev.png", "finetune_config.json", "results.json", "model.safetensors", "vocab.txt"):
        assert os.path.isfile(os.path.join(cfg.output, name)), name
    assert FinetuneConfig.from_dict(json.load(open(os.path.join(cfg.output, "finetune_config.json")))) == cfg


def test_sst2_saved_model_predicts_the_same_in_transformers(sst2_run):
    cfg, results = sst2_run
    torch_model = transformers.AutoModelForSequenceClassification.from_pretrained(cfg.output).eval()
    assert torch_model.config.id2label == {0: "0", 1: "1"}
    tok = transformers.AutoTokenizer.from_pretrained(cfg.output)
    with open(os.path.join(FIXTURES, "glue", "SST-2", "dev.tsv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    enc = tok([r["sentence"] for r in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch_logits = torch_model(**enc).logits.numpy()
    ours = from_pretrained(cfg.output)
    jax_logits = np.asarray(ours(enc["input_ids"].numpy(), enc["attention_mask"].numpy()).logits)
    assert np.abs(jax_logits - torch_logits).max() < 1e-4
    with open(results["predictions"]["dev"], encoding="utf-8") as f:
        written = [r["prediction"] for r in csv.DictReader(f, delimiter="\t")]
    assert written == [torch_model.config.id2label[i] for i in torch_logits.argmax(-1)]
    accuracy = np.mean([w == r["label"] for w, r in zip(written, rows)])
    assert accuracy == pytest.approx(results["median"]["dev"]["accuracy"])


def test_sst2_test_predictions_are_a_glue_submission(sst2_run):
    cfg, results = sst2_run
    path = results["predictions"]["test"]
    assert os.path.basename(path) == "SST-2.tsv"
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    with open(os.path.join(FIXTURES, "glue", "SST-2", "test.tsv"), encoding="utf-8") as f:
        test_rows = f.read().splitlines()[1:]
    assert lines[0] == "index\tprediction"
    assert [line.split("\t")[0] for line in lines[1:]] == [r.split("\t")[0] for r in test_rows]
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}


def test_evaluate_command_scores_the_saved_model(sst2_run, tmp_path, capsys):
    cfg, results = sst2_run
    assert main(["evaluate", "--task", "sst2", "--data", cfg.data, "--model", cfg.output,
                 "--output", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["dev"]["accuracy"] == pytest.approx(results["median"]["dev"]["accuracy"])
    assert os.path.isfile(printed["predictions"]["dev"])


def test_resume_and_seeds(models, tmp_path):
    """An interrupted two-seed run, resumed, ends exactly where an uninterrupted one does; the
    reported numbers are the median over seeds and the installed model is the best seed's."""
    whole = sst2(models, tmp_path / "whole", epochs=3, seeds=(1, 2), eval_every=2)
    parts = whole.replace(output=str(tmp_path / "parts"))
    a = finetune(whole)
    stopped = finetune(parts, stop_at_step=5)
    assert stopped["interrupted"] and stopped["seeds"][0]["steps"] == 5
    b = finetune(parts)
    for x, y in zip(a["seeds"], b["seeds"]):
        assert x["best"] == y["best"] and x["best_step"] == y["best_step"]
    with open(os.path.join(whole.output, "model.safetensors"), "rb") as f1, \
            open(os.path.join(parts.output, "model.safetensors"), "rb") as f2:
        assert f1.read() == f2.read()
    accuracies = [s["best"]["dev"]["accuracy"] for s in a["seeds"]]
    assert a["median"]["dev"]["accuracy"] == statistics.median(accuracies)
    assert a["chosen_seed"] == a["seeds"][int(np.argmax(accuracies))]["seed"]
    with pytest.raises(UserError, match="different config .*learning_rate"):
        finetune(whole.replace(learning_rate=1e-3))


def test_stsb_regression_with_pairs_round_trips(models, tmp_path):
    cfg = config(models["bert"], tmp_path / "stsb", task="stsb", data=os.path.join(FIXTURES, "glue"), epochs=2,
                 batch_size=4, eval_batch_size=4)
    results = finetune(cfg)
    assert set(results["median"]["dev"]) == {"pearson", "spearman", "loss"}
    torch_model = transformers.BertForSequenceClassification.from_pretrained(cfg.output).eval()
    assert torch_model.config.problem_type == "regression" and torch_model.config.num_labels == 1
    tok = transformers.AutoTokenizer.from_pretrained(cfg.output)
    enc = tok(["A man is playing a guitar."], ["A person plays an instrument."], return_tensors="pt")
    with torch.no_grad():
        expected = torch_model(**enc).logits.numpy()
    got = from_pretrained(cfg.output)(enc["input_ids"].numpy(), enc["attention_mask"].numpy(),
                                      enc["token_type_ids"].numpy()).logits
    assert np.abs(np.asarray(got) - expected).max() < 1e-4


def test_ner_on_conll_round_trips(models, tmp_path):
    cfg = config(models["bert"], tmp_path / "ner", task="ner", data=os.path.join(FIXTURES, "conll"), epochs=6,
                 batch_size=4, eval_batch_size=8, learning_rate=5e-3)
    results = finetune(cfg)
    dev = results["median"]["dev"]
    assert {"precision", "recall", "f1", "accuracy"} <= set(dev)
    assert dev["accuracy"] > 0.6  # most dev tokens are O; a model that learned nothing scores far lower
    torch_model = transformers.BertForTokenClassification.from_pretrained(cfg.output).eval()
    assert torch_model.config.id2label[0] == "O"
    ours = from_pretrained(cfg.output)
    enc = ours.tokenizer(["John works for Google in Paris ."], padding=True)
    with torch.no_grad():
        expected = torch_model(input_ids=torch.tensor(enc["input_ids"]).long()).logits.numpy()
    got = np.asarray(ours(enc["input_ids"]).logits)
    assert np.abs(got - expected).max() < 1e-4
    with open(results["predictions"]["dev"], encoding="utf-8") as f:
        lines = [line.split() for line in f if line.strip()]
    assert all(len(parts) == 3 for parts in lines)


def test_squad_runs_and_round_trips(models, tmp_path):
    cfg = config(models["distilbert"], tmp_path / "squad", task="squad", data=os.path.join(FIXTURES, "squad"),
                 epochs=2, batch_size=4, eval_batch_size=4, max_length=64, doc_stride=16, max_query_length=16)
    results = finetune(cfg)
    dev = results["median"]["dev"]
    assert {"exact_match", "f1"} <= set(dev) and 0 <= dev["exact_match"] <= dev["f1"] <= 1
    predictions = json.load(open(os.path.join(results["predictions"]["dev"], "predictions.json")))
    assert len(predictions) == results["train_examples"] or len(predictions) > 0
    torch_model = transformers.DistilBertForQuestionAnswering.from_pretrained(cfg.output).eval()
    ours = from_pretrained(cfg.output)
    enc = ours.tokenizer(["Where is the tower?"], ["The tower is in Paris, the capital of France."])
    with torch.no_grad():
        out = torch_model(input_ids=torch.tensor(enc["input_ids"]).long())
    got = ours(enc["input_ids"])
    assert np.abs(np.asarray(got.start_logits) - out.start_logits.numpy()).max() < 1e-4
    assert np.abs(np.asarray(got.end_logits) - out.end_logits.numpy()).max() < 1e-4
    # the same model scored as a v2.0 model on the v2.0 dev set: answerable and unanswerable apart
    v2 = evaluate_model(cfg.replace(task="squad_v2", model=cfg.output), output=str(tmp_path / "v2"))
    assert {"has_answer_f1", "no_answer_exact_match", "exact_match", "f1"} <= set(v2["dev"])
    assert os.path.isfile(os.path.join(v2["predictions"]["dev"], "null_odds.json"))


@pytest.mark.parametrize("args, message", [
    (["--task", "nope", "--data", "."], "unknown task 'nope'"),
    (["--task", "sst2", "--data", "/no/such/folder"], "data folder '/no/such/folder' does not exist"),
    (["--task", "sst2"], "fine-tuning needs --data"),
    (["--task", "sst2", "--data", FIXTURES + "/glue", "--seeds", "1,x"], "--seeds '1,x'"),
    (["--task", "sst2", "--data", FIXTURES + "/glue", "--set", "select_metric=bogus"], "select_metric 'bogus'"),
    (["--task", "squad", "--data", FIXTURES + "/squad", "--set", "max_length=40", "--set", "doc_stride=30"],
     "doc_stride"),
    (["--task", "rte", "--data", FIXTURES + "/glue/SST-2"], "is the SST-2 folder but the task is rte"),
])
def test_bad_input_is_one_line(models, tmp_path, capsys, args, message):
    argv = ["finetune", "--model", models["distilbert"], "--output", str(tmp_path / "o"), *args,
            "--set", "max_updates=1", "--set", "progress=False"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error: ") and message in err[-1], err


def test_model_without_tokenizer_is_refused(models, tmp_path, capsys):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(models["distilbert"], folder)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        os.remove(folder / name)
    assert main(["finetune", "--task", "sst2", "--data", FIXTURES + "/glue", "--model", str(folder),
                 "--output", str(tmp_path / "o")]) == 2
    assert "no tokenizer files" in capsys.readouterr().err


def test_evaluate_refuses_a_model_without_a_trained_head(models):
    cfg = FinetuneConfig(task="sst2", data=os.path.join(FIXTURES, "glue"), model=models["distilbert"])
    with pytest.raises(UserError, match="no fine-tuned sequence-classification head"):
        evaluate_model(cfg)


def test_median_is_over_seeds():
    seeds = [{"best": {"dev": {"accuracy": a}}} for a in (0.5, 0.9, 0.7)]
    assert runner._median(seeds, {"dev": None}) == {"dev": {"accuracy": 0.7}}
    assert runner._choose([dict(s, seed=i) for i, s in enumerate(seeds)], "dev", "accuracy", True)["seed"] == 1


def test_imdb_folders_train_and_score_on_the_test_split(models, tmp_path):
    """Folder-per-label data (aclImdb's layout) with only train/ and test/: test/ is the dev split."""
    cfg = config(models["distilbert"], tmp_path / "imdb", task="classification", data=os.path.join(FIXTURES, "imdb"),
                 max_updates=3, batch_size=4, eval_batch_size=4, max_length=64)
    results = finetune(cfg)
    assert results["labels"] == ["neg", "pos"] and results["train_examples"] == 12
    assert set(results["median"]["dev"]) == {"accuracy", "f1", "loss"}
    with open(results["predictions"]["dev"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 12 and {r["label"] for r in rows} == {"neg", "pos"}
    assert transformers.AutoConfig.from_pretrained(cfg.output).id2label == {0: "neg", 1: "pos"}


def test_float16_trains_with_loss_scaling(models, tmp_path):
    """compute=float16: the optimizer is loss-scaled (precision.py, training/loss_scale.py), the scale
    is logged with every record, and the run learns SST-2's fixture as the float32 one does."""
    cfg = sst2(models, tmp_path / "fp16", precision="params=float32,compute=float16")
    results = finetune(cfg)
    assert results["median"]["dev"]["accuracy"] >= 0.8
    records = [r for r in read_metrics(os.path.join(cfg.output, "seeds", "seed-42")) if r["split"] == "train"]
    scales = [r["loss_scale"] for r in records]
    assert all(np.isfinite(r["loss"]) for r in records)
    assert scales and all(1.0 <= s <= 2.0 ** 15 for s in scales)
