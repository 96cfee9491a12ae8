"""SQuAD: reading, bad-input reports, windows and labels against transformers, post-processing on
hand-made logits, and the official exact-match/F1 rules on hand-made answers.

transformers' BertTokenizerFast is the reference for windows; the run_qa.py labelling rule is
re-stated below (`run_qa_labels`) so that the labels are checked against it, not against ourselves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import minilm_dir
from distilbert_jax.errors import UserError
from distilbert_jax.finetune.examples import Answer, QAExample
from distilbert_jax.finetune.squad import SquadPredictions, make_features, postprocess, read_squad, write_predictions
from distilbert_jax.finetune.squad_metrics import exact_match, f1, normalize_answer, squad_scores
from distilbert_jax.tokenizer import Tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
TRAIN, DEV, DEV2 = (FIXTURES / "squad" / n for n in ("train-v1.1.json", "dev-v1.1.json", "dev-v2.0.json"))
BAD = FIXTURES / "squad_bad"


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained(minilm_dir())


@pytest.fixture(scope="module")
def hf():
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(minilm_dir())


def by_id(examples):
    return {e.qid: e for e in examples}


# ---------------------------------------------------------------- reading
def test_reader_counts_fields_and_sources():
    train = read_squad(TRAIN, for_training=True)
    dev = read_squad(DEV, for_training=False)
    assert (len(train.examples), len(dev.examples), train.skipped, dev.skipped) == (12, 13, [], [])
    first = dev.examples[0]
    assert (first.qid, first.question, first.title, first.is_impossible) == (
        "dev-danube-1", "Where does the Danube rise?", "Danube", False)
    assert first.answers == (Answer("the Black Forest of Germany", 20), Answer("Black Forest", 24),
                             Answer("in the Black Forest of Germany", 17))
    assert sum(len(e.answers) > 1 for e in dev.examples) == 10
    # every source names the line of that question's "id" key
    lines = DEV.read_text(encoding="utf-8").splitlines()
    assert first.source == f"{DEV}:11"
    for e in dev.examples:
        path, line = e.source.rsplit(":", 1)
        assert path == str(DEV) and f'"id": "{e.qid}"' in lines[int(line) - 1]


def test_reader_v2_impossible_questions():
    dev2 = read_squad(DEV2, for_training=False).examples
    assert [e.qid for e in dev2 if e.is_impossible] == ["v2-bees-3", "v2-bees-4", "v2-bees-5", "v2-photo-2"]
    assert all(e.answers == () for e in dev2 if e.is_impossible)  # plausible_answers are not gold
    assert by_id(dev2)["v2-bees-2"].answers == (Answer("up to 2,000", 396), Answer("2,000", 402))
    # impossible questions are kept for training too (labelled [CLS])
    assert len(read_squad(DEV2, for_training=True).examples) == 7


def test_reader_one_line_file_names_question_and_article(tmp_path):
    path = tmp_path / "dev-one-line.json"
    path.write_text(json.dumps(json.loads(DEV.read_text(encoding="utf-8"))), encoding="utf-8")
    examples = read_squad(path, for_training=False).examples
    assert examples[0].source == f"{path} (question id dev-danube-1, article 'Danube')"
    assert examples[-1].source == f"{path} (question id dev-photo-2, article 'Photosynthesis')"


def test_bad_answers_for_training():
    path = BAD / "bad_answers.json"
    result = read_squad(path, for_training=True)
    assert [e.qid for e in result.examples] == ["bad-ok", "bad-shifted", "bad-second-good"]
    shifted = by_id(result.examples)["bad-shifted"]
    assert shifted.answers == (Answer("the Chrysler Building", 318),)
    assert shifted.context[318:339] == "the Chrysler Building"
    assert by_id(result.examples)["bad-second-good"].answers == (Answer("330 metres", 240),)
    assert result.skipped == [
        f"{path}:21: answer 'the Chrysler Building' does not match the context at offset 321 (context has "
        "' Chrysler Building in'); used offset 318, the nearest place that text occurs",
        f"{path}:31: answer 'Brussels' does not match the context at offset 65 (context has 'Paris be') and "
        "the text occurs nowhere in it; answer dropped",
        f"{path}:31: question 'bad-nowhere' has no usable answer left; skipped for training",
        f"{path}:41: question 'bad-no-question' has no 'question' string; skipped",
        f"{path}:50: answer '330 feet' does not match the context at offset 240 (context has '330 metr') and "
        "the text occurs nowhere in it; answer dropped",
    ]


def test_bad_answers_for_evaluation_keep_gold_texts():
    path = BAD / "bad_answers.json"
    result = read_squad(path, for_training=False)
    assert [e.qid for e in result.examples] == ["bad-ok", "bad-shifted", "bad-nowhere", "bad-second-good"]
    assert by_id(result.examples)["bad-nowhere"].answers == (Answer("Brussels", 65),)
    assert by_id(result.examples)["bad-second-good"].answers == (Answer("330 feet", 240), Answer("330 metres", 240))
    assert len(result.skipped) == 4 and result.skipped[1].endswith("kept only as a gold text for scoring")
    assert read_squad(path, for_training=False).report("bad_answers.json") is not None


def test_invalid_json_and_wrong_files(tmp_path):
    with pytest.raises(UserError, match=r"not_json\.json:12:15: not valid JSON \(Expecting ',' delimiter\)"):
        read_squad(BAD / "not_json.json", for_training=True)
    with pytest.raises(UserError, match="does not exist"):
        read_squad(tmp_path / "nope.json", for_training=True)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UserError, match='has no "data" list'):
        read_squad(tmp_path / "list.json", for_training=True)
    (tmp_path / "empty.json").write_text('{"data": []}')
    with pytest.raises(UserError, match="no usable examples"):
        read_squad(tmp_path / "empty.json", for_training=True).report("empty.json")


# ---------------------------------------------------------------- windows and labels vs transformers
def run_qa_labels(batch, i, example):
    """run_qa.py's training labels, re-stated: [CLS] (0) unless the first answer lies inside the
    window's context; else walk the window's first context token right while tokens start at or
    before the answer, and its last context token left while tokens end at or after it."""
    if not example.answers or example.is_impossible:
        return 0, 0
    first, last = example.answers[0].start, example.answers[0].start + len(example.answers[0].text)
    offsets, seq = batch["offset_mapping"][i], batch.sequence_ids(i)
    context = [k for k, s in enumerate(seq) if s == 1]
    lo, hi = context[0], context[-1]
    if not (offsets[lo][0] <= first and offsets[hi][1] >= last):
        return 0, 0
    while lo < len(offsets) and offsets[lo][0] <= first:  # can run on into the final [SEP] (0, 0)
        lo += 1
    while offsets[hi][1] >= last:
        hi -= 1
    return lo - 1, hi + 1


def hf_windows(hf, examples, max_length, doc_stride, questions=None):
    return hf(questions or [e.question for e in examples], [e.context for e in examples], truncation="only_second",
              max_length=max_length, stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)


@pytest.mark.parametrize("max_length,doc_stride", [(64, 16), (64, 32), (48, 8), (96, 40), (384, 128)])
def test_windows_and_labels_match_transformers(tok, hf, max_length, doc_stride):
    examples = read_squad(TRAIN, for_training=True).examples + read_squad(DEV, for_training=False).examples \
        + read_squad(DEV2, for_training=True).examples
    features, windows = make_features(examples, tok, max_length=max_length, doc_stride=doc_stride, for_training=True)
    ref = hf_windows(hf, examples, max_length, doc_stride)
    assert len(features) == len(windows) == len(ref["input_ids"])
    slips = 0
    assert features.example_index.tolist() == windows.example_index.tolist() == ref["overflow_to_sample_mapping"]
    for w in range(len(features)):
        seq = np.array([-1 if s is None else s for s in ref.sequence_ids(w)])
        assert features.input_ids[w].tolist() == ref["input_ids"][w]
        assert features.token_type_ids[w].tolist() == ref["token_type_ids"][w]
        assert windows.length(w) == len(ref["input_ids"][w]) <= max_length
        assert windows.is_context(w).tolist() == (seq == 1).tolist()
        assert windows.offsets(w)[seq == 1].tolist() == np.asarray(ref["offset_mapping"][w])[seq == 1].tolist()
        label = (int(features.targets["start_positions"][w]), int(features.targets["end_positions"][w]))
        expected = run_qa_labels(ref, w, examples[features.example_index[w]])
        if expected[0] == windows.length(w) - 1:  # run_qa's slip onto the [SEP]: see the test below
            expected, slips = (expected[0] - 1, expected[1]), slips + 1
        assert label == expected, w
    assert features.targets["start_positions"].dtype == np.int32
    assert slips == {(64, 32): 1}.get((max_length, doc_stride), 0)
    if (max_length, doc_stride) == (64, 16):  # windows per example: the Danube context needs 6 to 8
        assert np.bincount(features.example_index).tolist() == [7] * 7 + [3, 3, 3, 2, 2] + [6, 6, 7, 8, 8, 7, 7] \
            + [3] * 4 + [2, 2] + [3] * 5 + [2, 2]


def test_labels_point_at_the_answer_tokens(tok):
    examples = read_squad(TRAIN, for_training=True).examples
    features, windows = make_features(examples, tok, max_length=64, doc_stride=16, for_training=True)
    labelled = 0
    for w in range(len(features)):
        s, e = features.targets["start_positions"][w], features.targets["end_positions"][w]
        if s:
            example, offsets = examples[features.example_index[w]], windows.offsets(w)
            assert example.context[offsets[s, 0] : offsets[e, 1]] == example.answers[0].text
            labelled += 1
    assert labelled == 15  # 12 answers, 3 of them inside two overlapping windows


def test_answer_on_last_context_token_of_a_window(tok, hf):
    """run_qa labels such an answer's start at the [SEP] after it; ours stays on the token."""
    danube = read_squad(TRAIN, for_training=True).examples[0]
    _, windows = make_features([danube], tok, max_length=64, doc_stride=16, for_training=False)
    last = windows.length(0) - 2
    first, end = (int(x) for x in windows.offsets(0)[last])
    example = QAExample("edge", danube.question, danube.context, (Answer(danube.context[first:end], first),),
                        False, "Danube", "test")
    features, _ = make_features([example], tok, max_length=64, doc_stride=16, for_training=True)
    assert (features.targets["start_positions"][0], features.targets["end_positions"][0]) == (last, last)
    assert run_qa_labels(hf_windows(hf, [example], 64, 16), 0, example) == (last + 1, last)


