"""The CLI's subcommands, each a `Command(name, help, add_arguments, run)` in a file of its own."""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable
    run: Callable


def _load() -> list[Command]:
    from distilbert_jax.commands import convert, demo, inference
    from distilbert_jax.commands import prepare_data
    from distilbert_jax.commands import extract_student
    from distilbert_jax.commands import distill
    from distilbert_jax.commands import finetune
    from distilbert_jax.commands import verify
    from distilbert_jax.commands import export
    from distilbert_jax.commands import generate

    return [convert.COMMAND, inference.FILL_MASK, inference.EMBED, demo.COMMAND, prepare_data.COMMAND,
            extract_student.COMMAND, distill.COMMAND, finetune.FINETUNE, finetune.EVALUATE, verify.COMMAND,
            export.COMMAND, generate.COMMAND]


COMMANDS = _load()
