"""Token classification (NER) from CoNLL files: reading, sub-token labels, and entity scores.

CoNLL is the format NER data is shipped in (CoNLL-2003, WNUT, OntoNotes exports): one word per
line, tag in the last column, blank lines between sentences. The model sees WordPiece sub-tokens,
so each word's tag goes on its first sub-token and the rest are ignored by the loss, exactly as
transformers' run_ner does, which is what makes published F1 numbers comparable. Scoring is
per entity, not per token, with conlleval's chunking rules (as seqeval's default mode), because
that is how CoNLL-2003 results are reported.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from distilbert_jax.errors import UserError
from distilbert_jax.finetune.examples import IGNORE_INDEX, Features, ReadResult, TokenExample

log = logging.getLogger("distilbert_jax")


def read_conll(path, *, tag_column: int | None = -1) -> ReadResult:
    """Sentences of a CoNLL file: word in the first column, tag in `tag_column` (the last by
    default, NER in CoNLL-2003's "word POS chunk NER"; None for untagged text). `-DOCSTART-`
    lines are document markers, not words. A line with too few columns makes its whole sentence
    unusable (its tags would shift), so the sentence is skipped and the line named."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CoNLL file {path} does not exist; pass a file with one 'word ... tag' per line")
    if tag_column == 0:
        raise UserError("tag_column 0 is the word itself; pass the tag's column (-1 for the last)")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text ({e.reason}); re-save the file as UTF-8") from None
    need = 1 if tag_column is None else (tag_column + 1 if tag_column > 0 else 1 - tag_column)

    examples, skipped = [], []
    words, tags, first, bad = [], [], 0, None

    def flush():
        nonlocal words, tags, bad
        if words or bad:
            if bad:
                skipped.append(f"{path}:{bad[0]}: {bad[1]}; sentence starting at line {first} skipped")
            else:
                examples.append(TokenExample(guid=f"{path.stem}-{len(examples)}", words=tuple(words),
                                             tags=None if tag_column is None else tuple(tags),
                                             source=f"{path}:{first}"))
        words, tags, bad = [], [], None

    for number, line in enumerate(text.split("\n"), start=1):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            flush()
            continue
        if not words and not bad:
            first = number
        if len(cols) < need:
            bad = bad or (number, f"{len(cols)} column{'s' * (len(cols) != 1)}, expected at least {need}")
            continue
        words.append(cols[0])
        if tag_column is not None:
            tags.append(cols[tag_column])
    flush()
    return ReadResult(examples, skipped)


def tag_list(examples) -> tuple[str, ...]:
    """Tag ids fixed by the training data: "O" (when used) is id 0, then the rest sorted, so the
    same data always gives the same id -> tag table."""
    tags = {t for ex in examples if ex.tags is not None for t in ex.tags}
    if not tags:
        raise UserError("the training data has no tags; it needs a tag column")
    return (("O",) if "O" in tags else ()) + tuple(sorted(tags - {"O"}))


def check_tags(result: ReadResult, tags) -> ReadResult:
    """Moves sentences holding a tag the training data never had into `skipped` (the model has no
    output for it), so that evaluation data with a stray tag still runs on the rest."""
    known = tuple(tags)
    allowed = set(known)
    kept, skipped = [], list(result.skipped)
    for ex in result.examples:
        stray = next((t for t in ex.tags or () if t not in allowed), None)
        if stray is None:
            kept.append(ex)
        else:
            skipped.append(f"{ex.source}: tag {stray!r} is not one of {list(known)} (the training tags); "
                           "sentence skipped")
    return ReadResult(kept, skipped)


def _b_to_i(tags) -> list[int]:
    """For label_all_subtokens: a B-X word's later pieces carry I-X (as run_ner's label_all_tokens),
    since a second B-X would start a second entity."""
    index = {t: i for i, t in enumerate(tags)}
    return [index.get("I-" + t[2:], i) if t.startswith("B-") else i for i, t in enumerate(tags)]


