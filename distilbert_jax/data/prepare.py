"""Text corpus -> a prepared dataset folder of memory-mapped token ids (DistilBERT's data recipe).

One input line is one sequence, framed per tokenizer family as the reference's binarized_data.py
frames it: BERT `[CLS] tokens [SEP]`, RoBERTa `<s> tokens </s>`, GPT-2 `<|endoftext|> tokens
<|endoftext|>` (byte-level BPE lines are stripped first, so a line's newline is no token; unlike the
reference, which tokenized f"{bos} {text} {sep}", the tokens are the tokenizer's own encoding of the
line: no leading-space variant of the first word and no lone space token before the end token, the
ids a model sees when it is given that text). A sequence over `max_length` tokens has its
inner tokens cut into chunks of `max_length - 2`, each re-wrapped in the same two tokens (the
reference cut the sequence with its specials, so its first chunk held 509 tokens, not 510). Then
sequences of fewer than `min_length` tokens (11 or fewer by default) and those at least half
[UNK] are dropped (byte-level BPE has no unknown tokens: GPT-2's unk is its end token, so that
filter is off for it); every dropped line or chunk is counted under its reason.

Why the format is what it is:
* Raw little-endian ids (uint16 when the vocabulary fits, else int32) plus int64 offsets in
  `.npy` files: they open with `np.memmap` in no time whatever the size, need no pickle (the
  reference pickled Python lists, which broke across NumPy versions), and a reader can check
  the sizes against each other.
* It streams: lines are read in binary, tokenized 1,000 at a time by the Rust tokenizer, and
  appended to open files; only the current batch, the token counts and a few hashes live in
  memory, so a corpus many times larger than RAM goes through (one line is still read whole:
  a line is a sequence).
* Nothing a corpus holds crashes it: undecodable bytes become U+FFFD (and are counted), empty
  lines and empty files are counted and skipped.
* Everything is written to a temporary sibling folder renamed into place at the end: an
  interrupted run leaves no half-written dataset, and an `--overwrite` that fails keeps the old one.
* The held-out split is a hash of (seed, line number): deterministic, streaming, and a long line's
  chunks stay on the same side, so no text is shared between the splits.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from distilbert_jax.errors import UserError
from distilbert_jax.tokenizer.families import FAMILIES

FORMAT = "distilbert_jax.tokens"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
COUNTS = "counts.npy"
SPLITS = ("train", "heldout")
DROP_REASONS = ("empty_line", "too_short", "too_many_unk")
_MANIFEST_SPECIALS = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")  # those a family has
_BATCH_LINES = 1000  # lines per tokenizer call: large enough for Rust's parallelism, small in memory
_BATCH_BYTES = 1 << 20  # ... or fewer, when lines are long
_COPY_CHUNK = 1 << 20  # offsets copied into the final .npy this many at a time


def tokens_file(split: str) -> str:
    return f"{split}.tokens"


def offsets_file(split: str) -> str:
    return f"{split}.offsets.npy"


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian on every machine, so a dataset prepared anywhere reads the same anywhere."""
    return np.dtype("<u2") if vocab_size <= 65535 else np.dtype("<i4")


def heldout_mask(seed: int, line_numbers: np.ndarray, fraction: float) -> np.ndarray:
    """SplitMix64 of (seed, line number) as a uniform number in [0, 1), below `fraction` -> held out.
    Not Python's hash(), which is salted per process; uint64 arithmetic wraps as SplitMix needs."""
    z = np.asarray(line_numbers, np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 1) % (1 << 64))
    z = z * np.uint64(0xBF58476D1CE4E5B9)  # one extra round mixes the seed into the index
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)) < fraction


def _check_inputs(inputs) -> list[tuple[str, int]]:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths = [os.fspath(p) for p in inputs]
    if not paths:
        raise UserError("no input files; pass one or more text files with one sequence per line")
    sized = []
    for path in paths:
        if os.path.isdir(path):
            raise UserError(f"input {path} is a folder; pass the text files inside it (one sequence per line)")
        if not os.path.isfile(path):
            raise UserError(f"input file {path} does not exist; check the path")
        sized.append((path, os.path.getsize(path)))
    return sized