def test_long_question_is_cut_to_max_query_length(tok, hf):
    example = read_squad(DEV, for_training=False).examples[3]  # a 13-token question
    features, windows = make_features([example], tok, max_length=64, doc_stride=16, max_query_length=5,
                                      for_training=False)
    cut = example.question[: tok.encodings(example.question)[0].offsets[5][1]]  # end of the 5th word piece
    ref = hf_windows(hf, [example], 64, 16, questions=[cut])
    assert [r.tolist() for r in features.input_ids] == ref["input_ids"]
    assert windows.context_start.tolist() == [7] * len(windows) and features.targets == {}


def test_impossible_settings_raise_user_errors(tok):
    examples = read_squad(TRAIN, for_training=True).examples
    with pytest.raises(UserError, match=r"doc_stride=60 shared tokens is not less than the 51 context tokens .*"
                                        r"10-token question.* lower doc_stride below 51 or raise") as error:
        make_features(examples, tok, max_length=64, doc_stride=60, for_training=True)
    assert "train-v1.1.json:11: the context (249 tokens) needs several windows" in str(error.value)
    with pytest.raises(UserError, match=r"a 10-token question leaves no room for context in max_length=10"):
        make_features(examples, tok, max_length=10, doc_stride=0, for_training=True)
    with pytest.raises(UserError, match="max_length=600 is more than the model's 512 positions"):
        make_features(examples, tok, max_length=600, for_training=True)
    with pytest.raises(UserError, match="doc_stride must be an int >= 0"):
        make_features(examples, tok, doc_stride=-1, for_training=True)
    # a stride larger than a window is fine where every context fits in one window
    short = [e for e in examples if e.title == "Photosynthesis"]
    features, _ = make_features(short, tok, max_length=128, doc_stride=200, for_training=True)
    assert len(features) == 2


