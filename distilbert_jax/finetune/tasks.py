"""Every fine-tuning task behind one interface: where its splits are, examples -> features,
model outputs -> predictions -> scores, and the prediction files users submit or inspect.

The trainer and the `evaluate` command only talk to a `Task`; the formats themselves live in
glue.py, squad.py, text_files.py and conll.py. Task names: the nine GLUE tasks and ax (cola,
sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, ax), squad, squad_v2, classification, ner.
"""

from __future__ import annotations

import abc
import csv
import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from distilbert_jax.errors import UserError
from distilbert_jax.finetune import conll, glue, metrics, squad, squad_metrics, text_files
from distilbert_jax.finetune.examples import Features, ReadResult
from distilbert_jax.weights.files import atomic_path

SPAN_TASKS = ("squad", "squad_v2")
OTHER_TASKS = ("classification", "ner")


def task_names() -> tuple[str, ...]:
    return tuple(glue.GLUE_TASKS) + SPAN_TASKS + OTHER_TASKS


@dataclasses.dataclass
class Encoded:
    """A split ready for the model: its examples, their features, and whatever decoding needs."""
    split: str
    examples: list
    features: Features
    context: Any = None  # SQuAD windows, NER word positions
    skipped: int = 0  # rows the reader could not use
    decoded: Any = None  # SQuAD: the n-best and null odds of the last decode


class Task(abc.ABC):
    name: str
    kind: str  # the step's head kind: classification, regression, token, span
    head: str  # the model class's task: sequence-classification, token-classification, question-answering
    main_metric: str
    labels: tuple[str, ...] | None = None

    def __init__(self, config):
        self.config = config
        self.data = config.data
        if not os.path.isdir(self.data):
            raise UserError(f"data folder {self.data!r} does not exist; pass --data DIR with the task's files")

    # --- splits ---------------------------------------------------------------------------
    def eval_splits(self) -> tuple[str, ...]:
        return ("dev",)

    def test_splits(self) -> tuple[str, ...]:
        return ()

    @abc.abstractmethod
    def read(self, split: str) -> ReadResult:
        """The examples of `split` as the format's reader returns them."""

    def has_split(self, split: str) -> bool:
        return True

    # --- labels ---------------------------------------------------------------------------
    def fit_labels(self, train: list | None, model_config=None) -> None:
        """Fix the label set: the task's own, else the fine-tuned model's, else the training data's."""

    def config_overrides(self) -> dict:
        if self.labels is None:
            return {"problem_type": "regression", "num_labels": 1} if self.kind == "regression" else {}
        out = {"id2label": dict(enumerate(self.labels))}
        if self.kind == "classification":
            out["problem_type"] = "single_label_classification"
        return out

    # --- the rest, per format ---------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, split: str, examples: list, tokenizer, *, for_training: bool) -> Encoded:
        """Examples -> unpadded model features (+ what decoding needs)."""

    @abc.abstractmethod
    def decode(self, encoded: Encoded, values: dict) -> list:
        """Per-feature model outputs -> one prediction per example."""

    @abc.abstractmethod
    def score(self, encoded: Encoded, predictions: list) -> dict[str, float]:
        """The task's metrics over the labelled examples (fractions)."""

    @abc.abstractmethod
    def write_predictions(self, encoded: Encoded, predictions: list, directory: str) -> str:
        """The predictions file (or folder) users submit or inspect; returns its path."""


# ------------------------------------------------------------------------ sentences and pairs
class SentenceTask(Task):
    head = "sequence-classification"

    def encode(self, split, examples, tokenizer, *, for_training):
        max_length = self.config.sequence_length
        a = [e.text_a for e in examples]
        pairs = [e.text_b for e in examples]
        has_pairs = any(p is not None for p in pairs)
        enc = tokenizer(a, [p or "" for p in pairs] if has_pairs else None, truncation=max_length,
                        return_token_type_ids=True)  # zeros for RoBERTa: the batches keep one layout
        if self.kind == "regression":
            labels = np.array([np.nan if e.label is None else float(e.label) for e in examples], np.float32)
        else:
            index = {label: i for i, label in enumerate(self.labels)}
            labels = np.array([-1 if e.label is None else index[e.label] for e in examples], np.int32)
        features = Features([np.asarray(r, np.int32) for r in enc["input_ids"]],
                            [np.asarray(r, np.int32) for r in enc["token_type_ids"]],
                            np.arange(len(examples)), {"label": labels})
        return Encoded(split, examples, features)

    def decode(self, encoded, values):
        logits = np.asarray(values["logits"])
        if self.kind == "regression":
            return [float(x) for x in logits[:, 0]]
        return [self.labels[i] for i in np.argmax(logits, axis=-1)]

    def _gold_and_predicted(self, encoded, predictions):
        rows = [(e.label, p) for e, p in zip(encoded.examples, predictions) if e.label is not None]
        if self.kind == "regression":
            return np.array([g for g, _ in rows], np.float64), np.array([p for _, p in rows], np.float64)
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[g] for g, _ in rows]), np.array([index[p] for _, p in rows])

    def write_predictions(self, encoded, predictions, directory):
        path = os.path.join(directory, f"{self.name}-{encoded.split}.tsv")
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f, delimiter="\t", lineterminator="\n")
            out.writerow(["id", "prediction", "label"])
            for e, p in zip(encoded.examples, predictions):
                out.writerow([e.guid, f"{p:.6g}" if isinstance(p, float) else p, "" if e.label is None else e.label])
        return path


