"""A cased multilingual WordPiece vocabulary the size of distilbert-base-multilingual-cased's (119,547
tokens): no lowercasing, accents kept, and ids above 65535 intact from tokenizer to prepared data to
the batches a model gets.

The vocabulary is synthetic: mBERT's special ids, then filler, then the words and "##" pieces of
the hard text set placed above id 65535, so the encodings hold ids a uint16 could not.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import normalizers, pre_tokenizers
from transformers import AutoTokenizer, BertTokenizerFast

from distilbert_jax.data.dataset import TokenDataset
from distilbert_jax.data.loader import BatchLoader
from distilbert_jax.data.prepare import prepare_corpus
from distilbert_jax.tokenizer import Tokenizer
from test_tokenizer import HARD_TEXTS, PAIRS

VOCAB_SIZE = 119_547  # distilbert-base-multilingual-cased
HIGH = 70_000  # real tokens start here, above uint16


def _vocabulary() -> list[str]:
    """[PAD] 0, [unused] 1-99, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103 as in mBERT; every
    cased word of the hard texts whole (except every third, left to be split into "##" pieces)."""
    normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    words, chars = [], set()
    for text in HARD_TEXTS:
        for word, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(normalizer.normalize_str(text)):
            words.append(word)
            chars.update(word)
    words = list(dict.fromkeys(words))
    real = [w for i, w in enumerate(words) if i % 3] + sorted(chars) + [f"##{c}" for c in sorted(chars)]
    real = list(dict.fromkeys(real))
    head = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    filler = [f"[filler{i}]" for i in range(HIGH - len(head))]
    tail = [f"[tail{i}]" for i in range(VOCAB_SIZE - HIGH - len(real))]
    return head + filler + real + tail


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mbert")
    (root / "vocab.txt").write_text("".join(t + "\n" for t in _vocabulary()), encoding="utf-8")
    (root / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "tokenizer_class": "BertTokenizer"}))
    return root


@pytest.fixture(scope="module")
def pair(folder):
    return Tokenizer.from_pretrained(folder), BertTokenizerFast.from_pretrained(str(folder), do_lower_case=False)


def test_cased_ids_match_transformers_and_go_above_uint16(pair):
    ours, ref = pair
    assert ours.vocab_size == len(ref) == VOCAB_SIZE
    highest = 0
    for text in HARD_TEXTS:
        ids = ours.encode(text)
        assert ids == ref(text)["input_ids"], text
        highest = max(highest, max(ids))
    for a, b in PAIRS:
        assert ours.encode(a, b) == ref([a], [b])["input_ids"][0]
    assert highest > 65535
    got = ours(HARD_TEXTS, padding=True)["input_ids"]
    assert got.dtype == np.int32 and got.max() > 65535
    np.testing.assert_array_equal(got, ref(HARD_TEXTS, padding=True, return_tensors="np")["input_ids"])
    # cased and accented: whole words and "##" pieces keep their case and accents
    tokens = ours.convert_ids_to_tokens(ours.encode("café Ångström Über WoRdS", add_special_tokens=False))
    assert tokens == ["c", "##a", "##f", "##é", "Ångström", "Über", "W", "##o", "##R", "##d", "##S"]
    for text in HARD_TEXTS:
        ids = ours.encode(text)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)


def test_save_reload_keeps_the_cased_vocabulary(pair, tmp_path):
    ours, _ = pair
    ours.save_pretrained(tmp_path)
    ref = AutoTokenizer.from_pretrained(str(tmp_path))
    again = Tokenizer.from_pretrained(tmp_path)
    for text in HARD_TEXTS:
        assert ref(text)["input_ids"] == again.encode(text) == ours.encode(text)


def test_prepared_data_keeps_ids_above_uint16_exactly(pair, tmp_path):
    ours, _ = pair
    lines = [t for t in HARD_TEXTS if len(ours.encode(t)) >= 12]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(t.replace("\n", " ").replace("\r", " ") for t in lines) + "\n", encoding="utf-8")
    manifest = prepare_corpus(ours, [corpus], tmp_path / "d", heldout_fraction=0.0, progress=False)
    assert manifest["dtype"] == "int32" and manifest["vocab_size"] == VOCAB_SIZE
    ds = TokenDataset.open(tmp_path / "d")
    assert ds.tokens.dtype == np.dtype("<i4")
    want = [ours.encode(t.replace("\n", " ").replace("\r", " ")) for t in lines]
    rows = [ds[i].tolist() for i in range(len(ds))]
    assert rows == want and max(max(r) for r in rows) > 65535
    assert int(ds.counts[HIGH:].sum()) > 0 and ds.counts.shape == (VOCAB_SIZE,)
    batches = list(BatchLoader(ds, batch_size=len(ds), seed=0).epoch_batches(0))
    ids, mask = batches[0].input_ids, batches[0].attention_mask
    assert ids.dtype == np.int32
    assert sorted(r[m.astype(bool)].tolist() for r, m in zip(ids, mask)) == sorted(want)


def test_the_whole_vocabulary_distills_and_converts(pair, tmp_path):
    """A 119,547-token BERT teacher, its extracted student trained two updates on ids above 65535,
    and the exported student equal to transformers' DistilBertForMaskedLM on them."""
    import torch
    import transformers

    import distilbert_jax as dj
    from distilbert_jax.distill.config import DistillConfig

    ours, _ = pair
    lines = [t.replace("\n", " ").replace("\r", " ") for t in HARD_TEXTS if len(ours.encode(t)) >= 12]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines * 4) + "\n", encoding="utf-8")
    prepare_corpus(ours, [corpus], tmp_path / "d", heldout_fraction=0.2, progress=False, seed=1)
    torch.manual_seed(0)
    teacher = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=128))
    teacher.save_pretrained(tmp_path / "teacher")
    ours.save_pretrained(tmp_path / "teacher")
    config = DistillConfig(teacher=str(tmp_path / "teacher"), data=str(tmp_path / "d"), student_layers=(0, 1),
                           batch_size=4, max_updates=2, buckets=(64, 128), workdir=str(tmp_path / "run"),
                           eval_batches=2, progress=False, log_every=1).replace(**{"optimizer.accumulate": 1})
    results = dj.train(config)
    from distilbert_jax.training.metrics import read_metrics

    losses = [r["loss"] for r in read_metrics(str(tmp_path / "run" / "metrics.jsonl")) if r.get("split") == "train"]
    assert results["updates"] == 2 and losses and np.isfinite(losses).all()
    folder = results["exported"]
    theirs = transformers.DistilBertForMaskedLM.from_pretrained(folder).eval()
    ids = np.array([ours.encode(lines[0])])
    assert ids.max() > 65535
    with torch.no_grad():
        expected = theirs(torch.tensor(ids)).logits.numpy()
    assert float(np.max(np.abs(np.asarray(dj.from_pretrained(folder)(ids).logits) - expected))) < 1e-4
