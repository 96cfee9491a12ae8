"""A student initialised from its teacher's layers (RECIPE.md, "Student initialisation").

BERT teachers give a DistilBERT student; RoBERTa and GPT-2 teachers give a shallower model of
their own family (DistilRoBERTa is a 6-layer RoBERTa, DistilGPT2 a 6-layer GPT-2), as the
reference code's extraction does: every parameter outside the layer stack is copied as is, and
teacher layer `layers[i]` becomes student layer i (`extract_same_family`).

The paper's ablation puts a randomly initialised student 3.7 GLUE points behind one that starts
from every other teacher layer, so this copy is part of the recipe, not a convenience. It works
on the Flax parameter trees directly: `MAPPING` below is the whole correspondence, one row per
module, and every parameter under a teacher module is copied to the same leaf name under the
student module. Nothing is converted or transposed: both families store Dense kernels as
[in, out], LayerNorms as scale/bias and embeddings as tables.

    teacher = distilbert_jax.from_pretrained("bert-base-uncased", task="masked-lm")
    student = extract_student(teacher)              # layers (0, 2, 4, 7, 9, 11) -> 0..5
    student.save_pretrained("student/")
"""

from __future__ import annotations

import operator
from typing import Iterable, Sequence

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from distilbert_jax.config import BertConfig, DistilBertConfig, GPT2Config, RobertaConfig
from distilbert_jax.errors import UserError
from distilbert_jax.models.registry import ARCHITECTURES
from distilbert_jax.pretrained import PretrainedModel
from distilbert_jax.weights import keymap
from distilbert_jax.weights.lazy import FileTensor

DEFAULT_LAYERS = (0, 2, 4, 7, 9, 11)

# (part, student module, teacher module). "{s}" is the student layer, "{t}" the teacher layer it
# comes from. Parts: "embeddings" and "layer" always; "bias" the MLM output bias; "decoder" only
# when the teacher's decoder is not tied to the word embeddings (tied, the word embeddings carry
# it); "transform" unless copy_mlm_transform=False. BERT's token_type_embeddings and pooler have
# no DistilBERT counterpart and are left behind.
MAPPING: tuple[tuple[str, str, str], ...] = (
    ("embeddings", "distilbert/embeddings/word_embeddings", "bert/embeddings/word_embeddings"),
    ("embeddings", "distilbert/embeddings/position_embeddings", "bert/embeddings/position_embeddings"),
    ("embeddings", "distilbert/embeddings/LayerNorm", "bert/embeddings/LayerNorm"),
    ("layer", "distilbert/transformer/layer/{s}/attention/q_lin", "bert/encoder/layer/{t}/attention/self/query"),
    ("layer", "distilbert/transformer/layer/{s}/attention/k_lin", "bert/encoder/layer/{t}/attention/self/key"),
    ("layer", "distilbert/transformer/layer/{s}/attention/v_lin", "bert/encoder/layer/{t}/attention/self/value"),
    ("layer", "distilbert/transformer/layer/{s}/attention/out_lin", "bert/encoder/layer/{t}/attention/output/dense"),
    ("layer", "distilbert/transformer/layer/{s}/sa_layer_norm", "bert/encoder/layer/{t}/attention/output/LayerNorm"),
    ("layer", "distilbert/transformer/layer/{s}/ffn/lin1", "bert/encoder/layer/{t}/intermediate/dense"),
    ("layer", "distilbert/transformer/layer/{s}/ffn/lin2", "bert/encoder/layer/{t}/output/dense"),
    ("layer", "distilbert/transformer/layer/{s}/output_layer_norm", "bert/encoder/layer/{t}/output/LayerNorm"),
    ("bias", "vocab_projector/bias", "cls/predictions/bias"),
    ("decoder", "vocab_projector/kernel", "cls/predictions/decoder/kernel"),
    ("transform", "vocab_transform", "cls/predictions/transform/dense"),
    ("transform", "vocab_layer_norm", "cls/predictions/transform/LayerNorm"),
)
FRESH_TRANSFORM = ("vocab_transform", "vocab_layer_norm")  # initialised when the transform is not copied


def student_config(teacher: BertConfig, n_layers: int) -> DistilBertConfig:
    """The DistilBERT config that holds a teacher's layers: same widths, vocabulary and dropouts.

    `layer_norm_eps` is carried over so the student computes what the teacher's LayerNorms were
    trained with (transformers' DistilBERT hard-codes 1e-12, which every BERT release uses).
    """
    return DistilBertConfig(
        vocab_size=teacher.vocab_size, dim=teacher.hidden_size, n_heads=teacher.num_attention_heads,
        hidden_dim=teacher.intermediate_size, n_layers=n_layers,
        max_position_embeddings=teacher.max_position_embeddings, activation=teacher.hidden_act,
        dropout=teacher.hidden_dropout_prob, attention_dropout=teacher.attention_probs_dropout_prob,
        pad_token_id=teacher.pad_token_id, initializer_range=teacher.initializer_range,
        tie_word_embeddings=teacher.tie_word_embeddings, layer_norm_eps=teacher.layer_norm_eps,
        sinusoidal_pos_embds=False, architectures=("DistilBertForMaskedLM",),
    )


