"""A model's forward as serialized `jax.export` artifacts that a server runs without this package.

What `export_stablehlo` writes into OUT:

* `forward_{L}.bin`: one artifact per sequence length L (a bucket), each with a symbolic batch
  size `b` (and `c` choices for multiple-choice models), lowered for every requested platform;
  the same file runs on any of them. Arguments: `(weights, input_ids, attention_mask
  [, token_type_ids])`, ids int32 `[b, L]`; the result is a dict of the model's main outputs:
  `logits` (or `start_logits`/`end_logits`) for heads, `last_hidden_state` (and `pooler_output`
  where there is a pooler) for base models.
* `weights.npz`: the parameters, keyed by their "/"-joined path in the Flax tree. They are an
  argument rather than constants baked into each artifact: baked weights would be copied into
  every bucket's file (six copies of a 268 MB DistilBERT at the default buckets), a module with
  constants over 2 GB cannot be serialized at all, and a server can put one copy on the device and
  share it between buckets. npz reads with numpy alone.
* `manifest.json` (architecture, lengths, inputs, outputs and which axis of each is the sequence,
  dtypes, platforms, jax version), the tokenizer files, and `stablehlo_loader.py`
  (`load_stablehlo(folder)`), which needs only jax and numpy.

Attention is lowered in XLA's form (`jax.nn.dot_product_attention(implementation="xla")`): the
chunked CPU form sizes its tiles from the batch, which a symbolic batch does not allow, and cuDNN's
kernel is a CUDA custom call that the CPU lowering of the same artifact could not contain.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from distilbert_jax.data.buckets import buckets_up_to
from distilbert_jax.errors import UserError
from distilbert_jax.inference import stablehlo_loader
from distilbert_jax.inference.stablehlo_loader import load_stablehlo
from distilbert_jax.pretrained import PretrainedModel

__all__ = ["export_stablehlo", "load_stablehlo", "PLATFORMS"]

FORMAT = "distilbert_jax.stablehlo/1"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt")
_HEAD_OUTPUTS = ("logits", "start_logits", "end_logits")
_BASE_OUTPUTS = ("last_hidden_state", "pooler_output")


def input_names(config) -> tuple[str, ...]:
    """Segment ids only where the model has more than one segment embedding (BERT, not DistilBERT,
    RoBERTa's single type, or GPT-2), so a server never feeds an input that changes nothing."""
    extra = ("token_type_ids",) if getattr(config, "type_vocab_size", 1) > 1 else ()
    return ("input_ids", "attention_mask") + extra


def default_platforms() -> tuple[str, ...]:
    """The backend this process runs on, plus CPU so the artifact also runs on any host."""
    backend = jax.default_backend()
    if backend == "gpu":
        backend = "rocm" if "rocm" in str(getattr(jax.devices()[0].client, "platform_version", "")).lower() else "cuda"
    return tuple(dict.fromkeys((backend, "cpu")))


def export_stablehlo(model: PretrainedModel, out: str | os.PathLike, *, lengths: Sequence[int] | None = None,
                     platforms: Sequence[str] | None = None, tokenizer_dir: str | None = None) -> dict:
    """Write OUT (see the module docstring) atomically and return its manifest.

    `lengths` default to the bucket policy up to the model's longest input; `platforms` to
    `default_platforms()`. Tokenizer files are copied from `tokenizer_dir` when given (every
    family's files as they are), else saved from `model.tokenizer`.
    """
    out = os.path.abspath(os.fspath(out))
    check_output_folder(out)
    limit = model.config.max_positions  # RoBERTa's starts after its padding index
    lengths = tuple(sorted(set(int(n) for n in lengths))) if lengths else buckets_up_to(limit)
    if lengths[0] < 1 or lengths[-1] > limit:
        raise UserError(f"lengths must be between 1 and {limit} (the longest input the model's position table "
                        f"allows); got {','.join(map(str, lengths))}")
    platforms = tuple(dict.fromkeys(platforms)) if platforms else default_platforms()
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown:
        raise UserError(f"unknown platform {unknown[0]!r}; use a comma-separated subset of {','.join(PLATFORMS)}")
    try:
        import flatbuffers  # noqa: F401  (jax.export's serializer needs it; jax does not require it)
    except ImportError:
        raise UserError("serializing jax.export artifacts needs the flatbuffers package: pip install flatbuffers") from None

    weights = {"/".join(path): np.asarray(v) for path, v in flatten_dict(jax.device_get(model._ready())).items()}
    weight_specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in weights.items()}
    forward, outputs = _portable_forward(model, weight_specs)
    names = input_names(model.config)
    leading = jax.export.symbolic_shape("b" if model.architecture.dummy_input_ids().ndim == 2 else "b, c")

    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=os.path.dirname(out))
    try:
        artifacts, jitted = {}, jax.jit(forward)
        for length in lengths:
            ids = jax.ShapeDtypeStruct((*leading, length), jnp.int32)
            exported = jax.export.export(jitted, platforms=platforms)(weight_specs, *[ids] * len(names))
            artifacts[str(length)] = f"forward_{length}.bin"
            with open(os.path.join(tmp, artifacts[str(length)]), "wb") as f:
                f.write(exported.serialize())
        np.savez(os.path.join(tmp, "weights.npz"), **weights)
        manifest = {
            "format": FORMAT, "architecture": model.architecture.name, "task": model.architecture.task,
            "model_type": type(model.config).model_type, "lengths": list(lengths), "artifacts": artifacts,
            "weights": "weights.npz", "inputs": list(names), "input_dtype": "int32",
            "input_shape": [str(d) for d in leading] + ["length"], "outputs": outputs,
            "pad_token_id": model.config.pad_token_id or 0, "dtype": jnp.dtype(model.dtype).name,
            "platforms": list(platforms), "jax_version": jax.__version__,
            "calling_convention_version": exported.calling_convention_version,
        }
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
        _write_tokenizer(model, tokenizer_dir, tmp)
        shutil.copy(stablehlo_loader.__file__, os.path.join(tmp, "stablehlo_loader.py"))
        os.chmod(tmp, 0o755)
        if os.path.isdir(out):
            os.rmdir(out)  # empty (checked above)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def check_output_folder(out: str) -> None:
    if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)):
        raise UserError(f"{out} already exists and is not an empty folder; choose a new output folder")
    if not os.path.isdir(os.path.dirname(out)):
        raise UserError(f"the parent folder of {out} does not exist; create it first")


