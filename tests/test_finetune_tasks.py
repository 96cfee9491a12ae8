"""The pieces under the fine-tuning trainer: task adapters, batches, and the head losses (which must
be the losses transformers' heads compute, value and gradient)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from conftest import minilm_dir, save_torch, torch_model
from distilbert_jax.finetune.batches import FeatureLoader, collate, prediction_batches
from distilbert_jax.finetune.config import FinetuneConfig
from distilbert_jax.finetune.examples import IGNORE_INDEX, Features
from distilbert_jax.finetune.step import loss_terms
from distilbert_jax.finetune.tasks import make_task
from distilbert_jax.pretrained import from_pretrained
from distilbert_jax.tokenizer import Tokenizer
from distilbert_jax.weights import keymap

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_pretrained(minilm_dir())


def task(name, data, **kw):
    return make_task(FinetuneConfig(task=name, data=data, model="unused", **kw))


# ---------------------------------------------------------------------------- task adapters
@pytest.mark.parametrize("data", ["glue", "glue/MNLI"])
def test_mnli_scores_both_dev_sets_and_predicts_ax(data, tmp_path):
    t = task("mnli", os.path.join(FIXTURES, data))
    assert t.eval_splits() == ("dev_matched", "dev_mismatched")
    assert t.test_splits() == ("test_matched", "test_mismatched", "ax")
    ax = t.read("ax").examples
    assert ax and all(e.label is None for e in ax)
    encoded = t.encode("ax", ax, Tokenizer.from_pretrained(minilm_dir()), for_training=False)
    path = t.write_predictions(encoded, ["entailment"] * len(ax), str(tmp_path))
    assert os.path.basename(path) == "AX.tsv"
    assert open(path).read().splitlines()[1] == f"{ax[0].guid}\tentailment"


def test_sentence_pairs_encode_as_transformers_does(tokenizer):
    t = task("rte", os.path.join(FIXTURES, "glue"), max_length=24)
    examples = t.read("train").examples
    encoded = t.encode("train", examples, tokenizer, for_training=True)
    hf = transformers.BertTokenizerFast.from_pretrained(minilm_dir())
    expected = hf([e.text_a for e in examples], [e.text_b for e in examples], truncation=True, max_length=24)
    assert [r.tolist() for r in encoded.features.input_ids] == expected["input_ids"]
    assert [r.tolist() for r in encoded.features.token_type_ids] == expected["token_type_ids"]
    assert encoded.features.targets["label"].tolist() == [t.labels.index(e.label) for e in examples]


def test_file_labels_come_from_training_data_and_unknown_dev_labels_are_skipped(tmp_path):
    os.link(os.path.join(FIXTURES, "classification", "train.csv"), tmp_path / "train.csv")
    os.link(os.path.join(FIXTURES, "text_bad", "dev_unknown_label.csv"), tmp_path / "dev.csv")
    t = task("classification", str(tmp_path))
    t.fit_labels(t.read("train").examples)
    assert t.labels == ("neg", "pos")
    dev = t.read("dev")
    assert dev.skipped and all("is not one of" in s for s in dev.skipped)
    assert all(e.label in t.labels for e in dev.examples)


def test_imdb_test_split_is_dev_not_twice():
    t = task("classification", os.path.join(FIXTURES, "imdb"))
    assert t.has_split("dev") and t.test_splits() == ()


def test_token_task_tags_and_prediction_file(tokenizer, tmp_path):
    t = task("ner", os.path.join(FIXTURES, "conll"))
    train = t.read("train").examples
    t.fit_labels(train)
    assert t.labels[0] == "O" and "B-PER" in t.labels
    dev = t.encode("dev", t.read("dev").examples, tokenizer, for_training=False)
    gold = [list(e.tags) for e in dev.examples]
    values = {"predictions": [np.array([t.labels.index("O")] * len(ids)) for ids in dev.features.input_ids]}
    predicted = t.decode(dev, values)
    assert [len(p) for p in predicted] == [len(g) for g in gold]
    scores = t.score(dev, predicted)
    assert scores["recall"] == 0.0 and 0 < scores["accuracy"] < 1


# ---------------------------------------------------------------------------- batches
def _features(kind):
    ids = [np.arange(1, n + 1, dtype=np.int32) for n in (3, 7, 5)]
    targets = {"classification": {"label": np.array([1, 0, 1], np.int32)},
               "regression": {"label": np.array([0.5, np.nan, 2.0], np.float32)},
               "token": {"token_labels": [np.full(len(r), 2, np.int32) for r in ids]},
               "span": {"start_positions": np.array([1, 2, 3], np.int32),
                        "end_positions": np.array([1, 4, 3], np.int32)}}
    return Features(ids, [np.zeros_like(r) for r in ids], np.arange(3), targets[kind])


def test_collate_pads_rows_and_targets():
    out = collate(_features("token"), np.array([1, -1, 0]), 8, pad_id=0)
    assert out["input_ids"].shape == (3, 8) and out["weight"].tolist() == [1, 0, 1]
    assert out["attention_mask"].sum(1).tolist() == [7, 0, 3]
    assert (out["token_labels"][1] == IGNORE_INDEX).all() and out["token_labels"][0, 7] == IGNORE_INDEX
    reg = collate(_features("regression"), np.array([0, 1, 2]), 8, pad_id=0)
    assert reg["weight"].tolist() == [1, 0, 1] and np.isfinite(reg["label"]).all()  # unlabelled: no loss


def test_loader_covers_every_row_once_per_epoch():
    f = _features("classification")
    loader = FeatureLoader(f, pad_id=0, batch_size=2, seed=3, buckets=(4, 8))
    seen = []
    for index in range(loader.batches_per_epoch):
        b = loader.make_batch(0, index).arrays
        seen += [int(m.sum()) for m in b["attention_mask"] if m.sum()]
        assert b["input_ids"].shape[1] in (4, 8)
    assert sorted(seen) == [3, 5, 7]
    rows = [r for r, _ in prediction_batches(f, batch_size=2, buckets=(4, 8), pad_id=0)]
    assert np.concatenate(rows).tolist() == [0, 2, 1, -1]  # shortest first, last batch padded


# ---------------------------------------------------------------------------- head losses vs transformers
_HEADS = {"classification": ("DistilBertForSequenceClassification", {"num_labels": 3}),
          "regression": ("BertForSequenceClassification", {"num_labels": 1, "problem_type": "regression"}),
          "token": ("DistilBertForTokenClassification", {"num_labels": 5}),
          "span": ("BertForQuestionAnswering", {})}


@pytest.mark.parametrize("kind", list(_HEADS))
def test_losses_and_gradients_match_transformers(kind, tmp_path):
    arch, extra = _HEADS[kind]
    size = (dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37) if arch.startswith("DistilBert")
            else dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37))
    pt = torch_model(arch, seed=1, vocab_size=99, max_position_embeddings=64, **size, **extra)
    ours = from_pretrained(save_torch(pt, tmp_path))
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 99, (3, 10))
    mask = np.ones_like(ids)
    if kind != "span":  # transformers lets span padding compete; we mask it: compare without padding
        mask[1, 7:] = 0
    labels = {"classification": rng.integers(0, 3, 3), "regression": rng.normal(size=3).astype(np.float32),
              "token": np.where(mask == 1, rng.integers(0, 5, (3, 10)), IGNORE_INDEX),
              "span": None}[kind]
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids), "weight": np.ones(3)}
    torch_kwargs = {}
    if kind == "span":
        starts, ends = np.array([1, 4, 2]), np.array([3, 4, 6])
        batch.update(start_positions=starts, end_positions=ends)
        torch_kwargs = dict(start_positions=torch.tensor(starts), end_positions=torch.tensor(ends))
    elif kind == "token":
        batch["token_labels"] = labels
        torch_kwargs = dict(labels=torch.tensor(labels))
    else:
        batch["label"] = labels
        torch_kwargs = dict(labels=torch.tensor(labels))
    batch = {k: jnp.asarray(v) for k, v in batch.items()}

    def loss(params):
        out = ours.module.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                                batch["token_type_ids"], None, True)
        total, count = loss_terms(kind, out, batch)
        return total / count

    value, grads = jax.value_and_grad(loss)(ours.params)
    out = pt(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **torch_kwargs)
    out.loss.backward()
    assert abs(float(value) - out.loss.item()) < 1e-6
    ours_grads = keymap.flax_to_state_dict(jax.device_get(grads))
    worst = max(np.abs(ours_grads[k] - p.grad.numpy()).max() for k, p in pt.named_parameters() if p.grad is not None)
    assert worst < 1e-5
