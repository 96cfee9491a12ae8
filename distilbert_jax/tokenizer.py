"""BERT WordPiece tokenizer on the `tokenizers` library, id-for-id with transformers' fast BertTokenizer.

Why not just use transformers? The model code here is JAX and must not depend on torch-era
tooling at run time; but checkpoints come from the Hugging Face world, so the ids must be exactly
the ones the weights were trained with. Everything that decides ids therefore runs in the same
Rust pipeline that transformers builds (BertNormalizer, BertPreTokenizer, WordPiece, the [CLS]/[SEP]
template), and only padding, limits and error reporting are done here.

Transformers behaviours reproduced on purpose:
* A tokenizer_config.json's do_lower_case / strip_accents / tokenize_chinese_chars win over the
  normalizer stored in tokenizer.json (transformers rebuilds the normalizer from the config).
* Special tokens are added tokens: "[MASK]" typed in raw text is one id, and decode can skip them.
* decode() = Rust WordPiece decode, then (if clean_up_tokenization_spaces) transformers' Python
  space clean-up over the whole string; the Rust decoder alone only cleans inside single tokens.
  As in transformers 5 the clean-up defaults to the config's setting, False when absent.
One deliberate difference: an empty pair ("") is still a pair, as in transformers' batched path
(its single-text path drops it), so a sentence-pair model always sees two segments.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer as _RustTokenizer
from tokenizers import decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import WordPiece

from distilbert_jax.data.buckets import bucket_length
from distilbert_jax.errors import UserError

# Named in transformers' all_special_ids order, so the lists compare equal.
_SPECIAL_NAMES = ("unk", "sep", "pad", "cls", "mask")
_DEFAULT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
# transformers writes int(1e30) for "no known limit"; BERT position tables stop at 512.
_DEFAULT_MAX_LENGTH = 512
_FLAG_KEYS = ("do_lower_case", "strip_accents", "tokenize_chinese_chars")
# transformers' PreTrainedTokenizerBase.clean_up_tokenization, in its order (order changes results).
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _bert_normalizer(flags: dict, clean_text: bool = True):
    return normalizers.BertNormalizer(
        clean_text=clean_text, handle_chinese_chars=flags["tokenize_chinese_chars"],
        strip_accents=flags["strip_accents"], lowercase=flags["do_lower_case"])


def _lines(paths: list[str]) -> Iterator[str]:
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            yield from f


def _continuing_characters(rust: _RustTokenizer, texts: Iterable[str]) -> set[str]:
    """Every character that follows another inside a pre-tokenized word: the "##" pieces training starts from."""
    found: set[str] = set()
    for text in texts:
        for word, _ in rust.pre_tokenizer.pre_tokenize_str(rust.normalizer.normalize_str(text)):
            found.update(word[1:])
    return found


def _bert_pipeline(model: WordPiece, flags: dict) -> _RustTokenizer:
    """The pipeline transformers' BertTokenizer builds around a vocabulary (template added later)."""
    rust = _RustTokenizer(model)
    rust.normalizer = _bert_normalizer(flags)
    rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    rust.decoder = decoders.WordPiece(prefix="##")
    return rust


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not readable JSON ({e}); re-download or re-save the tokenizer") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} should hold a JSON object; re-download or re-save the tokenizer")
    return data


