"""Student from teacher: every copied tensor is the teacher's, bit for bit, and the mapping is right end to end.

The expected correspondence is written out here again in PyTorch names, straight from RECIPE.md,
independently of `extract.MAPPING`, so a wrong row in the table cannot make its own test pass.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import transformers

import distilbert_jax as dj
from conftest import TINY_BERT, TINY_DISTILBERT, random_batch, save_torch, torch_model
from distilbert_jax.cli import main
from distilbert_jax.distill.extract import extract_student

TEACHER = dict(TINY_BERT, num_hidden_layers=4)
LAYER_NAMES = {  # student module in layer i <- teacher module in layer layers[i]
    "attention.q_lin": "attention.self.query", "attention.k_lin": "attention.self.key",
    "attention.v_lin": "attention.self.value", "attention.out_lin": "attention.output.dense",
    "sa_layer_norm": "attention.output.LayerNorm", "ffn.lin1": "intermediate.dense", "ffn.lin2": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}


def expected_sources(layers, *, transform=True, tied=True) -> dict[str, str]:
    """Student PyTorch key -> teacher PyTorch key, for every tensor the student file holds."""
    out = {f"distilbert.embeddings.{n}.weight": f"bert.embeddings.{n}.weight"
           for n in ("word_embeddings", "position_embeddings")}
    out.update({f"distilbert.embeddings.LayerNorm.{w}": f"bert.embeddings.LayerNorm.{w}" for w in ("weight", "bias")})
    for s, t in enumerate(layers):
        for student, teacher in LAYER_NAMES.items():
            for w in ("weight", "bias"):
                out[f"distilbert.transformer.layer.{s}.{student}.{w}"] = f"bert.encoder.layer.{t}.{teacher}.{w}"
    out["vocab_projector.bias"] = "cls.predictions.bias"
    if not tied:
        out["vocab_projector.weight"] = "cls.predictions.decoder.weight"
    if transform:
        for student, teacher in (("vocab_transform", "dense"), ("vocab_layer_norm", "LayerNorm")):
            for w in ("weight", "bias"):
                out[f"{student}.{w}"] = f"cls.predictions.transform.{teacher}.{w}"
    return out


def assert_copied(student_state, teacher_state, expected):
    for student_key, teacher_key in expected.items():
        a, b = np.asarray(student_state[student_key]), teacher_state[teacher_key].detach().numpy()
        assert a.dtype == b.dtype == np.float32, student_key
        np.testing.assert_array_equal(a, b, err_msg=f"{student_key} <- {teacher_key}")


@pytest.fixture(scope="module")
def teacher_folder(checkpoint):
    return checkpoint("BertForMaskedLM", seed=1, tokenizer=True, **TEACHER)


@pytest.mark.parametrize("tied", [True, False])
def test_every_student_tensor_is_its_teacher_tensor(checkpoint, tied):
    folder, pt_teacher = checkpoint("BertForMaskedLM", seed=1, tokenizer=True, tie_word_embeddings=tied, **TEACHER)
    student = extract_student(dj.from_pretrained(folder, task="masked-lm"), (0, 3))
    state = student.state_dict()
    expected = expected_sources((0, 3), tied=tied)
    assert sorted(state) == sorted(expected)  # no tensor left uncompared, none extra
    assert_copied(state, pt_teacher.state_dict(), expected)
    assert student.config.n_layers == 2 and student.config.dim == 32 and student.config.hidden_dim == 37
    assert student.config.sinusoidal_pos_embds is False and student.config.tie_word_embeddings is tied
    assert student.load_report.missing == [] and student.tokenizer is not None
    assert student.architecture.name == "DistilBertForMaskedLM"


def test_cli_writes_a_folder_transformers_loads_exactly(teacher_folder, tmp_path, capsys):
    folder, pt_teacher = teacher_folder
    assert main(["extract-student", "--teacher", folder, "--layers", "0,3", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 + 8 * 2 + 3  # embeddings, 8 modules per layer, bias + transform + its LayerNorm
    assert out[3 + 8].split() == ["distilbert.transformer.layer.1.attention.q_lin", "<-",
                                  "bert.encoder.layer.3.attention.self.query"]
    pt, info = transformers.DistilBertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert pt.config.n_layers == 2
    assert_copied(pt.state_dict(), pt_teacher.state_dict(), expected_sources((0, 3)))
    assert torch.equal(pt.vocab_projector.weight, pt_teacher.bert.embeddings.word_embeddings.weight)  # re-tied
    assert os.path.isfile(tmp_path / "vocab.txt")  # the teacher's tokenizer goes with the student
    reloaded = dj.from_pretrained(tmp_path)
    assert reloaded.architecture.name == "DistilBertForMaskedLM" and reloaded.tokenizer is not None


def test_all_layers_reproduce_the_teacher_logits(tmp_path):
    """DistilBERT is BERT without token types: zero that row and the copy computes the same function."""
    pt_teacher = torch_model("BertForMaskedLM", seed=2, **TEACHER)
    ids, mask = random_batch(TEACHER["vocab_size"], batch=3, length=13, seed=4)
    with torch.no_grad():
        before = pt_teacher(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
        pt_teacher.bert.embeddings.token_type_embeddings.weight[0] = 0
        want = pt_teacher(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    teacher = dj.from_pretrained(save_torch(pt_teacher, tmp_path / "teacher"), task="masked-lm")
    student = extract_student(teacher, range(4))
    got = np.asarray(student(ids, mask).logits)
    assert got.shape == want.shape == (3, 13, TEACHER["vocab_size"])
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(got - before).max() > 1e-3  # the token-type row mattered: the comparison is not vacuous

    student.save_pretrained(tmp_path / "student")  # and the same through transformers' DistilBERT
    pt_student = transformers.DistilBertForMaskedLM.from_pretrained(tmp_path / "student").eval()
    with torch.no_grad():
        pt_got = pt_student(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    assert np.abs(pt_got - want).max() < 1e-4


def test_without_mlm_transform_the_head_starts_fresh(teacher_folder):
    folder, pt_teacher = teacher_folder
    student = extract_student(dj.from_pretrained(folder, task="masked-lm"), (1, 2), copy_mlm_transform=False, seed=3)
    state = student.state_dict()
    assert sorted(student.load_report.missing) == ["vocab_layer_norm.bias", "vocab_layer_norm.weight",
                                                   "vocab_transform.bias", "vocab_transform.weight"]
    assert_copied(state, pt_teacher.state_dict(), expected_sources((1, 2), transform=False))
    kernel = state["vocab_transform.weight"]
    assert kernel.shape == (32, 32) and 0.016 < kernel.std() < 0.024 and abs(kernel.mean()) < 0.003  # N(0, 0.02)
    assert not np.any(state["vocab_transform.bias"]) and not np.any(state["vocab_layer_norm.bias"])
    assert np.all(state["vocab_layer_norm.weight"] == 1)


@pytest.mark.parametrize("layers, message", [
    ((), "no teacher layers"), ((0, 4), "teacher layer 4 does not exist"), ((-1, 2), "teacher layer -1"),
    ((0, 0), "strictly increasing"), ((3, 1), "strictly increasing"),
])
def test_bad_layer_lists_are_refused(teacher_folder, layers, message):
    teacher = dj.from_pretrained(teacher_folder[0], task="masked-lm")
    with pytest.raises(dj.UserError, match=message):
        extract_student(teacher, layers)


@pytest.mark.parametrize("case, message", [
    ("out-of-range", "teacher layers 4, 7, 9, 11 do not exist: the teacher has 4 layers, numbered 0..3"),
    ("not-layers", "not a comma-separated list"),
    ("no-mlm-head", "has no masked-lm head"),
    ("distilbert-teacher", "students are extracted from BERT, RoBERTa or GPT-2"),
])
def test_cli_errors_are_one_line_with_exit_2(checkpoint, teacher_folder, tmp_path, capsys, case, message):
    teacher, layers = {
        "out-of-range": (teacher_folder[0], "0,2,4,7,9,11"),
        "not-layers": (teacher_folder[0], "0,two"),
        "no-mlm-head": (checkpoint("BertModel", **TEACHER)[0], "0,3"),
        "distilbert-teacher": (checkpoint("DistilBertForMaskedLM", **TINY_DISTILBERT)[0], "0,1"),
    }[case]
    capsys.readouterr()
    assert main(["extract-student", "--teacher", teacher, "--layers", layers, "--output", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "s").exists()  # nothing written


RANDOM_STUDENT = """
import json
import jax, numpy as np
from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.distill.teacher_student import load_teacher, make_student
from distilbert_jax.pretrained import PretrainedModel
from distilbert_jax.training import program
from distilbert_jax.training.mesh import MeshShape, make_mesh, tree_shardings

