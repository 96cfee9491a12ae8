"""CoNLL reading, sub-token labels (checked against transformers' run_ner recipe) and entity scores
(checked against seqeval, and by hand)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest

from distilbert_jax.errors import UserError
from distilbert_jax.finetune.conll import (check_tags, decode_token_predictions, encode_token_examples, entities,
                                           entity_scores, read_conll, tag_list)
from distilbert_jax.finetune.examples import IGNORE_INDEX, ReadResult, TokenExample
from tests.conftest import minilm_dir

FIX = Path(__file__).parent / "fixtures"
TRAIN, DEV, BAD = FIX / "conll" / "train.txt", FIX / "conll" / "dev.txt", FIX / "text_bad" / "bad_conll.txt"
TAGS = ("O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-ORG", "I-PER")


@pytest.fixture(scope="module")
def tokenizer():
    from distilbert_jax.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(minilm_dir())


def test_read_conll_2003_layout():
    train = read_conll(TRAIN)
    assert len(train.examples) == 20 and train.skipped == []
    first, second = train.examples[:2]
    assert first.words == ("John", "Smith", "visited", "Paris", ".")
    assert first.tags == ("B-PER", "I-PER", "O", "B-LOC", "O")
    assert (first.source, second.source) == (f"{TRAIN}:3", f"{TRAIN}:9")  # line 1 is -DOCSTART-, line 2 blank
    assert first.guid == "train-0"
    assert tag_list(train.examples) == TAGS
    dev = read_conll(DEV)
    assert len(dev.examples) == 10 and dev.skipped == []
    assert sum(len(e.words) for e in dev.examples) == 54
    pos = read_conll(TRAIN, tag_column=1).examples[0]
    assert pos.tags == ("NNP", "NNP", "VBD", "NNP", ".")
    untagged = read_conll(TRAIN, tag_column=None).examples[0]
    assert untagged.tags is None and untagged.words == first.words


def test_short_line_skips_its_sentence_and_names_the_line():
    result = read_conll(BAD)
    assert [e.words for e in result.examples] == [("John", "visited", "Paris"), ("Acme", "Corp", ".")]
    assert [e.source for e in result.examples] == [f"{BAD}:3", f"{BAD}:12"]
    assert result.skipped == [f"{BAD}:8: 1 column, expected at least 2; sentence starting at line 7 skipped"]
    with pytest.raises(UserError, match="tag_column 0 is the word itself"):
        read_conll(BAD, tag_column=0)
    with pytest.raises(UserError, match="does not exist"):
        read_conll(FIX / "nope.txt")


def test_tag_list_puts_o_first_and_check_tags():
    examples = [TokenExample("a", ("x", "y"), ("I-PER", "O"), "f:1"), TokenExample("b", ("z",), ("B-LOC",), "f:3")]
    assert tag_list(examples) == ("O", "B-LOC", "I-PER")
    checked = check_tags(ReadResult(examples, []), ("O", "I-PER"))
    assert [e.guid for e in checked.examples] == ["a"]
    assert checked.skipped == ["f:3: tag 'B-LOC' is not one of ['O', 'I-PER'] (the training tags); sentence skipped"]


# ------------------------------------------------------------------ encoding vs transformers + run_ner
def run_ner_reference(hf_tokenizer, words, tags, tag_list_, max_length, label_all):
    """transformers' run_ner recipe: truncating is_split_into_words encoding; a word's tag on its
    first piece; later pieces -100, or with label_all_tokens the tag with B- turned into I-."""
    enc = hf_tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    to_id = {t: i for i, t in enumerate(tag_list_)}
    b_to_i = [tag_list_.index("I-" + t[2:]) if t.startswith("B-") and "I-" + t[2:] in tag_list_ else i
              for i, t in enumerate(tag_list_)]
    labels, previous = [], None
    for w in enc.word_ids():
        if w is None:
            labels.append(-100)
        elif w != previous:
            labels.append(to_id[tags[w]])
        else:
            labels.append(b_to_i[to_id[tags[w]]] if label_all else -100)
        previous = w
    return enc["input_ids"], labels, enc.word_ids()


def tricky_examples():
    train = read_conll(TRAIN).examples
    extra = [
        (("Jean-Pierre", "Müller", "visited", "São", "Paulo", "unaffably", "!"),
         ("B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O")),
        (("Google's", "\u200b", "U.S.", "office", "opened"), ("B-ORG", "O", "B-LOC", "O", "O")),
        (tuple("John Smith met Mary Jones in Paris and London at the Olympics".split()) * 3,
         ("B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC", "O", "O", "B-MISC") * 3),
    ]
    return train + [TokenExample(f"x{i}", w, t, f"x:{i}") for i, (w, t) in enumerate(extra)]


@pytest.mark.parametrize("max_length,label_all", [(128, False), (128, True), (12, False), (12, True)])
def test_encoding_matches_transformers_run_ner(tokenizer, max_length, label_all):
    from transformers import BertTokenizerFast

    hf = BertTokenizerFast.from_pretrained(minilm_dir())
    examples = tricky_examples()
    tags = tag_list(examples)
    features, positions = encode_token_examples(examples, tokenizer, tags, max_length=max_length,
                                                label_all_subtokens=label_all)
    assert len(features) == len(examples)
    np.testing.assert_array_equal(features.example_index, np.arange(len(examples)))
    for i, ex in enumerate(examples):
        ids, labels, word_ids = run_ner_reference(hf, list(ex.words), ex.tags, tags, max_length, label_all)
        assert features.input_ids[i].dtype == np.int32 and features.input_ids[i].tolist() == ids
        assert features.targets["token_labels"][i].dtype == np.int32
        assert features.targets["token_labels"][i].tolist() == labels
        assert features.token_type_ids[i].tolist() == [0] * len(ids)
        expected = [word_ids.index(w) if w in word_ids else -1 for w in range(len(ex.words))]
        assert positions[i] == expected
    # the zero-width space has no piece at all, so it has no position
    assert positions[len(examples) - 2][1] == -1


def test_label_all_subtokens_turns_b_into_i(tokenizer):
    ex = TokenExample("g", ("unaffable", "Paris"), ("B-PER", "B-LOC"), "s:1")
    tags = ("O", "B-LOC", "B-PER", "I-PER")
    first, _ = encode_token_examples([ex], tokenizer, tags)
    every, _ = encode_token_examples([ex], tokenizer, tags, label_all_subtokens=True)
    # [CLS] una ##ffa ##ble paris [SEP]; B-LOC has no I-LOC, so it would stay B-LOC
    assert first.targets["token_labels"][0].tolist() == [-100, 2, -100, -100, 1, -100]
    assert every.targets["token_labels"][0].tolist() == [-100, 2, 3, 3, 1, -100]


def test_truncation_keeps_sep_and_warns_once(tokenizer, caplog):
    examples = tricky_examples()
    with caplog.at_level(logging.WARNING, logger="distilbert_jax"):
        features, positions = encode_token_examples(examples, tokenizer, tag_list(examples), max_length=10)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    long = sum(len(tokenizer.encodings([list(e.words)], is_pretokenized=True)[0].ids) > 10 for e in examples)
    assert long == 4  # "acme" is two pieces, so an 8-word "Acme Corp" sentence is 11 tokens
    assert warnings == [f"4 of {len(examples)} sentences are over max_length=10 tokens and were truncated; "
                        "their cut-off words are predicted 'O'"]
    assert max(len(r) for r in features.input_ids) == 10
    assert all(r[-1] == tokenizer.sep_token_id and r[0] == tokenizer.cls_token_id for r in features.input_ids)
    last = positions[-1]  # 36 one-piece words: words 0..7 fit between [CLS] and [SEP]
    assert last[:8] == list(range(1, 9)) and last[8:] == [-1] * 28


def test_decode_maps_first_pieces_back_to_words(tokenizer):
    examples = tricky_examples()
    tags = tag_list(examples)
    features, positions = encode_token_examples(examples, tokenizer, tags, max_length=12)
    # a perfect model: predicts each labelled position's gold id, and junk (id 1) elsewhere
    predicted = [np.where(r == IGNORE_INDEX, 1, r) for r in features.targets["token_labels"]]
    words = decode_token_predictions(positions, predicted, tags)
    for ex, pos, got in zip(examples, positions, words):
        assert got == [t if p >= 0 else "O" for t, p in zip(ex.tags, pos)]
    padded = np.ones((len(predicted), 12), np.int32)
    for i, r in enumerate(predicted):
        padded[i, :len(r)] = r
    assert decode_token_predictions(positions, padded, tags) == words
    assert words[-1][:10] == ["B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC", "O"]
    assert words[-1][10:] == ["O"] * 26  # cut off at max_length=12: 10 words fit
    with pytest.raises(UserError, match="2 examples but 1 prediction rows"):
        decode_token_predictions(positions[:2], predicted[:1], tags)


def test_unknown_tag_names_the_sentence(tokenizer):
    ex = TokenExample("g", ("Paris",), ("B-CITY",), "dev.txt:7")
    with pytest.raises(UserError, match=r"dev.txt:7: tag 'B-CITY' is not one of \['O', 'B-LOC'\]"):
        encode_token_examples([ex], tokenizer, ("O", "B-LOC"))
    unlabelled = TokenExample("g", ("Paris",), None, "t:1")
    features, positions = encode_token_examples([unlabelled], tokenizer, ("O",))
    assert features.targets["token_labels"][0].tolist() == [-100, -100, -100] and positions == [[1]]


# ------------------------------------------------------------------ entity scores
def test_chunking_by_hand():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 1), ("LOC", 3, 3)}
    # IOB1: I- opens an entity after O or another type; B- only separates two of the same type
    assert entities(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]) == {
        ("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 4), ("ORG", 5, 5)}
    assert entities(["B-PER", "I-LOC", "I-LOC"]) == {("PER", 0, 0), ("LOC", 1, 2)}
    # IOBES: E- and S- close an entity, an I- after E- opens one
    assert entities(["S-PER", "B-LOC", "E-LOC", "O", "B-LOC", "I-LOC", "E-LOC", "I-LOC"]) == {
        ("PER", 0, 0), ("LOC", 1, 2), ("LOC", 4, 6), ("LOC", 7, 7)}
    assert entities(["PER", "PER", "O", "LOC"]) == {("PER", 0, 1), ("LOC", 3, 3)}  # IO scheme
    assert entities(["O", "O"]) == set()


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"], ["I-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"], ["B-PER"]]
    s = entity_scores(gold, pred)
    # gold: PER 0-1, LOC, ORG, PER (IOB1 I-); predicted: PER 0-1, ORG (wrong place), ORG, PER: 3 of 4 right
    assert (s["n_gold"], s["n_predicted"], s["n_correct"]) == (4, 4, 3)
    assert (s["precision"], s["recall"], s["f1"]) == (0.75, 0.75, 0.75)
    assert s["accuracy"] == 5 / 7  # B-LOC/B-ORG, and I-PER/B-PER: a token mismatch, yet the same entity
    assert s["per_type"] == {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "ORG": {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}}
    # an entity never runs across a sentence break
    assert entity_scores([["B-PER"], ["I-PER"]], [["B-PER"], ["O"]])["recall"] == 0.5
    nothing = entity_scores([["O", "O"]], [["O", "O"]])
    assert (nothing["precision"], nothing["recall"], nothing["f1"], nothing["accuracy"]) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(UserError, match="sentence 0 has 2 gold tags but 1 predicted"):
        entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(UserError, match="2 gold sentences but 1 predicted"):
        entity_scores([["O"], ["O"]], [["O"]])


def random_tags(rng, prefixes, n):
    types = ("PER", "LOC", "ORG")
    return [["O" if rng.random() < 0.4 else f"{rng.choice(prefixes)}-{rng.choice(types)}"
             for _ in range(rng.randint(1, 12))] for _ in range(n)]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # seqeval averaging over zero entities
@pytest.mark.parametrize("prefixes", [("B", "I"), ("B", "I", "E", "S")])
def test_entity_scores_match_seqeval(prefixes):
    metrics = pytest.importorskip("seqeval.metrics")
    rng = random.Random(0)
    for trial in range(300):
        gold = random_tags(rng, prefixes, rng.randint(1, 5))
        # predictions: gold with some tags changed, so many entities match and many do not
        pred = [[t if rng.random() < 0.7 else random_tags(rng, prefixes, 1)[0][0] for t in s] for s in gold]
        if trial % 10 == 0:
            pred = random_tags(rng, prefixes, 0) + [["O"] * len(s) for s in gold]
        ours = entity_scores(gold, pred)
        for name, fn in (("precision", metrics.precision_score), ("recall", metrics.recall_score),
                         ("f1", metrics.f1_score)):
            assert ours[name] == pytest.approx(fn(gold, pred, zero_division=0), abs=1e-12), (trial, name)
        assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(gold, pred), abs=1e-12)
        report = metrics.classification_report(gold, pred, output_dict=True, zero_division=0)
        types = {k: v for k, v in report.items() if not k.endswith(" avg")}
        assert set(types) == set(ours["per_type"]), trial
        for kind, theirs in types.items():
            mine = ours["per_type"][kind]
            assert mine["support"] == theirs["support"]
            for name, their_name in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
                assert mine[name] == pytest.approx(theirs[their_name], abs=1e-12), (trial, kind, name)
