"""`distilbert-jax extract-student --teacher T --output DIR`: a DistilBERT student from BERT layers.

Writes an HF-format folder (config.json, model.safetensors, the teacher's tokenizer files) that
both `distilbert_jax.from_pretrained` and transformers' `DistilBertForMaskedLM` load, and prints
which teacher module each student module was copied from, so the choice of layers is on record.
"""

from __future__ import annotations

import logging
import os
import sys

from distilbert_jax.commands import Command


def add_arguments(p) -> None:
    p.add_argument("--teacher", required=True, help="BertForMaskedLM folder or hub name (with its MLM head)")
    p.add_argument("--layers", default="0,2,4,7,9,11",
                   help="teacher layers copied into student layers 0, 1, ..., comma-separated and increasing "
                        "(default: 0,2,4,7,9,11, the released DistilBERT's)")
    p.add_argument("--output", required=True, help="folder to write the student to")
    p.add_argument("--no-mlm-transform", action="store_true",
                   help="initialise vocab_transform/vocab_layer_norm afresh instead of copying the teacher's")


def parse_layers(text: str) -> list[int]:
    from distilbert_jax.errors import UserError

    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--layers {text!r} is not a comma-separated list of layer numbers, "
                        "e.g. 0,2,4,7,9,11") from None


def run(args) -> int:
    from distilbert_jax.distill.extract import copy_plan, extract_student
    from distilbert_jax.errors import UserError
    from distilbert_jax.pretrained import from_pretrained

    layers = parse_layers(args.layers)
    if os.path.isdir(args.teacher) and os.path.abspath(args.teacher) == os.path.abspath(args.output):
        raise UserError("--output is the teacher's folder; write the student to a new folder")
    # Loading warns about tensors the teacher's file has beyond BertForMaskedLM (a pooler, an NSP head):
    # expected for a teacher, and a missing MLM head is refused below, so keep the output to one line.
    loader_log = logging.getLogger("distilbert_jax")
    level = loader_log.level
    loader_log.setLevel(logging.ERROR)
    try:
        teacher = from_pretrained(args.teacher, task="masked-lm")
    finally:
        loader_log.setLevel(level)
    copy_mlm_transform = not args.no_mlm_transform
    student = extract_student(teacher, layers, copy_mlm_transform=copy_mlm_transform)
    student.save_pretrained(args.output)

    for student_module, teacher_module in copy_plan(teacher.config, layers, copy_mlm_transform=copy_mlm_transform):
        print(f"{student_module.replace('/', '.'):48s} <- {teacher_module.replace('/', '.')}")
    for key in student.load_report.missing:
        print(f"{key:48s} <- initialised N(0, {student.config.initializer_range}) / zeros / ones")
    print(f"wrote DistilBertForMaskedLM ({student.num_parameters:,} parameters, {len(layers)} layers) from "
          f"{teacher.num_parameters:,}-parameter {args.teacher} to {args.output}: "
          f"{', '.join(sorted(os.listdir(args.output)))}", file=sys.stderr)
    return 0


COMMAND = Command("extract-student", "initialise a DistilBERT student from layers of a BERT masked-LM teacher",
                  add_arguments, run)
