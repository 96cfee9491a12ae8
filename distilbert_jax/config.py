"""Model configurations that read and write transformers' `config.json`.

Configs are frozen dataclasses so they can sit on Flax modules and be hashed into jit caches.
Every field transformers writes for these models has a typed attribute; anything else in a
file (fields of newer transformers versions, user additions) is kept verbatim in `extra` and
written back, so a load/save round trip never loses information.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, ClassVar

from distilbert_jax.errors import UserError

_LABEL_FIELDS = ("id2label", "label2id")


@dataclasses.dataclass(frozen=True)
class _EncoderConfig:
    """Fields shared by every encoder config, and the JSON round trip."""

    model_type: ClassVar[str] = ""

    vocab_size: int = 30522
    max_position_embeddings: int = 512
    pad_token_id: int = 0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    tie_word_embeddings: bool = True
    id2label: dict[int, str] = dataclasses.field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    problem_type: str | None = None  # "regression", "single_label_classification", ...
    architectures: tuple[str, ...] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __hash__(self) -> int:  # dict fields: hash the canonical JSON instead
        return hash((type(self).__name__, self.to_json_string()))

    # --- derived -------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def max_positions(self) -> int:
        """The longest input the position table allows (RoBERTa's is shorter than its table)."""
        return self.max_position_embeddings

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in self.id2label.items()}

    def replace(self, **changes: Any) -> "_EncoderConfig":
        """A copy with fields changed; `num_labels=n` is accepted and expands to `id2label`."""
        if "num_labels" in changes:
            n = int(changes.pop("num_labels"))
            if "id2label" not in changes:
                changes["id2label"] = {i: self.id2label.get(i, f"LABEL_{i}") for i in range(n)}
        if "id2label" in changes:
            changes["id2label"] = {int(k): str(v) for k, v in dict(changes["id2label"]).items()}
        return dataclasses.replace(self, **changes)

    # --- JSON ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "_EncoderConfig":
        data = dict(data)
        model_type = data.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise UserError(
                f"config has model_type {model_type!r} but {cls.__name__} reads {cls.model_type!r} "
                "configs; load it with distilbert_jax.from_pretrained, which picks the class"
            )
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        num_labels = data.pop("num_labels", None)
        data.pop("label2id", None)  # derived from id2label
        for key, value in data.items():
            key = cls._aliases.get(key, key)
            if key in names:
                kwargs[key] = value
                if key in cls._implicit:
                    extra[key] = value  # remember it was written, so that saving writes it again
            elif key != "model_type":
                extra[key] = value
        if "id2label" in kwargs:
            kwargs["id2label"] = {int(k): str(v) for k, v in kwargs["id2label"].items()}
        elif num_labels is not None:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(int(num_labels))}
        if kwargs.get("architectures") is not None:
            kwargs["architectures"] = tuple(kwargs["architectures"])
        try:
            return cls(**kwargs, extra=extra)
        except TypeError as err:  # pragma: no cover - all fields have defaults
            raise UserError(f"config.json does not describe a {cls.__name__}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name == "id2label":
                out["id2label"] = {str(k): v for k, v in value.items()}
                out["label2id"] = self.label2id
            elif f.name == "architectures":
                if value is not None:
                    out["architectures"] = list(value)
            elif f.name in self._implicit and value == self._implicit[f.name] and f.name not in self.extra:
                continue  # not a field of this family in transformers: written only if changed
            else:
                out[self._file_names.get(f.name, f.name)] = value
        out["model_type"] = self.model_type
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "_EncoderConfig":
        return cls.from_dict(read_config_json(path))

    def save(self, directory: str | os.PathLike) -> None:
        with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    _aliases: ClassVar[dict[str, str]] = {}  # a name in config.json -> the field it sets
    _file_names: ClassVar[dict[str, str]] = {}  # a field -> the name this family writes it under
    _implicit: ClassVar[dict[str, Any]] = {}


@dataclasses.dataclass(frozen=True)
class DistilBertConfig(_EncoderConfig):
    """distilbert-base-uncased by default (RECIPE.md, Architecture)."""

    model_type: ClassVar[str] = "distilbert"
    _aliases: ClassVar[dict[str, str]] = {"tie_weights_": "tie_word_embeddings"}
    _implicit: ClassVar[dict[str, Any]] = {"layer_norm_eps": 1e-12}  # hard-coded in PyTorch DistilBERT

    sinusoidal_pos_embds: bool = False
    n_layers: int = 6
    n_heads: int = 12
    dim: int = 768
    hidden_dim: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    qa_dropout: float = 0.1
    seq_classif_dropout: float = 0.2

    __hash__ = _EncoderConfig.__hash__  # dataclass would otherwise hash the dict fields

    # The names the shared code uses, whatever each family calls them.
    hidden_size = property(lambda self: self.dim)
    num_layers = property(lambda self: self.n_layers)
    num_heads = property(lambda self: self.n_heads)


@dataclasses.dataclass(frozen=True)
class _BertShapedConfig(_EncoderConfig):
    """The fields of BERT's encoder, shared by BERT and RoBERTa (which are not each other's kind:
    `isinstance(config, BertConfig)` stays False for a RoBERTa config)."""

    _implicit: ClassVar[dict[str, Any]] = {"position_embedding_type": "absolute"}

    hidden_size: int = 768  # type: ignore[assignment]
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    type_vocab_size: int = 2
    position_embedding_type: str = "absolute"  # transformers 5 no longer writes it
    classifier_dropout: float | None = None

    __hash__ = _EncoderConfig.__hash__

    num_layers = property(lambda self: self.num_hidden_layers)
    num_heads = property(lambda self: self.num_attention_heads)

    def __post_init__(self) -> None:
        if self.position_embedding_type != "absolute":
            raise UserError(
                f"position_embedding_type {self.position_embedding_type!r} is not supported; "
                "only 'absolute' BERT checkpoints can be loaded"
            )


@dataclasses.dataclass(frozen=True)
class BertConfig(_BertShapedConfig):
    """bert-base-uncased by default: the distillation teacher."""

    model_type: ClassVar[str] = "bert"

    __hash__ = _EncoderConfig.__hash__


@dataclasses.dataclass(frozen=True)
class RobertaConfig(_BertShapedConfig):
    """BERT with RoBERTa's embeddings: positions count from `pad_token_id + 1` and skip padding.

    The defaults are transformers' RobertaConfig defaults (not roberta-base's file, which sets
    vocab 50265, 514 positions, one token type and eps 1e-5), because transformers reads a field
    a file omits as its class default, and so must we.
    """

    model_type: ClassVar[str] = "roberta"

    vocab_size: int = 50265
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2

    __hash__ = _EncoderConfig.__hash__

    @property
    def max_positions(self) -> int:
        """The longest input: position ids run from pad_token_id + 1 to pad_token_id + length."""
        return self.max_position_embeddings - self.pad_token_id - 1


@dataclasses.dataclass(frozen=True)
class GPT2Config(_EncoderConfig):
    """gpt2 (124M) by default: a decoder with pre-LayerNorm blocks, learned positions, tied head.

    Fields keep transformers' GPT-2 names in the file (`n_positions`, `layer_norm_epsilon`); the
    shared code reads them as `max_position_embeddings` and `layer_norm_eps` like every family.
    """

    model_type: ClassVar[str] = "gpt2"
    _aliases: ClassVar[dict[str, str]] = {"n_positions": "max_position_embeddings",
                                          "layer_norm_epsilon": "layer_norm_eps"}
    _file_names: ClassVar[dict[str, str]] = {"max_position_embeddings": "n_positions",
                                             "layer_norm_eps": "layer_norm_epsilon"}

    vocab_size: int = 50257
    max_position_embeddings: int = 1024
    pad_token_id: int | None = None  # type: ignore[assignment]  # GPT-2 has no padding token
    layer_norm_eps: float = 1e-5
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # 4 * n_embd
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False  # a PyTorch fp16 overflow guard; scores here are float32 anyway
    bos_token_id: int = 50256
    eos_token_id: int = 50256

    __hash__ = _EncoderConfig.__hash__

    hidden_size = property(lambda self: self.n_embd)
    num_layers = property(lambda self: self.n_layer)
    num_heads = property(lambda self: self.n_head)
    intermediate_size = property(lambda self: self.n_inner or 4 * self.n_embd)


CONFIG_CLASSES: dict[str, type[_EncoderConfig]] = {
    c.model_type: c for c in (DistilBertConfig, BertConfig, RobertaConfig, GPT2Config)
}

AnyConfig = DistilBertConfig | BertConfig | RobertaConfig | GPT2Config


def read_config_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a config.json with an error that names the file instead of a JSON traceback."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} not found: a model folder needs its config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); re-download or re-save the model") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def config_from_dict(data: dict[str, Any]) -> AnyConfig:
    """Pick the config class from `model_type` (or guess it from the field names)."""
    model_type = data.get("model_type")
    if model_type is None:
        model_type = "distilbert" if "n_layers" in data or "dim" in data else "bert"
    cls = CONFIG_CLASSES.get(model_type)
    if cls is None:
        raise UserError(
            f"model_type {model_type!r} is not supported; supported: {sorted(CONFIG_CLASSES)}"
        )
    return cls.from_dict({**data, "model_type": model_type})  # type: ignore[return-value]