config = DistillConfig(teacher=FOLDER, student_init="random", student_layers=(0, 2), seed=7)
student = make_student(config, load_teacher(config))
lazy = student.lazy and student.uninitialised
mesh = make_mesh(MeshShape(data=1, fsdp=8))
shardings = tree_shardings(student.params, mesh, student.architecture.param_axes(student.module))
split = jax.tree.leaves(program.fresh_params(student, shardings))
whole = jax.tree.leaves(PretrainedModel.from_config(student.config, "masked-lm", seed=7).params)
print(json.dumps({"lazy": lazy, "leaves": len(split),
                  "max_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(split, whole)),
                  "split": sum(a.addressable_shards[0].data.size * 8 == a.size for a in split),
                  "matrices": sum(a.ndim == 2 for a in split)}))
"""


def test_a_random_student_is_made_split_with_the_values_of_a_whole_init(teacher_folder):
    """student_init="random" (the paper's ablation) initialises the student already split over the
    mesh, as MaxText does, rather than whole on one device: the same values as a whole init."""
    from subprocess_jax import run_python

    out = run_python(RANDOM_STUDENT.replace("FOLDER", repr(teacher_folder[0])), devices=8)
    assert out["lazy"] and out["max_diff"] == 0.0
    assert out["split"] >= out["matrices"] > 10, out  # every matrix (and the biases on the model axis) split 8 ways