def _portable_forward(model: PretrainedModel, weight_specs: dict):
    """(forward(weights, *inputs) -> {name: array}, {name: {"length_axis", "dtype"}}) for this model."""
    module = model.architecture.build(model.config, dtype=model.dtype, **{**model.module_kwargs, "attention": "xla"})
    names = input_names(model.config)

    def apply(weights, *inputs):
        given = dict(zip(names, inputs))
        params = unflatten_dict({tuple(k.split("/")): v for k, v in weights.items()})
        return module.apply({"params": params}, given["input_ids"], given["attention_mask"],
                            given.get("token_type_ids"), None, True, False, False)

    def shapes(length: int):
        dummy = model.architecture.dummy_input_ids()
        ids = jax.ShapeDtypeStruct((*dummy.shape[:-1], length), jnp.int32)
        return jax.eval_shape(apply, weight_specs, *[ids] * len(names))

    # The sequence axis of each output is the one whose size follows the input length.
    short, long = shapes(2), shapes(3)
    kept = [k for k in _HEAD_OUTPUTS if getattr(short, k, None) is not None] or \
           [k for k in _BASE_OUTPUTS if getattr(short, k, None) is not None]
    outputs = {}
    for k in kept:
        a, b = getattr(short, k).shape, getattr(long, k).shape
        moved = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        outputs[k] = {"length_axis": moved[0] if moved else None, "dtype": jnp.dtype(getattr(short, k).dtype).name}

    def forward(weights, *inputs):
        result = apply(weights, *inputs)
        return {k: getattr(result, k) for k in kept}

    return forward, outputs


def _write_tokenizer(model: PretrainedModel, tokenizer_dir: str | None, folder: str) -> None:
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if os.path.isfile(os.path.join(tokenizer_dir, name)):
                shutil.copy(os.path.join(tokenizer_dir, name), folder)
    elif model.tokenizer is not None:
        model.tokenizer.save_pretrained(folder)
