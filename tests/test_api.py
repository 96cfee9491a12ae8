"""The API a transformers or Flax user expects: `params=`, outputs indexed like transformers', a model
placed on a device mesh, the package's public names, inference helpers that compute only what they
return and never keep a dropped model alive."""

from __future__ import annotations

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import distilbert_jax as dj
from conftest import TINY_BERT, TINY_DISTILBERT, random_batch
from distilbert_jax.inference.fill_mask import FillMask, mask_positions
from distilbert_jax.inference.embeddings import SentenceEmbedder
from distilbert_jax.training.hlo_cost import program_cost
from subprocess_jax import run_python

TINY_REAL_VOCAB = dict(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=128)


def test_params_argument_is_used_under_jit_and_grad(checkpoint):
    folder, _ = checkpoint("DistilBertForMaskedLM", seed=1, **TINY_DISTILBERT)
    m = dj.from_pretrained(folder)
    ids, mask = random_batch(99)
    other = jax.tree.map(lambda x: x * 1.01, m.params)

    def loss(logits):
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 7])

    ours = jax.jit(jax.value_and_grad(lambda p: loss(m(ids, mask, params=p).logits)))(other)
    direct = jax.jit(jax.value_and_grad(lambda p: loss(m.module.apply({"params": p}, ids, mask).logits)))(other)
    np.testing.assert_allclose(ours[0], direct[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(ours[1]), jax.tree.leaves(direct[1])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
    # the given tree, not m.params: a central difference along the gradient predicts the change
    norm = float(jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(ours[1]))))
    step = jax.tree.map(lambda g: 3e-3 * g / norm, ours[1])
    up, down = (float(loss(m(ids, mask, params=jax.tree.map(lambda p, s: p + sign * s, other, step)).logits))
                for sign in (1, -1))
    np.testing.assert_allclose((up - down) / 2, 3e-3 * norm, rtol=1e-3)
    assert float(jnp.abs(m(ids, mask).logits - m(ids, mask, params=other).logits).max()) > 1e-3


@pytest.mark.parametrize("arch, config", [("DistilBertForMaskedLM", TINY_DISTILBERT), ("BertModel", TINY_BERT),
                                          ("DistilBertForQuestionAnswering", TINY_DISTILBERT),
                                          ("BertForSequenceClassification", TINY_BERT)])
def test_outputs_index_like_transformers(checkpoint, arch, config):
    folder, torch_model = checkpoint(arch, seed=2, **config)
    ids, mask = random_batch(99)
    with torch.no_grad():
        theirs = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                             output_hidden_states=True, output_attentions=True)
    out = dj.from_pretrained(folder)(ids, mask, output_hidden_states=True, output_attentions=True)
    # transformers' BertModel also lists `cross_attentions` as () when it has no cross-attention
    names = [k for k, v in theirs.items() if not (isinstance(v, tuple) and not v)]
    assert list(out.keys()) == names == list(out) and len(out) == len(out.to_tuple()) == len(names)
    for i, name in enumerate(names):
        assert out[i] is out[name] is getattr(out, name) and name in out
        for a, b in zip(jax.tree.leaves(out[i]), [t.numpy() for t in jax.tree.leaves(theirs[i])]):
            np.testing.assert_allclose(a, b, atol=1e-4)
    assert out[-1] is out.attentions and out[:2] == out.to_tuple()[:2]
    with pytest.raises(KeyError):
        out["start_logits" if arch != "DistilBertForQuestionAnswering" else "pooler_output"]
    # still a pytree: through jit and back, with the same keys
    again = jax.jit(lambda o: jax.tree.map(lambda x: x + 0, o))(out)
    assert again.keys() == out.keys() and len(jax.tree.leaves(again)) == len(jax.tree.leaves(out))


def test_package_names_and_import_cost():
    got = run_python("""
        import json, sys
        import distilbert_jax as dj
        heavy = sorted(m for m in ("torch", "transformers", "optax", "orbax", "tokenizers",
                                   "distilbert_jax.distill.trainer", "distilbert_jax.finetune.runner")
                       if m in sys.modules)
        from distilbert_jax import FillMask, SentenceEmbedder, Tokenizer, distillation_loss, extract_student
        from distilbert_jax import finetune, train
        from distilbert_jax.distill.extract import extract_student as e
        from distilbert_jax.distill.trainer import train as t
        from distilbert_jax.inference.embeddings import SentenceEmbedder as s
        from distilbert_jax.inference.fill_mask import FillMask as f
        from distilbert_jax.losses import distillation_loss as d
        from distilbert_jax.tokenizer import Tokenizer as tok
        import distilbert_jax.finetune.runner as runner
        same = [FillMask is f, SentenceEmbedder is s, Tokenizer is tok, distillation_loss is d, extract_student is e,
                train is t, dj.finetune is finetune]
        runner.finetune = lambda config, **kw: ("ran", config, kw)  # dj.finetune(...) is runner.finetune(...)
        called = list(dj.finetune("cfg", stop_at_step=3))
        print(json.dumps({"heavy": heavy, "same": same, "called": called, "torch": "torch" in sys.modules,
                          "all": sorted(n for n in dj.__all__ if not hasattr(dj, n))}))
    """, devices=1, timeout=120)
    assert got["heavy"] == [] and not got["torch"]
    assert all(got["same"]) and got["all"] == []
    assert got["called"] == ["ran", "cfg", {"stop_at_step": 3}]