class GlueTask(SentenceTask):
    def __init__(self, config):
        super().__init__(config)
        self.spec = glue.GLUE_TASKS[config.task]
        self.name = config.task
        self.labels = self.spec.labels
        self.kind = "regression" if self.labels is None else "classification"
        self.main_metric = {"cola": "mcc", "stsb": "pearson", "mrpc": "f1", "qqp": "f1"}.get(self.name, "accuracy")

    def eval_splits(self):
        return tuple(glue.eval_splits(self.name))

    def test_splits(self):
        """MNLI's model also predicts AX, the diagnostic set, as the GLUE submission expects."""
        extra = ("ax",) if self.name == "mnli" and self._ax_root() is not None else ()
        return tuple(glue.test_splits(self.name)) + extra

    def _ax_root(self) -> str | None:
        for folder in (self.data, os.path.dirname(os.path.normpath(self.data))):
            try:
                glue.glue_file("ax", folder, "test")
                return folder
            except UserError:
                continue
        return None

    def has_split(self, split):
        if split == "ax":
            return self._ax_root() is not None
        try:
            glue.glue_file(self.name, self.data, split)
        except UserError:
            return False
        return True

    def read(self, split):
        if split == "ax":
            return glue.read_glue("ax", self._ax_root(), "test")
        return glue.read_glue(self.name, self.data, split)

    def score(self, encoded, predictions):
        gold, predicted = self._gold_and_predicted(encoded, predictions)
        if len(gold) == 0:
            return {}
        return metrics.glue_metrics(self.name, predicted, gold)

    def write_predictions(self, encoded, predictions, directory):
        if encoded.split == "ax":
            return glue.write_glue_submission("ax", "test", [e.guid for e in encoded.examples], predictions,
                                              directory)
        if encoded.split.startswith("test"):
            return glue.write_glue_submission(self.name, encoded.split, [e.guid for e in encoded.examples],
                                              predictions, directory)
        return super().write_predictions(encoded, predictions, directory)


class FileClassificationTask(SentenceTask):
    """CSV, JSON lines or folder-per-label (IMDb) files; the label set comes from the training data
    (or, when only evaluating, from the fine-tuned model's id2label)."""
    name = "classification"
    kind = "classification"
    main_metric = "accuracy"

    def _path(self, split) -> Path:
        return text_files.find_split(self.data, split)

    def has_split(self, split):
        try:
            path = self._path(split)
        except UserError:
            return False
        return split != "test" or path != self._path("dev")  # IMDb: dev falls back to test

    def test_splits(self):
        return ("test",) if self.has_split("test") else ()

    def read(self, split):
        c = self.config
        result = text_files.read_text_classification(self._path(split), text_column=c.text_column,
                                                      text_pair_column=c.text_pair_column, label_column=c.label_column)
        if self.labels is not None and split != "train":
            result = text_files.check_labels(result, self.labels)
        return result

    def fit_labels(self, train, model_config=None):
        if train is not None:
            self.labels = tuple(text_files.label_list(train))
        elif model_config is not None:
            self.labels = tuple(model_config.id2label[i] for i in range(model_config.num_labels))
        if self.labels is not None and len(self.labels) < 2:
            raise UserError(f"the training data in {self.data} has only the label {self.labels}; "
                            "classification needs at least two")

    def score(self, encoded, predictions):
        gold, predicted = self._gold_and_predicted(encoded, predictions)
        if len(gold) == 0:
            return {}
        out = {"accuracy": metrics.accuracy(predicted, gold)}
        if len(self.labels) == 2:
            out["f1"] = metrics.f1_binary(predicted, gold)
        return out


# ------------------------------------------------------------------------ NER
_CONLL_NAMES = {"train": ("train.txt", "eng.train", "train.conll"),
                "dev": ("dev.txt", "valid.txt", "validation.txt", "eng.testa", "dev.conll"),
                "test": ("test.txt", "eng.testb", "test.conll")}