def _token_text(value, default: str) -> str:
    """Config files store special tokens either as a string or as a serialized AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else default


def _positive(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_text(text, what: str = "text") -> str:
    if not isinstance(text, str):
        raise UserError(f"{what} must be a str, got {type(text).__name__}; pass the raw text")
    return text


class Tokenizer:
    """The Rust tokenizer is kept with truncation and padding always off; each call turns on only
    what its caller asked for, so settings baked into a tokenizer.json never leak into results.
    The [CLS] A [SEP] (B [SEP]) template is always (re)installed, as transformers' BertTokenizer does."""

    def __init__(self, rust: _RustTokenizer, *, specials: dict | None = None,
                 flags: dict | None = None, model_max_length: int = _DEFAULT_MAX_LENGTH,
                 clean_up_tokenization_spaces: bool = False):
        rust.no_truncation()
        rust.no_padding()
        self._specials = {**_DEFAULT_SPECIALS, **(specials or {})}
        for name, token in self._specials.items():
            if rust.token_to_id(token) is None:
                raise UserError(f"the vocabulary has no {name} token {token!r}; add it or name the right one")
        # Like transformers: special tokens are matched verbatim in raw text ("[MASK]" -> one id) and
        # skipped by decode(skip_special_tokens=True); register only those the file did not register.
        known = {str(t) for t in rust.get_added_tokens_decoder().values()}
        missing = [t for t in self._specials.values() if t not in known]
        if missing:
            rust.add_special_tokens(missing)
        cls_tok, sep_tok = self._specials["cls"], self._specials["sep"]
        rust.post_processor = processors.TemplateProcessing(
            single=f"{cls_tok}:0 $A:0 {sep_tok}:0", pair=f"{cls_tok}:0 $A:0 {sep_tok}:0 $B:1 {sep_tok}:1",
            special_tokens=[(t, rust.token_to_id(t)) for t in (cls_tok, sep_tok)])
        if rust.decoder is None:
            rust.decoder = decoders.WordPiece(prefix="##")
        self._rust = rust
        self._flags = flags  # None: not a BertNormalizer, so not savable as a transformers BertTokenizer
        self.model_max_length = int(model_max_length)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)  # decode()'s default
        self._lock = threading.Lock()

    def __getstate__(self):  # picklable for data-loader worker processes; locks are not
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, directory) -> "Tokenizer":
        folder = Path(directory)
        if not folder.is_dir():
            raise UserError(f"tokenizer folder {folder} does not exist; pass a folder with tokenizer.json or vocab.txt")
        config_path = folder / "tokenizer_config.json"
        config = _read_json(config_path) if config_path.is_file() else {}
        specials = {n: _token_text(config.get(f"{n}_token"), d) for n, d in _DEFAULT_SPECIALS.items()}
        max_len = config.get("model_max_length", _DEFAULT_MAX_LENGTH)
        if not isinstance(max_len, int) or isinstance(max_len, bool) or not 0 < max_len < 10**9:
            max_len = _DEFAULT_MAX_LENGTH
        config_flags = {k: config[k] for k in _FLAG_KEYS if k in config}
        clean_up = bool(config.get("clean_up_tokenization_spaces", False))

        json_path, vocab_path = folder / "tokenizer.json", folder / "vocab.txt"
        if json_path.is_file():
            data = _read_json(json_path)
            try:
                rust = _RustTokenizer.from_str(json.dumps(data))
            except Exception as e:  # the Rust side raises plain Exception for schema errors
                raise UserError(f"{json_path} is not a valid tokenizer.json ({e}); re-download or re-save it") from None
            model_type = (data.get("model") or {}).get("type")
            if model_type != "WordPiece":
                raise UserError(f"{json_path} holds a {model_type} tokenizer; only BERT WordPiece ones are supported")
            norm = data.get("normalizer") or {}
            flags = None
            if norm.get("type") == "BertNormalizer":
                flags = {"do_lower_case": norm.get("lowercase", True), "strip_accents": norm.get("strip_accents"),
                         "tokenize_chinese_chars": norm.get("handle_chinese_chars", True)}
                if any(flags[k] != v for k, v in config_flags.items()):
                    flags.update(config_flags)  # transformers lets the config win; so do we
                    rust.normalizer = _bert_normalizer(flags, norm.get("clean_text", True))
            return cls(rust, specials=specials, flags=flags, model_max_length=max_len,
                       clean_up_tokenization_spaces=clean_up)
        if vocab_path.is_file():
            tok = cls.from_vocab(vocab_path, do_lower_case=config.get("do_lower_case", True),
                                 strip_accents=config.get("strip_accents"),
                                 tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
                                 model_max_length=max_len, special_tokens=specials)
            tok.clean_up_tokenization_spaces = clean_up
            return tok
        raise UserError(f"{folder} has neither tokenizer.json nor vocab.txt; point at a BERT tokenizer folder")

    @classmethod
    def from_vocab(cls, vocab, *, do_lower_case: bool = True, strip_accents: bool | None = None,
                   tokenize_chinese_chars: bool = True, model_max_length: int = _DEFAULT_MAX_LENGTH,
                   special_tokens: dict | None = None) -> "Tokenizer":
        """`vocab` is a token list (id = position) or a vocab.txt path. A path is read by the same
        Rust reader transformers uses, so odd lines (trailing spaces, duplicates) map identically."""
        specials = {**_DEFAULT_SPECIALS, **(special_tokens or {})}
        if isinstance(vocab, (str, os.PathLike)):
            path = Path(vocab)
            if not path.is_file():
                raise UserError(f"vocab file {path} does not exist; pass a vocab.txt path or a token list")
            try:
                mapping = WordPiece.read_file(str(path))
            except Exception as e:
                raise UserError(f"{path} is not a readable vocab.txt ({e}); re-download it") from None
        else:
            tokens = list(vocab)
            if len(set(tokens)) != len(tokens):
                raise UserError("the vocabulary list has duplicate tokens; each token needs one id")
            mapping = {t: i for i, t in enumerate(tokens)}
        flags = {"do_lower_case": bool(do_lower_case), "strip_accents": strip_accents,
                 "tokenize_chinese_chars": bool(tokenize_chinese_chars)}
        rust = _bert_pipeline(WordPiece(mapping, unk_token=specials["unk"], max_input_chars_per_word=100), flags)
        return cls(rust, specials=specials, flags=flags, model_max_length=model_max_length)

    @classmethod
    def train(cls, files, vocab_size: int, *, min_frequency: int = 2, do_lower_case: bool = True,
              limit_alphabet: int = 1000, show_progress: bool = False) -> "Tokenizer":
        """A list/tuple (or a single str/Path) means file paths; any other iterable yields texts.

        Deterministic: the same text gives the same vocabulary, run after run. `tokenizers`'
        trainer numbers the continuing pieces ("##e") in hash-map order as it meets them and breaks
        ties between equally frequent merges by those numbers (huggingface/tokenizers#1794), so on
        a small corpus, where ties abound, every run learned another vocabulary. Here every "##"
        piece the text can produce is numbered first, in sorted order (passed as reserved tokens,
        then made ordinary vocabulary again), which leaves the trainer no order to depend on.
        """
        if _positive("vocab_size", vocab_size) <= len(_DEFAULT_SPECIALS):
            raise UserError(f"vocab_size must be above {len(_DEFAULT_SPECIALS)} (the special tokens), got {vocab_size}")
        flags = {"do_lower_case": bool(do_lower_case), "strip_accents": None, "tokenize_chinese_chars": True}
        specials = [_DEFAULT_SPECIALS[n] for n in ("pad", "unk", "cls", "sep", "mask")]  # ids 0..4
        rust = _bert_pipeline(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100), flags)
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        paths = None
        if isinstance(files, (list, tuple)):
            paths = [str(f) for f in files]
            for p in paths:
                if not os.path.isfile(p):
                    raise UserError(f"training file {p[:80]!r} does not exist; lists mean file paths, "
                                    "pass iter(texts) to train on in-memory text")
            texts = None
        else:
            texts = [_check_text(t, "training text") for t in files]  # read twice: the pieces, then training
        continuing = sorted(_continuing_characters(rust, texts if texts is not None else _lines(paths)))
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency,
            special_tokens=specials + [f"##{c}" for c in continuing],
            limit_alphabet=limit_alphabet, show_progress=show_progress, continuing_subword_prefix="##")
        if paths is not None:
            rust.train(paths, trainer)
        else:
            rust.train_from_iterator(texts, trainer)
        vocab = sorted(rust.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
        return cls.from_vocab([token for token, _ in vocab], do_lower_case=do_lower_case)

    # ---------------------------------------------------------------- encoding
    def _truncation_length(self, truncation, default: int | None) -> int | None:
        if truncation is False or truncation is None:
            return None
        if truncation is True:
            return default if default is not None else self.model_max_length
        return _positive("truncation (True, False or a length)", truncation)

    def _encode_batch(self, inputs: list, add_special_tokens: bool, max_len: int | None):
        """Truncation is shared Rust state, switched on only inside this call; every call holds the
        lock so no thread sees another's truncation. Rust silently skips truncating when max_len
        cannot fit the special tokens, so that case is an error here, not an over-long result."""
        is_pair = any(isinstance(x, tuple) for x in inputs)
        needed = self._rust.num_special_tokens_to_add(is_pair) if add_special_tokens else 0
        if max_len is not None and max_len < needed:
            raise UserError(f"cannot truncate to {max_len} tokens: the special tokens alone take {needed}")
        with self._lock:
            if max_len is not None:
                self._rust.enable_truncation(max_len, strategy="longest_first")
            try:
                return self._rust.encode_batch(inputs, add_special_tokens=add_special_tokens)
            finally:
                self._rust.no_truncation()

    def encode(self, text: str, pair: str | None = None, *, add_special_tokens: bool = True,
               truncation: bool | int = False) -> list[int]:
        """Without truncation every id comes back, however long: silently cutting text is worse
        than the model layer refusing an over-long input."""
        item = _check_text(text) if pair is None else (_check_text(text), _check_text(pair, "pair"))
        max_len = self._truncation_length(truncation, self.model_max_length)
        return list(self._encode_batch([item], add_special_tokens, max_len)[0].ids)

    def __call__(self, texts, pairs=None, *, max_length: int | None = None, truncation: bool | int = False,
                 padding: bool | str = False, pad_to_multiple_of: int | None = None,
                 bucket_lengths: tuple[int, ...] | None = None, return_offsets: bool = False,
                 return_token_type_ids: bool = True) -> dict:
        """Always batched: a single str is a batch of one. padding=False gives ragged python lists;
        otherwise int32 arrays [B, L]. bucket_lengths overrides `padding` (pads to the smallest bucket
        that fits) so that jit sees few distinct shapes. A limit (max_length, the largest bucket, or
        model_max_length for padding="max_length") is never silently exceeded: without truncation
        an over-long text is an error."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        batch = [_check_text(t) for t in batch]
        if pairs is not None:
            pair_batch = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(pair_batch) != len(batch):
                raise UserError(f"got {len(batch)} texts but {len(pair_batch)} pairs; pass one pair per text")
            batch = [(a, _check_text(b, "pair")) for a, b in zip(batch, pair_batch)]
        if padding is True:
            padding = "longest"
        if padding not in (False, "longest", "max_length"):
            raise UserError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        for name, value in (("max_length", max_length), ("pad_to_multiple_of", pad_to_multiple_of)):
            if value is not None:
                _positive(name, value)
        buckets = sorted(_positive("a bucket length", b) for b in bucket_lengths) if bucket_lengths else None
        if bucket_lengths is not None and (not buckets or pad_to_multiple_of is not None):
            raise UserError("bucket_lengths must be a non-empty tuple and excludes pad_to_multiple_of")

        limits = [v for v in (max_length, buckets[-1] if buckets else None) if v is not None]
        if padding == "max_length" and not buckets:
            limits = [max_length or self.model_max_length]
        limit = min(limits) if limits else None
        encodings = self._encode_batch(batch, True, self._truncation_length(truncation, limit))
        lengths = [len(e.ids) for e in encodings]
        longest = max(lengths, default=0)
        if limit is not None and longest > limit:
            i = lengths.index(longest)
            raise UserError(f"text {i} is {longest} tokens long, over the limit of {limit}; "
                            "pass truncation=True or a larger max_length/bucket_lengths")

        target = {"longest": longest, "max_length": limit}.get(padding)
        if buckets:
            target = bucket_length(longest, buckets)
        elif target is not None and pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of

        rows = {"input_ids": [e.ids for e in encodings], "attention_mask": [[1] * n for n in lengths]}
        if return_token_type_ids:
            rows["token_type_ids"] = [e.type_ids for e in encodings]
        if return_offsets:
            rows["offsets"] = [e.offsets for e in encodings]
        if target is None:
            return {key: [list(r) for r in value] for key, value in rows.items()}
        out = {}
        for key, value in rows.items():  # transformers pads everything but input_ids with 0
            fill = self.pad_token_id if key == "input_ids" else 0
            out[key] = np.full((len(value), target) + ((2,) if key == "offsets" else ()), fill, np.int32)
            for row, r in enumerate(value):
                if r:
                    out[key][row, :len(r)] = r
        return out

    def encodings(self, texts, pairs=None, *, is_pretokenized: bool = False, add_special_tokens: bool = True):
        """The Rust `Encoding`s themselves (ids, type_ids, offsets, word_ids, sequence_ids), never
        truncated: span and word-label tasks cut their own windows and must see every token.
        With is_pretokenized each text is a list of words, as transformers' is_split_into_words."""
        batch = [texts] if isinstance(texts, str) or (is_pretokenized and texts and isinstance(texts[0], str)) \
            else list(texts)
        if is_pretokenized:
            batch = [[_check_text(w, "word") for w in words] for words in batch]
        else:
            batch = [_check_text(t) for t in batch]
        if pairs is not None:
            pair_batch = list(pairs) if not isinstance(pairs, str) else [pairs]
            if len(pair_batch) != len(batch):
                raise UserError(f"got {len(batch)} texts but {len(pair_batch)} pairs; pass one pair per text")
            batch = list(zip(batch, pair_batch))
        with self._lock:
            return self._rust.encode_batch(batch, is_pretokenized=is_pretokenized,
                                           add_special_tokens=add_special_tokens)

    # ---------------------------------------------------------------- decoding and lookup
    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """Ids the vocabulary lacks are dropped, as in transformers (a padded embedding table can
        produce them). clean_up None means self.clean_up_tokenization_spaces (the config's value):
        transformers 5 decodes "what's" as "what ' s" unless the config or the caller asks for it."""
        arr = np.asarray(ids)
        if arr.ndim > 1:
            raise UserError(f"decode takes one sequence of ids, got shape {arr.shape}; decode rows one by one")
        flat = [int(i) for i in arr.reshape(-1)]
        if any(i < 0 for i in flat):
            raise UserError("token ids must be >= 0; negative ids are not tokens")
        text = self._rust.decode(flat, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            for old, new in _CLEANUP:
                text = text.replace(old, new)
        return text

    def convert_ids_to_tokens(self, ids):
        def one(i):
            token = self._rust.id_to_token(int(i)) if int(i) >= 0 else None
            if token is None:
                raise UserError(f"token id {int(i)} is outside the vocabulary (size {self.vocab_size})")
            return token
        return one(ids) if np.ndim(ids) == 0 else [one(i) for i in ids]

    def convert_tokens_to_ids(self, tokens):
        def one(t):
            i = self._rust.token_to_id(t)
            return self.unk_token_id if i is None else i
        return one(tokens) if isinstance(tokens, str) else [one(t) for t in tokens]

    @property
    def vocab_size(self) -> int:
        """Counts added tokens too: this is the embedding-table size a model needs."""
        return self._rust.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._rust.get_vocab(with_added_tokens=True)

    def _special_id(self, name: str) -> int:
        return self._rust.token_to_id(self._specials[name])

    pad_token_id = property(lambda self: self._special_id("pad"))
    unk_token_id = property(lambda self: self._special_id("unk"))
    cls_token_id = property(lambda self: self._special_id("cls"))
    sep_token_id = property(lambda self: self._special_id("sep"))
    mask_token_id = property(lambda self: self._special_id("mask"))
    mask_token = property(lambda self: self._specials["mask"])
    all_special_ids = property(lambda self: [self._special_id(n) for n in _SPECIAL_NAMES])

    # ---------------------------------------------------------------- saving
    def save_pretrained(self, directory) -> None:
        """Writes what transformers' AutoTokenizer needs to rebuild the same tokenizer: in transformers
        the config decides the normalizer, so the config flags must describe ours exactly."""
        if self._flags is None:
            raise UserError("this tokenizer.json's normalizer is not a BertNormalizer, so transformers' "
                            "BertTokenizer cannot represent it; save the original tokenizer.json instead")
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        by_id = sorted(self.get_vocab().items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise UserError("the vocabulary ids have gaps, so no vocab.txt can express them; rebuild the vocabulary")
        (folder / "vocab.txt").write_text("".join(t + "\n" for t, _ in by_id), encoding="utf-8")
        self._rust.save(str(folder / "tokenizer.json"))  # truncation/padding are always off on self._rust
        tokens = {f"{n}_token": self._specials[n] for n in _SPECIAL_NAMES}
        config = {"tokenizer_class": "BertTokenizer", **self._flags, "model_max_length": self.model_max_length,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces, **tokens}
        for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", tokens)):
            (folder / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
