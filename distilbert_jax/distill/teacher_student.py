"""The two models of a run: the teacher as loaded, the student as configured, and their checks.

The student is a folder, or extracted from the teacher (RECIPE.md, "Student initialisation"), or
the extracted architecture with fresh weights (the paper's "random init" ablation). Everything
that must agree between teacher, student and data (vocabulary size, tokenizer, MLM head) is
checked here, before anything is compiled, with a message that says what to change.
"""

from __future__ import annotations

import logging
import os

from distilbert_jax.config import BertConfig, GPT2Config, RobertaConfig, config_from_dict, read_config_json
from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.errors import UserError
from distilbert_jax.hub import resolve
from distilbert_jax.models.registry import language_model_task
from distilbert_jax.pretrained import PretrainedModel, from_pretrained

log = logging.getLogger("distilbert_jax")


def load_language_model(path: str, role: str, *, lazy: bool = True) -> PretrainedModel:
    """A folder as its family's language model (masked LM, or causal LM for GPT-2), whatever head
    its config.json names; a file without that head's weights is refused."""
    config = config_from_dict(read_config_json(os.path.join(resolve(path), "config.json")))
    task = language_model_task(config)
    # Loading warns about heads it had to initialise; here a missing LM head is an error of its
    # own (below), so the warning would only print a confusing line before it.
    previous = log.level
    log.setLevel(logging.ERROR)
    try:
        model = from_pretrained(path, task=task, lazy=lazy)  # lazy: each host reads its own slices when placed
    finally:
        log.setLevel(previous)
    if model.load_report.missing:
        raise UserError(
            f"{role} {path} has no {task} head (missing {', '.join(model.load_report.missing[:3])}); "
            f"give a {model.architecture.name} checkpoint as the {role}"
        )
    return model


def load_teacher(config: DistillConfig) -> PretrainedModel | None:
    if config.objective == "mlm":
        return None
    teacher = load_language_model(config.teacher, "teacher")
    if not isinstance(teacher.config, (BertConfig, RobertaConfig, GPT2Config)) and config.student is None:
        raise UserError(f"teacher {config.teacher} is a {teacher.architecture.name}; extracting a student "
                        "needs a BERT, RoBERTa or GPT-2 teacher (or give --set student=FOLDER)")
    return teacher


def make_student(config: DistillConfig, teacher: PretrainedModel | None) -> PretrainedModel:
    if config.student is not None:
        return load_language_model(config.student, "student")
    if teacher is None:
        raise UserError("objective 'mlm' trains an existing model: give --set student=FOLDER")
    from distilbert_jax.distill.extract import extract_student

    student = extract_student(teacher, config.student_layers)
    if config.student_init == "random":
        student = PretrainedModel.from_config(student.config, student.architecture.task, seed=config.seed,
                                              tokenizer=student.tokenizer, lazy=True)  # made split when placed
    return student


def check_compatible(teacher: PretrainedModel | None, student: PretrainedModel, dataset) -> None:
    """Same vocabulary everywhere: ids from the data must mean the same token to both models."""
    for role, model in (("teacher", teacher), ("student", student)):
        if model is None:
            continue
        if model.config.vocab_size != dataset.vocab_size:
            raise UserError(
                f"the {role} has a vocabulary of {model.config.vocab_size} tokens but the data in "
                f"{dataset.directory} was prepared with {dataset.vocab_size}; prepare the data with the "
                f"{role}'s tokenizer"
            )
        if model.config.max_positions < dataset.max_length:
            raise UserError(f"the data has sequences of {dataset.max_length} tokens but the {role} takes at most "
                            f"{model.config.max_positions}; prepare it with --max-length "
                            f"{model.config.max_positions}")
    if teacher is not None and teacher.tokenizer is not None and student.tokenizer is not None:
        if teacher.tokenizer.get_vocab() != student.tokenizer.get_vocab():
            raise UserError("teacher and student tokenizers have different vocabularies; a student must share "
                            "its teacher's vocabulary")
    if student.tokenizer is not None:
        data_vocab = _dataset_vocab(dataset)
        if data_vocab is not None and data_vocab != student.tokenizer.get_vocab():
            raise UserError(f"the data in {dataset.directory} was tokenized with another vocabulary than the "
                            "student's; prepare it again with the model's tokenizer")


def _dataset_vocab(dataset) -> dict | None:
    try:
        from distilbert_jax.tokenizer import Tokenizer

        return Tokenizer.from_pretrained(dataset.directory).get_vocab()
    except UserError:
        return None
