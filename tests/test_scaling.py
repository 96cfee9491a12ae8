"""Each of N devices does 1/N of a step: proven from the compiled per-device program, not from losses.

A child with 8 CPU devices compiles the distillation step (a 4-layer x 256 BERT teacher, a 2-layer
student, the 30,522-token vocabulary, 16 x 128 tokens), DistilGPT2's causal step at the same sizes
(GPT-2 teacher and student, causal chunked attention) and two fine-tuning steps (sequence
classification and question answering on a 2-layer x 256 DistilBERT) on one device and on 8, in the
data-parallel and the fully sharded layout, and reads each optimized program with
`training.hlo_cost` (matmul FLOPs with loop trip counts, collectives, memory). A replicated
computation would pass an equal-loss test; it cannot pass these.
"""

from __future__ import annotations

import pytest

from subprocess_jax import run_python

DEVICES = 8
TOKENS = 16 * 128

CHILD = r"""
import json
import math
import jax
from distilbert_jax.config import BertConfig, DistilBertConfig, GPT2Config
from distilbert_jax.distill.extract import student_config
from distilbert_jax.distill import program as distill_program
from distilbert_jax.distill.step import LossWeights, Masking, Model, make_train_step
from distilbert_jax.finetune import program as finetune_program
from distilbert_jax.finetune.step import make_train_step as make_finetune_step
from distilbert_jax.models.registry import ARCHITECTURES
from distilbert_jax.training import program
from distilbert_jax.training.hlo_cost import per_device_bytes, program_cost
from distilbert_jax.training.mesh import MeshShape, make_mesh
from distilbert_jax.training.optimizer import OptimizerConfig, make_optimizer

teacher_cfg = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
teacher = Model(ARCHITECTURES["BertForMaskedLM"].build(teacher_cfg), teacher_cfg)
s_cfg = student_config(teacher_cfg, 2)
student = Model(ARCHITECTURES["DistilBertForMaskedLM"].build(s_cfg), s_cfg)
# DistilGPT2's step: a 4-layer x 256 GPT-2 teacher, a 2-layer student, the causal triple loss
gpt2_teacher_cfg = GPT2Config(vocab_size=30522, n_embd=256, n_layer=4, n_head=4, n_inner=1024)
gpt2_teacher = Model(ARCHITECTURES["GPT2LMHeadModel"].build(gpt2_teacher_cfg), gpt2_teacher_cfg)
gpt2_student = Model(ARCHITECTURES["GPT2LMHeadModel"].build(gpt2_teacher_cfg.replace(n_layer=2)),
                     gpt2_teacher_cfg.replace(n_layer=2))
CAUSAL_LOSS = LossWeights(alpha_mlm=0.0, alpha_clm=2.0, chunk_size=1024)
tx = make_optimizer(OptimizerConfig(accumulate=2), 100)
meshes = {"one": make_mesh(MeshShape(1, 1), devices=jax.devices()[:1]), "data": make_mesh(MeshShape(-1, 1)),
          "fsdp": make_mesh(MeshShape(1, -1))}


def measure(step, args, state_sh):
    compiled = step.lower(*args).compile()
    cost = program_cost(compiled)
    state = args[0]
    return {"flops": cost.matmul_flops, "memory": cost.memory, "unknown_trips": cost.unknown_trip_counts,
            "collectives": [[c.kind, c.bytes, c.count, c.shape, c.op_name] for c in cost.collectives],
            "state_per_device": per_device_bytes(state, compiled.input_shardings[0][0]),
            "state_whole": sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state)),
            "args_per_device": per_device_bytes(args)}


out = {}
for layout, mesh in meshes.items():
    args, state_sh = distill_program.abstract_inputs(student, teacher, tx, mesh, batch=16, length=128,
                                                     shard_teacher=layout == "fsdp", allow_replication=False)
    step = program.jit_step(make_train_step(student, teacher, tx, LossWeights(chunk_size=1024), Masking(103),
                                            mesh=mesh), mesh, state_sh)
    out["distill", layout] = measure(step, args, state_sh)
    args, state_sh = distill_program.abstract_inputs(gpt2_student, gpt2_teacher, tx, mesh, batch=16, length=128,
                                                     shard_teacher=layout == "fsdp", allow_replication=False)
    step = program.jit_step(make_train_step(gpt2_student, gpt2_teacher, tx, CAUSAL_LOSS, Masking(None), mesh=mesh),
                            mesh, state_sh)
    out["distill-causal", layout] = measure(step, args, state_sh)
    for kind, arch_name in (("classification", "DistilBertForSequenceClassification"),
                            ("span", "DistilBertForQuestionAnswering")):
        arch = ARCHITECTURES[arch_name]
        module = arch.build(DistilBertConfig(dim=256, n_layers=2, n_heads=4, hidden_dim=1024).replace(num_labels=3))
        args, state_sh = finetune_program.abstract_inputs(arch, module, kind, tx, mesh, batch=16, length=128,
                                                          allow_replication=False)
        step = program.jit_step(make_finetune_step(module, kind, tx), mesh, state_sh)
        out["finetune-" + kind, layout] = measure(step, args, state_sh)

# Attention alone at a shape whose chunked form loops (scores of one row fill a 4 MiB chunk):
# the device-major layout must leave each device looping over its own rows only.
from distilbert_jax.models.attention import DotProductAttention
import jax.numpy as jnp

def attention_loss(q, k, v, mask, key):
    out = DotProductAttention(0.1).apply({}, q, k, v, mask, deterministic=False, rngs={"dropout": key})[0]
    return jnp.sum(out * out)

for layout, mesh in meshes.items():
    rows = program.batch_structs({"q": ((16, 512, 4, 64), jnp.float32), "mask": ((16, 512), jnp.int32)}, mesh)
    key = program.replicated_struct((), jax.random.key(0).dtype, mesh)
    fn = jax.jit(program.in_mesh(jax.grad(attention_loss, argnums=(0, 1, 2)), mesh))
    compiled = fn.lower(rows["q"], rows["q"], rows["q"], rows["mask"], key).compile()
    cost = program_cost(compiled)
    out["attention", layout] = {"flops": cost.matmul_flops, "unknown_trips": cost.unknown_trip_counts,
                                "loops": " while(" in compiled.as_text(),
                                "collectives": [[c.kind, c.bytes, c.count, c.shape, c.op_name]
                                                for c in cost.collectives]}
print(json.dumps({"|".join(k): v for k, v in out.items()}))
"""

