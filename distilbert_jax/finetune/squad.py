"""SQuAD v1.1/v2.0: read the JSON, cut question+context windows, turn span logits back into answers.

The conventions are those of transformers' run_qa.py and utils_qa.py, because that is what the
published DistilBERT SQuAD numbers and most users' expectations come from:
* A window is [CLS] question [SEP] context-piece [SEP]; `doc_stride` is the number of context tokens
  two consecutive windows SHARE (transformers' `stride`), not the step between them (the step
  of Google's original run_squad.py). A window holds max_length - len(question) - 3 context tokens.
* Labels point at the answer's first and last context token when the whole answer lies in the
  window, else at the [CLS] (0), as does an unanswerable question.
* Post-processing scores a span as start logit + end logit over each window's top-n starts and ends;
  a v2.0 "no answer" wins when the lowest [CLS] score over the windows beats the best span by more
  than the threshold.
Departures, each fixing something run_qa gets wrong: the question is cut to max_query_length tokens
(run_qa fails on a question longer than the window); an answer starting at a window's last context
token is labelled there (run_qa labels the [SEP] after it); padding past a window's length never
enters the top-n; an example with no valid span answers "" instead of the word "empty".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from distilbert_jax.errors import UserError
from distilbert_jax.finetune.examples import Answer, Features, QAExample, ReadResult

_ID_KEY = re.compile(r'"id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _id_lines(text: str) -> dict[str, int]:
    """qid -> line of its "id" key, for ids that are alone on their line and unique in the file.
    Pretty-printed files get exact lines; the official files are one line, where a line number says
    nothing, so their questions get no entry and are named by id and article instead."""
    found, line, pos = [], 1, 0
    for m in _ID_KEY.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        raw = m.group(1)
        found.append((json.loads(f'"{raw}"') if "\\" in raw else raw, line))
    per_line = Counter(ln for _, ln in found)
    per_id = Counter(q for q, _ in found)
    return {q: ln for q, ln in found if per_line[ln] == 1 and per_id[q] == 1}


def _checked_answer(text: str, start: int, context: str, source: str, for_training: bool):
    """(answer or None, message or None). A stated offset that does not hold the text is moved to
    the nearest place the text does occur: a shifted offset is the usual fault (text edited after
    labelling) and the nearest occurrence is the likeliest intended one."""
    at = context[start : start + len(text)] if start >= 0 else ""
    if at == text and text:
        return Answer(text, start), None
    problem = (f"{source}: answer {_clip(text)!r} does not match the context at offset {start} "
               f"(context has {_clip(at)!r})")
    places = [m.start() for m in re.finditer(re.escape(text), context)] if text else []
    if places:
        nearest = min(places, key=lambda p: (abs(p - start), p))
        return Answer(text, nearest), f"{problem}; used offset {nearest}, the nearest place that text occurs"
    if for_training:
        return None, f"{problem} and the text occurs nowhere in it; answer dropped"
    return Answer(text, start), f"{problem} and the text occurs nowhere in it; kept only as a gold text for scoring"


def _read_question(qa, context: str, title: str, where: str, lines: dict, path: Path, for_training: bool):
    """(example or None, messages) for one entry of a paragraph's "qas" list."""
    qid = qa.get("id") if isinstance(qa, dict) else None
    if isinstance(qid, str) and qid in lines:
        source = f"{path}:{lines[qid]}"
    elif isinstance(qid, str):
        source = f"{path} (question id {qid}, article {title!r})"
    else:
        source = f"{path} ({where}, article {title!r})"
    if not isinstance(qa, dict):
        return None, [f"{source}: a question should be a JSON object; skipped"]
    lacking = [k for k in ("id", "question") if not isinstance(qa.get(k), str)]
    if lacking:
        return None, [f"{source}: question {qid!r} has no {' or '.join(map(repr, lacking))} string; skipped"]
    is_impossible = bool(qa.get("is_impossible", False))
    raw = qa.get("answers", [] if is_impossible else None)
    if not isinstance(raw, list):
        return None, [f"{source}: question {qid!r} has no 'answers' list; skipped"]
    answers, messages = [], []
    for j, item in enumerate([] if is_impossible else raw):  # v2.0 impossible: no gold span, by definition
        text, start = (item.get("text"), item.get("answer_start")) if isinstance(item, dict) else (None, None)
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            messages.append(f"{source}: answer {j} needs a 'text' string and an 'answer_start' int; answer dropped")
            continue
        answer, message = _checked_answer(text, start, context, source, for_training)
        messages += [message] if message else []
        answers += [answer] if answer else []
    if for_training and not is_impossible and not answers:
        why = "no usable answer left" if raw else "no answers and is not marked is_impossible"
        return None, messages + [f"{source}: question {qid!r} has {why}; skipped for training"]
    return QAExample(qid, qa["question"], context, tuple(answers), is_impossible, title, source), messages


