"""distilbert_jax: DistilBERT, DistilRoBERTa, DistilGPT2 and their teachers in JAX/Flax, with exact PyTorch parity.

    import distilbert_jax as dj
    m = dj.from_pretrained("path/to/folder")      # an HF-format folder or a hub name
    out = m(input_ids, attention_mask)            # out.logits, out[0], out["logits"], ...
    m.save_pretrained("out/")                     # loadable by transformers
    dj.FillMask(m)("Paris is the [MASK] of France.")
    dj.train(config); dj.finetune(config)         # distillation; fine-tuning

Importing this package never imports torch, and imports the trainers, the tokenizer library and the
inference helpers only when one of their names is first used (module `__getattr__`), so a script that
loads a model pays for nothing else.
"""

import importlib
import types

from distilbert_jax import finetune as _finetune_package  # its __init__ is a docstring: cheap
from distilbert_jax.config import BertConfig, DistilBertConfig, GPT2Config, RobertaConfig
from distilbert_jax.errors import UserError
from distilbert_jax.models.outputs import ModelOutput
from distilbert_jax.pretrained import PretrainedModel, from_pretrained

# public name -> the module that defines it, imported on first use
_LAZY = {
    "Tokenizer": "distilbert_jax.tokenizer",
    "FillMask": "distilbert_jax.inference.fill_mask",
    "SentenceEmbedder": "distilbert_jax.inference.embeddings",
    "distillation_loss": "distilbert_jax.losses",
    "causal_distillation_loss": "distilbert_jax.losses",
    "generate": "distilbert_jax.inference.generate",
    "Generator": "distilbert_jax.inference.generate",
    "train": "distilbert_jax.distill.trainer",
    "extract_student": "distilbert_jax.distill.extract",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'distilbert_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _CallablePackage(types.ModuleType):
    """`distilbert_jax.finetune` is both the fine-tuning package and its entry point.

    A function named `finetune` in this namespace cannot stay there: the first import of any
    `distilbert_jax.finetune.*` module makes Python set the package attribute to the subpackage. So
    the subpackage itself is callable: `dj.finetune(config)` runs `finetune.runner.finetune`, and
    `import distilbert_jax.finetune.glue` keeps working.
    """

    def __call__(self, config, **kwargs):
        from distilbert_jax.finetune.runner import finetune

        return finetune(config, **kwargs)


_finetune_package.__class__ = _CallablePackage
finetune = _finetune_package

__all__ = ["BertConfig", "DistilBertConfig", "FillMask", "GPT2Config", "Generator", "ModelOutput", "PretrainedModel",
           "RobertaConfig", "SentenceEmbedder", "Tokenizer", "UserError", "causal_distillation_loss",
           "distillation_loss", "extract_student", "finetune", "from_pretrained", "generate", "train"]
__version__ = "0.1.0"
