"""Weights read by slices from their file (weights/lazy.py): exactly the values of a whole read,
only the bytes asked for, and the same model either way.

The multi-host half (each of 2 processes reads about half of the weight files and holds about half
of the model) is measured in tests/test_distill_training.py's two-process run.
"""

from __future__ import annotations

import jax
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import distilbert_jax as dj
from conftest import TINY_BERT, random_batch
from distilbert_jax.distill.extract import extract_student
from distilbert_jax.errors import UserError
from distilbert_jax.training.mesh import place
from distilbert_jax.weights import files, lazy
from distilbert_jax.weights.lazy import FileTensor, open_safetensors

TENSORS = {
    "f32": np.arange(6 * 10, dtype=np.float32).reshape(6, 10) / 7,
    "bf16": (np.arange(4 * 5, dtype=np.float32).reshape(4, 5) / 3).astype(ml_dtypes.bfloat16),
    "f16": np.linspace(-2, 2, 12, dtype=np.float16).reshape(3, 4),
    "i64": np.arange(5, dtype=np.int64),
    "empty": np.zeros((0, 3), np.float32),
    "scalar": np.array(2.5, np.float32),
}


@pytest.fixture
def weight_file(tmp_path):
    path = str(tmp_path / "model.safetensors")
    save_file(TENSORS, path)
    return path


def test_slices_equal_a_whole_read_and_count_only_their_bytes(weight_file):
    opened = open_safetensors(weight_file)
    assert sorted(opened) == sorted(TENSORS)
    for key, want in TENSORS.items():
        assert opened[key].shape == want.shape and opened[key].dtype == want.dtype, key
        np.testing.assert_array_equal(np.asarray(opened[key]), want, err_msg=key)
    before = lazy.bytes_read()
    block = opened["f32"][2:4, 5:10]
    np.testing.assert_array_equal(block, TENSORS["f32"][2:4, 5:10])
    assert lazy.bytes_read() - before == 2 * 5 * 4  # the block, not the tensor
    # transposed (a PyTorch Linear weight read as a Flax kernel) and cast, without reading the rest
    kernel = opened["f32"].T.astype(np.float64)
    assert kernel.shape == (10, 6) and kernel.dtype == np.float64
    before = lazy.bytes_read()
    np.testing.assert_array_equal(kernel[3:7, 1:2], TENSORS["f32"].T[3:7, 1:2].astype(np.float64))
    assert lazy.bytes_read() - before == 4 * 1 * 8
    np.testing.assert_array_equal(opened["bf16"].T[1], TENSORS["bf16"].T[1])
    np.testing.assert_array_equal(opened["bf16"].astype(np.float32)[...], TENSORS["bf16"].astype(np.float32))


@pytest.mark.parametrize("damage", ["truncated", "header", "short"])
def test_a_damaged_file_is_one_error_line(weight_file, damage):
    data = open(weight_file, "rb").read()
    broken = {"truncated": data[:-8], "header": data[:8] + b"{not json" + data[17:], "short": data[:5]}[damage]
    with open(weight_file, "wb") as f:
        f.write(broken)
    with pytest.raises(UserError) as err:
        files.read_state_dict(weight_file)
    message = str(err.value)
    assert "\n" not in message and weight_file in message and ("re-download" in message or "re-convert" in message)


def test_a_lazy_load_is_the_same_model_and_reads_nothing_until_placed(checkpoint):
    folder, _ = checkpoint("BertForMaskedLM", **TINY_BERT)
    eager = dj.from_pretrained(folder)
    before = lazy.bytes_read()
    model = dj.from_pretrained(folder, lazy=True)
    assert model.lazy and lazy.bytes_read() == before  # nothing copied out of the file yet
    leaves = jax.tree.leaves(model.params)
    assert all(isinstance(leaf, FileTensor) for leaf in leaves)
    # placing reads each tensor once, in the orientation and dtype of the eager load
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    placed = place(model.params, jax.tree.map(lambda _: device, model.params))
    assert lazy.bytes_read() - before == sum(leaf.nbytes for leaf in leaves)
    for a, b in zip(jax.tree.leaves(placed), jax.tree.leaves(eager.params)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # calling a lazy model reads it whole first, and gives the eager model's outputs exactly
    ids, mask = random_batch(TINY_BERT["vocab_size"])
    np.testing.assert_array_equal(np.asarray(model(ids, mask).logits), np.asarray(eager(ids, mask).logits))
    assert not model.lazy


def test_a_student_extracted_from_a_lazy_teacher_shares_its_file(checkpoint):
    folder, _ = checkpoint("BertForMaskedLM", **TINY_BERT)
    eager = extract_student(dj.from_pretrained(folder, task="masked-lm"), layers=(0, 1))
    student = extract_student(dj.from_pretrained(folder, task="masked-lm", lazy=True), layers=(0, 1))
    assert student.lazy and isinstance(student.params["distilbert"]["embeddings"]["word_embeddings"]["embedding"],
                                       FileTensor)
    for a, b in zip(jax.tree.leaves(student.state_dict()), jax.tree.leaves(eager.state_dict())):
        np.testing.assert_array_equal(a, b)


def test_a_head_the_file_lacks_is_initialised_alone_and_as_before(checkpoint):
    """Filling a classifier onto an MLM file initialises only the head (the rest of the init is dead
    code XLA drops), with the values a whole-model init gives it."""
    folder, _ = checkpoint("BertForMaskedLM", **TINY_BERT)
    model = dj.from_pretrained(folder, task="sequence-classification", seed=3, lazy=True)
    assert sorted(model.load_report.missing) == ["bert.pooler.dense.bias", "bert.pooler.dense.weight",
                                                 "classifier.bias", "classifier.weight"]
    fresh = dj.PretrainedModel.from_config(model.config, "sequence-classification", seed=3)
    for name in ("classifier", ):
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(np.asarray(model.params[name][leaf]), np.asarray(fresh.params[name][leaf]))
    np.testing.assert_array_equal(np.asarray(model.params["bert"]["pooler"]["dense"]["kernel"]),
                                  np.asarray(fresh.params["bert"]["pooler"]["dense"]["kernel"]))
