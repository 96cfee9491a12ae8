"""Weight conversion both ways, every file format, and the errors a bad file gives."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

import distilbert_jax as dj
from conftest import TINY_BERT, TINY_DISTILBERT, random_batch
from distilbert_jax.cli import main as cli_main
from distilbert_jax.weights import files

ROUND_TRIP_ARCHS = ["DistilBertForMaskedLM", "DistilBertForSequenceClassification", "DistilBertForQuestionAnswering",
                    "BertForMaskedLM", "BertModel", "BertForTokenClassification"]


def _tiny(arch):
    return TINY_DISTILBERT if arch.startswith("DistilBert") else TINY_BERT


def _assert_trees_equal(a, b):
    flat_a = jax.tree_util.tree_leaves_with_path(a)
    flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
    assert len(flat_a) == len(flat_b)
    for path, value in flat_a:
        other = flat_b[path]
        assert np.asarray(value).dtype == np.asarray(other).dtype
        np.testing.assert_array_equal(np.asarray(value), np.asarray(other), err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("arch", ROUND_TRIP_ARCHS)
def test_round_trip_flax_pytorch_flax_is_bit_exact(checkpoint, tmp_path, arch):
    folder, pt_original = checkpoint(arch, **_tiny(arch))
    ours = dj.from_pretrained(folder)
    ours.save_pretrained(tmp_path / "ours")
    pt, info = getattr(transformers, arch).from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    for (name, a), b in zip(pt.state_dict().items(), pt_original.state_dict().values()):
        assert torch.equal(a, b), name  # tied weights included: decoder == word embeddings
    pt.save_pretrained(tmp_path / "back")
    _assert_trees_equal(ours.params, dj.from_pretrained(tmp_path / "back").params)


@pytest.mark.parametrize("arch", ["DistilBertForMaskedLM", "BertForMaskedLM", "DistilBertForMultipleChoice"])
def test_random_flax_model_runs_identically_in_torch(tmp_path, arch):
    family = dj.DistilBertConfig if arch.startswith("DistilBert") else dj.BertConfig
    config = family(**_tiny(arch))
    ours = dj.PretrainedModel.from_config(config, {"DistilBertForMaskedLM": "masked-lm", "BertForMaskedLM": "masked-lm",
                                                   "DistilBertForMultipleChoice": "multiple-choice"}[arch], seed=5)
    ours.save_pretrained(tmp_path)
    pt = getattr(transformers, arch).from_pretrained(tmp_path).eval()
    choices = 3 if "MultipleChoice" in arch else None
    ids, mask = random_batch(config.vocab_size, choices=choices)
    with torch.no_grad():
        expected = pt(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    assert np.max(np.abs(np.asarray(ours(ids, mask).logits) - expected)) < 1e-4


def test_old_gamma_beta_names_in_a_pytorch_bin(checkpoint, tmp_path):
    folder, pt = checkpoint("DistilBertForMaskedLM", **_tiny("DistilBertForMaskedLM"))
    renamed = {}
    for key, value in pt.state_dict().items():
        if "layer_norm" in key or "LayerNorm" in key:
            key = key.replace(".weight", ".gamma").replace(".bias", ".beta")
        renamed[key] = value.clone()
    assert any(k.endswith(".gamma") for k in renamed)
    torch.save(renamed, tmp_path / files.PYTORCH_BIN)  # includes the tied vocab_projector.weight
    shutil.copy(os.path.join(folder, "config.json"), tmp_path)
    loaded = dj.from_pretrained(tmp_path)
    assert loaded.load_report.tied == ["vocab_projector.weight"] and not loaded.load_report.unused
    _assert_trees_equal(loaded.params, dj.from_pretrained(folder).params)


def test_sharded_safetensors(checkpoint, tmp_path):
    _, pt = checkpoint("BertForMaskedLM", **_tiny("BertForMaskedLM"))
    pt.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = [f for f in os.listdir(tmp_path) if f.startswith("model-0")]
    assert len(shards) > 2 and (tmp_path / files.SAFETENSORS_INDEX).exists()
    ids, mask = random_batch(99)
    with torch.no_grad():
        expected = pt(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    assert np.max(np.abs(np.asarray(dj.from_pretrained(tmp_path)(ids, mask).logits) - expected)) < 1e-4


def test_flax_msgpack_layout_round_trip(checkpoint, tmp_path):
    folder, _ = checkpoint("DistilBertForMaskedLM", **_tiny("DistilBertForMaskedLM"))
    assert cli_main(["convert", folder, str(tmp_path / "flax"), "--to", "flax"]) == 0
    assert sorted(os.listdir(tmp_path / "flax")) == ["config.json", "flax_model.msgpack"]
    tree = files.read_msgpack(str(tmp_path / "flax" / files.FLAX_MSGPACK))
    # the former transformers Flax layout, key for key
    assert tree["distilbert"]["transformer"]["layer"]["0"]["attention"]["q_lin"]["kernel"].shape == (32, 32)
    assert set(tree["distilbert"]["embeddings"]["LayerNorm"]) == {"scale", "bias"}
    assert tree["vocab_projector"]["bias"].shape == (99,)
    _assert_trees_equal(dj.from_pretrained(tmp_path / "flax").params, dj.from_pretrained(folder).params)
    assert cli_main(["convert", str(tmp_path / "flax"), str(tmp_path / "pt")]) == 0
    pt, info = transformers.DistilBertForMaskedLM.from_pretrained(tmp_path / "pt", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_head_on_a_masked_lm_checkpoint_reports_new_and_unused_weights(checkpoint):
    folder, _ = checkpoint("DistilBertForMaskedLM", **_tiny("DistilBertForMaskedLM"))
    clf = dj.from_pretrained(folder, task="sequence-classification")
    assert sorted(clf.load_report.missing) == ["classifier.bias", "classifier.weight", "pre_classifier.bias",
                                               "pre_classifier.weight"]
    assert "vocab_transform.weight" in clf.load_report.unused
    base = dj.from_pretrained(folder, task="base")
    assert "vocab_projector.bias" in base.load_report.unused and not base.load_report.missing
    _assert_trees_equal(base.params, clf.params["distilbert"])


def test_unused_keys_are_reported_not_dropped_silently(checkpoint, tmp_path, caplog):
    folder, _ = checkpoint("DistilBertModel", **_tiny("DistilBertModel"))
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    state = load_file(tmp_path / files.SAFETENSORS)
    state["extra_head.weight"] = np.zeros((2, 2), np.float32)
    save_file(state, tmp_path / files.SAFETENSORS)
    model = dj.from_pretrained(tmp_path)
    assert model.load_report.unused == ["extra_head.weight"]
    assert "extra_head.weight" in caplog.text


def test_shape_mismatch_names_the_key_and_both_shapes(checkpoint, tmp_path):
    folder, _ = checkpoint("DistilBertModel", **_tiny("DistilBertModel"))
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hidden_dim"] = 40
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(dj.UserError, match=r"transformer\.layer\.0\.ffn\.lin1\.(weight|bias) has shape "
                                           r"\(37(, 32)?,?\) but the config expects \(40(, 32)?,?\)"):
        dj.from_pretrained(tmp_path)
    config["hidden_dim"] = 37
    (tmp_path / "config.json").write_text(json.dumps(config))
    state = load_file(tmp_path / files.SAFETENSORS)
    state["transformer.layer.1.attention.q_lin.weight"] = np.zeros((32, 30), np.float32)
    save_file(state, tmp_path / files.SAFETENSORS)
    with pytest.raises(dj.UserError, match=r"q_lin\.weight has shape \(32, 30\) but the config expects \(32, 32\)"):
        dj.from_pretrained(tmp_path)


def test_missing_encoder_weight_is_an_error(checkpoint, tmp_path):
    folder, _ = checkpoint("BertModel", **_tiny("BertModel"))
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    state = load_file(tmp_path / files.SAFETENSORS)
    del state["encoder.layer.1.attention.self.key.weight"]
    save_file(state, tmp_path / files.SAFETENSORS)
    with pytest.raises(dj.UserError, match=r"lacks encoder\.layer\.1\.attention\.self\.key\.weight"):
        dj.from_pretrained(tmp_path)


def test_corrupt_and_missing_files(checkpoint, tmp_path):
    folder, _ = checkpoint("DistilBertModel", **_tiny("DistilBertModel"))
    shutil.copy(os.path.join(folder, "config.json"), tmp_path)
    with pytest.raises(dj.UserError, match="no weights in"):
        dj.from_pretrained(tmp_path)
    (tmp_path / files.SAFETENSORS).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(dj.UserError, match="not a readable safetensors file"):
        dj.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(dj.UserError, match="not valid JSON"):
        dj.from_pretrained(tmp_path)
    with pytest.raises(dj.UserError, match="does not exist"):
        dj.from_pretrained(tmp_path / "nope")


def test_hub_name_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(dj.UserError, match="could not be downloaded"):
        dj.from_pretrained("distilbert/distilbert-base-uncased-not-cached-here")


def test_save_is_atomic_when_the_folder_is_unwritable(checkpoint, tmp_path):
    folder, _ = checkpoint("DistilBertModel", **_tiny("DistilBertModel"))
    model = dj.from_pretrained(folder)
    target = tmp_path / "file-not-folder"
    target.write_text("x")
    with pytest.raises((dj.UserError, OSError)):
        model.save_pretrained(target)
    assert target.read_text() == "x"
