"""Fine-tuning runs on RoBERTa as on BERT: a tiny RobertaForMaskedLM with a byte-level BPE
vocabulary learns SST-2's fixture and answers SQuAD's with RoBERTa's pair template
(`<s> q </s></s> c </s>`, one token type), and what it saves predicts the same in transformers."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
import transformers

from distilbert_jax.finetune.config import FinetuneConfig
from distilbert_jax.finetune.runner import finetune
from distilbert_jax.finetune.squad import make_features, read_squad
from distilbert_jax.pretrained import from_pretrained
from distilbert_jax.tokenizer import Tokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _texts():
    with open(os.path.join(FIXTURES, "glue", "SST-2", "train.tsv"), encoding="utf-8") as f:
        yield from (row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    for article in json.load(open(os.path.join(FIXTURES, "squad", "train-v1.1.json")))["data"]:
        for paragraph in article["paragraphs"]:
            yield paragraph["context"]
            yield from (qa["question"] for qa in paragraph["qas"])


@pytest.fixture(scope="module")
def roberta(tmp_path_factory):
    """A tiny random RobertaForMaskedLM with a BPE vocabulary trained on the fixtures' text."""
    tokenizer = Tokenizer.train(iter(list(_texts())), vocab_size=600, family="roberta")
    torch.manual_seed(0)
    config = transformers.RobertaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=37, max_position_embeddings=130,
                                        type_vocab_size=1, pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("roberta")
    transformers.RobertaForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _config(model, output, **changes) -> FinetuneConfig:
    base = dict(model=model, output=str(output), batch_size=16, eval_batch_size=16, learning_rate=1e-2,
                warmup_fraction=0.1, progress=False, log_every=2)
    return FinetuneConfig().replace(**{**base, **changes})


def test_sst2_learns_and_predicts_the_same_in_transformers(roberta, tmp_path):
    cfg = _config(roberta, tmp_path / "sst2", task="sst2", data=os.path.join(FIXTURES, "glue"), epochs=8)
    results = finetune(cfg)
    assert results["median"]["dev"]["accuracy"] >= 0.8  # 32 balanced dev rows: chance is 0.5
    torch_model = transformers.RobertaForSequenceClassification.from_pretrained(cfg.output).eval()
    tok = transformers.AutoTokenizer.from_pretrained(cfg.output)
    with open(os.path.join(FIXTURES, "glue", "SST-2", "dev.tsv"), encoding="utf-8") as f:
        sentences = [r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    enc = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = torch_model(**enc).logits.numpy()
    got = from_pretrained(cfg.output)(enc["input_ids"].numpy(), enc["attention_mask"].numpy()).logits
    assert np.abs(np.asarray(got) - expected).max() < 1e-4


def test_squad_windows_use_robertas_pair_template(roberta, tmp_path):
    tokenizer = Tokenizer.from_pretrained(roberta)
    examples = read_squad(os.path.join(FIXTURES, "squad", "train-v1.1.json"), for_training=True).examples[:2]
    features, _ = make_features(examples, tokenizer, max_length=64, doc_stride=16, max_query_length=16,
                                for_training=True)
    ids = features.input_ids[0].tolist()
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert ids[0] == bos and ids[-1] == eos and ids.count(eos) == 3  # <s> q </s></s> c </s>
    first_sep = ids.index(eos)
    assert ids[first_sep + 1] == eos
    assert all((t == 0).all() for t in features.token_type_ids)  # RoBERTa has one token type
    cfg = _config(roberta, tmp_path / "squad", task="squad", data=os.path.join(FIXTURES, "squad"), epochs=1,
                  batch_size=4, eval_batch_size=4, max_length=64, doc_stride=16, max_query_length=16)
    dev = finetune(cfg)["median"]["dev"]
    assert 0 <= dev["exact_match"] <= dev["f1"] <= 1 and np.isfinite(dev["loss"] if "loss" in dev else 0.0)
    assert transformers.RobertaForQuestionAnswering.from_pretrained(cfg.output).config.model_type == "roberta"


def test_split_words_read_as_transformers_with_add_prefix_space(roberta):
    """NER's pre-split words: each word keeps its leading space, as run_ner loads RoBERTa
    (add_prefix_space=True, which transformers demands for split words)."""
    words = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"], ["The", "team", "won", "."]]
    ours = Tokenizer.from_pretrained(roberta)
    theirs = transformers.AutoTokenizer.from_pretrained(roberta, add_prefix_space=True)
    got = ours.encodings(words, is_pretokenized=True)
    for row, enc in zip(words, got):
        want = theirs(row, is_split_into_words=True)
        assert enc.ids == want["input_ids"] and enc.word_ids == want.word_ids()
    assert ours.encode("EU rejects") != got[0].ids[:len(ours.encode("EU rejects"))]  # plain text: no space before EU
