"""RoBERTa and GPT-2 byte-level BPE: ids, pairs, truncation, padding and decode equal to transformers'
RobertaTokenizerFast / GPT2TokenizerFast built from the same files, on the BERT tokenizer's hard text set.

The vocabularies are trained here, offline, with the `tokenizers` library's ByteLevelBPETokenizer,
and saved both ways a hub folder holds them: vocab.json + merges.txt, and tokenizer.json.
"""

from __future__ import annotations

import functools
import json
import os
import pickle

import numpy as np
import pytest
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, GPT2TokenizerFast, RobertaTokenizerFast

from distilbert_jax.errors import UserError
from distilbert_jax.tokenizer import Tokenizer
from test_tokenizer import HARD_TEXTS, LONG_TEXT, PAIRS, _docstring_corpus

REF_CLASS = {"roberta": RobertaTokenizerFast, "gpt2": GPT2TokenizerFast}
SPECIALS = {"roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "gpt2": ["<|endoftext|>"]}
# name -> (family, files: "files" | "json", tokenizer_config.json contents or None, <mask> lstrip)
VARIANTS = {
    "roberta_files": ("roberta", "files", None, False),
    "roberta_json": ("roberta", "json", None, False),
    "roberta_json_mask_lstrip": ("roberta", "json", None, True),  # as roberta-base's tokenizer.json
    "roberta_prefix_space": ("roberta", "files", {"add_prefix_space": True, "tokenizer_class": "RobertaTokenizer"},
                             False),
    "gpt2_files": ("gpt2", "files", None, False),
    "gpt2_json": ("gpt2", "json", None, False),
    "gpt2_prefix_space": ("gpt2", "json", {"add_prefix_space": True, "tokenizer_class": "GPT2Tokenizer"}, False),
    "gpt2_bos_eos": ("gpt2", "files", {"add_bos_token": True, "add_eos_token": True}, False),
}
CORPUS = _docstring_corpus()[:400] + HARD_TEXTS * 2


def _write(root, name) -> str:
    family, kind, config, lstrip = VARIANTS[name]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=700, min_frequency=2, special_tokens=SPECIALS[family])
    folder = root / name
    folder.mkdir()
    if kind == "files":
        bpe.save_model(str(folder))
    else:
        data = json.loads(bpe.to_str())
        for token in data["added_tokens"]:
            token["lstrip"] = lstrip and token["content"] == "<mask>"
        (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bpe")
    return {name: _write(root, name) for name in VARIANTS}


@functools.lru_cache(maxsize=None)
def _load(folder, family):
    ours = Tokenizer.from_pretrained(folder, family=family)
    ref = REF_CLASS[family].from_pretrained(folder)
    if family == "gpt2":  # GPT-2 has no pad token: both sides pad with <|endoftext|>, as users do
        ours.pad_token = ours.eos_token
        ref.pad_token = ref.eos_token
    return ours, ref


@pytest.fixture(params=list(VARIANTS))
def pair(request, folders):
    return _load(folders[request.param], VARIANTS[request.param][0])


def test_ids_match_transformers(pair):
    ours, ref = pair
    for text in HARD_TEXTS + ["hello <mask> world", " leading space", "<s>x</s>"]:
        assert ours.encode(text) == ref(text)["input_ids"], text
        assert ours.encode(text, add_special_tokens=False) == ref(text, add_special_tokens=False)["input_ids"], text
    for a, b in PAIRS:
        assert ours.encode(a, b) == ref([a], [b])["input_ids"][0], (a, b)


def test_batches_pairs_offsets_match_transformers(pair):
    ours, ref = pair
    got = ours(HARD_TEXTS, padding=True, return_offsets=True)
    want = ref(HARD_TEXTS, padding=True, return_offsets_mapping=True, return_tensors="np")
    assert sorted(k for k in got if k != "offsets") == sorted(ref.model_input_names) == sorted(ours.model_input_names)
    for key in ("input_ids", "attention_mask"):
        assert got[key].dtype == np.int32
        np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_array_equal(got["offsets"], want["offset_mapping"])
    a, b = (list(x) for x in zip(*PAIRS))
    got = ours(a, b, padding="longest", return_offsets=True)
    want = ref(a, b, padding="longest", return_offsets_mapping=True, return_tensors="np")
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_array_equal(got["offsets"], want["offset_mapping"])


@pytest.mark.parametrize("n", [9, 20])
def test_truncation_matches(pair, n):
    ours, ref = pair
    long_a, long_b = " ".join(["alpha"] * 40), " ".join(["beta"] * 25)
    for a, b in [(long_a, "tiny text"), ("tiny text", long_a), (long_a, long_b)]:
        assert ours.encode(a, b, truncation=n) == ref(a, b, truncation=True, max_length=n)["input_ids"]
    assert ours.encode(LONG_TEXT, truncation=n) == ref(LONG_TEXT, truncation=True, max_length=n)["input_ids"]
    got = ours([long_a, "tiny"], max_length=n, truncation=True, padding="max_length")
    want = ref([long_a, "tiny"], max_length=n, truncation=True, padding="max_length", return_tensors="np")
    assert got["input_ids"].shape == (2, n)
    np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])