# ---------------------------------------------------------------- post-processing
@pytest.fixture(scope="module")
def photo(tok):
    """One example in one 83-token window (context from position 12); `span(text)` gives the window
    positions of the first and last word piece of a text's first occurrence in the context."""
    example = by_id(read_squad(TRAIN, for_training=True).examples)["train-photo-1"]
    features, windows = make_features([example], tok, for_training=False)
    offsets = windows.offsets(0)
    assert (windows.length(0), int(windows.context_start[0])) == (83, 12)

    def span(text):
        first = example.context.index(text)
        return (int(np.nonzero(offsets[:, 0] == first)[0][0]),
                int(np.nonzero(offsets[:, 1] == first + len(text))[0][0]))
    return example, windows, span


def test_postprocess_picks_best_context_span_and_ignores_padding(photo):
    example, windows, span = photo
    n = windows.length(0)
    start, end = np.zeros((1, n + 6)), np.zeros((1, n + 6))
    start[0, n:] = end[0, n:] = 100.0  # padding: never a candidate
    start[0, 1], end[0, 2] = 10.0, 10.0  # question tokens: never an answer
    assert span("chlorophyll") == (51, 55)  # ch ##lor ##op ##hyl ##l
    start[0, 51], end[0, 55] = 4.0, 3.0
    pred = postprocess([example], windows, start, end)
    assert pred.answers == {"train-photo-1": "chlorophyll"} and pred.null_odds == {} and not pred.version_2
    assert pred.nbest["train-photo-1"][0]["text"] == "chlorophyll"
    assert pred.nbest["train-photo-1"][0]["start_logit"] == 4.0 and pred.nbest["train-photo-1"][0]["end_logit"] == 3.0
    # the same logits as ragged python lists, each row cut to its window
    assert postprocess([example], windows, [start[0, :n].tolist()], [end[0, :n].tolist()]).answers == pred.answers