def check_layers(layers: Iterable[int], teacher_layers: int) -> tuple[int, ...]:
    """Teacher layer indices, strictly increasing, within range, at least one.

    Unsorted and repeated indices are refused: a student whose layers run out of the teacher's
    order (or twice through one layer) computes something the teacher never did, so its copied
    weights are no better a start than random ones; such a list is far more likely a typo.
    """
    try:
        layers = tuple(operator.index(i) for i in layers)
    except TypeError:
        raise UserError(f"layers must be whole numbers, got {layers!r}") from None
    if not layers:
        raise UserError("no teacher layers given; pass at least one, e.g. 0,2,4,7,9,11")
    bad = [i for i in layers if not 0 <= i < teacher_layers]
    if bad:
        what = f"layer {bad[0]} does" if len(bad) == 1 else f"layers {', '.join(map(str, bad))} do"
        raise UserError(f"teacher {what} not exist: the teacher has {teacher_layers} layers, "
                        f"numbered 0..{teacher_layers - 1}")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise UserError(f"teacher layers {','.join(map(str, layers))} must be strictly increasing (no repeats), "
                        "e.g. 0,2,4,7,9,11")
    return layers


def copy_plan(teacher: BertConfig, layers: Sequence[int] = DEFAULT_LAYERS, *,
              copy_mlm_transform: bool = True) -> list[tuple[str, str]]:
    """(student module, teacher module) pairs, `MAPPING` expanded for these layers and options."""
    parts = {"embeddings", "layer", "bias"}
    if not teacher.tie_word_embeddings:
        parts.add("decoder")
    if copy_mlm_transform:
        parts.add("transform")
    plan = []
    for part, student, source in MAPPING:
        if part not in parts:
            continue
        if part == "layer":
            plan += [(student.format(s=s), source.format(t=t)) for s, t in enumerate(layers)]
        else:
            plan.append((student, source))
    return sorted(plan, key=lambda row: _layer_order(row[0]))


def _layer_order(path: str) -> tuple:
    """Embeddings, then layers 0..n in order (not "10" before "2"), then the head."""
    parts = path.split("/")
    if "layer" in parts:
        return (1, int(parts[parts.index("layer") + 1]))
    return (0,) if parts[0] == "distilbert" else (2,)


def extract_student(teacher: PretrainedModel, layers: Sequence[int] = DEFAULT_LAYERS, *,
                    copy_mlm_transform: bool = True, seed: int = 0) -> PretrainedModel:
    """A DistilBertForMaskedLM whose weights are copies of the teacher's (see `MAPPING`).

    `teacher` is a BertForMaskedLM (`from_pretrained(path, task="masked-lm")`) whose file had
    the MLM head: a head that loading had to initialise would give the student a random output
    bias and transform, so it is refused. Teacher layer `layers[i]` becomes student layer i.
    With `copy_mlm_transform=False` the vocab transform and its LayerNorm start fresh
    (N(0, initializer_range) weights from `seed`, zero biases, unit scales) and are listed in
    the student's `load_report.missing`. The student keeps the teacher's tokenizer and dtype.
    """
    if isinstance(teacher.config, (RobertaConfig, GPT2Config)):
        return extract_same_family(teacher, layers)
    config = _check_teacher(teacher, copy_mlm_transform)
    layers = check_layers(layers, config.num_hidden_layers)
    plan = copy_plan(config, layers, copy_mlm_transform=copy_mlm_transform)
    # Copies, not references: a training step that donates the student's buffers must not free the
    # teacher's weights with them. A lazily loaded teacher's tensors are read-only views of its
    # file, so the student shares them and each host later reads its own slices (training.mesh.place).
    source = flatten_dict(_plain(teacher.params), sep="/")
    params: dict[str, np.ndarray | FileTensor] = {}
    for student_path, teacher_path in plan:
        found = {k: v for k, v in source.items() if k == teacher_path or k.startswith(teacher_path + "/")}
        if not found:
            raise UserError(f"the teacher has no parameter {teacher_path}; is it a BERT checkpoint?")
        for key, value in found.items():
            params[student_path + key[len(teacher_path):]] = (
                value if isinstance(value, FileTensor) else np.array(value, copy=True))

    arch = ARCHITECTURES["DistilBertForMaskedLM"]
    student_cfg = student_config(config, len(layers))
    module = arch.build(student_cfg)
    expected = flatten_dict(_plain(arch.abstract_params(module)), sep="/")
    fresh = [] if copy_mlm_transform else _fresh_transform(expected, student_cfg.initializer_range, seed)
    params.update(fresh)
    _check_complete(params, expected)
    report = keymap.LoadReport(missing=[keymap.pt_key(tuple(k.split("/"))) for k in sorted(dict(fresh))])
    tree = unflatten_dict(params, sep="/")
    if not teacher.lazy:
        tree = jax.device_put(tree)
    return PretrainedModel(student_cfg, arch, tree, dtype=teacher.dtype, tokenizer=teacher.tokenizer,
                           load_report=report)


