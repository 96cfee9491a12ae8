"""Prove that a folder means the same thing here as in transformers: run it in this package and in
transformers' PyTorch class on the same inputs, and compare every output both produce.

A conversion can be wrong in ways no shape check sees (a transposed square matrix, a LayerNorm
epsilon, a position offset): only running both frameworks on real inputs shows it. Both run in
float32 (matmuls at full precision, eager attention on the torch side), so what is left is
floating-point noise, far below `DEFAULT_ATOL`; a wrong tensor is orders of magnitude above it.
Only real tokens are compared: what a model writes at padding positions is not defined alike.

Alone, verify proves that this package reads and runs the folder as transformers does. A value
the conversion itself got wrong is in the file both frameworks read, so proving a conversion takes
its source: `reference=` (the folder converted from) is what transformers loads then.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from distilbert_jax.errors import UserError

# Measured on CPU in float32: every tiny BERT/DistilBERT class differs from transformers by at most
# 1e-6, base-size random masked-LM logits by 4.4e-6, the real all-MiniLM-L6-v2 by 4.3e-6; one
# weight off by 0.5 (tests/test_verify.py) moves tiny masked-LM logits by 9e-3.
DEFAULT_ATOL = 1e-4
TOP_K = 5
DEFAULT_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of [MASK] and its largest city.",
    "In 1969, 600 million people watched Apollo 11 land on the Moon!",
    "Naïve café owners don't always re-use résumés; they're ‘careful’.",
    "Why?",
    "Distillation compresses a large teacher network into a smaller student that keeps most of its accuracy.",
)


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One output compared at real positions. `top_k`/`kl` are for logits: the fraction of
    positions whose top-k sets (over the last axis) agree, and the mean KL(torch || ours)."""

    name: str
    max_abs: float
    k: int | None = None
    top_k: float | None = None
    kl: float | None = None

    def row(self) -> str:
        agree = "" if self.top_k is None else f"{self.top_k:.3f} (top-{self.k})"
        kl = "" if self.kl is None else f"{self.kl:.2e}"
        return f"  {self.name:<20} {self.max_abs:<12.2e} {agree:<18} {kl}"


@dataclasses.dataclass(frozen=True)
class Verification:
    architecture: str
    inputs: str  # how the inputs were made, in words
    checks: tuple[OutputCheck, ...]
    atol: float

    @property
    def worst(self) -> OutputCheck:
        return max(self.checks, key=lambda c: math.inf if math.isnan(c.max_abs) else c.max_abs)

    @property
    def passed(self) -> bool:
        return all(c.max_abs <= self.atol for c in self.checks)  # NaN fails

    def verdict(self) -> str:
        worst = self.worst
        if self.passed:
            return (f"OK: every output of {self.architecture} matches transformers within atol "
                    f"{self.atol:.0e} (worst: {worst.name}, {worst.max_abs:.2e})")
        return (f"FAIL: {worst.name} differs from transformers' {self.architecture} by {worst.max_abs:.2e} "
                f"(atol {self.atol:.0e}); the weights or their conversion are wrong")

    def report(self) -> str:
        head = f"  {'output':<20} {'max |diff|':<12} {'top-k agreement':<18} KL(torch || ours)"
        return "\n".join([f"{self.architecture}: {self.inputs}", head, *(c.row() for c in self.checks),
                          self.verdict()])


