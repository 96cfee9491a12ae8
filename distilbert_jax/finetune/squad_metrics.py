"""SQuAD exact match and F1, computed the way the official v1.1 and v2.0 evaluate scripts do.

Why re-implement rather than import: published SQuAD numbers are only comparable when answers are
normalised and compared exactly as those scripts do (which punctuation goes, which articles go,
how an empty answer scores), so each rule below is the scripts' rule, with the script named where
v1.1 and v2.0 differ. Two deliberate departures, both about data the scripts never see:
* Scores are fractions in 0..1, not percentages, like every other metric in this package.
* A question missing from the predictions scores 0 and is counted under "missing" (the v1.1 script
  does score it 0; the v2.0 script silently drops it from the total, which flatters a run that
  crashed half-way).
"""

from __future__ import annotations

import collections
import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop ASCII punctuation, drop the whole words a/an/the, collapse whitespace, in
    the official order (punctuation goes first, so "the-end" becomes "theend" and keeps its article)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, *, version_2: bool = True) -> float:
    """Token-level F1 over normalised tokens, counting repeated tokens as often as both sides have them.

    When either side normalises to nothing, the v2.0 script gives 1.0 only if both do (a correct "no
    answer"); the v1.1 script has no such rule and gives 0.0 (no common token), which version_2=False
    reproduces."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if version_2 and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(example, *, version_2: bool) -> list[str]:
    """The texts a prediction is compared with. The v2.0 script drops gold texts that normalise to
    nothing and uses [""] when none is left (an unanswerable question); the v1.1 script keeps every
    text. A v1.1 question with no answer at all (unlabelled data) also gets [""] instead of the
    script's crash."""
    texts = [a.text for a in example.answers]
    if version_2:
        texts = [t for t in texts if normalize_answer(t)]
    return texts or [""]


def squad_scores(answers: dict[str, str], examples, *, version_2: bool | None = None) -> dict:
    """Mean of the best score over each question's gold answers, as fractions 0..1.

    `examples` are QAExamples (qid, answers, is_impossible). version_2=None decides from the data:
    any question marked is_impossible means SQuAD 2.0 rules. Returns "exact_match", "f1", "total",
    "missing", and for v2.0 the same split into questions with an answer ("has_answer_*", as the
    script's HasAns_*) and without ("no_answer_*", NoAns_*); a split with no question scores 0.0.
    """
    examples = list(examples)
    if version_2 is None:
        version_2 = any(e.is_impossible for e in examples)
    sums = {"all": [0.0, 0.0, 0], "has": [0.0, 0.0, 0], "no": [0.0, 0.0, 0]}
    missing = 0
    for example in examples:
        prediction = answers.get(example.qid)
        if prediction is None:
            missing += 1
            em = f = 0.0
        else:
            golds = gold_answers(example, version_2=version_2)
            em = max(exact_match(prediction, g) for g in golds)
            f = max(f1(prediction, g, version_2=version_2) for g in golds)
        # The v2.0 script splits on "has gold answers", not on the is_impossible flag.
        groups = ("all", "has" if example.answers else "no") if version_2 else ("all",)
        for group in groups:
            sums[group][0] += em
            sums[group][1] += f
            sums[group][2] += 1

    def mean(group: str, i: int) -> float:
        return sums[group][i] / sums[group][2] if sums[group][2] else 0.0

    scores = {"exact_match": mean("all", 0), "f1": mean("all", 1), "total": sums["all"][2], "missing": missing}
    if version_2:
        for group, name in (("has", "has_answer"), ("no", "no_answer")):
            scores.update({f"{name}_exact_match": mean(group, 0), f"{name}_f1": mean(group, 1),
                           f"{name}_total": sums[group][2]})
    return scores
