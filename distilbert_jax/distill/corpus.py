"""A corpus of real English prose that every machine already has: the standard library's docstrings.

The demo must run offline and the repository carries no third-party text, so the prose comes
from the Python installation itself. Docstrings are parsed with `ast` (nothing is imported, so
no module's side effects run), cut into paragraphs, and kept when they read like prose: enough
words, mostly letters, no doctest or code lines. Paragraph order is shuffled with a fixed seed
so that held-out sequences are not all from the same module.
"""

from __future__ import annotations

import ast
import os
import random
import re
import sysconfig
from typing import Iterator

_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "lib2to3", "turtledemo",
              "ensurepip", "tkinter"}
_CODE_LINE = re.compile(r"^\s*(>>>|\.\.\.|\$ |[-=~*]{3,}|:\w+:|[A-Za-z_][\w.]*\(.*\)\s*(->.*)?$)")


def stdlib_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def _docstrings(path: str) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def prose_paragraphs(doc: str, *, min_words: int = 8) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", doc):
        lines = block.splitlines()
        if not lines or any(_CODE_LINE.match(line) for line in lines):
            continue
        text = " ".join(line.strip() for line in lines)
        words = text.split()
        letters = sum(c.isalpha() or c.isspace() for c in text)
        if len(words) >= min_words and letters >= 0.85 * len(text):
            yield text


def write_stdlib_corpus(path: str, *, max_bytes: int | None = None, seed: int = 0, root: str | None = None) -> dict:
    """Write one paragraph per line to `path`; returns {"paragraphs", "bytes", "files", "root"}."""
    root = root or stdlib_root()
    paragraphs, files = [], 0
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIP_DIRS)
        for name in sorted(names):
            if name.endswith(".py"):
                files += 1
                for doc in _docstrings(os.path.join(directory, name)):
                    paragraphs.extend(prose_paragraphs(doc))
    paragraphs = sorted(set(paragraphs))
    random.Random(seed).shuffle(paragraphs)
    size = 0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        kept = 0
        for text in paragraphs:
            line = text + "\n"
            if max_bytes is not None and size + len(line.encode()) > max_bytes:
                break
            f.write(line)
            size += len(line.encode())
            kept += 1
    return {"paragraphs": kept, "bytes": size, "files": files, "root": root}