def read_squad(path, *, for_training: bool) -> ReadResult:
    """Read a SQuAD v1.1 or v2.0 JSON file into QAExamples.

    for_training=True keeps only questions a span loss can learn from: answers whose text is not in
    the context are dropped, and so is a question left with no answer. for_training=False keeps every
    question, and keeps such answers' texts, because scoring compares texts only and dropping a
    question would change the denominator of the published metric. Either way each problem is one
    line in `skipped`, and a wrong offset whose text occurs in the context is moved there."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"SQuAD file {path} does not exist; pass a SQuAD v1.1 or v2.0 JSON file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({e}); pass a UTF-8 SQuAD JSON file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); "
                        "fix the file or download it again") from None
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise UserError(f'{path} has no "data" list of articles; pass a SQuAD v1.1 or v2.0 JSON file')
    lines = _id_lines(text)
    result = ReadResult([])
    for a, article in enumerate(articles):
        article = article if isinstance(article, dict) else {}
        title = article.get("title") if isinstance(article.get("title"), str) else f"#{a}"
        paragraphs = article.get("paragraphs")
        if not isinstance(paragraphs, list):
            result.skipped.append(f"{path}: article {title!r} has no 'paragraphs' list; skipped")
            continue
        for p, paragraph in enumerate(paragraphs):
            paragraph = paragraph if isinstance(paragraph, dict) else {}
            context, qas = paragraph.get("context"), paragraph.get("qas")
            if not isinstance(context, str) or not isinstance(qas, list):
                result.skipped.append(f"{path}: paragraph {p} of article {title!r} needs a 'context' string "
                                      "and a 'qas' list; its questions skipped")
                continue
            for q, qa in enumerate(qas):
                where = f"question {q} of paragraph {p}"
                example, messages = _read_question(qa, context, title, where, lines, path, for_training)
                result.skipped += messages
                if example is not None:
                    result.examples.append(example)
    return result


@dataclasses.dataclass
class SquadWindows:
    """What post-processing needs to map window token positions back to context characters.

    Window w holds, from position context_start[w], num_context[w] consecutive context tokens of
    example example_index[w], starting at that example's context token token_start[w]; every other
    position ([CLS], question, [SEP]s) is not context and must never be part of an answer. Character
    offsets are kept once per example, not per window, so overlapping windows cost no copies."""
    example_index: np.ndarray  # [W] int64
    context_start: np.ndarray  # [W] int64: 2 + question tokens
    token_start: np.ndarray  # [W] int64
    num_context: np.ndarray  # [W] int64
    context_offsets: list[np.ndarray]  # per example: [context tokens, 2] int32 (start, end) characters

    def __len__(self) -> int:
        return len(self.example_index)

    def length(self, w: int) -> int:
        return int(self.context_start[w] + self.num_context[w] + 1)

    def offsets(self, w: int) -> np.ndarray:
        """[length, 2] character offsets into the context; -1 for positions that are not context."""
        out = np.full((self.length(w), 2), -1, np.int32)
        c0, t0, n = int(self.context_start[w]), int(self.token_start[w]), int(self.num_context[w])
        out[c0 : c0 + n] = self.context_offsets[self.example_index[w]][t0 : t0 + n]
        return out

    def is_context(self, w: int) -> np.ndarray:
        return self.offsets(w)[:, 0] >= 0


def _window_starts(n: int, room: int, overlap: int) -> list[int]:
    """First context token of each window: the tokenizers library's overflow rule, so the windows are
    exactly transformers'. The last window ends at the last token, however short it is."""
    starts = [0]
    while starts[-1] + room < n:
        starts.append(starts[-1] + room - overlap)
    return starts


