"""Deterministic vocabulary training: WordPiece for BERT, byte-level BPE for RoBERTa and GPT-2.

Deterministic means the same text gives the same vocabulary, run after run, so a tiny end-to-end
test or the demo can train its own vocabulary and still compare numbers with the last run.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Iterator

from tokenizers import Tokenizer as _RustTokenizer
from tokenizers import pre_tokenizers, trainers
from tokenizers.models import BPE

from distilbert_jax.errors import UserError


def _lines(paths: list[str]) -> Iterator[str]:
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            yield from f


def training_input(files) -> tuple[list[str] | None, list[str] | None]:
    """(paths, None) or (None, texts): a list/tuple (or a single str/Path) means file paths; any other
    iterable yields texts, kept in memory because training reads them more than once."""
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    if isinstance(files, (list, tuple)):
        paths = [str(f) for f in files]
        for p in paths:
            if not os.path.isfile(p):
                raise UserError(f"training file {p[:80]!r} does not exist; lists mean file paths, "
                                "pass iter(texts) to train on in-memory text")
        return paths, None
    texts = []
    for t in files:
        if not isinstance(t, str):
            raise UserError(f"training text must be a str, got {type(t).__name__}; pass the raw text")
        texts.append(t)
    return None, texts


def _continuing_characters(rust: _RustTokenizer, texts: Iterable[str]) -> set[str]:
    """Every character that follows another inside a pre-tokenized word: the "##" pieces training starts from."""
    found: set[str] = set()
    for text in texts:
        for word, _ in rust.pre_tokenizer.pre_tokenize_str(rust.normalizer.normalize_str(text)):
            found.update(word[1:])
    return found


def train_wordpiece(rust: _RustTokenizer, files, vocab_size: int, specials: list[str], *, min_frequency: int,
                    limit_alphabet: int, show_progress: bool) -> list[str]:
    """The token list (id = position) of a WordPiece vocabulary trained with `rust`'s normalizer
    and pre-tokenizer.

    `tokenizers`' trainer numbers the continuing pieces ("##e") in hash-map order as it meets them
    and breaks ties between equally frequent merges by those numbers (huggingface/tokenizers#1794),
    so on a small corpus, where ties abound, every run learned another vocabulary. Here every "##"
    piece the text can produce is numbered first, in sorted order (passed as reserved tokens, then
    made ordinary vocabulary again), which leaves the trainer no order to depend on.
    """
    paths, texts = training_input(files)
    continuing = sorted(_continuing_characters(rust, texts if texts is not None else _lines(paths)))
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials + [f"##{c}" for c in continuing],
        limit_alphabet=limit_alphabet, show_progress=show_progress, continuing_subword_prefix="##")
    if paths is not None:
        rust.train(paths, trainer)
    else:
        rust.train_from_iterator(texts, trainer)
    vocab = sorted(rust.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
    return [token for token, _ in vocab]


def train_byte_bpe(files, vocab_size: int, leading: list[str], trailing: list[str], *, min_frequency: int,
                   show_progress: bool) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a byte-level BPE: `leading` special tokens take ids 0.. (RoBERTa's <s> <pad>
    </s> <unk> <mask>), `trailing` ones the last ids (GPT-2's <|endoftext|>); all 256 byte symbols are
    in, so no text ever needs an unknown token.

    Deterministic without help: the trainer's first ids are the special tokens, then the byte
    alphabet sorted by character, and it breaks count ties by those ids, so nothing depends on
    hash order (six runs gave six identical vocabularies, see tests/test_tokenizer_bpe.py).
    """
    paths, texts = training_input(files)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(leading) + len(trailing):
        raise UserError(f"vocab_size must be at least {len(alphabet) + len(leading) + len(trailing)} "
                        f"(256 byte symbols and the special tokens) for a byte-level BPE, got {vocab_size}")
    rust = _RustTokenizer(BPE())
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(trailing), min_frequency=min_frequency,
                                  special_tokens=list(leading), initial_alphabet=alphabet,
                                  show_progress=show_progress)
    if paths is not None:
        rust.train(paths, trainer)
    else:
        rust.train_from_iterator(texts, trainer)
    model = json.loads(rust.to_str())["model"]
    vocab = dict(model["vocab"])
    for token in trailing:
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges
