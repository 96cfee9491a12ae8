"""Text classification data (IMDb-style) from CSV/TSV, JSON lines, or one folder per label.

These are the three shapes such data is actually shipped in: spreadsheets and pandas exports
(CSV/TSV with a header), `datasets` exports (JSON lines), and IMDb's own aclImdb archive
(`train/pos/*.txt`, `train/neg/*.txt`). Each reader returns a `ReadResult`: a bad row costs that
row, not the run, and the skipped list names its file and physical line so it can be fixed.
Labels stay strings here; `label_list` fixes their ids from the training data, and
`check_labels` keeps an evaluation file from silently scoring labels the model never saw.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

from distilbert_jax.errors import UserError
from distilbert_jax.finetune.examples import ReadResult, TextExample

log = logging.getLogger("distilbert_jax")

TEXT_COLUMNS = ("text", "sentence", "review", "content")  # tried in this order when none is named
ID_COLUMNS = ("id", "idx", "guid")  # kept as the guid so predictions can be matched back to rows
_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
# IMDb's test split doubles as its dev split: it has no other held-out data.
_SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation", "test"),
                "validation": ("validation", "dev", "test"), "test": ("test",)}


def find_split(data_dir, split: str) -> Path:
    """The file or label folder holding `split` in `data_dir`: NAME.csv, .tsv, .jsonl, .json or NAME/.

    "dev" also accepts validation.* and then test.*, because IMDb ships only train and test."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise UserError(f"data folder {folder} does not exist; pass the folder holding train.csv (or train/)")
    names = _SPLIT_NAMES.get(split, (split,))
    for name in names:
        for suffix in _SUFFIXES:
            if (folder / (name + suffix)).is_file():
                return _found(folder / (name + suffix), split, name)
        if (folder / name).is_dir():
            return _found(folder / name, split, name)
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    looked = ", ".join(f"{n}{s}" for n in names for s in (*_SUFFIXES, "/"))
    shown = ", ".join(held[:20]) + (f", ... ({len(held)} entries)" if len(held) > 20 else "")
    raise UserError(f"no {split} split in {folder} (looked for {looked}); it holds: {shown or 'nothing'}; "
                    "rename the file or pass its path")


_warned: set = set()  # callers probe splits repeatedly; say it once per folder


def _found(path: Path, split: str, name: str) -> Path:
    if name != split and name == "test" and (path, split) not in _warned:
        _warned.add((path, split))
        log.warning("no %s split in %s; evaluating on %s instead", split, path.parent, path.name)
    return path


def read_text_classification(path, *, text_column: str | None = None, text_pair_column: str | None = None,
                             label_column: str = "label", ignore_folders: tuple[str, ...] = ("unsup",)
                             ) -> ReadResult:
    """TextExamples from a .csv/.tsv (header line), a .jsonl/.json (one object per line), or a folder
    with one sub-folder of .txt files per label (folders in `ignore_folders` skipped).

    A file without the label column gives unlabelled examples (label None): test data for
    prediction. Rows that cannot be used are listed in `skipped`; a missing file or a missing
    text column is a UserError because no row could be read."""
    path = Path(path)
    if path.is_dir():
        return _read_label_folders(path, ignore_folders)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist; pass a .csv, .tsv, .jsonl or .json file or a label folder")
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise UserError(f"{path}: unknown format {suffix or '(no suffix)'}; use .csv, .tsv, .jsonl or .json")
    text = _read_utf8(path)
    columns = (text_column, text_pair_column, label_column)
    if suffix in (".csv", ".tsv"):
        return _read_table(path, text, "\t" if suffix == ".tsv" else ",", *columns)
    return _read_json_lines(path, text, *columns)


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start}); "
                        "re-save the file as UTF-8") from None


def _pick_columns(path: Path, present, text_column, text_pair_column, label_column):
    """(text, pair, label-or-None, id-or-None) column names; UserError naming what exists otherwise."""
    present = list(present)
    listing = ", ".join(repr(c) for c in present) or "none"
    if text_column is None:
        text_column = next((c for c in TEXT_COLUMNS if c in present), None)
        if text_column is None:
            raise UserError(f"{path} has none of the text columns {', '.join(TEXT_COLUMNS)} (it has: {listing}); "
                            "rename the text column or name it as the text column")
    for what, name in (("text", text_column), ("text pair", text_pair_column)):
        if name is not None and name not in present:
            raise UserError(f"{path} has no {what} column {name!r} (it has: {listing}); pass one of those")
    label = label_column if label_column in present else None
    if label is None:
        log.info("%s has no %r column: reading it as unlabelled", path, label_column)
    return text_column, text_pair_column, label, next((c for c in ID_COLUMNS if c in present), None)


def _make_example(record: dict, where: str, guid: str, cols) -> TextExample | str:
    """A TextExample, or the reason (without location) the record cannot be one."""
    text_col, pair_col, label_col, id_col = cols
    texts = []
    for col in (text_col, pair_col):
        if col is None:
            texts.append(None)
            continue
        if col not in record:
            return f"no {col!r} field"
        value = record[col]
        if not isinstance(value, str):
            return f"{col!r} is {type(value).__name__}, not text"
        if not value.strip():
            return f"empty {col!r}"
        texts.append(value)
    label = None
    if label_col is not None:
        label = _label_text(record.get(label_col))
        if label is None:
            return f"no usable {label_col!r} (got {record.get(label_col)!r})"
    if id_col is not None and record.get(id_col) not in (None, ""):
        guid = str(record[id_col])
    return TextExample(guid=guid, text_a=texts[0], text_b=texts[1], label=label, source=where)


