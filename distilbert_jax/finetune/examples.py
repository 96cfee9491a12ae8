"""What the task readers hand the trainer: examples as read from the files, and model features.

Readers and the trainer meet here so that a new data format only has to produce these types.
Every example keeps `source` ("path:line") so a problem found later, while encoding or scoring,
can still name the place in the file it came from.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from distilbert_jax.errors import UserError
from distilbert_jax.losses import IGNORE_INDEX  # noqa: F401 (re-exported: readers label with it)

log = logging.getLogger("distilbert_jax")



@dataclasses.dataclass(frozen=True)
class TextExample:
    """One sentence or sentence pair. `label` is a label name (classification), a float
    (regression) or None (unlabelled test rows)."""
    guid: str
    text_a: str
    text_b: str | None
    label: str | float | None
    source: str


@dataclasses.dataclass(frozen=True)
class TokenExample:
    """One sentence of words with one tag per word (None for unlabelled data)."""
    guid: str
    words: tuple[str, ...]
    tags: tuple[str, ...] | None
    source: str


@dataclasses.dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset into the context


@dataclasses.dataclass(frozen=True)
class QAExample:
    qid: str
    question: str
    context: str
    answers: tuple[Answer, ...]  # empty for a v2.0 unanswerable question (and for unlabelled data)
    is_impossible: bool
    title: str
    source: str


@dataclasses.dataclass
class ReadResult:
    """Examples that could be used, and a one-line "path:line: what; what was done" per row that
    could not. A reader raises UserError only when nothing safe can be done (missing file,
    wrong header, no usable row)."""
    examples: list
    skipped: list[str] = dataclasses.field(default_factory=list)

    def report(self, what: str) -> "ReadResult":
        """Log the skipped rows (once, however often it is called); raise if nothing is usable."""
        if not getattr(self, "_reported", False):
            self._log(what)
            self._reported = True
        if not self.examples:
            raise UserError(f"no usable examples in {what}"
                            + (f" ({len(self.skipped)} rows skipped, first: {self.skipped[0]})" if self.skipped else "")
                            + "; check the file format and the --task")
        return self

    def _log(self, what: str) -> None:
        for line in self.skipped[:20]:
            log.warning("%s", line)
        if len(self.skipped) > 20:
            log.warning("... and %d more skipped rows in %s", len(self.skipped) - 20, what)


@dataclasses.dataclass
class Features:
    """Model inputs, one row per model input, unpadded (the batcher pads to bucket lengths).

    A SQuAD example may give several rows (document-stride windows); `example_index[i]` is the
    example row i came from. `targets` holds, by task kind:
      "label": [N] int32 class index (-1 unlabelled) or [N] float32 (NaN unlabelled);
      "token_labels": list of [len_i] int32, IGNORE_INDEX where no loss is taken;
      "start_positions", "end_positions": [N] int32 token indices (0, the [CLS], for no answer).
    """
    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    example_index: np.ndarray
    targets: dict

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(r) for r in self.input_ids), np.int64, len(self.input_ids))