def test_postprocess_max_answer_length_and_backward_spans(photo):
    example, windows, span = photo
    n = windows.length(0)
    start, end = np.zeros((1, n)), np.zeros((1, n))
    assert span("Photosynthesis is the process by which green plants,") == (12, 22)  # 11 word pieces
    start[0, 12], end[0, 22] = 5.0, 5.0  # scoring 10
    start[0, 51], end[0, 55] = 3.0, 3.0  # chlorophyll, scoring 6
    start[0, 80], end[0, 72] = 9.0, 9.0  # the end before the start: never valid, however high
    long = postprocess([example], windows, start, end, max_answer_length=11).answers["train-photo-1"]
    assert long == "Photosynthesis is the process by which green plants,"
    assert postprocess([example], windows, start, end, max_answer_length=10).answers["train-photo-1"] == "chlorophyll"


def test_postprocess_nbest_order_and_probabilities(photo):
    example, windows, span = photo
    n, p = windows.length(0), span("energy")[0]
    start, end = np.zeros((1, n)), np.zeros((1, n))
    start[0, [p, p + 4, p + 8]] = [3.0, 2.0, 1.0]
    end[0, [p + 1, p + 5, p + 9]] = [3.0, 2.0, 1.0]
    nbest = postprocess([example], windows, start, end, n_best=3).nbest["train-photo-1"]
    # valid pairs score 6, 5, 4, 4, 3, 2; the tie at 4 keeps (start p, end p+9) first, as transformers
    assert [c["text"] for c in nbest] == ["energy into", "energy into chemical energy. It",
                                          "energy into chemical energy. It takes place mainly in"]
    assert [c["start_logit"] + c["end_logit"] for c in nbest] == [6.0, 5.0, 4.0]
    np.testing.assert_allclose([c["probability"] for c in nbest],
                               [0.6652409557748219, 0.24472847105479764, 0.09003057317038046], rtol=1e-12)


