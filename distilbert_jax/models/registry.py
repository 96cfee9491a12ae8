"""Which module class serves which transformers architecture name, and which task name.

`config.json`'s `architectures` picks the class; `task=` overrides it (a classifier on top of a
masked-LM checkpoint, an encoder out of a classifier). This table is the only place that knows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from distilbert_jax import sharding
from distilbert_jax.config import AnyConfig, BertConfig, DistilBertConfig, GPT2Config, RobertaConfig
from distilbert_jax.errors import UserError
from distilbert_jax.models import bert, distilbert, gpt2, roberta

TASKS = ("base", "masked-lm", "causal-lm", "sequence-classification", "token-classification", "question-answering",
         "multiple-choice")
_TASK_ALIASES = {
    None: None, "base": "base", "encoder": "base", "feature-extraction": "base", "embeddings": "base",
    "masked-lm": "masked-lm", "mlm": "masked-lm", "fill-mask": "masked-lm",
    "causal-lm": "causal-lm", "clm": "causal-lm", "text-generation": "causal-lm", "lm": "causal-lm",
    "sequence-classification": "sequence-classification", "text-classification": "sequence-classification",
    "classification": "sequence-classification", "regression": "sequence-classification",
    "token-classification": "token-classification", "ner": "token-classification",
    "question-answering": "question-answering", "qa": "question-answering",
    "multiple-choice": "multiple-choice",
}


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str  # as in config.json "architectures"
    task: str
    module_cls: type
    prefix: str | None  # where the encoder sits in this module's parameter tree

    @property
    def family(self) -> str:
        """The class-name prefix of this architecture's family ("DistilBert", "Roberta", ...)."""
        return next(f for f in _FAMILY.values() if self.name.startswith(f))

    @property
    def family_prefix(self) -> str:
        """Where a head model of this family keeps its base model (the key prefix in files)."""
        return _BASE_PREFIX[self.family]

    def build(self, config: AnyConfig, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, **kwargs):
        return self.module_cls(config, dtype=dtype, param_dtype=param_dtype, **kwargs)

    def dummy_input_ids(self):
        return jnp.zeros((1, 1, 2) if self.task == "multiple-choice" else (1, 2), jnp.int32)

    def init_params(self, module, key) -> dict:
        """Fresh parameters as plain arrays (the logical axes they were declared with dropped)."""
        return sharding.unbox(module.init(key, self.dummy_input_ids())["params"])

    def abstract_params(self, module) -> dict:
        """The parameter tree as ShapeDtypeStructs, from shapes alone."""
        return jax.eval_shape(lambda: self.init_params(module, jax.random.key(0)))

    def param_axes(self, module) -> dict[tuple[str, ...], tuple[str | None, ...]]:
        """{parameter path: logical axes}, as the module declares them (see sharding.py)."""
        return sharding.declared_axes(module, self.dummy_input_ids())


def _arch(name, task, module_cls, prefix):
    return Architecture(name, task, module_cls, prefix)


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    _arch("DistilBertModel", "base", distilbert.DistilBertModule, None),
    _arch("DistilBertForMaskedLM", "masked-lm", distilbert.DistilBertForMaskedLMModule, "distilbert"),
    _arch("DistilBertForSequenceClassification", "sequence-classification",
          distilbert.DistilBertForSequenceClassificationModule, "distilbert"),
    _arch("DistilBertForTokenClassification", "token-classification",
          distilbert.DistilBertForTokenClassificationModule, "distilbert"),
    _arch("DistilBertForQuestionAnswering", "question-answering",
          distilbert.DistilBertForQuestionAnsweringModule, "distilbert"),
    _arch("DistilBertForMultipleChoice", "multiple-choice", distilbert.DistilBertForMultipleChoiceModule,
          "distilbert"),
    _arch("BertModel", "base", bert.BertModule, None),
    _arch("BertForMaskedLM", "masked-lm", bert.BertForMaskedLMModule, "bert"),
    _arch("BertForSequenceClassification", "sequence-classification", bert.BertForSequenceClassificationModule,
          "bert"),
    _arch("BertForTokenClassification", "token-classification", bert.BertForTokenClassificationModule, "bert"),
    _arch("BertForQuestionAnswering", "question-answering", bert.BertForQuestionAnsweringModule, "bert"),
    _arch("BertForMultipleChoice", "multiple-choice", bert.BertForMultipleChoiceModule, "bert"),
    _arch("RobertaModel", "base", roberta.RobertaModule, None),
    _arch("RobertaForMaskedLM", "masked-lm", roberta.RobertaForMaskedLMModule, "roberta"),
    _arch("RobertaForSequenceClassification", "sequence-classification",
          roberta.RobertaForSequenceClassificationModule, "roberta"),
    _arch("RobertaForTokenClassification", "token-classification", roberta.RobertaForTokenClassificationModule,
          "roberta"),
    _arch("RobertaForQuestionAnswering", "question-answering", roberta.RobertaForQuestionAnsweringModule,
          "roberta"),
    _arch("RobertaForMultipleChoice", "multiple-choice", roberta.RobertaForMultipleChoiceModule, "roberta"),
    _arch("GPT2Model", "base", gpt2.GPT2Module, None),
    _arch("GPT2LMHeadModel", "causal-lm", gpt2.GPT2LMHeadModule, "transformer"),
)}

# Config class -> family (the order `Architecture.family` tries class-name prefixes in).
_FAMILY = {DistilBertConfig: "DistilBert", RobertaConfig: "Roberta", GPT2Config: "GPT2", BertConfig: "Bert"}
_BASE_PREFIX = {"DistilBert": "distilbert", "Roberta": "roberta", "GPT2": "transformer", "Bert": "bert"}
_TASK_SUFFIX = {"base": "Model", "masked-lm": "ForMaskedLM", "sequence-classification": "ForSequenceClassification",
                "token-classification": "ForTokenClassification", "question-answering": "ForQuestionAnswering",
                "multiple-choice": "ForMultipleChoice", "causal-lm": "ForCausalLM"}
_NAMES = {("GPT2", "causal-lm"): "GPT2LMHeadModel"}  # names that do not follow family + suffix


def language_model_task(config: AnyConfig) -> str:
    """The pretraining head of a family: "causal-lm" for GPT-2, "masked-lm" for the encoders."""
    return "causal-lm" if isinstance(config, GPT2Config) else "masked-lm"


def normalise_task(task: str | None) -> str | None:
    try:
        return _TASK_ALIASES[task]
    except KeyError:
        raise UserError(f"unknown task {task!r}; use one of {', '.join(TASKS)}") from None


def architecture_for(config: AnyConfig, task: str | None = None) -> Architecture:
    """`task` if given, else the first architecture of config.json that we know, else the bare encoder."""
    family = _FAMILY[type(config)]
    task = normalise_task(task)
    known = ", ".join(a.task for a in ARCHITECTURES.values() if a.family == family)
    if task is not None:
        name = _NAMES.get((family, task), family + _TASK_SUFFIX[task])
        if name not in ARCHITECTURES:
            raise UserError(f"task {task!r} is not available for {family} models; use one of {known}")
        return ARCHITECTURES[name]
    for name in config.architectures or ():
        if name in ARCHITECTURES and ARCHITECTURES[name].family == family:
            return ARCHITECTURES[name]
    if config.architectures:
        known = ", ".join(n for n in ARCHITECTURES if ARCHITECTURES[n].family == family)
        raise UserError(f"architecture {config.architectures[0]} is not supported; pass task= or use one of {known}")
    return ARCHITECTURES[family + "Model"]