STEPS = ("distill", "distill-causal", "finetune-classification", "finetune-span")


@pytest.mark.parametrize("layout", ["data", "fsdp"])
def test_chunked_attention_loops_over_each_devices_own_rows(programs, layout):
    one, many = programs["attention", "one"], programs["attention", layout]
    assert one["loops"] and many["loops"] and one["unknown_trips"] == many["unknown_trips"] == 0
    ratio = DEVICES * many["flops"] / one["flops"]
    print(f"attention fwd+bwd {layout}: {one['flops'] / 1e9:.2f} GFLOP on one device, together {ratio:.3f}x on 8")
    assert ratio <= 1.05
    assert not many["collectives"], many["collectives"]  # no device needs another's rows


@pytest.fixture(scope="module")
def programs():
    return {tuple(k.split("|")): v for k, v in run_python(CHILD, devices=DEVICES, timeout=1200).items()}


@pytest.mark.parametrize("layout", ["data", "fsdp"])
@pytest.mark.parametrize("step", STEPS)
def test_each_device_does_one_nth_of_the_matmuls(programs, step, layout):
    one, many = programs[step, "one"], programs[step, layout]
    assert one["unknown_trips"] == 0 and many["unknown_trips"] == 0  # every loop counted with its trips
    ratio = DEVICES * many["flops"] / one["flops"]
    print(f"{step} {layout}: 1 device {one['flops'] / 1e9:.2f} GFLOP, {DEVICES} devices "
          f"{many['flops'] / 1e9:.3f} GFLOP each: together {ratio:.3f}x the single-device work")
    assert one["flops"] > 1e9
    assert ratio <= 1.05


@pytest.mark.parametrize("step", STEPS)
def test_data_parallel_gathers_no_activations(programs, step):
    """With parameters replicated, nothing of hidden width is ever gathered: the only gathers
    allowed are of one number per token (the masking's global top-k draws over the batch)."""
    gathers = [c for c in programs[step, "data"]["collectives"] if c[0] == "all-gather"]
    print(f"{step}: all-gathers {[(c[3], c[4][-60:]) for c in gathers]}")
    assert all(c[1] <= 4 * TOKENS for c in gathers), gathers
    assert not any(c[0] == "all-to-all" for c in programs[step, "data"]["collectives"])


@pytest.mark.parametrize("step", STEPS)
def test_fully_sharded_state_is_one_nth_per_device(programs, step):
    one, fsdp = programs[step, "one"], programs[step, "fsdp"]
    whole, mine = fsdp["state_whole"], fsdp["state_per_device"]
    assert whole == one["state_per_device"]
    print(f"{step}: train state {whole / 2**20:.1f} MiB whole, {mine / 2**20:.2f} MiB per device "
          f"({DEVICES * mine / whole:.3f}/{DEVICES}); XLA argument bytes {fsdp['memory']['argument'] / 2**20:.2f} MiB")
    assert mine <= 1.1 * whole / DEVICES
    # XLA's own accounting of the per-device arguments agrees with the shardings it was compiled for
    assert fsdp["memory"]["argument"] <= 1.02 * fsdp["args_per_device"] + 4096
    # data-parallel keeps a whole copy on each device: the difference is real, not an accounting artefact
    assert programs[step, "data"]["state_per_device"] == whole
