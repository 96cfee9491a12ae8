"""Project the released distillation recipe onto GPU and TPU clusters from the compiled per-device program.

    python experiments/scaling_projection.py                      # base size, 8 and 64 devices, ~10 min on 2 cores
    python experiments/scaling_projection.py --devices 8,16,32,64 --length 128,512 --json projection.json
    python experiments/scaling_projection.py --small --devices 1,2,4,8   # the per-device FLOPs table of the tests

Each measurement compiles the production distillation step (`distill.step.make_train_step`, jitted
as a run jits it, the vocabulary loss per batch shard) for N fake CPU devices
(`--xla_force_host_platform_device_count`, one child process per N) in both layouts, data-parallel
(mesh N x 1) and fully sharded (mesh 1 x N, teacher sharded too), and reads what one device's
optimized program does (`training.hlo_cost`): matmul FLOPs with loop trip counts, bytes of every
collective by kind, and XLA's memory for arguments, outputs and temporaries. Base size is the
released run: a bert-base-uncased teacher (12 x 768), the 6-layer student, 5 sequences per device
per micro-batch (the released 40 over 8 GPUs), the 30,522-token vocabulary, bf16 compute with f32
parameters, optimizer state and losses, at one bucket length per row (`--length`).

The roofline model, per device and step (every number it uses is printed with the table):

    compute    = HLO matmul FLOPs / (datasheet dense bf16 peak x EFFICIENCY)
    all-reduce = 2 (n - 1) / n x bytes / link ;  all-gather, reduce-scatter = (n - 1) / n x bytes / link
    step       = compute + communication (no overlap)  or  max(compute, communication) (full overlap)
    tokens/s   = N x 5 x length / step ;  MFU = analytic model FLOPs per device / step / peak
    recipe     = 3 epochs x 4.0e9 tokens (BERT's 3.3 billion words) / tokens/s

with n the number of devices (both layouts put every device on one axis) and `link` the
per-device bandwidth of the slowest link a ring crosses (NVLink within a node, the InfiniBand NIC
across nodes, ICI on TPU). Collective bytes are those of the CPU-compiled program; a GPU/TPU
compiler may combine or overlap them differently, which the two step columns bracket.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
EFFICIENCY = 0.5  # of the datasheet peak a well-tuned matmul-bound step sustains (MaxText reports 50-60%)
RECIPE_TOKENS = 3 * 4.0e9
PER_DEVICE_BATCH = 5

# devices, datasheet dense bf16 peak per device (FLOP/s), slowest per-device link (bytes/s), HBM (bytes)
SYSTEMS = {
    "8 x H100 SXM, NVLink": dict(devices=8, peak=989e12, link=450e9, hbm=80e9,
                                 link_note="NVLink 4: 900 GB/s per GPU both ways, 450 GB/s each way"),
    "64 x H100 SXM, 400 Gb/s InfiniBand": dict(devices=64, peak=989e12, link=50e9, hbm=80e9,
                                               link_note="one 400 Gb/s NIC per GPU (50 GB/s) across 8 nodes"),
    "TPU v5e-64": dict(devices=64, peak=197e12, link=200e9, hbm=16e9,
                       link_note="ICI 1,600 Gb/s per chip (200 GB/s)"),
}
PAPER = "8 x V100 (16 GB), 90 hours (DistilBERT paper, section 3)"

CHILD = r"""
import json, sys, time
import jax
from distilbert_jax.config import BertConfig
from distilbert_jax.distill.extract import student_config
from distilbert_jax.distill.program import abstract_inputs
from distilbert_jax.distill.step import LossWeights, Masking, Model, make_train_step
from distilbert_jax.models.registry import ARCHITECTURES
from distilbert_jax.precision import as_dtype
from distilbert_jax.training import program
from distilbert_jax.training.flops import distillation_step_flops
from distilbert_jax.training.hlo_cost import program_cost
from distilbert_jax.training.mesh import MeshShape, make_mesh
from distilbert_jax.training.optimizer import OptimizerConfig, make_optimizer

