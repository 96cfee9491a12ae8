"""Tokenizers on the `tokenizers` library, id-for-id with transformers' fast ones: BERT WordPiece
(BertTokenizerFast, cased or not), RoBERTa and GPT-2 byte-level BPE (RobertaTokenizerFast,
GPT2TokenizerFast).

Why not just use transformers? The model code here is JAX and must not depend on torch-era
tooling at run time; but checkpoints come from the Hugging Face world, so the ids must be exactly
the ones the weights were trained with. Everything that decides ids therefore runs in the same
Rust pipeline that transformers builds (wordpiece.py, byte_bpe.py; folders.py reads the files as
transformers does), and only padding, limits and error reporting are done here.

Transformers behaviours reproduced on purpose:
* A tokenizer_config.json's do_lower_case / strip_accents / tokenize_chinese_chars win over the
  normalizer stored in tokenizer.json (transformers rebuilds the normalizer from the config).
* Special tokens are added tokens: "[MASK]" typed in raw text is one id, and decode can skip them.
* decode() = Rust decode, then (if clean_up_tokenization_spaces, BERT only: transformers 5 skips it
  for BPE) transformers' Python space clean-up over the whole string; the Rust WordPiece decoder
  alone only cleans inside single tokens. The clean-up defaults to the config's setting, False when absent.
* GPT-2 has no pad token: asking it to pad is an error until one is set, as in transformers.
One deliberate difference: an empty pair ("") is still a pair, as in transformers' batched path
(its single-text path drops it), so a sentence-pair model always sees two segments.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as _RustTokenizer
from tokenizers import decoders, pre_tokenizers, processors
from tokenizers.models import WordPiece

from distilbert_jax.data.buckets import bucket_length
from distilbert_jax.errors import UserError
from distilbert_jax.tokenizer import byte_bpe, folders, training, wordpiece
from distilbert_jax.tokenizer.families import FAMILIES, SPECIAL_NAMES

_DEFAULT_SPECIALS = FAMILIES["bert"].specials
# transformers writes int(1e30) for "no known limit"; BERT position tables stop at 512.
_DEFAULT_MAX_LENGTH = 512
# transformers' PreTrainedTokenizerBase.clean_up_tokenization, in its order (order changes results).
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
_RETURN_TENSORS = (None, "np", "jax")


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
    For BERT the [CLS] A [SEP] (B [SEP]) template is always (re)installed, as transformers'
    BertTokenizer does; byte-level BPE pipelines come built (see byte_bpe.py).

    `family` ("bert", "roberta", "gpt2") decides the special tokens (`<name>_token_id` is None
    where a family has none: GPT-2 has no pad, cls, sep or mask), the model inputs `__call__`
    returns, and how prepare-data frames sequences."""

    def __init__(self, rust: _RustTokenizer, *, specials: dict | None = None,
                 flags: dict | None = None, model_max_length: int = _DEFAULT_MAX_LENGTH,
                 clean_up_tokenization_spaces: bool = False, family: str = "bert",
                 bpe_settings: dict | None = None):
        if family not in FAMILIES:
            raise UserError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
        rust.no_truncation()
        rust.no_padding()
        self.family = family
        self._specials = {**FAMILIES[family].specials, **(specials or {})}
        for name, token in self._specials.items():
            if token is not None and rust.token_to_id(token) is None:
                raise UserError(f"the vocabulary has no {name} token {token!r}; add it or name the right one")
        # Like transformers: special tokens are matched verbatim in raw text ("[MASK]" -> one id) and
        # skipped by decode(skip_special_tokens=True); register only those the file did not register.
        known = {str(t) for t in rust.get_added_tokens_decoder().values()}
        missing = [t for t in dict.fromkeys(self._specials.values()) if t is not None and t not in known]
        if missing:
            rust.add_special_tokens(missing)
        if family == "bert":
            cls_tok, sep_tok = self._specials["cls"], self._specials["sep"]
            rust.post_processor = processors.TemplateProcessing(
                single=f"{cls_tok}:0 $A:0 {sep_tok}:0", pair=f"{cls_tok}:0 $A:0 {sep_tok}:0 $B:1 {sep_tok}:1",
                special_tokens=[(t, rust.token_to_id(t)) for t in (cls_tok, sep_tok)])
            if rust.decoder is None:
                rust.decoder = decoders.WordPiece(prefix="##")
        self._rust = rust
        self._flags = flags  # None: not a BertNormalizer, so not savable as a transformers BertTokenizer
        self._bpe_settings = dict(bpe_settings or {})  # add_prefix_space, trim_offsets, add_bos/eos_token
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
    def from_pretrained(cls, directory, *, family: str | None = None, pad_token: str | None = None) -> "Tokenizer":
        """A folder with tokenizer.json, vocab.txt (BERT) or vocab.json + merges.txt (RoBERTa, GPT-2).
        The family comes from tokenizer_config.json's tokenizer_class, else config.json's model_type,
        else the files (`family=` overrides all). `pad_token` names a token to pad with, for GPT-2,
        whose tokenizer has none: `pad_token="<|endoftext|>"`, as `tokenizer.pad_token = tokenizer.eos_token`."""
        return folders.load(cls, directory, family, None if pad_token is None else _check_text(pad_token, "pad_token"))

    @classmethod
    def from_bpe(cls, vocab: dict, merges: list, family: str = "roberta", *, add_prefix_space: bool = False,
                 pad_token: str | None = None, model_max_length: int | None = None,
                 added_tokens: list[dict] | None = None) -> "Tokenizer":
        """A RoBERTa or GPT-2 tokenizer from a byte-level BPE vocabulary {token: id} and its merges
        [(left, right), ...], built as transformers builds one from vocab.json + merges.txt.
        `added_tokens`: tokenizer.json's "added_tokens" entries (content, lstrip, special, ...)."""
        if family not in ("roberta", "gpt2"):
            raise UserError(f"from_bpe builds roberta or gpt2 tokenizers, got family={family!r}")
        specials = dict(FAMILIES[family].specials)
        if pad_token is not None:
            specials["pad"] = pad_token
        settings = {"add_prefix_space": bool(add_prefix_space)}
        parts = {"vocab": dict(vocab), "merges": [tuple(m) for m in merges], "added": list(added_tokens or []),
                 "post_processor": None}
        return cls(byte_bpe.build(parts, family, specials, settings), specials=specials, family=family,
                   model_max_length=model_max_length or FAMILIES[family].default_max_length, bpe_settings=settings)

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
        rust = wordpiece.pipeline(WordPiece(mapping, unk_token=specials["unk"], max_input_chars_per_word=100), flags)
        return cls(rust, specials=specials, flags=flags, model_max_length=model_max_length)

    @classmethod
    def train(cls, files, vocab_size: int, *, family: str = "bert", min_frequency: int = 2,
              do_lower_case: bool = True, limit_alphabet: int = 1000, add_prefix_space: bool = False,
              show_progress: bool = False) -> "Tokenizer":
        """A new vocabulary trained on `files`: a list/tuple (or a single str/Path) means file paths;
        any other iterable yields texts. Deterministic: the same text gives the same vocabulary.

        family="bert": WordPiece, [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0-4 (do_lower_case and
        limit_alphabet apply). family="roberta": byte-level BPE with <s> <pad> </s> <unk> <mask> at
        ids 0-4, as roberta-base; family="gpt2": byte-level BPE with <|endoftext|> as the last id,
        as gpt2. vocab_size counts the special tokens (and, for BPE, the 256 byte symbols)."""
        _positive("vocab_size", vocab_size)
        if family in ("roberta", "gpt2"):
            leading = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] if family == "roberta" else []
            trailing = ["<|endoftext|>"] if family == "gpt2" else []
            vocab, merges = training.train_byte_bpe(files, vocab_size, leading, trailing,
                                                    min_frequency=min_frequency, show_progress=show_progress)
            # roberta-base's <mask> takes the space before it ("the <mask>" -> "the", "<mask>"), so a
            # fill-mask answer replaces the word with its own leading space
            added = [{"id": vocab[t], "content": t, "special": True, "lstrip": t == "<mask>"} for t in leading + trailing]
            return cls.from_bpe(vocab, merges, family, add_prefix_space=add_prefix_space, added_tokens=added)
        if family != "bert":
            raise UserError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
        if vocab_size <= len(_DEFAULT_SPECIALS):
            raise UserError(f"vocab_size must be above {len(_DEFAULT_SPECIALS)} (the special tokens), got {vocab_size}")
        flags = {"do_lower_case": bool(do_lower_case), "strip_accents": None, "tokenize_chinese_chars": True}
        specials = [_DEFAULT_SPECIALS[n] for n in ("pad", "unk", "cls", "sep", "mask")]  # ids 0..4
        rust = wordpiece.pipeline(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100), flags)
        tokens = training.train_wordpiece(rust, files, vocab_size, specials, min_frequency=min_frequency,
                                          limit_alphabet=limit_alphabet, show_progress=show_progress)
        return cls.from_vocab(tokens, do_lower_case=do_lower_case)

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
                 return_token_type_ids: bool | None = None, return_tensors: str | None = None) -> dict:
        """Always batched: a single str is a batch of one. padding=False gives ragged python lists;
        otherwise int32 arrays [B, L]. bucket_lengths overrides `padding` (pads to the smallest bucket
        that fits) so that jit sees few distinct shapes. A limit (max_length, the largest bucket, or
        model_max_length for padding="max_length") is never silently exceeded: without truncation
        an over-long text is an error.

        The keys are the family's model inputs, as transformers' `model_input_names` (token_type_ids
        for BERT only, unless return_token_type_ids says otherwise), so `model(**tokenizer(texts,
        padding=True, return_tensors="np"))` runs. return_tensors="np" or "jax" gives int32 arrays
        even without padding (then every text must have the same length)."""
        if return_tensors not in _RETURN_TENSORS:
            raise UserError(f"return_tensors must be None, 'np' or 'jax', got {return_tensors!r}")
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in FAMILIES[self.family].model_input_names
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

        if (padding or buckets) and self.pad_token_id is None:
            raise UserError(f"this {self.family} tokenizer has no pad token, so it cannot pad; set one first, e.g. "
                            "tokenizer.pad_token = tokenizer.eos_token (or from_pretrained(..., pad_token=...))")
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
        if target is None and return_tensors is None:
            return {key: [list(r) for r in value] for key, value in rows.items()}
        if target is None:
            if len(set(lengths)) > 1:
                raise UserError(f"return_tensors={return_tensors!r} needs equal lengths, got {min(lengths)} to "
                                f"{longest} tokens; pass padding=True")
            target = longest
        out = {}
        for key, value in rows.items():  # transformers pads everything but input_ids with 0
            fill = (self.pad_token_id or 0) if key == "input_ids" else 0  # no padding happens without a pad id
            out[key] = np.full((len(value), target) + ((2,) if key == "offsets" else ()), fill, np.int32)
            for row, r in enumerate(value):
                if r:
                    out[key][row, :len(r)] = r
        if return_tensors == "jax":
            import jax.numpy as jnp

            out = {key: jnp.asarray(value) for key, value in out.items()}
        return out

    def encodings(self, texts, pairs=None, *, is_pretokenized: bool = False, add_special_tokens: bool = True):
        """The Rust `Encoding`s themselves (ids, type_ids, offsets, word_ids, sequence_ids), never
        truncated: span and word-label tasks cut their own windows and must see every token.
        With is_pretokenized each text is a list of words, as transformers' is_split_into_words; a
        byte-level BPE (RoBERTa, GPT-2) then encodes every word with its leading space ("ĠYork"),
        as transformers does with add_prefix_space=True (which it demands for split words, and which
        run_ner sets for these families), so a word reads as it did inside the pretraining text."""
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
        rust = self._word_pipeline() if is_pretokenized else self._rust
        with self._lock:
            return rust.encode_batch(batch, is_pretokenized=is_pretokenized, add_special_tokens=add_special_tokens)

    def _word_pipeline(self) -> _RustTokenizer:
        """This pipeline, for pre-split words: BPE families with add_prefix_space on (built once)."""
        if self.family == "bert" or self._bpe_settings.get("add_prefix_space"):
            return self._rust
        if getattr(self, "_prefixed", None) is None:
            rust = _RustTokenizer.from_str(self._rust.to_str())
            rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
            if self.family == "roberta":
                sep, cls = self._specials["sep"], self._specials["cls"]
                rust.post_processor = processors.RobertaProcessing(
                    (sep, rust.token_to_id(sep)), (cls, rust.token_to_id(cls)),
                    trim_offsets=bool(self._bpe_settings.get("trim_offsets", True)), add_prefix_space=True)
            self._prefixed = rust
        return self._prefixed

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
        # transformers 5 skips the clean-up for BPE: it would eat the real spaces byte-level BPE keeps
        if clean_up_tokenization_spaces and self.family == "bert":
            for old, new in _CLEANUP:
                text = text.replace(old, new)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """One string per row of a [B, L] array (or list of id lists), as transformers' batch_decode."""
        return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in sequences]

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

    def _special_id(self, name: str) -> int | None:
        token = self._specials.get(name)
        return None if token is None else self._rust.token_to_id(token)

    # None where the family has no such token (GPT-2: pad until set, cls, sep, mask; BERT: bos, eos)
    pad_token_id = property(lambda self: self._special_id("pad"))
    unk_token_id = property(lambda self: self._special_id("unk"))
    cls_token_id = property(lambda self: self._special_id("cls"))
    sep_token_id = property(lambda self: self._special_id("sep"))
    mask_token_id = property(lambda self: self._special_id("mask"))
    bos_token_id = property(lambda self: self._special_id("bos"))
    eos_token_id = property(lambda self: self._special_id("eos"))
    unk_token = property(lambda self: self._specials.get("unk"))
    cls_token = property(lambda self: self._specials.get("cls"))
    sep_token = property(lambda self: self._specials.get("sep"))
    mask_token = property(lambda self: self._specials.get("mask"))
    bos_token = property(lambda self: self._specials.get("bos"))
    eos_token = property(lambda self: self._specials.get("eos"))
    model_input_names = property(lambda self: list(FAMILIES[self.family].model_input_names))

    @property
    def all_special_ids(self) -> list[int]:
        """In transformers' order (bos, eos, unk, sep, pad, cls, mask), each id once."""
        return list(dict.fromkeys(i for i in map(self._special_id, SPECIAL_NAMES) if i is not None))

    @property
    def pad_token(self) -> str | None:
        return self._specials.get("pad")

    @pad_token.setter
    def pad_token(self, token: str | None) -> None:
        """`tokenizer.pad_token = tokenizer.eos_token`, as with transformers, lets GPT-2 pad. Only a
        token already in the vocabulary: a new one would need a row the model's embeddings lack."""
        if token is not None:
            if self._rust.token_to_id(_check_text(token, "pad_token")) is None:
                raise UserError(f"pad_token {token!r} is not in the vocabulary; use one that is, e.g. the eos token")
            if token not in {str(t) for t in self._rust.get_added_tokens_decoder().values()}:
                self._rust.add_special_tokens([token])
        self._specials["pad"] = token

    def save_pretrained(self, directory) -> None:
        """Writes what transformers' AutoTokenizer needs to rebuild the same tokenizer (see folders.save)."""
        folders.save(self, directory)
