"""config.json in and out: every field transformers writes, unknown fields kept, aliases understood."""

from __future__ import annotations

import json

import pytest
import transformers

import distilbert_jax as dj
from distilbert_jax.config import config_from_dict


@pytest.mark.parametrize("family, ours", [(transformers.DistilBertConfig, dj.DistilBertConfig),
                                          (transformers.BertConfig, dj.BertConfig),
                                          (transformers.RobertaConfig, dj.RobertaConfig),
                                          (transformers.GPT2Config, dj.GPT2Config)])
def test_round_trip_with_transformers(tmp_path, family, ours):
    theirs = family(num_labels=3, problem_type="single_label_classification", initializer_range=0.05,
                    id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    theirs.save_pretrained(tmp_path / "a")
    original = json.loads((tmp_path / "a" / "config.json").read_text())
    config = ours.from_json_file(tmp_path / "a" / "config.json")
    assert config.num_labels == 3 and config.id2label[2] == "pos" and config.label2id["neu"] == 1
    assert config.problem_type == "single_label_classification" and config.initializer_range == 0.05
    (tmp_path / "b").mkdir()
    config.save(tmp_path / "b")
    written = json.loads((tmp_path / "b" / "config.json").read_text())
    assert written == original  # every field, including ones we do not model (kept in `extra`)
    reloaded = family.from_pretrained(tmp_path / "b")
    assert reloaded.to_dict() == theirs.to_dict()


@pytest.mark.parametrize("family, ours", [(transformers.RobertaConfig, dj.RobertaConfig),
                                          (transformers.GPT2Config, dj.GPT2Config)])
def test_defaults_are_transformers_defaults(family, ours):
    """A file that omits a field means transformers' default for it, so ours must be the same."""
    theirs, config = json.loads(family().to_json_string()), ours()
    written = config.to_dict()
    for key, value in theirs.items():
        if key in written:
            assert written[key] == value, key
    assert {"vocab_size", "pad_token_id", "layer_norm_epsilon" if family is transformers.GPT2Config
            else "layer_norm_eps"} <= set(written)


def test_distilbert_fields_and_defaults_are_the_released_model():
    c = dj.DistilBertConfig()
    assert (c.vocab_size, c.dim, c.n_layers, c.n_heads, c.hidden_dim, c.max_position_embeddings) == (
        30522, 768, 6, 12, 3072, 512)
    assert (c.dropout, c.attention_dropout, c.qa_dropout, c.seq_classif_dropout) == (0.1, 0.1, 0.1, 0.2)
    assert c.activation == "gelu" and not c.sinusoidal_pos_embds and c.layer_norm_eps == 1e-12
    assert c.pad_token_id == 0 and c.tie_word_embeddings and c.initializer_range == 0.02


def test_old_field_names_and_unknown_fields():
    c = config_from_dict({"model_type": "distilbert", "tie_weights_": False, "num_labels": 4, "my_field": [1, 2],
                          "output_past": True})
    assert isinstance(c, dj.DistilBertConfig) and not c.tie_word_embeddings and c.num_labels == 4
    assert c.extra == {"my_field": [1, 2], "output_past": True}
    assert c.to_dict()["my_field"] == [1, 2]


def test_fields_transformers_5_omits_are_kept_when_present():
    data = {"model_type": "bert", "position_embedding_type": "absolute", "hidden_size": 8}
    assert config_from_dict(data).to_dict()["position_embedding_type"] == "absolute"
    assert "position_embedding_type" not in config_from_dict({"model_type": "bert"}).to_dict()
    assert "layer_norm_eps" not in dj.DistilBertConfig().to_dict()
    assert dj.DistilBertConfig(layer_norm_eps=1e-5).to_dict()["layer_norm_eps"] == 1e-5


def test_model_type_is_inferred_when_absent():
    assert isinstance(config_from_dict({"n_layers": 2, "dim": 32}), dj.DistilBertConfig)
    assert isinstance(config_from_dict({"hidden_size": 32}), dj.BertConfig)


def test_configs_are_frozen_and_hashable():
    c = dj.DistilBertConfig()
    with pytest.raises(Exception):
        c.dim = 3  # type: ignore[misc]
    assert hash(c) == hash(dj.DistilBertConfig()) and hash(c) != hash(c.replace(n_layers=3))
    assert c.replace(num_labels=5).num_labels == 5


@pytest.mark.parametrize("data, message", [
    ({"model_type": "t5"}, "model_type 't5' is not supported"),
    ({"model_type": "bert", "position_embedding_type": "relative_key"}, "only 'absolute'"),
])
def test_bad_configs(data, message):
    with pytest.raises(dj.UserError, match=message):
        config_from_dict(data)


def test_unknown_activation_is_a_clear_error():
    model_cfg = dj.DistilBertConfig(dim=8, n_heads=2, hidden_dim=8, n_layers=1, vocab_size=10, activation="mish")
    with pytest.raises(dj.UserError, match="activation 'mish' is not supported"):
        dj.PretrainedModel.from_config(model_cfg)
