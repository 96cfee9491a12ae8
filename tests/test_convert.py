"""Weight conversion both ways, every file format, and the errors a bad file gives."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from huggingface_hub import split_state_dict_into_shards_factory
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


# --- dtype control, sharded files, streaming ---------------------------------------------------------

@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_convert_dtype_writes_what_torch_casting_gives_bit_for_bit(checkpoint, tmp_path, dtype):
    from safetensors.torch import load_file as load_torch_file

    folder, pt = checkpoint("BertForMaskedLM", **_tiny("BertForMaskedLM"))
    assert cli_main(["convert", folder, str(tmp_path), "--dtype", dtype]) == 0
    written, reference = load_torch_file(tmp_path / files.SAFETENSORS), pt.state_dict()
    assert written.keys() == load_file(os.path.join(folder, files.SAFETENSORS)).keys()
    for key, tensor in written.items():
        want = reference[key].to(getattr(torch, dtype))
        assert tensor.dtype == want.dtype and torch.equal(tensor, want), key  # f32 -> f32: the source bits
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == dtype  # as transformers 5 writes it
    loaded, info = transformers.BertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and loaded.dtype == getattr(torch, dtype)


def test_param_dtype_keeps_half_precision_weights(checkpoint, tmp_path):
    folder, pt = checkpoint("BertForMaskedLM", **_tiny("BertForMaskedLM"))
    assert cli_main(["convert", folder, str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    expected = {k: v.to(torch.bfloat16).view(torch.int16).numpy() for k, v in pt.state_dict().items()}
    for source, lazy in ((tmp_path / "bf16", False), (folder, False), (folder, True)):  # cast in the file or on load
        model = dj.from_pretrained(source, param_dtype=jnp.bfloat16, lazy=lazy)
        assert {np.asarray(leaf).dtype.name for leaf in jax.tree.leaves(model.params)} == {"bfloat16"}
        for key, value in model.state_dict().items():
            np.testing.assert_array_equal(value.view(np.int16), expected[key], err_msg=key)
    widened = dj.from_pretrained(tmp_path / "bf16")  # default: float32 parameters, the bf16 values exactly
    for key, value in widened.state_dict().items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, pt.state_dict()[key].to(torch.bfloat16).float().numpy(), err_msg=key)
    ids, mask = random_batch(99)
    full = np.asarray(dj.from_pretrained(folder)(ids, mask).logits)
    gap = np.abs(np.asarray(model(ids, mask).logits, np.float32) - full)
    assert 1e-4 < gap.max() < 0.05  # bf16 weights: measured 1.3e-02 on these logits
    model.save_pretrained(tmp_path / "again")  # a bf16 model saves bf16 unless told otherwise
    assert json.loads((tmp_path / "again" / "config.json").read_text())["dtype"] == "bfloat16"
    again = files.read_state_dict(str(tmp_path / "again" / files.SAFETENSORS))
    assert {value.dtype.name for value in again.values()} == {"bfloat16"}


def test_shards_are_named_and_indexed_as_transformers_writes_them(checkpoint, tmp_path):
    folder, pt = checkpoint("BertForMaskedLM", **_tiny("BertForMaskedLM"))
    ours = dj.from_pretrained(folder)
    ours.save_pretrained(tmp_path / "ours", max_shard_size="10KB")  # the 12.7 kB word embeddings: a shard alone
    pt.save_pretrained(tmp_path / "theirs", max_shard_size="10KB")
    index, their_index = ((tmp_path / d / files.SAFETENSORS_INDEX).read_text() for d in ("ours", "theirs"))
    index, their_index = json.loads(index), json.loads(their_index)
    assert index["metadata"] == their_index["metadata"]  # total_size and total_parameters
    # the same split over our key order (sorted; torch's is module order, so the borders may differ)
    split = split_state_dict_into_shards_factory(ours.state_dict(), get_storage_size=lambda t: t.nbytes,
                                                 filename_pattern="model{suffix}.safetensors", max_shard_size="10KB")
    assert index["weight_map"] == split.tensor_to_filename
    assert index["weight_map"].keys() == their_index["weight_map"].keys()
    shards = sorted(f for f in os.listdir(tmp_path / "ours") if f.startswith("model-"))
    assert shards == sorted(f for f in os.listdir(tmp_path / "theirs") if f.startswith("model-"))
    assert len(shards) > 4 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    back, info = transformers.BertForMaskedLM.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for (name, a), b in zip(back.state_dict().items(), pt.state_dict().values()):
        assert torch.equal(a, b), name
    _assert_trees_equal(dj.from_pretrained(tmp_path / "theirs").params, ours.params)
    # under the limit: one model.safetensors, and the shards of the earlier save are gone
    assert cli_main(["convert", str(tmp_path / "ours"), str(tmp_path / "theirs"), "--max-shard-size", "2GB"]) == 0
    assert sorted(os.listdir(tmp_path / "theirs")) == ["config.json", files.SAFETENSORS]
    _assert_trees_equal(dj.from_pretrained(tmp_path / "theirs").params, ours.params)


def test_shard_sizes_parse_as_transformers_reads_them(capsys):
    assert [files.parse_size(s) for s in ("2GB", "500MB", "50KB", "1.5GB", "1GiB", "3MiB", 1234)] == [
        2 * 10**9, 500 * 10**6, 50_000, 1_500_000_000, 2**30, 3 * 2**20, 1234]
    for bad in ("2 bananas", "GB", 0, -5):
        with pytest.raises(dj.UserError, match="is not a size"):
            files.parse_size(bad)
    assert cli_main(["convert", "a", "b", "--max-shard-size", "lots"]) == 2
    assert "max shard size 'lots' is not a size" in capsys.readouterr().err


def test_conversion_holds_one_tensor_at_a_time(tmp_path):
    """A lazy load written tensor by tensor: each tensor is read once, and the peak is one tensor
    (the largest) plus the loader's tracing of the model's shapes, never a copy of the model."""
    import tracemalloc

    from conftest import save_torch, torch_model
    from distilbert_jax.weights import lazy

    big = dict(vocab_size=2000, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
               max_position_embeddings=64)
    pt = torch_model("BertForMaskedLM", **big)
    source = save_torch(pt, tmp_path / "src")
    file_size = os.path.getsize(tmp_path / "src" / files.SAFETENSORS)
    largest = max(t.numel() * 4 for t in pt.state_dict().values())
    assert cli_main(["convert", source, str(tmp_path / "warm-up")]) == 0  # one-time imports and caches
    for dtype, itemsize in (("float32", 4), ("bfloat16", 2)):
        before = lazy.bytes_read()
        tracemalloc.start()
        assert cli_main(["convert", source, str(tmp_path / dtype), "--dtype", dtype]) == 0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        read = lazy.bytes_read() - before
        written = files.open_state_dict(str(tmp_path / dtype / files.SAFETENSORS))
        assert read == sum(v.size for v in written.values()) * itemsize  # each tensor read once, cast as read
        assert peak < 0.35 * file_size, (peak, file_size)  # measured 0.26 in f32, 0.14 in bf16 (8.7 MB file)
    model = dj.from_pretrained(source, lazy=True)
    tracemalloc.start()
    model.save_pretrained(tmp_path / "save")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert largest <= peak < 1.1 * largest, (peak, largest)  # measured 1.01: the 2 MB embedding table, once
