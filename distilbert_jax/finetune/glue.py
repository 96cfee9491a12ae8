"""The GLUE tasks as distributed: one table row per task, a reader for its TSV files, and the
writer of the files the GLUE server scores.

The nine tasks ship in nine slightly different TSV layouts (CoLA train/dev without a header,
MRPC with a byte-order mark, MNLI with a dozen parse columns, test files with an `index` or `id`
column and no label). Keeping each layout as data in `GLUE_TASKS` means one reader handles them
all and a new layout is a table edit, not a code path. Columns are picked by header name, not
position, so a file with its columns in another order still reads right, and a file that is not
what it claims to be fails on its header instead of yielding wrong examples.

The files hold unbalanced quotes, so a line is split on tabs and nothing else (csv QUOTE_NONE).
A bad row is skipped with a "path:line: what; row skipped" note rather than stopping a run over
hundreds of thousands of rows; missing files and headers stop it, naming what to fix.

Label names are listed in the order transformers' old GLUE processors used, so a classifier head
converted from a transformers checkpoint lines up with these indices.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import types

from distilbert_jax.errors import UserError
from distilbert_jax.finetune.examples import ReadResult, TextExample


@dataclasses.dataclass(frozen=True)
class TsvLayout:
    """Which columns of one kind of file hold what. `names` is set only for files without a
    header line (CoLA train/dev), giving the column names by position."""
    text_a: str
    text_b: str | None = None
    label: str | None = None
    guid: str | None = None  # the id column; None: guid is "<split>-<line>"
    names: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class GlueTask:
    name: str
    folder: str  # folder name in glue_data/
    labels: tuple[str, ...] | None  # None: regression (STS-B, scores in [0, 5])
    metrics: tuple[str, ...]  # as distilbert_jax.finetune.metrics.TASK_METRICS names them
    files: tuple[tuple[str, tuple[str, ...]], ...]  # split -> candidate file names, first preferred
    labelled: TsvLayout | None  # train/dev files
    unlabelled: TsvLayout  # test files
    submissions: tuple[tuple[str, str], ...]  # test split -> file name the GLUE server expects
    other_folders: tuple[str, ...] = ()  # other names the folder has in some downloads

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self.files)

    def label_id(self, label: str) -> int:
        return self.labels.index(label)


_BINARY = ("0", "1")
_NLI3 = ("contradiction", "entailment", "neutral")
_NLI2 = ("entailment", "not_entailment")
_PAIR = TsvLayout("sentence1", "sentence2", "label", "index")
_PAIR_TEST = TsvLayout("sentence1", "sentence2", guid="index")


def _files(*splits: str) -> tuple:
    return tuple((split, (f"{split}.tsv",)) for split in splits)


_STANDARD = _files("train", "dev", "test")

_TASKS = (
    GlueTask("cola", "CoLA", _BINARY, ("mcc",), _STANDARD,
             TsvLayout("sentence", label="label", names=("source", "label", "annotation", "sentence")),
             TsvLayout("sentence", guid="index"), (("test", "CoLA.tsv"),)),
    GlueTask("sst2", "SST-2", _BINARY, ("accuracy",), _STANDARD,
             TsvLayout("sentence", label="label"), TsvLayout("sentence", guid="index"), (("test", "SST-2.tsv"),)),
    GlueTask("mrpc", "MRPC", _BINARY, ("accuracy", "f1"), _STANDARD,
             TsvLayout("#1 String", "#2 String", "Quality"), TsvLayout("#1 String", "#2 String", guid="index"),
             (("test", "MRPC.tsv"),)),
    GlueTask("qqp", "QQP", _BINARY, ("accuracy", "f1"), _STANDARD,
             TsvLayout("question1", "question2", "is_duplicate", "id"), TsvLayout("question1", "question2", guid="id"),
             (("test", "QQP.tsv"),)),
    GlueTask("stsb", "STS-B", None, ("pearson", "spearman"), _STANDARD,
             TsvLayout("sentence1", "sentence2", "score", "index"), _PAIR_TEST, (("test", "STS-B.tsv"),)),
    GlueTask("mnli", "MNLI", _NLI3, ("accuracy",),
             _files("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched"),
             TsvLayout("sentence1", "sentence2", "gold_label", "index"), _PAIR_TEST,
             (("test_matched", "MNLI-m.tsv"), ("test_mismatched", "MNLI-mm.tsv"))),
    GlueTask("qnli", "QNLI", _NLI2, ("accuracy",), _STANDARD,
             TsvLayout("question", "sentence", "label", "index"), TsvLayout("question", "sentence", guid="index"),
             (("test", "QNLI.tsv"),)),
    GlueTask("rte", "RTE", _NLI2, ("accuracy",), _STANDARD, _PAIR, _PAIR_TEST, (("test", "RTE.tsv"),)),
    GlueTask("wnli", "WNLI", _BINARY, ("accuracy",), _STANDARD, _PAIR, _PAIR_TEST, (("test", "WNLI.tsv"),)),
    # The diagnostic set: test only, predicted with an MNLI model. The W4ngatang download script
    # saves it as diagnostic/diagnostic.tsv, the GLUE zip as AX/test.tsv; both are found.
    GlueTask("ax", "AX", _NLI3, ("mcc",), (("test", ("test.tsv", "diagnostic.tsv", "AX.tsv")),),
             None, _PAIR_TEST, (("test", "AX.tsv"),), other_folders=("diagnostic",)),
)

GLUE_TASKS: types.MappingProxyType = types.MappingProxyType({task.name: task for task in _TASKS})

_SPLIT_ALIASES = {"mnli": {"dev": "dev_matched", "test": "test_matched"}}


def glue_task(name: str) -> GlueTask:
    """The task for a name in any common spelling ("SST-2", "sst2", "STS-B", "diagnostic")."""
    key = "".join(c for c in str(name).lower() if c.isalnum())
    key = {"diagnostic": "ax"}.get(key, key)
    if key not in GLUE_TASKS:
        raise UserError(f"unknown GLUE task {name!r}; known tasks: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def _split(task: GlueTask, split: str) -> str:
    split = _SPLIT_ALIASES.get(task.name, {}).get(split, split)
    if split not in task.splits:
        raise UserError(f"GLUE {task.name} has no split {split!r}; its splits are: {', '.join(task.splits)}")
    return split


def eval_splits(task: str) -> tuple[str, ...]:
    """The labelled dev splits to score ("dev"; MNLI: matched and mismatched; AX: none)."""
    spec = glue_task(task)
    return tuple(s for s in spec.splits if s.startswith("dev"))


def test_splits(task: str) -> tuple[str, ...]:
    """The unlabelled splits that get a submission file."""
    spec = glue_task(task)
    return tuple(s for s in spec.splits if s.startswith("test"))


def _task_dir(spec: GlueTask, data_dir: str, candidates: tuple[str, ...]) -> str:
    """data_dir itself when it is the task's folder, else its subfolder named for the task."""
    folders = (spec.folder,) + spec.other_folders
    base = os.path.basename(os.path.normpath(data_dir)).lower()
    if base in (f.lower() for f in folders):
        return data_dir
    for folder in folders:
        if os.path.isdir(os.path.join(data_dir, folder)):
            return os.path.join(data_dir, folder)
    for other in _TASKS:
        if other is not spec and base in (f.lower() for f in (other.folder,) + other.other_folders):
            raise UserError(f"{data_dir} is the {other.folder} folder but the task is {spec.name}; "
                            f"pass the {spec.folder} folder or the glue_data folder above it")
    if any(os.path.isfile(os.path.join(data_dir, name)) for name in candidates):
        return data_dir  # a renamed task folder
    raise UserError(f"no {spec.folder} folder in {data_dir}; pass the GLUE data folder (the one holding "
                    f"{spec.folder}/) or the {spec.folder} folder itself")