args = json.loads(sys.argv[1])
if args["small"]:
    teacher_cfg = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    student_layers = 2
else:
    teacher_cfg = BertConfig()
    student_layers = 6
s_cfg = student_config(teacher_cfg, student_layers)
dtype = as_dtype(args["dtype"])
teacher = Model(ARCHITECTURES["BertForMaskedLM"].build(teacher_cfg, dtype=dtype), teacher_cfg)
student = Model(ARCHITECTURES["DistilBertForMaskedLM"].build(s_cfg, dtype=dtype), s_cfg)
tx = make_optimizer(OptimizerConfig(accumulate=50), 1000)
n = jax.device_count()
out = []
for layout in args["layouts"]:
    mesh = make_mesh(MeshShape(-1, 1) if layout == "data" else MeshShape(1, -1))
    batch = args["batch"] if args["batch"] else args["per_device_batch"] * n
    for length in args["lengths"]:
        t0 = time.time()
        inputs, state_sh = abstract_inputs(student, teacher, tx, mesh, batch=batch, length=length,
                                           shard_teacher=layout == "fsdp")
        step = program.jit_step(make_train_step(student, teacher, tx, LossWeights(chunk_size=1024), Masking(103),
                                                mesh=mesh), mesh, state_sh)
        cost = program_cost(step.lower(*inputs).compile())
        out.append({"devices": n, "layout": layout, "batch": batch, "length": length,
                    "hlo_flops": cost.matmul_flops, "collectives": cost.collective_summary(), "memory": cost.memory,
                    "model_flops": distillation_step_flops(s_cfg, teacher_cfg, batch, length),
                    "unknown_trip_counts": cost.unknown_trip_counts, "compile_s": time.time() - t0})
print(json.dumps(out))
"""


def measure(devices: int, layouts, lengths, *, small: bool, dtype: str, batch: int | None) -> list[dict]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    payload = json.dumps({"layouts": list(layouts), "lengths": list(lengths), "small": small, "dtype": dtype,
                          "per_device_batch": PER_DEVICE_BATCH, "batch": batch})
    proc = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"error: compiling for {devices} devices failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def communication_seconds(collectives: dict, devices: int, link: float) -> float:
    """Ring-algorithm time of one device's collectives at `link` bytes/s."""
    if devices <= 1:
        return 0.0
    share = (devices - 1) / devices
    factor = {"all-reduce": 2 * share, "all-gather": share, "reduce-scatter": share, "all-to-all": share,
              "collective-permute": 1.0}
    return sum(factor[kind] * entry["bytes"] / link for kind, entry in collectives.items())


def project(row: dict, system: dict) -> dict:
    n = row["devices"]
    compute = row["hlo_flops"] / (system["peak"] * EFFICIENCY)
    comm = communication_seconds(row["collectives"], n, system["link"])
    tokens = row["batch"] * row["length"]
    out = {}
    for name, step in (("no overlap", compute + comm), ("overlap", max(compute, comm))):
        tps = tokens / step
        out[name] = {"step_s": step, "tokens_per_s": tps, "mfu": row["model_flops"] / n / step / system["peak"],
                     "recipe_hours": RECIPE_TOKENS / tps / 3600}
    memory = row["memory"]
    footprint = memory["argument"] + memory["output"] - memory["alias"] + memory["temp"]
    return {"compute_s": compute, "comm_s": comm, "footprint_gb": footprint / 1e9, "fits": footprint < system["hbm"],
            **out}


def flops_table(rows: list[dict]) -> str:
    lines = ["| devices | layout | per-device GFLOP | devices x per-device / one device | all-reduce MB | "
             "all-gather MB | train state + args MB |", "|---:|---|---:|---:|---:|---:|---:|"]
    one = {r["length"]: r["hlo_flops"] for r in rows if r["devices"] == 1}
    for r in sorted(rows, key=lambda r: (r["layout"], r["devices"])):
        base = one.get(r["length"])
        ratio = f"{r['devices'] * r['hlo_flops'] / base:.3f}x" if base else "-"
        col = r["collectives"]
        lines.append(f"| {r['devices']} | {r['layout']} | {r['hlo_flops'] / 1e9:.2f} | {ratio} | "
                     f"{col.get('all-reduce', {}).get('bytes', 0) / 1e6:.1f} | "
                     f"{col.get('all-gather', {}).get('bytes', 0) / 1e6:.1f} | {r['memory']['argument'] / 1e6:.1f} |")
    return "\n".join(lines)


