"""`distilbert-jax extract-student --teacher T --output DIR`: a student from a teacher's layers.

BERT gives a DistilBERT student, RoBERTa a 6-layer RoBERTa (DistilRoBERTa), GPT-2 a 6-layer
GPT-2 (DistilGPT2); see distill/extract.py.

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
    p.add_argument("--teacher", required=True,
                   help="BertForMaskedLM, RobertaForMaskedLM or GPT2LMHeadModel folder or hub name (with its LM head)")
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
    from distilbert_jax.config import BertConfig
    from distilbert_jax.distill.extract import copy_plan, extract_student
    from distilbert_jax.distill.teacher_student import load_language_model
    from distilbert_jax.errors import UserError

    layers = parse_layers(args.layers)
    if os.path.isdir(args.teacher) and os.path.abspath(args.teacher) == os.path.abspath(args.output):
        raise UserError("--output is the teacher's folder; write the student to a new folder")
    # Loading warns about tensors the teacher's file has beyond its LM class (a pooler, an NSP head):
    # expected for a teacher, and a missing LM head is refused, so keep the output to one line.
    loader_log = logging.getLogger("distilbert_jax")
    level = loader_log.level
    loader_log.setLevel(logging.ERROR)
    try:
        teacher = load_language_model(args.teacher, "teacher", lazy=False)
    finally:
        loader_log.setLevel(level)
    copy_mlm_transform = not args.no_mlm_transform
    student = extract_student(teacher, layers, copy_mlm_transform=copy_mlm_transform)
    student.save_pretrained(args.output)

    if isinstance(teacher.config, BertConfig):
        plan = copy_plan(teacher.config, layers, copy_mlm_transform=copy_mlm_transform)
    else:  # same family: the layers move, everything else is copied under its own name
        plan = [(f"layer {s}", f"layer {t}") for s, t in enumerate(layers)]
    for student_module, teacher_module in plan:
        print(f"{student_module.replace('/', '.'):48s} <- {teacher_module.replace('/', '.')}")
    for key in student.load_report.missing:
        print(f"{key:48s} <- initialised N(0, {student.config.initializer_range}) / zeros / ones")
    print(f"wrote {student.architecture.name} ({student.num_parameters:,} parameters, {len(layers)} layers) from "
          f"{teacher.num_parameters:,}-parameter {args.teacher} to {args.output}: "
          f"{', '.join(sorted(os.listdir(args.output)))}", file=sys.stderr)
    return 0


COMMAND = Command("extract-student", "initialise a student from layers of a BERT, RoBERTa or GPT-2 teacher",
                  add_arguments, run)