def _check_output(output: str, overwrite: bool) -> None:
    if os.path.isfile(output):
        raise UserError(f"output {output} is a file; pass a folder path for the prepared dataset")
    if os.path.isdir(output) and os.listdir(output):
        if not overwrite:
            raise UserError(f"output folder {output} is not empty; pass --overwrite or choose another folder")
        if not os.path.isfile(os.path.join(output, MANIFEST)):
            raise UserError(f"refusing to overwrite {output}: it is not a prepared dataset (no {MANIFEST}); "
                            "choose another folder")


def _check_numbers(max_length, min_length, max_unk_fraction, heldout_fraction, seed) -> None:
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(max_length) or max_length < 3:
        raise UserError(f"max_length must be an int of at least 3 ([CLS] token [SEP]), got {max_length!r}")
    if not is_int(min_length) or not 2 <= min_length <= max_length:
        raise UserError(f"min_length must be an int between 2 and max_length ({max_length}), got {min_length!r}")
    if not 0 < max_unk_fraction <= 1:
        raise UserError(f"max_unk_fraction must be in (0, 1], got {max_unk_fraction!r}")
    if not 0 <= heldout_fraction < 1:
        raise UserError(f"heldout_fraction must be in [0, 1), got {heldout_fraction!r}")
    if not is_int(seed) or seed < 0:
        raise UserError(f"seed must be a non-negative int, got {seed!r}")