def test_decode_matches_transformers(pair):
    ours, ref = pair
    rows = [ours.encode(t) for t in HARD_TEXTS] + [ours.encode(a, b) for a, b in PAIRS[:5]]
    for ids in rows:
        for skip in (False, True):
            for clean in (None, True):
                got = ours.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
                assert got == ref.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
    padded = ours(HARD_TEXTS[:4], padding=True)["input_ids"]
    for skip in (False, True):
        assert ours.batch_decode(padded, skip_special_tokens=skip) == ref.batch_decode(padded,
                                                                                      skip_special_tokens=skip)


def test_special_ids(folders):
    roberta, ref = _load(folders["roberta_files"], "roberta")
    assert (roberta.bos_token_id, roberta.pad_token_id, roberta.eos_token_id, roberta.unk_token_id,
            roberta.mask_token_id) == (0, 1, 2, 3, 4)
    assert (roberta.cls_token_id, roberta.sep_token_id) == (0, 2)
    assert roberta.all_special_ids == ref.all_special_ids == [0, 2, 3, 1, 4]
    assert roberta.vocab_size == len(ref) == 700
    clone = pickle.loads(pickle.dumps(roberta))  # data-loader workers get tokenizers by pickle
    assert clone.family == "roberta" and clone.encode(*PAIRS[3], truncation=12) == roberta.encode(*PAIRS[3],
                                                                                                truncation=12)
    gpt2 = Tokenizer.from_pretrained(folders["gpt2_json"], family="gpt2")
    ref = GPT2TokenizerFast.from_pretrained(folders["gpt2_json"])
    assert (gpt2.bos_token_id, gpt2.eos_token_id, gpt2.unk_token_id) == (0, 0, 0)
    assert (gpt2.pad_token_id, gpt2.cls_token_id, gpt2.sep_token_id, gpt2.mask_token_id) == (None,) * 4
    assert gpt2.all_special_ids == ref.all_special_ids == [0]


def test_gpt2_refuses_to_pad_without_a_pad_token(folders):
    ours = Tokenizer.from_pretrained(folders["gpt2_files"], family="gpt2")
    ref = GPT2TokenizerFast.from_pretrained(folders["gpt2_files"])
    with pytest.raises(ValueError, match="pad"):
        ref(["a", "b c"], padding=True)
    for kwargs in ({"padding": True}, {"padding": "max_length", "max_length": 8}, {"bucket_lengths": (8,)}):
        with pytest.raises(UserError, match="no pad token.*tokenizer.pad_token = tokenizer.eos_token"):
            ours(["a", "b c"], **kwargs)
    assert ours(["a", "b c"])["input_ids"] == ref(["a", "b c"])["input_ids"]  # no padding asked: fine
    with pytest.raises(UserError, match="not in the vocabulary"):
        ours.pad_token = "<pad>"
    padded = Tokenizer.from_pretrained(folders["gpt2_files"], family="gpt2", pad_token="<|endoftext|>")
    ref.pad_token = ref.eos_token
    np.testing.assert_array_equal(padded(["a", "b c d"], padding=True)["input_ids"],
                                  ref(["a", "b c d"], padding=True, return_tensors="np")["input_ids"])