class TokenTask(Task):
    name = "ner"
    kind = "token"
    head = "token-classification"
    main_metric = "f1"

    def _path(self, split) -> str | None:
        return next((os.path.join(self.data, n) for n in _CONLL_NAMES[split]
                     if os.path.isfile(os.path.join(self.data, n))), None)

    def has_split(self, split):
        return self._path(split) is not None

    def test_splits(self):
        return ("test",) if self.has_split("test") else ()

    def read(self, split):
        path = self._path(split)
        if path is None:
            raise UserError(f"no {split} file in {self.data}; expected one of {', '.join(_CONLL_NAMES[split])}")
        result = conll.read_conll(path)
        return result if self.labels is None or split == "train" else conll.check_tags(result, self.labels)

    def fit_labels(self, train, model_config=None):
        if train is not None:
            self.labels = tuple(conll.tag_list(train))
        elif model_config is not None:
            self.labels = tuple(model_config.id2label[i] for i in range(model_config.num_labels))

    def encode(self, split, examples, tokenizer, *, for_training):
        features, positions = conll.encode_token_examples(
            examples, tokenizer, self.labels, max_length=self.config.sequence_length,
            label_all_subtokens=self.config.label_all_subtokens)
        return Encoded(split, examples, features, positions)

    def decode(self, encoded, values):
        return conll.decode_token_predictions(encoded.context, values["predictions"], self.labels)

    def score(self, encoded, predictions):
        pairs = [(e.tags, p) for e, p in zip(encoded.examples, predictions) if e.tags is not None]
        if not pairs:
            return {}
        scores = conll.entity_scores([list(g) for g, _ in pairs], [list(p) for _, p in pairs])
        return {k: v for k, v in scores.items() if isinstance(v, float)}

    def write_predictions(self, encoded, predictions, directory):
        path = os.path.join(directory, f"ner-{encoded.split}.txt")
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for e, tags in zip(encoded.examples, predictions):
                for i, (word, tag) in enumerate(zip(e.words, tags)):
                    f.write(f"{word} {e.tags[i] if e.tags else 'O'} {tag}\n")
                f.write("\n")
        return path


# ------------------------------------------------------------------------ SQuAD
class SpanTask(Task):
    kind = "span"
    head = "question-answering"
    main_metric = "f1"

    def __init__(self, config):
        super().__init__(config)
        self.name = config.task
        self.version_2 = config.task == "squad_v2"

    def _path(self, split) -> str | None:
        suffix = "v2.0" if self.version_2 else "v1.1"
        for name in (f"{split}-{suffix}.json", f"{split}.json"):
            if os.path.isfile(os.path.join(self.data, name)):
                return os.path.join(self.data, name)
        return None

    def has_split(self, split):
        return self._path(split) is not None

    def read(self, split):
        path = self._path(split)
        if path is None:
            suffix = "v2.0" if self.version_2 else "v1.1"
            raise UserError(f"no {split}-{suffix}.json (or {split}.json) in {self.data}; "
                            "pass the folder holding the SQuAD files")
        return squad.read_squad(path, for_training=(split == "train"))

    def encode(self, split, examples, tokenizer, *, for_training):
        c = self.config
        features, windows = squad.make_features(examples, tokenizer, max_length=c.sequence_length,
                                                doc_stride=c.doc_stride, max_query_length=c.max_query_length,
                                                for_training=for_training)
        return Encoded(split, examples, features, windows)

    def decode(self, encoded, values):
        c = self.config
        result = squad.postprocess(encoded.examples, encoded.context, values["start_logits"], values["end_logits"],
                                   n_best=c.n_best, max_answer_length=c.max_answer_length, version_2=self.version_2,
                                   null_score_diff_threshold=c.null_score_diff_threshold)
        encoded.decoded = result
        return [result.answers.get(e.qid, "") for e in encoded.examples]

    def score(self, encoded, predictions):
        answers = {e.qid: p for e, p in zip(encoded.examples, predictions)}
        scores = squad_metrics.squad_scores(answers, encoded.examples)
        return {k: float(v) for k, v in scores.items()}

    def write_predictions(self, encoded, predictions, directory):
        target = os.path.join(directory, f"{self.name}-{encoded.split}")
        os.makedirs(target, exist_ok=True)
        squad.write_predictions(encoded.decoded, target)
        return target


def make_task(config) -> Task:
    name = config.task
    if name in glue.GLUE_TASKS:
        return GlueTask(config)
    if name in SPAN_TASKS:
        return SpanTask(config)
    if name == "classification":
        return FileClassificationTask(config)
    if name == "ner":
        return TokenTask(config)
    raise UserError(f"unknown task {name!r}; use one of {', '.join(task_names())}")