def test_postprocess_v2_null_decision_and_threshold(photo):
    example, windows, span = photo
    n = windows.length(0)
    start, end = np.zeros((1, n)), np.zeros((1, n))
    start[0, 0], end[0, 0] = 2.0, 1.0  # null score 3
    assert span("glucose") == (70, 70)
    start[0, 70], end[0, 70] = 4.0, 2.0  # best span 6
    pred = postprocess([example], windows, start, end, version_2=True)
    assert pred.answers == {"train-photo-1": "glucose"} and pred.null_odds == {"train-photo-1": -3.0}
    nbest = pred.nbest["train-photo-1"]
    assert (nbest[0]["text"], nbest[1]["text"]) == ("glucose", "")  # the null is listed with its score
    assert nbest[1]["start_logit"] == 2.0 and nbest[1]["end_logit"] == 1.0
    assert postprocess([example], windows, start, end, version_2=True,
                       null_score_diff_threshold=-3.5).answers["train-photo-1"] == ""
    assert postprocess([example], windows, start, end, version_2=True,
                       null_score_diff_threshold=-2.5).answers["train-photo-1"] == "glucose"
    # n_best=1: the null kept its place at the end even though a span took the only slot
    assert [c["text"] for c in postprocess([example], windows, start, end, version_2=True, n_best=1)
            .nbest["train-photo-1"]] == ["glucose", ""]


def test_postprocess_without_any_valid_span(photo):
    example, windows, _ = photo
    n = windows.length(0)
    start, end = np.zeros((1, n)), np.zeros((1, n))
    start[0, 1], end[0, 2] = 5.0, 5.0  # the single top start and end are question tokens
    v1 = postprocess([example], windows, start, end, n_best=1)
    assert v1.answers == {"train-photo-1": ""} and v1.nbest == {"train-photo-1": []}
    v2 = postprocess([example], windows, start, end, n_best=1, version_2=True)
    assert v2.answers == {"train-photo-1": ""} and v2.null_odds == {"train-photo-1": float("inf")}


def test_postprocess_across_windows(tok):
    example = by_id(read_squad(DEV, for_training=False).examples)["dev-danube-6"]
    features, windows = make_features([example], tok, max_length=64, doc_stride=16, for_training=False)
    assert len(windows) == 7
    start = [np.r_[0.0, np.full(windows.length(w) - 1, -10.0)] for w in range(7)]  # [CLS] 0, the rest -10
    end = [np.r_[0.0, np.full(windows.length(w) - 1, -10.0)] for w in range(7)]

    def put(w, text, s, e):
        offsets, first = windows.offsets(w), example.context.index(text)
        start[w][np.nonzero(offsets[:, 0] == first)[0][0]] = s
        end[w][np.nonzero(offsets[:, 1] == first + len(text))[0][0]] = e
    put(6, "the Rhine–Main–Danube Canal", 3.0, 3.0)  # only the last window holds it
    put(5, "an important trade route", 2.5, 2.5)  # in the overlap of windows 5 and 6, scored in each
    put(6, "an important trade route", 0.5, 0.5)
    start[1][0], end[1][0] = -1.0, -1.0  # the lowest [CLS] score of all windows is the null score
    pred = postprocess([example], windows, start, end, version_2=True)
    # the text comes from the original context (en dashes), not from decoded word pieces
    assert pred.answers == {"dev-danube-6": "the Rhine–Main–Danube Canal"}
    assert pred.null_odds == {"dev-danube-6": -8.0}
    texts = [c["text"] for c in pred.nbest["dev-danube-6"]]
    assert texts[:4] == ["the Rhine–Main–Danube Canal", "an important trade route",  # window 6, window 5
                         "an important trade route, and today the Rhine–Main–Danube Canal",  # window 6
                         "an important trade route"]  # window 6
    assert [c["start_logit"] + c["end_logit"] for c in pred.nbest["dev-danube-6"][:4]] == [6.0, 5.0, 3.5, 1.0]
    assert texts[4] == "" and texts.count("") == 1 and len(texts) == 20  # the null (-2) ranks fifth
    with pytest.raises(ValueError, match="4 start and 4 end logit rows for 7 windows"):
        postprocess([example], windows, start[:4], end[:4])