def encode_token_examples(examples, tokenizer, tags, *, max_length: int = 128,
                          label_all_subtokens: bool = False) -> tuple[Features, list[list[int]]]:
    """Features with "token_labels" targets, and per example the position of each word's first
    sub-token (-1 when the word has none: cut off by max_length, or a word the tokenizer drops
    entirely, such as a lone zero-width space). Those words are predicted "O" by
    `decode_token_predictions`, so scores still count every gold word, unlike run_ner, which
    silently leaves truncated words out of its F1."""
    if max_length < 3:
        raise UserError(f"max_length must be at least 3 ([CLS], one token, [SEP]), got {max_length}")
    tag_ids = {t: i for i, t in enumerate(tags)}
    b_to_i = _b_to_i(tags)
    examples = list(examples)
    encodings = tokenizer.encodings([list(ex.words) for ex in examples], is_pretokenized=True) if examples else []
    input_ids, labels, positions, truncated = [], [], [], 0
    for ex, enc in zip(examples, encodings):
        ids, word_ids = list(enc.ids), list(enc.word_ids)
        if len(ids) > max_length:  # what the tokenizer's own truncation gives: keep the closing [SEP]
            truncated += 1
            ids = ids[:max_length - 1] + [tokenizer.sep_token_id]
            word_ids = word_ids[:max_length - 1] + [None]
        word_tags = None
        if ex.tags is not None:
            if len(ex.tags) != len(ex.words):
                raise UserError(f"{ex.source}: {len(ex.words)} words but {len(ex.tags)} tags; give one tag per word")
            try:
                word_tags = [tag_ids[t] for t in ex.tags]
            except KeyError as e:
                raise UserError(f"{ex.source}: tag {e.args[0]!r} is not one of {list(tags)} (the training tags); "
                                "drop the sentence (check_tags) or train on data with that tag") from None
        row = np.full(len(ids), IGNORE_INDEX, np.int32)
        first = [-1] * len(ex.words)
        previous = None
        for j, w in enumerate(word_ids):
            if w is not None and w != previous:
                first[w] = j
                if word_tags is not None:
                    row[j] = word_tags[w]
            elif w is not None and label_all_subtokens and word_tags is not None:
                row[j] = b_to_i[word_tags[w]]
            previous = w
        input_ids.append(np.asarray(ids, np.int32))
        labels.append(row)
        positions.append(first)
    if truncated:
        log.warning("%d of %d sentences are over max_length=%d tokens and were truncated; "
                    "their cut-off words are predicted 'O'", truncated, len(examples), max_length)
    features = Features(input_ids=input_ids, token_type_ids=[np.zeros(len(r), np.int32) for r in input_ids],
                        example_index=np.arange(len(input_ids)), targets={"token_labels": labels})
    return features, positions


def decode_token_predictions(word_positions, predicted_ids, tags) -> list[list[str]]:
    """Per example, each word's tag: the predicted id (already argmax-ed) at its first sub-token.
    `predicted_ids` is one row per feature, ragged or padded. Words without a position get "O"."""
    if len(word_positions) != len(predicted_ids):
        raise UserError(f"{len(word_positions)} examples but {len(predicted_ids)} prediction rows; "
                        "pass the predictions for the features encode_token_examples returned")
    out = []
    for positions, row in zip(word_positions, predicted_ids):
        row = np.asarray(row)
        out.append([tags[int(row[p])] if p >= 0 else "O" for p in positions])
    return out


def _split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") from "B-PER"; "O" is ("O", ""). A tag without a B/I/E/S prefix ("PER", the IO
    scheme) is read as I-PER, so IO-tagged data scores as runs of one type."""
    if tag in ("O", "B", "I", "E", "S"):
        return tag, ""
    prefix, dash, kind = tag.partition("-")
    if dash and prefix in ("B", "I", "E", "S"):
        return prefix, kind
    return "I", tag


def entities(tags) -> set[tuple[str, int, int]]:
    """(type, first, last) word spans by conlleval's rules. A chunk ends after E- or S-, before a
    B-, S- or O, and wherever the type changes; one starts at B- or S-, at an I- or E- that does
    not continue a chunk of its type (so IOB1, IOB2 and IOBES all work), and at any type change."""
    found = set()
    prev, prev_kind, start = "O", "", 0
    for i, tag in enumerate(list(tags) + ["O"]):
        cur, kind = _split_tag(tag)
        ends = (prev in ("E", "S") or (prev in ("B", "I") and cur in ("B", "S", "O"))
                or (prev != "O" and kind != prev_kind))
        starts = (cur in ("B", "S") or (prev in ("E", "S", "O") and cur in ("I", "E"))
                  or (cur != "O" and kind != prev_kind))
        if ends:
            found.add((prev_kind, start, i - 1))
        if starts:
            start = i
        prev, prev_kind = cur, kind
    return found


def _prf(correct: int, n_pred: int, n_gold: int) -> dict:
    p = correct / n_pred if n_pred else 0.0
    r = correct / n_gold if n_gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Entity-level micro precision/recall/F1, per-type P/R/F1/support and token accuracy, all
    fractions in [0, 1]; a zero denominator gives 0 (seqeval's value, without its warning).
    An entity counts only if its type and both ends match."""
    if len(gold) != len(predicted):
        raise UserError(f"{len(gold)} gold sentences but {len(predicted)} predicted; score the same sentences")
    gold_set, pred_set = set(), set()
    same = total = 0
    for n, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise UserError(f"sentence {n} has {len(g)} gold tags but {len(p)} predicted; give one tag per word")
        gold_set |= {(n, *e) for e in entities(g)}
        pred_set |= {(n, *e) for e in entities(p)}
        same += sum(a == b for a, b in zip(g, p))
        total += len(g)
    correct = gold_set & pred_set
    per_type = {}
    for kind in sorted({e[1] for e in gold_set | pred_set}):
        n_gold = sum(e[1] == kind for e in gold_set)
        per_type[kind] = {**_prf(sum(e[1] == kind for e in correct), sum(e[1] == kind for e in pred_set), n_gold),
                          "support": n_gold}
    return {**_prf(len(correct), len(pred_set), len(gold_set)), "accuracy": same / total if total else 0.0,
            "per_type": per_type, "n_gold": len(gold_set), "n_predicted": len(pred_set), "n_correct": len(correct)}