def read_texts(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
    except OSError as err:
        raise UserError(f"cannot read texts from {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; give a text file with one text per line") from None
    if not texts:
        raise UserError(f"{path} holds no texts; give one text per line")
    return texts


def verify(path_or_name: str | os.PathLike, texts: list[str] | None = None, *, task: str | None = None,
           atol: float = DEFAULT_ATOL, reference: str | os.PathLike | None = None) -> Verification:
    """Load the folder here and in transformers (or `reference` there: the folder it was converted
    from), run `texts` (default: `DEFAULT_TEXTS`) through both and compare."""
    torch, transformers = _torch()
    import jax

    from distilbert_jax.hub import resolve
    from distilbert_jax.pretrained import from_pretrained

    directory = resolve(path_or_name)
    ours = from_pretrained(directory, task=task)
    name = ours.architecture.name
    if ours.load_report.missing:
        raise UserError(f"{directory} lacks {', '.join(ours.load_report.missing)} of a {name}; verify compares "
                        "the weights a folder holds: drop --task, or verify a folder saved with that head")
    torch_cls = getattr(transformers, name, None)
    if torch_cls is None:
        raise UserError(f"transformers {transformers.__version__} has no class {name}; upgrade transformers")
    batch, described = _inputs(ours, list(texts) if texts is not None else list(DEFAULT_TEXTS))
    source = directory if reference is None else resolve(reference)
    if reference is not None:
        described += f"; transformers ran {source}"
    theirs = torch_cls.from_pretrained(source, attn_implementation="eager", dtype=torch.float32).eval()
    with jax.default_matmul_precision("highest"):
        got = ours(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    with torch.no_grad():
        expected = theirs(**{k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()})
    real = batch["attention_mask"]
    checks = []
    for field in dataclasses.fields(got):
        value, wanted = getattr(got, field.name), expected.get(field.name)
        if value is None or isinstance(value, tuple) or not isinstance(wanted, torch.Tensor):
            continue  # not produced here, or not there (a cache object, hidden-state tuples)
        checks.append(compare(field.name, np.asarray(value), wanted.float().numpy(), real))
    if not checks:
        raise UserError(f"{name} here and in transformers share no output to compare")
    return Verification(name, described, tuple(checks), atol)


def compare(name: str, ours: np.ndarray, theirs: np.ndarray, real: np.ndarray) -> OutputCheck:
    """Differences at real positions; for logits also top-k agreement and KL over the last axis
    (over the real positions of each row when that axis is the sequence, as for span logits)."""
    if ours.shape != theirs.shape:
        return OutputCheck(f"{name} {ours.shape} vs {theirs.shape}", math.inf)
    ours, theirs, real = ours.astype(np.float64), theirs.astype(np.float64), np.asarray(real, bool)
    if ours.shape[:real.ndim] != real.shape:  # pooled: one row per example (or choice)
        rows_ours, rows_theirs = ours.reshape(-1, ours.shape[-1]), theirs.reshape(-1, theirs.shape[-1])
    elif ours.ndim == real.ndim:  # a distribution over the sequence itself: padding drops out of it
        rows_ours, rows_theirs = np.where(real, ours, -np.inf), np.where(real, theirs, -np.inf)
        rows_ours, rows_theirs = rows_ours.reshape(-1, real.shape[-1]), rows_theirs.reshape(-1, real.shape[-1])
    else:  # one row per real token
        rows_ours, rows_theirs = ours[real], theirs[real]
    at_real = ours[real] - theirs[real] if ours.shape[:real.ndim] == real.shape else ours - theirs
    with np.errstate(invalid="ignore"):
        diff = np.abs(at_real)
    max_abs = float(np.max(diff)) if diff.size else 0.0  # NaN or inf on either side: NaN, which fails
    k = min(TOP_K, rows_ours.shape[-1] - 1)
    if not name.endswith("logits") or k < 1 or not diff.size or math.isnan(max_abs):
        return OutputCheck(name, max_abs)
    top = lambda x: np.sort(np.argsort(-x, axis=-1, kind="stable")[..., :k], axis=-1)
    agree = float(np.mean(np.all(top(rows_ours) == top(rows_theirs), axis=-1)))
    log_p, log_q = _log_softmax(rows_theirs), _log_softmax(rows_ours)
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):  # 0 * -inf at padding, dropped by the where
        kl = float(np.mean(np.sum(np.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)))
    return OutputCheck(name, max_abs, k, agree, max(kl, 0.0))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _inputs(model, texts: list[str], choices: int = 2, seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """One padded batch for both frameworks: the folder's tokenizer on `texts`, or (no tokenizer)
    random ids with a fixed seed. Multiple-choice gets [B, C, L]: each text paired with the next ones."""
    config, tokenizer = model.config, model.tokenizer
    multiple_choice = model.architecture.task == "multiple-choice"
    pad = _pad_id(tokenizer, config)
    positions = config.max_positions
    if tokenizer is None:
        rng = np.random.default_rng(seed)
        shape = (len(texts), choices, 16) if multiple_choice else (len(texts), 16)
        ids = rng.integers(0, config.vocab_size - 1, shape)
        ids = ids + (ids >= pad)  # any id but padding's: a real token must not look like padding
        mask = (np.arange(16) < rng.integers(4, 17, shape[:-1])[..., None]).astype(np.int64)
        mask[0, ...] = 1  # the longest row fills the batch
        return ({"input_ids": np.where(mask == 1, ids, pad), "attention_mask": mask},
                f"no tokenizer in the folder: random ids (seed {seed}) in a padded batch of shape {shape}")
    pairs = None
    if multiple_choice:
        pairs = [texts[(i + c) % len(texts)] for i in range(len(texts)) for c in range(1, choices + 1)]
        texts = [t for t in texts for _ in range(choices)]
    limit = min(getattr(tokenizer, "model_max_length", positions), positions - 2)
    encoded = tokenizer(texts, pairs, truncation=True, max_length=limit)
    longest = max(len(row) for row in encoded["input_ids"])
    top = max(max(row) for row in encoded["input_ids"])
    if top >= config.vocab_size:
        raise UserError(f"the folder's tokenizer gives id {top}, but its model has vocab_size {config.vocab_size}; "
                        "the tokenizer files do not belong to this model")
    batch = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key == "token_type_ids" and (key not in encoded or not hasattr(config, "type_vocab_size")):
            continue  # only models with token types get them; GPT-2 would add them as embeddings
        out = np.full((len(texts), longest), pad if key == "input_ids" else 0, np.int64)
        for row, values in enumerate(encoded[key]):
            out[row, :len(values)] = values
        batch[key] = out.reshape(-1, choices, longest) if multiple_choice else out
    count = len(texts) // (choices if multiple_choice else 1)
    return batch, f"{count} texts tokenized by the folder's tokenizer, batch {batch['input_ids'].shape}"


def _pad_id(tokenizer, config) -> int:
    try:
        pad = tokenizer.pad_token_id if tokenizer is not None else None
    except (KeyError, AttributeError):  # a tokenizer without a padding token (GPT-2)
        pad = None
    pad = pad if pad is not None else getattr(config, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def _torch():
    try:
        import torch
        import transformers
    except ImportError:
        raise UserError("verify runs the model in transformers' PyTorch class too: "
                        "pip install torch transformers") from None
    return torch, transformers