def test_write_predictions(tmp_path):
    pred = SquadPredictions({"q1": "Paris", "q2": ""}, {"q1": [{"text": "Paris", "start_logit": 1.0,
                            "end_logit": 2.0, "probability": 1.0}], "q2": []}, {"q1": -1.5, "q2": 2.0}, True)
    written = write_predictions(pred, tmp_path / "out")
    assert [p.name for p in written] == ["predictions.json", "nbest_predictions.json", "null_odds.json"]
    assert json.loads((tmp_path / "out" / "predictions.json").read_text()) == {"q1": "Paris", "q2": ""}
    assert json.loads((tmp_path / "out" / "nbest_predictions.json").read_text()) == pred.nbest
    assert json.loads((tmp_path / "out" / "null_odds.json").read_text()) == {"q1": -1.5, "q2": 2.0}
    assert sorted(os.listdir(tmp_path / "out")) == ["nbest_predictions.json", "null_odds.json", "predictions.json"]
    v1 = SquadPredictions({"q1": "Paris"}, {"q1": []}, {}, False)
    assert [p.name for p in write_predictions(v1, tmp_path / "v1")] == ["predictions.json", "nbest_predictions.json"]


# ---------------------------------------------------------------- official scoring
@pytest.mark.parametrize("text,normal", [
    ("The Eiffel Tower", "eiffel tower"), ("  Hello,   World!! ", "hello world"), ("an apple a day", "apple day"),
    ("theatre anthem", "theatre anthem"), ("the-end", "theend"), ("U.S.A.", "usa"), ("Über\tcafé", "über café"),
    ("2,850 kilometres", "2850 kilometres"), ("“quoted”", "“quoted”"), ("A", ""),
])
def test_normalize_answer(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match_and_f1():
    assert exact_match("The Eiffel Tower", "eiffel tower") == 1.0
    assert exact_match("Eiffel Tower.", "the tower") == 0.0
    assert f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7, abs=1e-15)  # P 3/4, R 1
    assert f1("dog dog dog", "dog") == 0.5  # a repeated token counts once per gold occurrence
    assert f1("2,850 km", "about 2,850 kilometres") == pytest.approx(0.4, abs=1e-15)
    assert (f1("", ""), f1("the", ""), f1("", "Paris"), f1("Paris", "")) == (1.0, 1.0, 0.0, 0.0)
    assert (f1("", "", version_2=False), f1("a", "the", version_2=False)) == (0.0, 0.0)  # the v1.1 script


def test_squad_scores_v1_max_over_golds_and_missing():
    examples = read_squad(DEV, for_training=False).examples
    answers = {"dev-danube-1": "Black Forest", "dev-danube-2": "2,850 km", "dev-eiffel-3": "Chrysler",
               "not-a-question": "ignored"}
    scores = squad_scores(answers, examples)
    assert scores == {"exact_match": 1 / 13, "f1": (1 + 0.5 + 2 / 3) / 13, "total": 13, "missing": 10}
    perfect = squad_scores({e.qid: e.answers[-1].text.upper() for e in examples}, examples)
    assert (perfect["exact_match"], perfect["f1"], perfect["missing"]) == (1.0, 1.0, 0)


def test_squad_scores_v2_split_by_answerability():
    examples = read_squad(DEV2, for_training=False).examples
    answers = {"v2-bees-1": "waggle dance", "v2-bees-2": "2,000 eggs", "v2-bees-3": "", "v2-bees-4": "the direction",
               "v2-bees-5": "", "v2-photo-1": "Chloroplasts", "v2-photo-2": ""}
    scores = squad_scores(answers, examples)
    assert scores == pytest.approx({
        "exact_match": 5 / 7, "f1": (5 + 2 / 3) / 7, "total": 7, "missing": 0,
        "has_answer_exact_match": 2 / 3, "has_answer_f1": (2 + 2 / 3) / 3, "has_answer_total": 3,
        "no_answer_exact_match": 3 / 4, "no_answer_f1": 3 / 4, "no_answer_total": 4}, rel=0, abs=1e-15)


def test_squad_scores_v2_gold_that_normalises_to_nothing():
    """The v2.0 script drops such gold texts, so "" is the right answer; the v1.1 script keeps them."""
    odd = QAExample("odd", "q?", "The end.", (Answer("The", 0),), False, "t", "test")
    impossible = QAExample("imp", "q?", "The end.", (), True, "t", "test")
    v2 = squad_scores({"odd": "", "imp": ""}, [odd, impossible])
    assert (v2["exact_match"], v2["f1"], v2["has_answer_total"], v2["no_answer_total"]) == (1.0, 1.0, 1, 1)
    v1 = squad_scores({"odd": "the"}, [odd])
    assert v1 == {"exact_match": 1.0, "f1": 0.0, "total": 1, "missing": 0}