@pytest.fixture(scope="module")
def fill(checkpoint):
    folder, _ = checkpoint("DistilBertForMaskedLM", seed=7, tokenizer=True, **TINY_REAL_VOCAB)
    return FillMask(dj.from_pretrained(folder), batch_size=4)


def test_fill_mask_projects_only_masked_positions(fill):
    """The vocabulary matmul's FLOPs grow with the masked positions, not with rows x length."""
    rows, length, k = 4, 64, 5
    m = fill.model
    ids = np.full((rows, length), 1000, np.int32)
    mask = np.ones_like(ids)

    def flops(masks: int) -> float:
        positions = np.tile(np.arange(masks, dtype=np.int32), (rows, 1))
        return program_cost(fill._top_k.lower(m.params, ids, mask, positions, k=k).compile()).matmul_flops

    full = program_cost(jax.jit(lambda p: m.module.apply({"params": p}, ids, mask).logits)
                        .lower(m.params).compile()).matmul_flops
    one, two = flops(1), flops(2)
    per_position = two - one  # rows x (one more position) x dim x vocab
    assert per_position >= 2 * rows * m.config.dim * m.config.vocab_size
    np.testing.assert_allclose(full - one, per_position * (length - 1), rtol=1e-9)
    assert one < full / 10


def test_embedder_on_a_masked_lm_runs_no_vocabulary_projection(checkpoint, fill):
    folder, _ = checkpoint("DistilBertForMaskedLM", seed=7, tokenizer=True, **TINY_REAL_VOCAB)
    ids = np.ones((4, 32), np.int32)
    flops = [program_cost(SentenceEmbedder(m)._embed.lower(m.params, ids, ids).compile()).matmul_flops
             for m in (fill.model, dj.from_pretrained(folder, task="base"))]
    assert flops[0] == flops[1] > 0


def test_mask_positions_in_order_padded_to_a_power_of_two():
    ids = np.array([[1, 9, 2, 9, 9], [9, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(mask_positions(ids, 9), [[1, 3, 4, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_dropped_models_and_helpers_are_freed(checkpoint):
    folder, _ = checkpoint("DistilBertForMaskedLM", seed=7, tokenizer=True, **TINY_REAL_VOCAB)
    refs = []
    for _ in range(2):
        m = dj.from_pretrained(folder)
        fill, embed = FillMask(m), SentenceEmbedder(m)
        fill("a [MASK] b")
        embed("a b")
        m(np.ones((1, 4), np.int32))
        refs += [weakref.ref(x) for x in (m, fill, embed)]
        del m, fill, embed
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)


MESH_CHILD = r"""
import json, sys
import jax, numpy as np
import distilbert_jax as dj
from distilbert_jax.training.mesh import MeshShape, make_mesh

folder = sys.argv[1] if len(sys.argv) > 1 else FOLDER
plain = dj.from_pretrained(folder)
out = {}
for data, fsdp in ((1, 8), (2, 4)):
    mesh = make_mesh(MeshShape(data, fsdp))
    m = dj.from_pretrained(folder, mesh=mesh)
    kernel = m.params["distilbert"]["transformer"]["layer"]["0"]["ffn"]["lin1"]["kernel"]
    table = m.params["distilbert"]["embeddings"]["word_embeddings"]["embedding"]
    rows = 8 if fsdp == 8 else 3  # a batch the batch axes split, and one they do not divide
    rng = np.random.default_rng(rows)
    ids = rng.integers(1, 99, (rows, 16)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1:, 12:] = 0
    got = m(ids, mask, output_hidden_states=True)
    want = plain(ids, mask, output_hidden_states=True)
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
    devices = len(got.logits.sharding.device_set)
    out[f"{data}x{fsdp}"] = {"kernel_spec": [str(a) for a in kernel.sharding.spec],
                             "kernel_shard": list(kernel.addressable_shards[0].data.shape),
                             "table_shard": list(table.addressable_shards[0].data.shape),
                             "kernel_devices": len(kernel.sharding.device_set), "diff": diff, "devices": devices}
print(json.dumps(out))
"""


def test_from_pretrained_on_a_mesh(checkpoint):
    folder, _ = checkpoint("DistilBertForMaskedLM", seed=3, **{**TINY_DISTILBERT, "hidden_dim": 64})
    got = run_python(MESH_CHILD.replace("FOLDER", repr(folder)), devices=8, timeout=300)
    for layout, fsdp in (("1x8", 8), ("2x4", 4)):
        r = got[layout]
        assert r["kernel_spec"] == ["fsdp", "None"] and r["kernel_devices"] == 8
        assert r["kernel_shard"] == [32 // fsdp, 64] and r["table_shard"] == [99, 32 // fsdp]
        assert r["devices"] == 8
        assert r["diff"] < 1e-5, r["diff"]