def projection_table(rows: list[dict]) -> str:
    lines = ["| system | layout | length | per-device GFLOP | collectives per device (MB) | compute ms | "
             "comm ms | step ms (no overlap / overlap) | tokens/s (no overlap / overlap) | MFU | recipe hours | "
             "memory per device |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, system in SYSTEMS.items():
        for r in rows:
            if r["devices"] != system["devices"]:
                continue
            p = project(r, system)
            col = ", ".join(f"{k} {v['bytes'] / 1e6:.0f}" for k, v in sorted(r["collectives"].items()))
            a, b = p["no overlap"], p["overlap"]
            fits = "" if p["fits"] else f" (over {system['hbm'] / 1e9:.0f} GB)"
            lines.append(
                f"| {name} | {r['layout']} | {r['length']} | {r['hlo_flops'] / 1e9:.0f} | {col} | "
                f"{p['compute_s'] * 1e3:.1f} | {p['comm_s'] * 1e3:.1f} | {a['step_s'] * 1e3:.1f} / "
                f"{b['step_s'] * 1e3:.1f} | {a['tokens_per_s'] / 1e3:.0f}k / {b['tokens_per_s'] / 1e3:.0f}k | "
                f"{a['mfu']:.0%} / {b['mfu']:.0%} | {a['recipe_hours']:.1f} / {b['recipe_hours']:.1f} | "
                f"{p['footprint_gb']:.1f} GB{fits} |")
    lines.append(f"\nPaper: {PAPER}. Assumptions: {EFFICIENCY:.0%} of the datasheet bf16 peak for compute; "
                 + "; ".join(f"{k}: {v['link_note']}, {v['hbm'] / 1e9:.0f} GB HBM" for k, v in SYSTEMS.items()) + ".")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default=None, help="comma-separated device counts (default 8,64; --small 1,2,4,8)")
    parser.add_argument("--layouts", default="data,fsdp")
    parser.add_argument("--length", default=None, help="bucket lengths (default 512; --small 128)")
    parser.add_argument("--dtype", default=None, help="compute dtype (default bfloat16; --small float32)")
    parser.add_argument("--small", action="store_true",
                        help="the tests' model (4 x 256 teacher, 2-layer student) and 16 x 128 global batch")
    parser.add_argument("--json", default=None, help="write every measurement here")
    args = parser.parse_args(argv)
    devices = [int(x) for x in (args.devices or ("1,2,4,8" if args.small else "8,64")).split(",")]
    lengths = [int(x) for x in (args.length or ("128" if args.small else "512")).split(",")]
    dtype = args.dtype or ("float32" if args.small else "bfloat16")
    layouts = args.layouts.split(",")
    rows = []
    for n in devices:
        found = measure(n, layouts if n > 1 else layouts[:1], lengths, small=args.small, dtype=dtype,
                        batch=16 if args.small else None)
        for r in found:
            print(f"{n} devices, {r['layout']}, length {r['length']}: {r['hlo_flops'] / 1e9:.2f} GFLOP per device, "
                  f"collectives {r['collectives']}, compiled in {r['compile_s']:.0f} s", flush=True)
        rows.extend(found)
    if any(r["unknown_trip_counts"] for r in rows):
        print("warning: some loops had no known trip count; their bodies were counted once")
    print()
    print(flops_table(rows))
    if not args.small:
        print()
        print(projection_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "systems": SYSTEMS, "efficiency": EFFICIENCY,
                       "projection": {name: [project(r, s) for r in rows if r["devices"] == s["devices"]]
                                      for name, s in SYSTEMS.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