def _label_text(value) -> str | None:
    """JSON labels may be 1, true or "pos"; all become the strings label_list sorts."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _read_table(path: Path, text: str, delimiter: str, text_column, text_pair_column, label_column) -> ReadResult:
    """csv's `line_num` counts physical lines, so a quoted field holding newlines still lets a
    message point at the line where its record starts."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    examples, skipped, last_line = [], [], 0
    header = None
    try:
        for row in reader:
            start, last_line = last_line + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if header is None:
                header = [c.strip() for c in row]
                cols = _pick_columns(path, header, text_column, text_pair_column, label_column)
                continue
            where = f"{path}:{start}"
            if len(row) != len(header):
                spans = f" (the record runs to line {last_line}: an unclosed quote?)" if last_line > start else ""
                skipped.append(f"{where}: {len(row)} fields, the header has {len(header)}{spans}; row skipped")
                continue
            made = _make_example(dict(zip(header, row)), where, f"{path.stem}-{len(examples)}", cols)
            _keep(made, where, examples, skipped)
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: unreadable {path.suffix[1:].upper()} ({e}); "
                        "fix the quoting on that line") from None
    if header is None:
        raise UserError(f"{path} is empty; expected a header line naming the columns (e.g. text,label)")
    return ReadResult(examples, skipped)


def _read_json_lines(path: Path, text: str, text_column, text_pair_column, label_column) -> ReadResult:
    """Split on "\\n" only: str.splitlines would also break at U+2028, which JSON strings may hold."""
    lines = text.split("\n")
    if _is_one_document(text, lines):
        raise UserError(f"{path} holds one JSON document, not one object per line; "
                        "write it as JSON lines (one {...} per line)")
    records, skipped = [], []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            skipped.append(f"{where}: not JSON ({e.msg} at column {e.colno}); row skipped")
            continue
        if not isinstance(obj, dict):
            skipped.append(f"{where}: a JSON {type(obj).__name__}, not an object; row skipped")
            continue
        records.append((where, obj))
    if not records:
        return ReadResult([], skipped)
    keys = list(dict.fromkeys(k for _, obj in records for k in obj))
    cols = _pick_columns(path, keys, text_column, text_pair_column, label_column)
    examples: list[TextExample] = []
    for where, obj in records:
        _keep(_make_example(obj, where, f"{path.stem}-{len(examples)}", cols), where, examples, skipped)
    return ReadResult(examples, skipped)


def _is_one_document(text: str, lines: list[str]) -> bool:
    """A .json file holding an array, or one object spread over lines, would otherwise be
    reported line by line as broken; it is a different format, so say that once."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        return False  # JSON lines with more than one line always land here ("Extra data")
    return isinstance(whole, list) or sum(1 for ln in lines if ln.strip()) > 1


def _keep(made, where: str, examples: list, skipped: list) -> None:
    if isinstance(made, TextExample):
        examples.append(made)
    else:
        skipped.append(f"{where}: {made}; row skipped")


def _read_label_folders(folder: Path, ignore_folders) -> ReadResult:
    """aclImdb layout: each sub-folder is a label, each .txt file in it one example. IMDb's
    `unsup` folder holds unlabelled reviews for pre-training, so it is left out by default."""
    label_dirs = sorted(p for p in folder.iterdir()
                        if p.is_dir() and not p.name.startswith(".") and p.name not in ignore_folders)
    if not label_dirs:
        raise UserError(f"{folder} has no label folders; put each class's .txt files in a folder named "
                        "for the label (e.g. pos/, neg/) or pass a .csv/.jsonl file")
    examples, skipped = [], []
    for label_dir in label_dirs:
        for file in sorted(label_dir.glob("*.txt")):
            try:
                text = file.read_bytes().decode("utf-8-sig")
            except UnicodeDecodeError as e:
                skipped.append(f"{file}: not UTF-8 text ({e.reason} at byte {e.start}); file skipped")
                continue
            if not text.strip():
                skipped.append(f"{file}: empty text; file skipped")
                continue
            examples.append(TextExample(guid=f"{label_dir.name}/{file.stem}", text_a=text.strip(), text_b=None,
                                        label=label_dir.name, source=str(file)))
    return ReadResult(examples, skipped)


def _label_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def label_list(examples) -> tuple[str, ...]:
    """The training labels in id order: numeric labels by value ("2" before "10", as their ids
    were meant), others alphabetically after them. Fixed by the training data alone, so the
    same checkpoint always maps id -> label the same way."""
    labels = {ex.label for ex in examples if ex.label is not None}
    if not labels:
        raise UserError("the training data has no labels; it needs a label column (or label folders)")
    return tuple(sorted(labels, key=_label_key))


def check_labels(result: ReadResult, labels) -> ReadResult:
    """Moves examples whose label the training data never had into `skipped`: the model has no
    output for them, so scoring them would only measure the label mismatch. Unlabelled examples stay."""
    known = tuple(labels)
    allowed = set(known)
    shown = "[" + ", ".join(repr(x) for x in known[:10]) + (", ..." if len(known) > 10 else "") + "]"
    kept, skipped = [], list(result.skipped)
    for ex in result.examples:
        if ex.label is None or ex.label in allowed:
            kept.append(ex)
        else:
            skipped.append(f"{ex.source}: label {ex.label!r} is not one of {shown} (the training labels); row skipped")
    return ReadResult(kept, skipped)