def glue_file(task: str, data_dir: str, split: str) -> str:
    """Path of a task's split file under data_dir (the GLUE root or the task's folder)."""
    spec = glue_task(task)
    split = _split(spec, split)
    candidates = dict(spec.files)[split]
    directory = _task_dir(spec, os.fspath(data_dir), candidates)
    for name in candidates:
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    present = sorted(f for f in os.listdir(directory) if f.endswith(".tsv")) if os.path.isdir(directory) else []
    raise UserError(f"{os.path.join(directory, candidates[0])}: no such file; the .tsv files in {directory} "
                    f"are: {', '.join(present) or 'none'}")


def _lines(path: str):
    """(1-based physical line number, text or None when not UTF-8) for each non-blank line.
    Lines end at \\n only, so a stray \\r inside a field neither splits a row nor shifts the count."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # MRPC's files start with a byte-order mark
            if not raw.strip():
                continue
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError:
                yield number, None


def read_glue(task: str, data_dir, split: str) -> ReadResult:
    """Examples of one split: TextExample(guid, text_a, text_b, label, source="path:line").

    label is the label name (classification), a float in [0, 5] (STS-B) or None (test files).
    guid is the file's index/id column where it has one (test files always do: the submission
    needs it), else "<split>-<line>". Malformed rows are skipped and listed in `skipped`; raises
    UserError for an unknown task or split, a missing file, a header without a needed column, or
    a file without one usable row."""
    spec = glue_task(task)
    split = _split(spec, split)
    path = glue_file(spec.name, data_dir, split)
    layout = spec.unlabelled if split.startswith("test") else spec.labelled
    lines = _lines(path)
    names = layout.names
    if names is None:
        first = next(lines, None)
        if first is None or first[1] is None:
            raise UserError(f"{path}: empty or unreadable header line; expected the GLUE {spec.folder} {split} file")
        names = tuple(name.strip() for name in first[1].split("\t"))
    wanted = {"text_a": layout.text_a, "text_b": layout.text_b, "label": layout.label, "guid": layout.guid}
    index = {}
    for role, column in wanted.items():
        if column is not None:
            if column not in names:
                raise UserError(f"{path}: header has no column {column!r} (columns: {', '.join(names)}); "
                                f"is this the GLUE {spec.folder} {split} file?")
            index[role] = names.index(column)

    examples, skipped = [], []
    for number, text in lines:
        where = f"{path}:{number}"
        problem = None
        if text is None:
            problem = "not valid UTF-8"
        else:
            fields = text.split("\t")
            if len(fields) != len(names):
                problem = f"expected {len(names)} tab-separated fields, found {len(fields)}"
        if problem is None:
            values = {role: fields[i].strip() for role, i in index.items()}
            empty = [wanted[r] for r in ("text_a", "text_b", "guid") if r in values and not values[r]]
            problem = f"empty {empty[0]!r}" if empty else None
        label = None
        if problem is None and "label" in values:
            label, problem = _label(spec, values["label"])
        if problem is not None:
            skipped.append(f"{where}: {problem}; row skipped")
            continue
        examples.append(TextExample(guid=values.get("guid", f"{split}-{number}"), text_a=values["text_a"],
                                    text_b=values.get("text_b"), label=label, source=where))
    return ReadResult(examples, skipped).report(path)


def _label(spec: GlueTask, text: str) -> tuple[str | float | None, str | None]:
    """(label, None) or (None, what is wrong with it)."""
    if spec.labels is not None:
        if text in spec.labels:
            return text, None
        return None, f"label {text!r} is not one of {', '.join(spec.labels)}"
    try:
        score = float(text)
    except ValueError:
        return None, f"score {text!r} is not a number"
    if not math.isfinite(score) or not 0.0 <= score <= 5.0:
        return None, f"score {text!r} is outside [0, 5]"
    return score, None


def write_glue_submission(task: str, split: str, guids, predictions, directory) -> str:
    """Write the file the GLUE server scores for one test split (CoLA.tsv, MNLI-m.tsv, ...):
    header "index\\tprediction", one row per guid. Predictions are label names (or class indices,
    written as names); STS-B takes floats, clipped to [0, 5] and written with 3 decimals. The file
    appears whole or not at all (temp file + os.replace). Returns its path."""
    spec = glue_task(task)
    split = _split(spec, split)
    submissions = dict(spec.submissions)
    if split not in submissions:
        raise UserError(f"GLUE {spec.name} {split} is not submitted to the GLUE server; "
                        f"submit {', '.join(submissions)}")
    guids, predictions = list(guids), list(predictions)
    if len(guids) != len(predictions):
        raise ValueError(f"{len(guids)} guids but {len(predictions)} predictions")
    rows = [f"{guid}\t{_prediction_text(spec, p)}\n" for guid, p in zip(guids, predictions)]
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, submissions[split])
    fd, tmp = tempfile.mkstemp(prefix=f".{submissions[split]}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write("index\tprediction\n")
            f.writelines(rows)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _prediction_text(spec: GlueTask, prediction) -> str:
    if spec.labels is None:
        score = float(prediction)
        if math.isnan(score):
            raise ValueError("STS-B prediction is NaN")
        return f"{min(max(score, 0.0), 5.0):.3f}"
    if isinstance(prediction, str):
        if prediction not in spec.labels:
            raise ValueError(f"prediction {prediction!r} is not a {spec.name} label ({', '.join(spec.labels)})")
        return prediction
    index = int(prediction)
    if index != prediction or not 0 <= index < len(spec.labels):
        raise ValueError(f"prediction {prediction!r} is not a {spec.name} class index (0..{len(spec.labels) - 1})")
    return spec.labels[index]
