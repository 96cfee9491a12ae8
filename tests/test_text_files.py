"""Text classification readers: CSV/TSV, JSON lines and IMDb's folder-per-label layout."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from distilbert_jax.errors import UserError
from distilbert_jax.finetune.examples import ReadResult, TextExample
from distilbert_jax.finetune import text_files
from distilbert_jax.finetune.text_files import check_labels, find_split, label_list, read_text_classification

FIX = Path(__file__).parent / "fixtures"
CLS, IMDB, BAD = FIX / "classification", FIX / "imdb", FIX / "text_bad"

TRAIN_TEXTS = ["A warm, funny film; I loved every minute.", "The plot made no sense and the acting was wooden.",
               'An instant classic. The cast is superb, the score "soars".', "Two hours I will never get back.",
               "Great fun\nfrom start to finish.", "Dull, predictable and far too long.",
               "Charming and clever, a joy to watch.", "I fell asleep halfway through."]
TRAIN_LABELS = ["pos", "neg"] * 4


def test_csv_reads_quoted_fields_and_names_the_first_line_of_each_record():
    result = read_text_classification(CLS / "train.csv")
    assert result.skipped == []
    assert [e.text_a for e in result.examples] == TRAIN_TEXTS
    assert [e.label for e in result.examples] == TRAIN_LABELS
    # the "Great fun" record spans lines 6-7, so the next record starts on line 8
    assert [e.source for e in result.examples] == [f"{CLS / 'train.csv'}:{n}" for n in (2, 3, 4, 5, 6, 8, 9, 10)]
    assert [e.guid for e in result.examples] == [f"train-{i}" for i in range(8)]
    assert all(e.text_b is None for e in result.examples)
    assert label_list(result.examples) == ("neg", "pos")


def test_jsonl_gives_the_same_examples_as_the_csv():
    csv_rows = read_text_classification(CLS / "train.csv").examples
    result = read_text_classification(CLS / "train.jsonl")
    assert result.skipped == []
    assert [(e.text_a, e.label) for e in result.examples] == [(e.text_a, e.label) for e in csv_rows]
    assert [e.source for e in result.examples] == [f"{CLS / 'train.jsonl'}:{n}" for n in range(1, 9)]
    dev = read_text_classification(CLS / "dev.jsonl").examples
    assert [e.label for e in dev] == ["pos", "neg", "pos", "neg"]


def test_json_suffix_holding_json_lines_and_tsv(tmp_path):
    (tmp_path / "x.json").write_text('{"sentence": "one", "label": 1}\n\n{"sentence": "two", "label": 0}\n')
    result = read_text_classification(tmp_path / "x.json")
    assert [(e.text_a, e.label, e.source) for e in result.examples] == [
        ("one", "1", f"{tmp_path / 'x.json'}:1"), ("two", "0", f"{tmp_path / 'x.json'}:3")]
    (tmp_path / "x.tsv").write_text('idx\treview\tlabel\n7\tgood, "really"\t1\n8\t"tab\tinside"\t0\n')
    result = read_text_classification(tmp_path / "x.tsv")
    assert [(e.guid, e.text_a, e.label) for e in result.examples] == [
        ("7", 'good, "really"', "1"), ("8", "tab\tinside", "0")]  # an id column becomes the guid


def test_sentence_pairs():
    result = read_text_classification(CLS / "pairs.csv", text_pair_column="text_pair")
    assert len(result.examples) == 6 and result.skipped == []
    first = result.examples[0]
    assert (first.text_a, first.text_b, first.label) == ("A man is playing a guitar.",
                                                        "Someone plays an instrument.", "entailment")
    assert label_list(result.examples) == ("contradiction", "entailment", "neutral")
    # without naming the pair column the pair is not read
    assert read_text_classification(CLS / "pairs.csv").examples[0].text_b is None


def test_imdb_folders_give_one_example_per_file_and_ignore_unsup():
    result = read_text_classification(IMDB / "train")
    assert len(result.examples) == 12 and result.skipped == []
    assert [e.label for e in result.examples] == ["neg"] * 6 + ["pos"] * 6
    assert {e.guid for e in result.examples if e.label == "pos"} == {f"pos/{n}" for n in
                                                                    ("0_9", "1_10", "2_8", "3_7", "4_10", "5_9")}
    assert not any("unlabelled" in e.text_a for e in result.examples)
    pos = next(e for e in result.examples if e.guid == "pos/0_9")
    assert pos.source == str(IMDB / "train" / "pos" / "0_9.txt")
    assert pos.text_a == "A wonderful film with a big heart.<br /><br />The cast is great."
    assert label_list(result.examples) == ("neg", "pos")
    with_unsup = read_text_classification(IMDB / "train", ignore_folders=())
    assert len(with_unsup.examples) == 14 and label_list(with_unsup.examples) == ("neg", "pos", "unsup")


def test_find_split_prefers_dev_then_validation_then_test(tmp_path, caplog):
    assert find_split(CLS, "train") == CLS / "train.csv"  # .csv is looked for before .jsonl
    assert find_split(CLS, "dev") == CLS / "dev.csv"
    assert find_split(IMDB, "train") == IMDB / "train"
    text_files._warned.clear()
    with caplog.at_level(logging.WARNING, logger="distilbert_jax"):
        assert find_split(IMDB, "dev") == IMDB / "test"
        assert find_split(IMDB, "dev") == IMDB / "test"
    assert caplog.text.count("evaluating on test instead") == 1  # probed twice, said once
    (tmp_path / "validation.jsonl").write_text("")
    (tmp_path / "test.csv").write_text("")
    assert find_split(tmp_path, "dev") == tmp_path / "validation.jsonl"
    (tmp_path / "dev.tsv").write_text("")
    assert find_split(tmp_path, "dev") == tmp_path / "dev.tsv"
    with pytest.raises(UserError) as err:
        find_split(tmp_path, "train")
    assert str(err.value).startswith(f"no train split in {tmp_path} (looked for train.csv, train.tsv, "
                                     "train.jsonl, train.json, train/); it holds: dev.tsv, test.csv, validation.jsonl;")
    with pytest.raises(UserError, match="does not exist"):
        find_split(tmp_path / "nope", "train")


def test_label_list_sorts_numbers_by_value():
    def ex(label):
        return TextExample("g", "t", None, label, "s")
    assert label_list([ex("10"), ex("2"), ex("1"), ex("2"), ex(None)]) == ("1", "2", "10")
    assert label_list([ex("-1"), ex("0.5"), ex("b"), ex("a")]) == ("-1", "0.5", "a", "b")
    with pytest.raises(UserError, match="no labels"):
        label_list([ex(None)])


def test_text_column_choice_and_its_errors(tmp_path):
    (tmp_path / "a.csv").write_text("content,review,label\nc1,r1,x\n")
    assert read_text_classification(tmp_path / "a.csv").examples[0].text_a == "r1"  # "review" outranks "content"
    assert read_text_classification(tmp_path / "a.csv", text_column="content").examples[0].text_a == "c1"
    (tmp_path / "b.csv").write_text("body,stars\nhello,5\n")
    with pytest.raises(UserError) as err:
        read_text_classification(tmp_path / "b.csv")
    assert "has none of the text columns text, sentence, review, content (it has: 'body', 'stars')" in str(err.value)
    result = read_text_classification(tmp_path / "b.csv", text_column="body", label_column="stars")
    assert [(e.text_a, e.label) for e in result.examples] == [("hello", "5")]
    with pytest.raises(UserError, match="no text pair column 'second' \\(it has: 'body', 'stars'\\)"):
        read_text_classification(tmp_path / "b.csv", text_column="body", text_pair_column="second")
    unlabelled = read_text_classification(tmp_path / "b.csv", text_column="body")  # no "label" column
    assert [e.label for e in unlabelled.examples] == [None]
    with pytest.raises(UserError, match="unknown format .txt"):
        read_text_classification(FIX / "conll" / "train.txt")


def test_bad_csv_rows_are_skipped_with_file_and_line():
    path = BAD / "bad.csv"
    result = read_text_classification(path)
    assert [(e.text_a, e.source) for e in result.examples] == [
        ("A fine film.", f"{path}:2"), ("A review that runs\nover two lines.", f"{path}:5"),
        ("A bad film.", f"{path}:8")]
    assert result.skipped == [f"{path}:3: 3 fields, the header has 2; row skipped",
                              f"{path}:4: empty 'text'; row skipped"]


def test_unclosed_quote_is_reported_at_its_line(tmp_path):
    (tmp_path / "q.csv").write_text('text,label\nok,pos\n"never closed,neg\nlost,pos\n')
    result = read_text_classification(tmp_path / "q.csv")
    assert [e.text_a for e in result.examples] == ["ok"]
    assert result.skipped == [f"{tmp_path / 'q.csv'}:3: 1 fields, the header has 2 "
                              "(the record runs to line 4: an unclosed quote?); row skipped"]


def test_bad_jsonl_lines_are_skipped_with_file_and_line():
    path = BAD / "bad.jsonl"
    result = read_text_classification(path)
    assert [(e.text_a, e.label, e.source) for e in result.examples] == [
        ("A fine film.", "pos", f"{path}:1"), ("A bad film.", "0", f"{path}:5")]
    assert result.skipped == [
        f"{path}:2: not JSON (Expecting ',' delimiter at column 25); row skipped",
        f"{path}:3: a JSON list, not an object; row skipped",
        f"{path}:4: no 'text' field; row skipped",
        f"{path}:6: 'text' is int, not text; row skipped"]


def test_json_document_instead_of_lines_is_one_clear_error(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([{"text": "a", "label": "x"}], indent=1))
    with pytest.raises(UserError, match="holds one JSON document, not one object per line"):
        read_text_classification(tmp_path / "d.json")


def test_check_labels_moves_unknown_labels_to_skipped():
    path = BAD / "dev_unknown_label.csv"
    train_labels = label_list(read_text_classification(CLS / "train.csv").examples)
    result = check_labels(read_text_classification(path), train_labels)
    assert [e.label for e in result.examples] == ["pos", "neg"]
    assert result.skipped == [f"{path}:3: label 'maybe' is not one of ['neg', 'pos'] (the training labels); "
                              "row skipped"]
    unlabelled = ReadResult([TextExample("g", "t", None, None, "s:1")], ["earlier"])
    assert check_labels(unlabelled, train_labels).examples == unlabelled.examples
    assert check_labels(unlabelled, train_labels).skipped == ["earlier"]


def test_non_utf8(tmp_path):
    for label in ("pos", "neg"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "1.txt").write_text(f"fine {label}", encoding="utf-8")
    (tmp_path / "neg" / "2.txt").write_bytes("caf\u00e9 latin-1".encode("latin-1"))
    (tmp_path / "neg" / "3.txt").write_text("  \n")
    result = read_text_classification(tmp_path)
    assert [e.text_a for e in result.examples] == ["fine neg", "fine pos"]
    assert result.skipped == [f"{tmp_path / 'neg' / '2.txt'}: not UTF-8 text (invalid continuation byte at byte 3); "
                              "file skipped", f"{tmp_path / 'neg' / '3.txt'}: empty text; file skipped"]
    (tmp_path / "x.csv").write_bytes(b"text,label\nok,pos\ncaf\xe9,neg\n")
    with pytest.raises(UserError, match=r"x\.csv:3: not UTF-8 text .*re-save the file as UTF-8"):
        read_text_classification(tmp_path / "x.csv")


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(UserError, match="is empty; expected a header line"):
        read_text_classification(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text("text,label\n,pos\n")
    result = read_text_classification(tmp_path / "h.csv")
    with pytest.raises(UserError, match=r"no usable examples in h.csv \(1 rows skipped, first: .*h.csv:2: empty"):
        result.report("h.csv")
    with pytest.raises(UserError, match="no label folders"):
        read_text_classification(tmp_path)  # a folder with files but no label sub-folders