def make_features(examples, tokenizer, *, max_length: int = 384, doc_stride: int = 128,
                  max_query_length: int = 64, for_training: bool) -> tuple[Features, SquadWindows]:
    """One model row per window, in example order, and the SquadWindows that postprocess needs.

    for_training adds start/end targets from each example's first answer, as transformers trains;
    evaluation needs none, since its answers are scored as text. A question or context these settings
    cannot window is a UserError naming the first such example and the setting to change."""
    for name, value, low in (("max_length", max_length, 5), ("doc_stride", doc_stride, 0),
                             ("max_query_length", max_query_length, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserError(f"{name} must be an int >= {low}, got {value!r}")
    if max_length > tokenizer.model_max_length:
        raise UserError(f"max_length={max_length} is more than the model's {tokenizer.model_max_length} "
                        "positions; lower max_length (--set max_length=N)")
    examples = list(examples)
    encodings = tokenizer.encodings([e.question for e in examples], [e.context for e in examples]) if examples else []
    ids_rows, type_rows, starts, ends = [], [], [], []
    rows: dict[str, list] = {"example_index": [], "context_start": [], "token_start": [], "num_context": []}
    context_offsets = []
    for e, (example, enc) in enumerate(zip(examples, encodings)):
        seq = np.array([-1 if s is None else s for s in enc.sequence_ids])
        ids = np.asarray(enc.ids, np.int32)
        # The family's pair template around the two texts: BERT [CLS] q [SEP] c [SEP] (context type 1),
        # RoBERTa <s> q </s></s> c </s> (one token type), as the tokenizer builds a pair.
        prefix, middle, suffix, context_type = _pair_template(ids, seq, np.asarray(enc.type_ids, np.int32))
        question = ids[seq == 0][:max_query_length]
        context, offsets = ids[seq == 1], np.asarray(enc.offsets, np.int32).reshape(-1, 2)[seq == 1]
        context_offsets.append(offsets)
        specials = len(prefix) + len(middle) + len(suffix)
        room = max_length - len(question) - specials
        if room < 1:
            raise UserError(f"{example.source}: a {len(question)}-token question leaves no room for context in "
                            f"max_length={max_length}; raise max_length or lower max_query_length (--set KEY=N)")
        if len(context) > room and doc_stride >= room:
            raise UserError(f"{example.source}: the context ({len(context)} tokens) needs several windows, but "
                            f"doc_stride={doc_stride} shared tokens is not less than the {room} context tokens a "
                            f"window holds (max_length={max_length} minus a {len(question)}-token question and "
                            f"{specials} special tokens), so windows would never advance; lower doc_stride below {room} "
                            "or raise max_length (--set KEY=N)")
        head = np.concatenate([prefix, question, middle]).astype(np.int32)
        gold = example.answers[0] if example.answers and not example.is_impossible else None
        for t0 in _window_starts(len(context), room, doc_stride):
            t1 = min(t0 + room, len(context))
            ids_rows.append(np.concatenate([head, context[t0:t1], suffix]).astype(np.int32))
            type_rows.append(np.repeat(np.array([0, context_type], np.int32), [len(head), t1 - t0 + len(suffix)]))
            for key, value in zip(rows, (e, len(head), t0, t1 - t0)):
                rows[key].append(value)
            start = end = 0
            span = offsets[t0:t1]
            if gold is not None and len(span):
                first, last = gold.start, gold.start + len(gold.text)
                if span[0, 0] <= first and span[-1, 1] >= last:  # the whole answer is in this window
                    start = len(head) + int(np.searchsorted(span[:, 0], first, "right")) - 1
                    end = len(head) + int(np.searchsorted(span[:, 1], last, "left"))
            starts.append(start)
            ends.append(end)
    arrays = {k: np.asarray(v, np.int64) for k, v in rows.items()}
    targets = {"start_positions": np.asarray(starts, np.int32), "end_positions": np.asarray(ends, np.int32)} \
        if for_training else {}
    features = Features(ids_rows, type_rows, arrays["example_index"].copy(), targets)
    return features, SquadWindows(**arrays, context_offsets=context_offsets)


def _pair_template(ids, seq, type_ids):
    """(specials before the question, between question and context, after the context, the
    context's token type) of one encoded pair; `seq` holds 0 / 1 / -1 (a special token) per id."""
    text = np.flatnonzero(seq >= 0)
    if not len(text) or not (seq == 1).any():
        raise UserError("a context encodes to no tokens; remove empty contexts from the data")
    between = np.flatnonzero(seq[text[0]: text[-1] + 1] < 0) + text[0]
    context_type = int(type_ids[np.flatnonzero(seq == 1)[0]])
    return ids[: text[0]], ids[between], ids[text[-1] + 1:], context_type


@dataclasses.dataclass
class SquadPredictions:
    """answers: qid -> predicted text ("" = no answer), the official evaluate scripts' input.
    nbest: qid -> best spans first, each {"text", "start_logit", "end_logit", "probability"} with the
    probability a softmax over the listed scores. null_odds (v2.0): qid -> [CLS] score minus best span
    score, the official script's na_prob input (inf when no span was valid)."""
    answers: dict[str, str]
    nbest: dict[str, list[dict]]
    null_odds: dict[str, float]
    version_2: bool


def postprocess(examples, windows: SquadWindows, start_logits, end_logits, *, n_best: int = 20,
                max_answer_length: int = 30, version_2: bool = False,
                null_score_diff_threshold: float = 0.0) -> SquadPredictions:
    """start_logits/end_logits: [windows, positions] arrays or lists of rows, one per window of
    make_features (rows may be longer than their window: the rest is padding and is ignored).
    The top n_best starts and ends are taken over the whole window, as transformers does, and then
    pairs leaving the context, running backwards, or longer than max_answer_length tokens are dropped."""
    for name, value in (("n_best", n_best), ("max_answer_length", max_answer_length)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{name} must be a positive int, got {value!r}")
    examples = list(examples)
    if len(start_logits) != len(windows) or len(end_logits) != len(windows):
        raise ValueError(f"got {len(start_logits)} start and {len(end_logits)} end logit rows "
                         f"for {len(windows)} windows")
    if len(windows) and int(windows.example_index.max()) >= len(examples):
        raise ValueError("the windows were made from more examples than were passed; pass the same examples")
    per_example: list[list[int]] = [[] for _ in examples]
    for w, e in enumerate(windows.example_index):
        per_example[e].append(w)
    answers, nbest, null_odds = {}, {}, {}
    for e, example in enumerate(examples):
        spans, null = [], None  # (score, start_logit, end_logit, first char, end char)
        for w in per_example[e]:
            n = windows.length(w)
            s = np.asarray(start_logits[w], np.float64).reshape(-1)[:n]
            t = np.asarray(end_logits[w], np.float64).reshape(-1)[:n]
            if len(s) < n or len(t) < n:
                raise ValueError(f"logit row {w} has {min(len(s), len(t))} positions but window {w} has {n} tokens")
            if null is None or s[0] + t[0] < null[0]:
                null = (s[0] + t[0], s[0], t[0], 0, 0)
            top_s = np.argsort(-s, kind="stable")[:n_best]
            top_t = np.argsort(-t, kind="stable")[:n_best]
            c0, c1 = int(windows.context_start[w]), int(windows.context_start[w] + windows.num_context[w])
            i, j = top_s[:, None], top_t[None, :]
            ok = (i >= c0) & (i < c1) & (j >= c0) & (j < c1) & (j >= i) & (j - i < max_answer_length)
            chars, shift = windows.context_offsets[e], int(windows.token_start[w]) - c0  # window pos -> token
            for a, b in zip(*np.nonzero(ok)):
                i, j = top_s[a], top_t[b]
                spans.append((s[i] + t[j], s[i], t[j], int(chars[i + shift, 0]), int(chars[j + shift, 1])))
        spans.sort(key=lambda c: -c[0])  # stable: ties keep window, start, end order, as transformers
        listed = spans[:n_best]
        if version_2 and null is not None:  # the null competes for a place, and is kept even if it lost
            listed = sorted(listed + [null], key=lambda c: -c[0])[:n_best]
            listed += [] if any(c is null for c in listed) else [null]
        scores = np.array([c[0] for c in listed])
        probs = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum() if len(listed) else scores
        nbest[example.qid] = [{"text": example.context[c[3] : c[4]], "start_logit": float(c[1]),
                               "end_logit": float(c[2]), "probability": float(p)} for c, p in zip(listed, probs)]
        best = spans[0] if spans else None
        answer = example.context[best[3] : best[4]] if best else ""
        if version_2:
            odds = float(null[0] - best[1] - best[2]) if best and null else float("inf")
            null_odds[example.qid] = odds
            answer = "" if odds > null_score_diff_threshold else answer
        answers[example.qid] = answer
    return SquadPredictions(answers, nbest, null_odds, version_2)


def _write_json(path: Path, obj) -> None:
    """Temp file + os.replace: a crash mid-write never leaves a truncated file an evaluator would read."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_predictions(predictions: SquadPredictions, directory) -> list[Path]:
    """predictions.json (qid -> text, what the official evaluate-v1.1/v2.0 scripts take),
    nbest_predictions.json and, for v2.0, null_odds.json (the v2.0 script's --na-prob-file; an
    example without any valid span is written as Infinity, which Python's json reads back)."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the output folder {folder} ({e}); pass a writable folder") from None
    files = {"predictions.json": predictions.answers, "nbest_predictions.json": predictions.nbest}
    if predictions.version_2:
        files["null_odds.json"] = predictions.null_odds
    written = []
    for name, obj in files.items():
        try:
            _write_json(folder / name, obj)
        except OSError as e:
            raise UserError(f"cannot write {folder / name} ({e}); pass a writable folder") from None
        written.append(folder / name)
    return written