class _SplitWriter:
    """Appends sequences of one split to `<split>.tokens` and a raw offsets scratch file, hashing
    both as they go; `finish()` turns the scratch offsets into the `.npy` a reader memory-maps."""

    def __init__(self, folder: str, split: str, dtype: np.dtype):
        self.folder, self.split, self.dtype = folder, split, dtype
        self._tokens = open(os.path.join(folder, tokens_file(split)), "wb")
        self._offsets = open(os.path.join(folder, f"{split}.offsets.raw"), "wb")
        self._token_hash, self._offset_hash = hashlib.sha256(), hashlib.sha256()
        self.sequences = self.tokens = 0
        self.min_len, self.max_len = None, 0
        self._write_offsets(np.zeros(1, np.int64))

    def _write_offsets(self, offsets: np.ndarray) -> None:
        data = offsets.astype("<i8").tobytes()
        self._offsets.write(data)
        self._offset_hash.update(data)

    def append(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        if not len(lengths):
            return
        data = tokens.astype(self.dtype).tobytes()
        self._tokens.write(data)
        self._token_hash.update(data)
        self._write_offsets(self.tokens + np.cumsum(lengths, dtype=np.int64))
        self.sequences += len(lengths)
        self.tokens += int(lengths.sum())
        low = int(lengths.min())
        self.min_len = low if self.min_len is None else min(self.min_len, low)
        self.max_len = max(self.max_len, int(lengths.max()))

    def close(self) -> None:
        self._tokens.close()
        self._offsets.close()

    def finish(self) -> dict:
        self.close()
        raw = os.path.join(self.folder, f"{self.split}.offsets.raw")
        out = np.lib.format.open_memmap(os.path.join(self.folder, offsets_file(self.split)), mode="w+",
                                        dtype="<i8", shape=(self.sequences + 1,))
        source = np.memmap(raw, dtype="<i8", mode="r")
        for start in range(0, len(out), _COPY_CHUNK):
            out[start:start + _COPY_CHUNK] = source[start:start + _COPY_CHUNK]
        out.flush()
        del out, source
        os.remove(raw)
        return {"sequences": self.sequences, "tokens": self.tokens, "min_length": self.min_len or 0,
                "max_length": self.max_len, "mean_length": round(self.tokens / max(self.sequences, 1), 3),
                "tokens_sha256": self._token_hash.hexdigest(), "offsets_sha256": self._offset_hash.hexdigest()}


class _Preparer:
    """The state of one run: writers, counters and the per-batch filtering."""

    def __init__(self, tokenizer, folder: str, *, max_length, min_length, max_unk_fraction, heldout_fraction, seed):
        self.tokenizer = tokenizer
        self.vocab_size = int(tokenizer.vocab_size)
        self.dtype = token_dtype(self.vocab_size)
        self.family = getattr(tokenizer, "family", "bert")
        first, last = (getattr(tokenizer, f"{name}_token_id") for name in FAMILIES[self.family].framing)
        self.edges = np.array([first, last], np.int64)
        unk = tokenizer.unk_token_id
        self.unk_id = None if unk is None or unk in (first, last) else unk
        self.max_length, self.min_length = max_length, min_length
        self.max_unk_fraction, self.heldout_fraction, self.seed = max_unk_fraction, heldout_fraction, seed
        self.writers = {s: _SplitWriter(folder, s, self.dtype) for s in SPLITS}
        self.counts = np.zeros(self.vocab_size, np.int64)
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.lines_read = self.undecodable_lines = self.chunked_lines = self.chunks = 0

    def add_lines(self, texts: list[str], line_numbers: list[int]) -> None:
        """Tokenize one batch of non-empty lines, chunk, filter, and append to the two splits."""
        # _encode_batch (not __call__) skips the masks and type ids __call__ would build and we drop.
        if self.family != "bert":
            texts = [t.strip() for t in texts]
        encodings = self.tokenizer._encode_batch(texts, False, None)
        inner = self.max_length - 2
        edges = self.edges
        sequences, owners = [], []
        for encoding, line in zip(encodings, line_numbers):
            body = np.array(encoding.ids, np.int64)  # arrays, not lists of Python ints: 4x less memory
            if len(body) <= inner:
                sequences.append(np.concatenate([edges[:1], body, edges[1:]]))
                owners.append(line)
                continue
            pieces = [np.concatenate([edges[:1], body[i:i + inner], edges[1:]]) for i in range(0, len(body), inner)]
            self.chunked_lines += 1
            self.chunks += len(pieces)
            sequences += pieces
            owners += [line] * len(pieces)
        del encodings
        lengths = np.fromiter(map(len, sequences), np.int64, len(sequences))
        flat = np.concatenate(sequences)
        del sequences
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        short = lengths < self.min_length
        unknown = np.zeros_like(short)
        if self.unk_id is not None:
            unks = np.add.reduceat((flat == self.unk_id).astype(np.int64), starts)
            unknown = ~short & (unks >= self.max_unk_fraction * lengths)
        self.dropped["too_short"] += int(short.sum())
        self.dropped["too_many_unk"] += int(unknown.sum())
        keep = ~(short | unknown)
        held = heldout_mask(self.seed, np.asarray(owners, np.uint64), self.heldout_fraction)
        for split, chosen in (("train", keep & ~held), ("heldout", keep & held)):
            tokens = flat[np.repeat(chosen, lengths)]
            self.writers[split].append(tokens, lengths[chosen])
            if split == "train":
                self.counts += np.bincount(tokens, minlength=self.vocab_size)


def _read_batches(path: str, prep: _Preparer, bar):
    """Yields (texts, line numbers) of the non-empty lines, a batch at a time, counting every line
    on `prep`. Bytes, not text mode: no encoding error can stop a run. Line numbers (which decide
    the held-out split) count every line of every input, in order."""
    texts, numbers, size = [], [], 0
    try:
        f = open(path, "rb")
    except OSError as err:
        raise UserError(f"cannot read input file {path}: {err.strerror}") from None
    with f:
        for raw in f:
            bar.update(len(raw))
            prep.lines_read += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                prep.undecodable_lines += 1
                text = raw.decode("utf-8", errors="replace")
            if not text.strip():
                prep.dropped["empty_line"] += 1
                continue
            texts.append(text)
            numbers.append(prep.lines_read - 1)
            size += len(raw)
            if len(texts) >= _BATCH_LINES or size >= _BATCH_BYTES:
                yield texts, numbers
                texts, numbers, size = [], [], 0
    if texts:
        yield texts, numbers


def _content_fingerprint(dtype: np.dtype, splits: dict) -> str:
    """One hash naming the exact token stream of both splits; equal fingerprints = equal data."""
    h = hashlib.sha256(f"{FORMAT}:{FORMAT_VERSION}:{dtype.str}".encode())
    for split in SPLITS:
        h.update(f"|{split}:{splits[split]['tokens_sha256']}:{splits[split]['offsets_sha256']}".encode())
    return h.hexdigest()


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def prepare_corpus(tokenizer, inputs, output, *, max_length: int = 512, min_length: int = 12,
                   max_unk_fraction: float = 0.5, heldout_fraction: float = 0.01, seed: int = 0,
                   progress: bool = True, overwrite: bool = False) -> dict:
    """Tokenize `inputs` (text files, one sequence per line) into the dataset folder `output`;
    returns the manifest (also written as `output/manifest.json`)."""
    from tqdm import tqdm

    sized = _check_inputs(inputs)
    output = os.fspath(output)
    _check_numbers(max_length, min_length, max_unk_fraction, heldout_fraction, seed)
    _check_output(output, overwrite)
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(output))}.partial-", dir=parent)
    prep = None
    try:
        tokenizer.save_pretrained(folder)  # first: a tokenizer that cannot be saved fails before the long part
        prep = _Preparer(tokenizer, folder, max_length=max_length, min_length=min_length,
                         max_unk_fraction=max_unk_fraction, heldout_fraction=heldout_fraction, seed=seed)
        empty_files = 0
        with tqdm(total=sum(s for _, s in sized), unit="B", unit_scale=True, unit_divisor=1024,
                  desc="prepare-data", disable=not progress, mininterval=1.0) as bar:
            for path, size in sized:
                empty_files += size == 0
                for texts, numbers in _read_batches(path, prep, bar):
                    prep.add_lines(texts, numbers)
                    bar.set_postfix(kept=prep.writers["train"].sequences + prep.writers["heldout"].sequences,
                                    refresh=False)
        splits = {s: prep.writers[s].finish() for s in SPLITS}
        if splits["train"]["sequences"] == 0:
            dropped = ", ".join(f"{k} {v}" for k, v in prep.dropped.items())
            raise UserError(f"no training sequences left from {prep.lines_read} lines ({dropped}); pass text files "
                            f"with one sequence of at least {min_length - 2} known tokens per line")
        np.save(os.path.join(folder, COUNTS), prep.counts)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "vocab_size": prep.vocab_size, "dtype": {"<u2": "uint16", "<i4": "int32"}[prep.dtype.str],
            "family": prep.family,
            "special_ids": {name: getattr(tokenizer, f"{name}_token_id") for name in _MANIFEST_SPECIALS
                            if getattr(tokenizer, f"{name}_token_id", None) is not None},
            "tokenizer_sha256": _file_sha256(os.path.join(folder, "vocab.txt" if prep.family == "bert"
                                                          else "tokenizer.json")),
            "inputs": [{"path": p, "bytes": s} for p, s in sized],
            "lines_read": prep.lines_read, "undecodable_lines": prep.undecodable_lines, "empty_files": empty_files,
            "dropped": prep.dropped, "chunked_lines": prep.chunked_lines, "chunks": prep.chunks,
            "splits": {s: {k: v for k, v in splits[s].items() if not k.endswith("_sha256")} for s in SPLITS},
            "fingerprint": _content_fingerprint(prep.dtype, splits),
            "max_length": max_length, "min_length": min_length, "max_unk_fraction": max_unk_fraction,
            "heldout_fraction": heldout_fraction, "seed": seed,
        }
        with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
        _move_into_place(folder, output)
        return manifest
    except BaseException:
        if prep is not None:
            for writer in prep.writers.values():
                writer.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _move_into_place(folder: str, output: str) -> None:
    """Renames are atomic; the old dataset (if overwriting) is moved aside first and deleted last,
    so `output` never holds a mix of the two, and a failure before this point keeps the old one."""
    old = None
    if os.path.isdir(output):
        if os.listdir(output):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(output))}.old-",
                                   dir=os.path.dirname(os.path.abspath(output)))
            os.replace(output, os.path.join(old, "data"))
        else:
            os.rmdir(output)
    os.replace(folder, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
