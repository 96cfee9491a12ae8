"""The real pretrained all-MiniLM-L6-v2 BERT encoder (shipped by a PyPI package) against transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

import distilbert_jax as dj
from conftest import minilm_dir
from distilbert_jax.inference.embeddings import SentenceEmbedder

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Two men pushed carts through the woods.",
    "Transformers dropped their Flax classes, so this project reimplements DistilBERT in JAX.",
    "Ångström, naïve café — punctuation!!! and numbers 3.14159",
]


@pytest.fixture(scope="module")
def models():
    folder = minilm_dir()
    pt = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    return dj.from_pretrained(folder), pt, tok


def test_loads_as_bert_encoder_with_tokenizer(models):
    ours, _, _ = models
    assert ours.architecture.name == "BertModel" and ours.tokenizer is not None
    assert ours.num_parameters == 22_713_216  # no pooler in the sentence-transformers file
    assert not ours.load_report.unused and not ours.load_report.missing


def test_hidden_states_match_transformers(models):
    ours, pt, tok = models
    batch = tok(SENTENCES, padding=True, return_tensors="np")
    assert batch["input_ids"].tolist() == ours.tokenizer(SENTENCES, padding=True)["input_ids"].tolist()
    out = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], output_hidden_states=True)
    with torch.no_grad():
        ref = pt(**{k: torch.tensor(v) for k, v in batch.items()}, output_hidden_states=True)
    errors = [float(np.abs(np.asarray(a) - b.numpy()).max()) for a, b in zip(out.hidden_states, ref.hidden_states)]
    assert len(errors) == 7 and max(errors) < 1e-4, errors


def test_sentence_embeddings_match_transformers_mean_pooling(models):
    ours, pt, tok = models
    got = SentenceEmbedder(ours, pooling="mean", normalize=True, batch_size=4)(SENTENCES)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = pt(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1).numpy()
    assert np.abs(got - expected).max() < 1e-5
    # the known all-MiniLM-L6-v2 behaviour: paraphrases close, unrelated sentences far
    sims = got @ got.T
    assert sims[0, 1] > 0.7 and sims[0, 2] < 0.1


def test_cls_pooling_and_raw_vectors(models):
    ours, pt, tok = models
    got = SentenceEmbedder(ours, pooling="cls", normalize=False)(SENTENCES[:2])
    batch = tok(SENTENCES[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = pt(**batch).last_hidden_state[:, 0].numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_over_long_text_errors_or_truncates(models):
    ours, _, _ = models
    long_text = "word " * 600
    with pytest.raises(dj.UserError, match="longer than the maximum 512"):
        SentenceEmbedder(ours)(long_text)
    vec = SentenceEmbedder(ours, truncate=True)(long_text)
    assert vec.shape == (384,) and np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)
