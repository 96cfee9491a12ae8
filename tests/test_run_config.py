"""Run configs with nested sections (optimizer, mesh, loss), old flat files and overrides, and the
declared sharding that the mesh section controls."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from jax.sharding import AbstractMesh, PartitionSpec

from distilbert_jax.config import BertConfig, DistilBertConfig
from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.errors import UserError
from distilbert_jax.finetune.config import FinetuneConfig
from distilbert_jax.models.registry import ARCHITECTURES
from distilbert_jax.sharding import RULES
from distilbert_jax.training.mesh import spec_for, tree_shardings


def test_each_field_is_stated_once_and_reached_by_a_dotted_name():
    config = DistillConfig().with_overrides(["optimizer.learning_rate=1e-4", "mesh.fsdp=-1", "mesh.data=1",
                                             "loss.alpha_ce=3", "batch_size=8"])
    assert config.optimizer.learning_rate == 1e-4 and config.optimizer.accumulate == 50
    assert (config.mesh.data, config.mesh.fsdp) == (1, -1) and config.loss.alpha_ce == 3.0 and config.batch_size == 8
    flat = config.flat()
    assert flat["optimizer.learning_rate"] == 1e-4 and flat["loss.chunk_size"] == 1024 and "learning_rate" not in flat
    assert DistillConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_config_files_written_before_the_nesting_still_load():
    old = {k: v for k, v in DistillConfig().to_dict().items() if k not in ("optimizer", "mesh", "loss")}
    old.update(learning_rate=1e-3, adam_b2=0.99, accumulate=2, mesh_data=1, mesh_fsdp=-1, loss_chunk_size=64,
               alpha_ce=3.0, temperature=4.0)
    config = DistillConfig.from_dict(old)
    assert (config.optimizer.learning_rate, config.optimizer.b2, config.optimizer.accumulate) == (1e-3, 0.99, 2)
    assert (config.mesh.data, config.mesh.fsdp) == (1, -1)
    assert (config.loss.chunk_size, config.loss.alpha_ce, config.loss.temperature) == (64, 3.0, 4.0)
    # and the old flat names still work on the command line and in code
    assert DistillConfig().with_overrides(["learning_rate=2e-3"]).optimizer.learning_rate == 2e-3
    assert FinetuneConfig().replace(learning_rate=3e-5, mesh_fsdp=2).optimizer.learning_rate == 3e-5
    # a resumed run compares what the fields mean, not how the file spelled them
    assert config.changed_from(old, set()) == []
    assert config.replace(learning_rate=5e-3).changed_from(old, set()) == ["optimizer.learning_rate"]


@pytest.mark.parametrize("assignment, message", [
    ("optimizer.lr=3", "--set 'optimizer.lr=3': unknown field optimizer.lr; fields: optimizer.learning_rate"),
    ("nonsense=3", "unknown field"),
    ("optimizer=3", "optimizer is a section"),
    ("optimizer.learning_rate=fast", "optimizer.learning_rate=.fast. should be of type float"),
])
def test_bad_overrides_are_one_line_errors(assignment, message):
    with pytest.raises(UserError, match=message):
        DistillConfig().with_overrides([assignment])


def test_the_two_configs_have_their_own_defaults():
    d, f = DistillConfig(), FinetuneConfig()
    assert (d.optimizer.learning_rate, d.optimizer.b2, d.optimizer.eps, d.optimizer.max_grad_norm) == (5e-4, 0.98, 1e-6,
                                                                                                          5.0)
    assert (f.optimizer.learning_rate, f.optimizer.b2, f.optimizer.eps, f.optimizer.max_grad_norm) == (2e-5, 0.999,
                                                                                                          1e-8, 1.0)
    assert d.optimizer.accumulate == 50 and f.optimizer.accumulate == 1


def test_every_parameter_declares_its_logical_axes_and_the_rules_know_them():
    for name in ("DistilBertForMaskedLM", "BertForMaskedLM", "BertForQuestionAnswering",
                 "DistilBertForSequenceClassification", "BertForMultipleChoice"):
        arch = ARCHITECTURES[name]
        module = arch.build(DistilBertConfig() if name.startswith("Distil") else BertConfig())
        axes = arch.param_axes(module)
        flat = flatten_dict(arch.abstract_params(module))
        assert set(axes) == set(flat), name
        for path, logical in axes.items():
            assert len(logical) == len(flat[path].shape) and all(a is None or a in RULES for a in logical), path
        assert axes[next(p for p in axes if p[-1] == "embedding" and "word_embeddings" in p)] == ("vocab", "embed")


def test_an_indivisible_dimension_names_the_parameter_unless_replication_is_allowed():
    mesh = AbstractMesh((1, 8), ("data", "fsdp"))
    names = ("distilbert", "transformer", "layer", "0", "ffn", "lin1", "kernel")
    assert spec_for(names, (768, 3072), ("embed", "mlp"), mesh) == PartitionSpec("fsdp", None)
    assert spec_for(names, (36, 37), ("embed", "mlp"), mesh) == PartitionSpec(None, None)
    message = (r"parameter distilbert/transformer/layer/0/ffn/lin1/kernel of shape \(36, 37\): its embed dimension "
               r"\(36\) does not split over the 8 devices of mesh axis fsdp")
    with pytest.raises(UserError, match=message):
        spec_for(names, (36, 37), ("embed", "mlp"), mesh, allow_replication=False)


def test_optimizer_state_follows_its_parameter():
    params = {"distilbert": {"ffn": {"kernel": np.zeros((16, 4), np.float32)}}}
    state = {"params": params, "opt": {"mu": params, "count": np.zeros((), np.int32)}}
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "fsdp"))
    shardings = tree_shardings(state, mesh, {("distilbert", "ffn", "kernel"): ("embed", "mlp")})
    assert shardings["opt"]["mu"]["distilbert"]["ffn"]["kernel"].spec == PartitionSpec("fsdp", None)
    assert shardings["params"]["distilbert"]["ffn"]["kernel"].spec == PartitionSpec("fsdp", None)
    assert shardings["opt"]["count"].spec == PartitionSpec()


def test_overrides_apply_to_any_config_dataclass():
    """`distilbert-jax distill --workdir D --set k=v` with no --config overrides the demo's own config."""
    from distilbert_jax.distill.demo import DemoConfig
    from distilbert_jax.training.run_config import apply_overrides

    demo = apply_overrides(DemoConfig(), ["output=/tmp/x", "teacher_updates=3", "student_layers=(0, 1)"])
    assert (demo.output, demo.teacher_updates, demo.student_layers) == ("/tmp/x", 3, (0, 1))
    with pytest.raises(UserError, match="--set 'nope=1': unknown field nope"):
        apply_overrides(DemoConfig(), ["nope=1"])