# Where each family keeps its layer stack, and its config's layer-count field.
_STACKS = {RobertaConfig: ("roberta/encoder/layer/", "num_hidden_layers"), GPT2Config: ("transformer/h/", "n_layer")}
_LM_ARCHITECTURES = {RobertaConfig: "RobertaForMaskedLM", GPT2Config: "GPT2LMHeadModel"}


def extract_same_family(teacher: PretrainedModel, layers: Sequence[int] = DEFAULT_LAYERS) -> PretrainedModel:
    """A RoBERTa (or GPT-2) language model with `len(layers)` of the teacher's layers and every
    other parameter (embeddings, LM head, final LayerNorm) copied; the config differs only in depth.
    The reference extracts DistilGPT2 from the same layers as DistilRoBERTa, (0, 2, 4, 7, 9, 11)."""
    family = type(teacher.config)
    name = _LM_ARCHITECTURES[family]
    if teacher.architecture.name != name:
        raise UserError(f"the teacher was loaded as {teacher.architecture.name}; load it as {name} "
                        f"(from_pretrained(path, task={ARCHITECTURES[name].task!r})) so its LM head is read")
    if teacher.load_report.missing:
        raise UserError(f"the teacher checkpoint has no trained LM head ({', '.join(teacher.load_report.missing[:3])} "
                        f"were initialised at random when loading); give a {name} checkpoint")
    stack, depth_field = _STACKS[family]
    layers = check_layers(layers, getattr(teacher.config, depth_field))
    student_index = {str(t): str(s) for s, t in enumerate(layers)}
    params: dict[str, np.ndarray | FileTensor] = {}
    for key, value in flatten_dict(_plain(teacher.params), sep="/").items():
        if key.startswith(stack):
            layer, rest = key[len(stack):].split("/", 1)
            if layer not in student_index:
                continue
            key = f"{stack}{student_index[layer]}/{rest}"
        params[key] = value if isinstance(value, FileTensor) else np.array(value, copy=True)
    arch = ARCHITECTURES[name]
    student_cfg = teacher.config.replace(**{depth_field: len(layers)}, architectures=(name,))
    _check_complete(params, flatten_dict(_plain(arch.abstract_params(arch.build(student_cfg))), sep="/"))
    tree = unflatten_dict(params, sep="/")
    if not teacher.lazy:
        tree = jax.device_put(tree)
    return PretrainedModel(student_cfg, arch, tree, dtype=teacher.dtype, tokenizer=teacher.tokenizer)


def _check_teacher(teacher: PretrainedModel, copy_mlm_transform: bool) -> BertConfig:
    config = teacher.config
    if not isinstance(config, BertConfig):
        raise UserError(f"the teacher is a {teacher.architecture.name}; students are extracted from BERT, RoBERTa "
                        "or GPT-2 language-model teachers (e.g. bert-base-uncased, roberta-base, gpt2)")
    if teacher.architecture.name != "BertForMaskedLM":
        raise UserError(f"the teacher was loaded as {teacher.architecture.name}; load it with "
                        "from_pretrained(path, task='masked-lm') so its MLM head is read")
    needed = ["cls.predictions.bias"]
    if not config.tie_word_embeddings:
        needed.append("cls.predictions.decoder.")
    if copy_mlm_transform:
        needed.append("cls.predictions.transform.")
    lacking = [k for k in teacher.load_report.missing if any(k.startswith(n) for n in needed)]
    if lacking:
        raise UserError(f"the teacher checkpoint has no trained MLM head ({', '.join(lacking[:3])} were "
                        "initialised at random when loading); give a BertForMaskedLM checkpoint "
                        "(e.g. bert-base-uncased), not a bare BertModel")
    return config


def _fresh_transform(expected: dict, std: float, seed: int) -> list[tuple[str, np.ndarray]]:
    """The recipe's initialisation for the head modules that are not copied."""
    out = []
    keys = iter(jax.random.split(jax.random.key(seed), 8))
    for path, spec in sorted(expected.items()):
        if path.split("/")[0] not in FRESH_TRANSFORM:
            continue
        leaf = path.split("/")[-1]
        if leaf == "kernel":
            value = std * jax.random.normal(next(keys), spec.shape, spec.dtype)
        elif leaf == "scale":
            value = np.ones(spec.shape, spec.dtype)
        else:
            value = np.zeros(spec.shape, spec.dtype)
        out.append((path, np.asarray(value)))
    return out


def _check_complete(params: dict, expected: dict) -> None:
    """Every student parameter filled exactly once, with its shape: the table cannot drift silently."""
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    wrong = [k for k in expected if k in params and tuple(params[k].shape) != tuple(expected[k].shape)]
    if missing or extra or wrong:
        raise RuntimeError(f"student parameters not covered by MAPPING: missing {missing[:3]}, "
                           f"unexpected {extra[:3]}, wrong shape {wrong[:3]}")


def _plain(tree):
    if hasattr(tree, "items"):
        return {k: _plain(v) for k, v in tree.items()}
    return tree
