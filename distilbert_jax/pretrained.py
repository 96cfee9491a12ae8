"""`from_pretrained` / `save_pretrained`: an HF-format folder in, a ready-to-call Flax model out.

A `PretrainedModel` is a plain holder of (config, module, params, tokenizer). Its `__call__` is
a jitted `module.apply` with the output flags static, for interactive use and inference;
training code takes `module` and `params` and builds its own step. Trainers load with
`lazy=True`: the parameters stay in the weight file (`FileTensor`s) until `training.mesh.place`
puts them on their shardings, each host reading only its own devices' slices.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distilbert_jax.config import AnyConfig, config_from_dict, read_config_json
from distilbert_jax.errors import UserError
from distilbert_jax.hub import resolve
from distilbert_jax.models.outputs import ModelOutput
from distilbert_jax.models.registry import Architecture, architecture_for
from distilbert_jax.precision import as_dtype
from distilbert_jax.weights import files, keymap
from distilbert_jax.weights.lazy import FileTensor

log = logging.getLogger("distilbert_jax")

class PretrainedModel:
    """What `from_pretrained` returns: `config`, `module`, `params`, `tokenizer`, `architecture`."""

    def __init__(self, config: AnyConfig, architecture: Architecture, params: dict, *, dtype: Any = None,
                 tokenizer=None, load_report: keymap.LoadReport | None = None, mesh: jax.sharding.Mesh | None = None,
                 **module_kwargs: Any):
        self.config = config
        self.mesh = mesh  # set: the parameters are split over it and every call runs on it
        self.architecture = architecture
        self.dtype = as_dtype(dtype)
        self.module = architecture.build(config, dtype=self.dtype, **module_kwargs)
        self.module_kwargs = module_kwargs
        self.params = params
        self.tokenizer = tokenizer
        self.load_report = load_report or keymap.LoadReport()
        self.init_seed: int | None = None  # the seed of a fresh init (`from_config`)
        # Closes over the module and mesh, not over `self`: no cycle, so a dropped model frees its
        # parameters and compiled programs at once (tests/test_api.py).
        self._forward = jax.jit(
            functools.partial(PretrainedModel._apply, self.module, mesh),
            static_argnames=("deterministic", "output_attentions", "output_hidden_states"),
        )

    @classmethod
    def from_config(cls, config: AnyConfig, task: str | None = None, *, seed: int = 0, dtype: Any = None,
                    tokenizer=None, lazy: bool = False) -> "PretrainedModel":
        """Randomly initialised weights, as transformers' `from_config`. `lazy=True` makes none yet:
        the parameters are shapes, and `program.fresh_params` initialises them already split over a
        mesh (calling or saving the model initialises them whole)."""
        arch = architecture_for(config, task)
        module = arch.build(config)
        init = functools.partial(arch.init_params, module)
        params = jax.eval_shape(init, jax.random.key(seed)) if lazy else jax.jit(init)(jax.random.key(seed))
        model = cls(config, arch, params, dtype=dtype, tokenizer=tokenizer)
        model.init_seed = seed
        return model

    @staticmethod
    def _apply(module, mesh, params, input_ids, attention_mask, token_type_ids, head_mask, dropout_rng, *,
               deterministic, output_attentions, output_hidden_states):
        """Traced inside `mesh` when there is one, so the activations are split over its batch axes
        by the models' constraints (sharding.constrain), as in training."""
        rngs = {} if deterministic else {"dropout": dropout_rng}
        args = (input_ids, attention_mask, token_type_ids, head_mask, deterministic, output_attentions,
                output_hidden_states)
        if mesh is None:
            return module.apply({"params": params}, *args, rngs=rngs)
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return module.apply({"params": params}, *args, rngs=rngs)

    @property
    def lazy(self) -> bool:
        """True while some parameters are still in the weight file (`FileTensor`s) or not yet
        initialised (shapes: `from_config(..., lazy=True)`)."""
        return any(isinstance(leaf, (FileTensor, jax.ShapeDtypeStruct)) for leaf in jax.tree.leaves(self.params))

    @property
    def uninitialised(self) -> bool:
        """True for `from_config(..., lazy=True)` until its parameters are made (shapes only)."""
        return any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(self.params))

    def _ready(self) -> Any:
        """The parameters as arrays: reads what a lazy load left in the file, or makes a lazy init (once)."""
        if self.uninitialised:
            self.params = jax.jit(functools.partial(self.architecture.init_params, self.module))(
                jax.random.key(self.init_seed))
        elif self.lazy:
            self.params = jax.device_put(jax.tree.map(np.asarray, self.params))
        return self.params

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *, params=None, head_mask=None,
                 output_hidden_states: bool = False, output_attentions: bool = False, train: bool = False,
                 dropout_rng=None) -> ModelOutput:
        """`params=` runs the model on that tree instead of `self.params`, as the former transformers
        Flax classes did, so a user's jitted or differentiated function can take the parameters as
        its argument: `jax.grad(lambda p: loss(m(ids, params=p).logits))(m.params)`."""
        input_ids = jnp.asarray(input_ids, jnp.int32)
        opt = lambda a: None if a is None else jnp.asarray(a, jnp.int32)
        if train and dropout_rng is None:
            raise UserError("train=True needs dropout_rng=jax.random.key(...)")
        return self._forward(self._ready() if params is None else params, input_ids, opt(attention_mask),
                             opt(token_type_ids),
                             None if head_mask is None else jnp.asarray(head_mask, jnp.float32), dropout_rng,
                             deterministic=not train, output_attentions=output_attentions,
                             output_hidden_states=output_hidden_states)

    @property
    def num_parameters(self) -> int:
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {key: np.ascontiguousarray(value) for key, value in keymap.flax_to_state_dict(self._ready()).items()}

    def save_pretrained(self, directory: str | os.PathLike, *, flax_msgpack: bool = False, dtype: Any = None,
                        max_shard_size: int | str = "50GB") -> None:
        """config.json + model.safetensors with PyTorch key names (+ tokenizer files when known).

        Tied copies (the MLM decoder weight) are left out, as transformers 5 writes them; every
        transformers version re-ties them on load. `dtype` ("bfloat16", jnp.float16, ...) casts the
        floating weights as they are written, and config.json's `dtype` names what was written, as
        transformers records it. Over `max_shard_size` (bytes, "500MB", "2GB") the weights are split
        into shards with an index, named as transformers names them. A lazy load is written tensor
        by tensor from its file, never read whole (what `convert` relies on). `flax_msgpack=True`
        also writes the former transformers Flax format.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        state = keymap.flax_to_state_dict(self._ready() if self.uninitialised else self.params)
        files.write_weights(state, directory, dtype=dtype, max_shard_size=max_shard_size)
        if flax_msgpack:
            cast = np.asarray if dtype is None else (lambda x: np.asarray(x).astype(as_dtype(dtype)))
            files.write_msgpack(jax.tree.map(cast, self._ready()), os.path.join(directory, files.FLAX_MSGPACK))
        extra = {key: value for key, value in self.config.extra.items() if key != "torch_dtype"}  # renamed in 5.x
        config = self.config.replace(architectures=(self.architecture.name,),
                                     extra={**extra, "dtype": files.stored_dtype_name(state, dtype)})
        with files.atomic_path(os.path.join(directory, "config.json")) as tmp, open(tmp, "w") as f:
            f.write(config.to_json_string())
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)


def from_pretrained(path_or_name: str | os.PathLike, task: str | None = None, dtype: Any = None, *,
                    revision: str | None = None, seed: int = 0, config_overrides: dict | None = None,
                    attention: str = "auto", lazy: bool = False, mesh: jax.sharding.Mesh | None = None,
                    param_dtype: Any = None) -> PretrainedModel:
    """Load an HF-format folder (or hub name): config.json + weights (+ tokenizer files).

    The class comes from config.json's `architectures`; `task=` overrides it. Head weights that
    the file lacks (a classifier on a masked-LM checkpoint) are initialised from `seed` and
    listed in `model.load_report`; a missing encoder weight or a shape mismatch is an error.
    `config_overrides` changes config fields first (a fine-tuning task's `id2label`, `problem_type`).
    `dtype` is the compute dtype; `param_dtype` the parameters' (float32 unless given: a bfloat16
    file is widened; `param_dtype=jnp.bfloat16` keeps it half the size); `attention` the attention form
    ("auto", "chunked", "xla", "cudnn", "materialised": see models/attention.py), as transformers'
    `attn_implementation`. `lazy=True` leaves safetensors weights in their file as `FileTensor`s
    for `training.mesh.place` to read by device slices (what a host of a cluster run needs);
    calling the model reads them whole, saving it copies them tensor by tensor. `mesh=` places the
    parameters split over that device mesh by the rules table (sharding.RULES), each device reading
    only its slices of the file, and runs every call on it (multi-device inference; `lazy` is then moot).
    """
    directory = resolve(path_or_name, revision)
    config = config_from_dict(read_config_json(os.path.join(directory, "config.json")))
    if config_overrides:
        config = config.replace(**config_overrides)
    arch = architecture_for(config, task)
    weight_file = files.find_weight_file(directory)
    state = files.open_state_dict(weight_file)

    module_kwargs: dict[str, Any] = {"attention": attention}
    if param_dtype is not None:
        module_kwargs["param_dtype"] = as_dtype(param_dtype)
    if arch.name in ("BertModel", "RobertaModel") and not any("pooler." in k for k in state):
        module_kwargs["add_pooling_layer"] = False  # encoder-only files (sentence encoders) have none
    module = arch.build(config, **module_kwargs)
    expected = arch.abstract_params(module)
    params, report = keymap.state_dict_to_flax(
        state, expected, prefix=arch.prefix, family_prefix=arch.family_prefix,
        fill_missing=_filler(module, arch, config, seed), source=weight_file,
    )
    if report.missing or report.unused:
        log.warning("%s: %s", weight_file, report.summary())
    tokenizer = _load_tokenizer(directory)
    if mesh is not None:
        from distilbert_jax.training.mesh import place, tree_shardings

        params = place(params, tree_shardings(params, mesh, arch.param_axes(module)))
    elif not lazy:
        params = jax.device_put(jax.tree.map(np.asarray, params))
    return PretrainedModel(config, arch, params, dtype=dtype, tokenizer=tokenizer,
                           load_report=report, mesh=mesh, **module_kwargs)


def _filler(module, arch: Architecture, config: AnyConfig, seed: int):
    """Values for tensors a file lacks: sinusoid tables always, head weights from a fresh init."""
    from flax.traverse_util import flatten_dict

    from distilbert_jax.models.layers import sinusoidal_table

    def is_encoder(path: tuple[str, ...]) -> bool:
        # The pooler is trained by BERT's next-sentence task, so MLM-only files lack it; like
        # transformers, a classifier built on such a file gets a fresh one (and says so).
        return (arch.prefix is None or path[0] == arch.prefix) and "pooler" not in path

    @functools.cache
    def fresh():
        """The head parameters of a fresh init; XLA drops the rest of the init from the program, so
        no host or device ever holds a whole random model next to the loaded one."""
        def heads(key):
            flat = flatten_dict(arch.init_params(module, key))
            return {"/".join(path): value for path, value in flat.items() if not is_encoder(path)}

        return jax.device_get(jax.jit(heads)(jax.random.key(seed)))

    def fill(path: tuple[str, ...]):
        if getattr(config, "sinusoidal_pos_embds", False) and "position_embeddings" in path:
            return sinusoidal_table(config.max_position_embeddings, config.hidden_size)
        return None if is_encoder(path) else fresh()["/".join(path)]

    return fill


def load_tokenizer(path_or_name: str | os.PathLike, revision: str | None = None):
    """The tokenizer of a model folder (or hub name) without reading its weights; None if it has none."""
    return _load_tokenizer(resolve(path_or_name, revision))


def _load_tokenizer(directory: str):
    present = {n for n in ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt")
               if os.path.isfile(os.path.join(directory, n))}
    if not present & {"tokenizer.json", "vocab.txt"} and not {"vocab.json", "merges.txt"} <= present:
        return None  # BERT: tokenizer.json or vocab.txt; RoBERTa, GPT-2: tokenizer.json or vocab.json + merges.txt
    from distilbert_jax.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(directory)