@pytest.mark.parametrize("name", ["roberta_files", "roberta_json_mask_lstrip", "gpt2_json", "gpt2_bos_eos"])
def test_save_pretrained_reloads_in_transformers(name, folders, tmp_path):
    family = VARIANTS[name][0]
    ours = Tokenizer.from_pretrained(folders[name], family=family)
    ref_before = REF_CLASS[family].from_pretrained(folders[name])
    ours.save_pretrained(tmp_path)
    assert {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"} <= set(os.listdir(tmp_path))
    ref = AutoTokenizer.from_pretrained(str(tmp_path))
    assert type(ref) is type(ref_before)
    again = Tokenizer.from_pretrained(tmp_path)  # the family comes from the saved tokenizer_class
    assert again.family == family
    for text in HARD_TEXTS + ["hello <mask> world"]:
        ids = ref_before(text)["input_ids"]
        assert ours.encode(text) == ids == ref(text)["input_ids"] == again.encode(text), text
        assert ref.decode(ids) == ours.decode(ids) == again.decode(ids)
    for a, b in PAIRS[:6]:
        assert ref([a], [b])["input_ids"][0] == ours.encode(a, b) == again.encode(a, b)
    os.remove(tmp_path / "tokenizer.json")  # vocab.json + merges.txt + config alone: the same tokenizer
    ref_files = AutoTokenizer.from_pretrained(str(tmp_path))
    from_files = Tokenizer.from_pretrained(tmp_path)
    for text in HARD_TEXTS:
        assert from_files.encode(text) == ref_files(text)["input_ids"] == ours.encode(text), text


def test_variants_really_differ(folders):
    """The settings the variants exercise change ids, so the parity above covers each of them."""
    text = "hello <mask> world"
    ids = {n: _load(folders[n], VARIANTS[n][0])[0].encode(text) for n in VARIANTS}
    space = _load(folders["roberta_files"], "roberta")[0].convert_tokens_to_ids("Ġ")
    assert ids["roberta_files"] == ids["roberta_json"]
    i = ids["roberta_files"].index(4)
    assert ids["roberta_files"][i - 1] == space  # " <mask>": the space is its own token ...
    assert ids["roberta_json_mask_lstrip"] == ids["roberta_files"][:i - 1] + ids["roberta_files"][i:]  # ... or eaten
    assert ids["roberta_prefix_space"][:2] == [0, space] and ids["roberta_files"][1] != space
    assert ids["gpt2_files"] == ids["gpt2_json"] and 0 not in ids["gpt2_files"]
    assert ids["gpt2_bos_eos"] == [0] + ids["gpt2_files"] + [0]
    gpt2_space = _load(folders["gpt2_files"], "gpt2")[0].convert_tokens_to_ids("Ġ")
    assert ids["gpt2_prefix_space"] == [gpt2_space] + ids["gpt2_files"]


@pytest.mark.parametrize("family", ["roberta", "gpt2"])
def test_train_is_deterministic_lossless_and_loads_in_transformers(family, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    vocabularies = {tuple(sorted(Tokenizer.train([corpus], 600, family=family).get_vocab().items())) for _ in range(4)}
    assert len(vocabularies) == 1
    tok = Tokenizer.train([corpus], 600, family=family)
    assert tok.family == family and tok.vocab_size == 600
    assert sorted(Tokenizer.train(iter(CORPUS), 600, family=family).get_vocab().items()) == sorted(
        tok.get_vocab().items())
    if family == "roberta":
        assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    else:
        assert tok.convert_ids_to_tokens(599) == "<|endoftext|>" == tok.eos_token and tok.pad_token_id is None
    for text in HARD_TEXTS:  # byte-level: every text comes back exactly, nothing is unknown
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text and tok.unk_token_id not in ids
    tok.save_pretrained(tmp_path / "saved")
    ref = AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    assert type(ref) is REF_CLASS[family]
    for text in HARD_TEXTS:
        assert ref(text)["input_ids"] == tok.encode(text), text
    with pytest.raises(UserError, match="vocab_size must be at least 2"):
        Tokenizer.train([corpus], 200, family=family)


def test_family_is_read_from_config_or_files(folders, tmp_path):
    assert Tokenizer.from_pretrained(folders["roberta_files"]).family == "roberta"  # <s> and <mask> in vocab.json
    assert Tokenizer.from_pretrained(folders["gpt2_json"]).family == "gpt2"
    assert Tokenizer.from_pretrained(folders["gpt2_bos_eos"]).family == "gpt2"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    (tmp_path / "tokenizer.json").write_text(open(os.path.join(folders["gpt2_json"], "tokenizer.json")).read())
    ours = Tokenizer.from_pretrained(tmp_path)  # config.json names the family; RoBERTa's specials are added
    ref = RobertaTokenizerFast.from_pretrained(str(tmp_path))  # as transformers adds them
    assert ours.family == "roberta" and ours.vocab_size == len(ref) == 700 + 5  # <s> </s> <unk> <pad> <mask>
    assert ours.all_special_ids == ref.all_special_ids
    for text in HARD_TEXTS[:6] + ["a <mask> b </s>"]:
        assert ours.encode(text) == ref(text)["input_ids"]
    with pytest.raises(UserError, match="holds a BPE tokenizer"):
        Tokenizer.from_pretrained(folders["gpt2_json"], family="bert")


# ------------------------------------------------------------------------------ prepare-data framing
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small trained tokenizer per family (BERT too: the three framings side by side)."""
    return {family: Tokenizer.train(iter(CORPUS), 600, family=family, min_frequency=2)
            for family in ("bert", "roberta", "gpt2")}


@pytest.mark.parametrize("family,first,last", [("bert", "[CLS]", "[SEP]"), ("roberta", "<s>", "</s>"),
                                               ("gpt2", "<|endoftext|>", "<|endoftext|>")])
def test_prepare_data_frames_each_family_as_the_reference(trained, tmp_path, family, first, last):
    from distilbert_jax.cli import main
    from distilbert_jax.data.dataset import TokenDataset

    tok = trained[family]
    tok.save_pretrained(tmp_path / "tok")
    lines = ["return the path of the file and the string  ", "  the quick brown fox, the lazy dog and the end",
             " ".join(["the file"] * 30)]  # 60 words: cut into chunks of max_length - 2
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["prepare-data", "--tokenizer", str(tmp_path / "tok"), "--input", str(corpus), "--output",
                 str(tmp_path / "d"), "--max-length", "24", "--min-length", "5", "--heldout-fraction", "0",
                 "--no-progress"]) == 0
    ds = TokenDataset.open(tmp_path / "d")
    first_id, last_id = tok.convert_tokens_to_ids([first, last])
    bodies = [tok.encode(line.strip(), add_special_tokens=False) for line in lines]
    chunks = [body[i:i + 22] for body in bodies for i in range(0, len(body), 22)]
    assert len(chunks) >= 5
    assert [ds[i].tolist() for i in range(len(ds))] == [[first_id] + c + [last_id] for c in chunks if len(c) >= 3]
    if family != "gpt2" and len(bodies[0]) <= 22:  # where the tokenizer adds the frame, rows are its encodings
        assert ds[0].tolist() == tok.encode(lines[0].strip())
    assert ds.manifest["family"] == family
    assert ds.special_ids == {n: getattr(tok, f"{n}_token_id") for n in ("pad", "unk", "cls", "sep", "mask", "bos",
                                                                         "eos") if getattr(tok, f"{n}_token_id") is not None}
    assert Tokenizer.from_pretrained(tmp_path / "d").get_vocab() == tok.get_vocab()  # the dataset keeps its tokenizer


def test_a_trained_roberta_mask_takes_the_space_before_it(tmp_path):
    """As roberta-base's <mask> (lstrip): "the <mask> of" is the, <mask>, Ġof, so fill-mask answers
    (" a", " of", ...) bring their own space; transformers reads the saved files the same way."""
    tok = Tokenizer.train(iter(["the list of items in the list"] * 20), vocab_size=300, family="roberta")
    ids = tok.encode("the <mask> of items")
    assert tok.convert_ids_to_tokens(ids)[1:4] == ["the", "<mask>", "Ġof"]
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(str(tmp_path))("the <mask> of items")["input_ids"] == ids
