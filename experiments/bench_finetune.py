"""Our jitted fine-tuning train step against the same step in transformers' PyTorch, same machine, one run.

    python experiments/bench_finetune.py --head sequence-classification,question-answering   # ~10 min, 2 cores
    python experiments/bench_finetune.py --quick    # tiny model, 4x64, one timed step: a smoke test

Both start from the same random weights: transformers builds the model with its head (seed 0; DistilBertConfig()
= distilbert-base-uncased's shape, BertConfig() bert-base-uncased's); save_pretrained writes the folder both
load. Batches: 32 x 128 for GLUE/SST-2 (2 labels), rows padded from 3/4 of the length to all of it as run_glue
pads; 8 x 384 full SQuAD windows (there our span loss, which masks padding, equals transformers'). JAX runs the
trainer's step (finetune.trainer.compiled_functions: jitted, state donated and sharded) with FinetuneConfig()
defaults (AdamW 0.9/0.999/1e-8, lr 2e-5 decaying linearly, clip 1.0), dropout on. PyTorch runs what the
Trainer does per step: train mode, forward with labels, backward, clip_grad_norm_(1.0), the same AdamW (fused,
the Trainer's default for torch >= 2.8), the scheduler's step, zero_grad; eager, all threads, sdpa attention.

As in bench_distill.py each framework runs in its own fresh worker process (no shared threads or allocator)
and their steps alternate, so outside load hits both alike; warm-up steps (JAX: the first call after compiling;
PyTorch: one, creating gradients and AdamW moments) are untimed; figures are medians. MFU is 3 x forward FLOPs
(encoder_forward_flops, matmuls only) / step time / a jitted 2048^3 f32 matmul's FLOP/s (better of before and
after the workers); "per CPU-s" and the CPU-time ratio use each worker's CPU time, which load barely moves.
First, two steps each with dropout off: first-step losses must agree to --tolerance (1e-4) or the run fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]  # the repo (`experiments.`, `distilbert_jax`) and the modules here
from bench_distill import _uptime, matmul_flops_per_cpu_second, peak_flops  # noqa: E402
from distill_bench_common import Worker  # noqa: E402
from experiments.matmul_peak import parse_shapes  # noqa: E402
from distilbert_jax.host_malloc import malloc_setting, tune_malloc  # noqa: E402

HEADS = {  # head: (finetune step kind, transformers class suffix, default shape, labels)
    "sequence-classification": ("classification", "ForSequenceClassification", (32, 128), 2),
    "question-answering": ("span", "ForQuestionAnswering", (8, 384), 2),
    "token-classification": ("token", "ForTokenClassification", (32, 128), 9)}
TOTAL_UPDATES = 1000  # only shapes the linear LR decay; both frameworks use the same
SEED = 0


def make_batch(head: str, batch: int, length: int, vocab: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """Arrays as finetune.batches.collate makes them: [CLS] segment A, segment B [SEP], padding, targets."""
    rng = np.random.default_rng(seed + 1000 * batch + length)
    low = length if head == "question-answering" else (3 * length) // 4  # full SQuAD windows; GLUE rows padded
    lengths = rng.integers(low, length + 1, batch)
    lengths[0] = length
    out = {"weight": np.ones(batch, np.float32),
           **{k: np.zeros((batch, length), np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}}
    for i, n in enumerate(lengths):
        out["input_ids"][i, :n] = rng.integers(min(1000, vocab // 2), vocab, n)
        out["input_ids"][i, 0], out["input_ids"][i, n - 1] = 101 % vocab, 102 % vocab
        out["attention_mask"][i, :n] = 1
        out["token_type_ids"][i, n // 4:n] = 1  # question / first sentence, then context / second sentence
    if head == "sequence-classification":
        out["label"] = rng.integers(0, 2, batch).astype(np.int32)
    elif head == "question-answering":
        out["start_positions"] = rng.integers(1, max(2, length // 2), batch).astype(np.int32)
        out["end_positions"] = np.minimum(out["start_positions"] + rng.integers(0, 30, batch, np.int32), length - 1)
    else:
        labels = rng.integers(0, HEADS[head][3], (batch, length))
        out["token_labels"] = np.where(out["attention_mask"] == 1, labels, -100).astype(np.int32)
    return out


def build_model(directory: str, family: str, head: str, quick: bool):
    """Random transformers model (seed 0) with `head`, written with save_pretrained; returns our config of it."""
    import transformers

    from distilbert_jax.config import config_from_dict, read_config_json

    transformers.utils.logging.disable_progress_bar()
    transformers.set_seed(SEED)
    name, tiny = (("Bert", dict(num_hidden_layers=2, hidden_size=64, intermediate_size=256, num_attention_heads=2))
                  if family == "bert" else ("DistilBert", dict(n_layers=2, dim=64, hidden_dim=256, n_heads=2)))
    tiny["vocab_size"] = 2000
    config = getattr(transformers, name + "Config")(num_labels=HEADS[head][3], **(tiny if quick else {}))
    getattr(transformers, name + HEADS[head][1])(config).save_pretrained(directory)
    return config_from_dict(read_config_json(os.path.join(directory, "config.json")))  # as the JAX side reads it


class JaxSide:
    """The trainer's compiled step (finetune.trainer.compiled_functions: donated, sharded state)."""

    def __init__(self, spec: dict):
        import jax

        import distilbert_jax as dj
        from distilbert_jax.finetune.config import FinetuneConfig
        from distilbert_jax.training.mesh import global_batch, make_mesh

        self.jax, self.config, self.kind = jax, FinetuneConfig(), HEADS[spec["head"]][0]
        self.model, self.mesh = dj.from_pretrained(spec["dir"], task=spec["head"]), make_mesh(self.config.mesh)
        self.batch, self.key = global_batch(dict(np.load(spec["batch_file"])), self.mesh), jax.random.key(SEED)

    def start(self, train: bool) -> dict:
        """Fresh state from the loaded weights, the step compiled (dropout on if `train`), its first call."""
        from distilbert_jax.finetune.trainer import compiled_functions

        config = dataclasses.replace(self.config, dropout=train)
        fns = compiled_functions(self.model, config, self.kind, TOTAL_UPDATES, self.mesh)
        params = self.jax.tree.map(lambda x: x.copy(), self.model.params)  # the step donates its state
        self.state = fns.init(self.jax.device_put(params, fns.state_shardings.params))
        t0 = time.perf_counter()
        self.compiled = fns.step.lower(self.state, self.batch, self.key).compile()
        compile_s = time.perf_counter() - t0
        return {**self.step(), "compile_s": compile_s}

    def step(self) -> dict:
        self.state, metrics = self.compiled(self.state, self.batch, self.key)
        self.jax.block_until_ready((self.state, metrics))
        return {"loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"])}


class TorchSide:
    """transformers' Trainer step by hand: forward with labels, backward, clip, AdamW, scheduler, zero_grad."""

    def __init__(self, spec: dict):
        import torch
        import transformers

        transformers.utils.logging.disable_progress_bar()
        self.torch, self.transformers, self.spec = torch, transformers, spec
        torch.set_num_threads(os.cpu_count() or 1)
        data, rename = np.load(spec["batch_file"]), {"label": "labels", "token_labels": "labels"}
        keep = {"input_ids", "attention_mask", "start_positions", "end_positions", *rename} | (
            {"token_type_ids"} if spec["family"] == "bert" else set())  # DistilBERT has no token types
        self.inputs = {rename.get(k, k): torch.from_numpy(data[k].astype(np.int64)) for k in data.files if k in keep}

    def start(self, train: bool) -> dict:
        """Fresh model, AdamW and schedule from the saved weights, then one step (it creates the grads, moments)."""
        self.model = getattr(self.transformers, self.spec["torch_class"]).from_pretrained(self.spec["dir"])
        self.model.train(train)
        self.opt = self.torch.optim.AdamW(self.model.parameters(), lr=2e-5, betas=(0.9, 0.999), eps=1e-8,
                                          weight_decay=0.0, fused=True)
        self.sched = self.transformers.get_linear_schedule_with_warmup(self.opt, 0, TOTAL_UPDATES)
        return {**self.step(exact_norm=not train), "attention": self.model.config._attn_implementation}

    def step(self, exact_norm: bool = False) -> dict:
        loss = self.model(**self.inputs).loss
        loss.backward()
        # For the check, the norm in float64: clip_grad_norm_'s float32 one is ~1e-4 off (the 23M-entry embedding).
        exact = [p.grad.double().square().sum() for p in self.model.parameters() if exact_norm and p.grad is not None]
        norm = self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.model.zero_grad()
        return {"loss": float(loss.detach()), "grad_norm": float(sum(exact).sqrt() if exact else norm)}


def worker_main(kind: str) -> None:
    """JSON commands in on stdin, replies on the original stdout; a crash's traceback goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr  # anything printed (warnings, progress) stays off the protocol
    side = (JaxSide if kind == "jax" else TorchSide)(json.loads(sys.stdin.readline()))
    proto.write(json.dumps({"ok": True}) + "\n")
    while (cmd := json.loads(sys.stdin.readline() or '{"cmd": "exit"}'))["cmd"] != "exit":
        t0, c0 = time.perf_counter(), time.process_time()  # process time: all of this worker's threads
        out = getattr(side, cmd["cmd"])(**cmd.get("args", {}))
        if cmd["cmd"] == "step":
            out = {"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, **out}
        proto.write(json.dumps(out) + "\n")


class Proc(Worker):
    """bench_distill's worker handle (JSON over pipes; says which worker died), started on this script."""

    def __init__(self, kind: str, spec: dict):
        self.kind, env = kind, dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", kind], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.call_raw(spec)


def run_row(args, tmp: str, head: str, shape: tuple[int, int], config) -> dict:
    from distilbert_jax.training.flops import encoder_forward_flops

    batch, length = shape
    batch_file = os.path.join(tmp, f"{head}_{batch}x{length}.npz")
    np.savez(batch_file, **make_batch(head, batch, length, config.vocab_size))
    spec = {"dir": os.path.join(tmp, head), "head": head, "batch_file": batch_file, "family": args.model,
            "torch_class": ("Bert" if args.model == "bert" else "DistilBert") + HEADS[head][1]}
    row = {"model": args.model, "head": head, "batch": batch, "length": length,
           "step_flops": 3 * encoder_forward_flops(config, batch, length)}
    label = f"{args.model} {head} {batch}x{length}"
    jw, tw = Proc("jax", spec), Proc("torch", spec)
    try:
        # Two steps with dropout off: the first's loss and gradient norm, the second's loss (after AdamW).
        c = row["check"] = {"jax": jw("start", train=False), "torch": tw("start", train=False)}
        c["jax"]["loss2"], c["torch"]["loss2"] = jw("step")["loss"], tw("step")["loss"]
        c.update({f"{k}_diff": abs(c["jax"][k] - c["torch"][k]) for k in ("loss", "grad_norm", "loss2")})
        print(f"{label}, dropout off: first-step loss jax {c['jax']['loss']:.7f} torch {c['torch']['loss']:.7f} "
              f"(|d| {c['loss_diff']:.1e}); grad norm jax {c['jax']['grad_norm']:.6f} torch "
              f"{c['torch']['grad_norm']:.6f}; second-step loss |d| {c['loss2_diff']:.1e}", flush=True)
        if not c["loss_diff"] <= args.tolerance:
            row["failure"] = f"{label}: first-step loss |d| {c['loss_diff']:.1e} > {args.tolerance:g}"
            print(f"MISMATCH {row['failure']}: not timed", file=sys.stderr, flush=True)
            return row
        row["jax_setup"], row["torch_setup"] = jw("start", train=True), tw("start", train=True)  # warm-ups
        steps = {"jax": [], "torch": []}
        for _ in range(args.repeats):  # alternating, so outside load hits both alike
            steps["jax"].append(jw("step"))
            steps["torch"].append(tw("step"))
    finally:
        jw.close()
        tw.close()
    for name, runs in steps.items():
        s, cpu_s = statistics.median(x["s"] for x in runs), statistics.median(x["cpu_s"] for x in runs)
        row[name] = {"times": [x["s"] for x in runs], "cpu_times": [x["cpu_s"] for x in runs], "s": s,
                     "cpu_s": cpu_s, "losses": [x["loss"] for x in runs], "steps_per_s": 1 / s,
                     "examples_per_s": batch / s, "flops_per_s": row["step_flops"] / s,
                     "flops_per_cpu_s": row["step_flops"] / cpu_s}
    row["ratio"], row["ratio_cpu"] = row["torch"]["s"] / row["jax"]["s"], row["torch"]["cpu_s"] / row["jax"]["cpu_s"]
    times = lambda side: ", ".join(f"{t:.2f}" for t in row[side]["times"])
    print(f"{label}: jax steps {times('jax')} s, torch steps {times('torch')} s (median CPU-s "
          f"{row['jax']['cpu_s']:.2f} / {row['torch']['cpu_s']:.2f}); compile {row['jax_setup']['compile_s']:.1f} s")
    return row


def markdown(rows: list[dict]) -> str:
    pct = lambda side: f"{100 * side['mfu']:.0f}% / {100 * side['mfu_cpu']:.0f}%"
    lines = ["| model, head | (batch, length) | JAX steps/s | PyTorch steps/s | JAX examples/s | PyTorch examples/s "
             "| ratio (wall / CPU time) | JAX MFU (wall / per CPU-s) | PyTorch MFU (wall / per CPU-s) | compile |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r, j, t in ((r, r["jax"], r["torch"]) for r in rows if "jax" in r):
        lines.append(f"| {r['model']}, {r['head']} | {r['batch']} x {r['length']} | {j['steps_per_s']:.3f} | "
                     f"{t['steps_per_s']:.3f} | {j['examples_per_s']:.2f} | {t['examples_per_s']:.2f} | "
                     f"{r['ratio']:.2f}x / {r['ratio_cpu']:.2f}x | {pct(j)} | {pct(t)} | "
                     f"{r['jax_setup']['compile_s']:.0f} s |")
    return "\n".join(lines)


def run(args) -> dict:
    import jax
    import torch

    platform_name = jax.devices()[0].platform
    env = {"jax": jax.__version__, "torch": torch.__version__, "device": jax.devices()[0].device_kind,
           "cpus": os.cpu_count(), "repeats": args.repeats, "quick": args.quick, "uptime_start": _uptime(),
           "malloc": malloc_setting()}
    peak_start = peak_flops("float32", platform_name, args.quick)
    cpu_peak = matmul_flops_per_cpu_second("float32") if platform_name == "cpu" else float("nan")
    print(f"uptime at start: {env['uptime_start']}\njax {env['jax']} ({env['device']}) vs torch {env['torch']}, "
          f"{env['cpus']} CPUs; {args.model} {'tiny' if args.quick else 'base size'}, random weights; median of "
          f"{args.repeats} steps after a warm-up, alternating; f32 matmul {peak_start / 1e9:.1f} GFLOP/s; "
          f"malloc: {env['malloc']}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for head in args.head:
            config = build_model(os.path.join(tmp, head), args.model, head, args.quick)
            for shape in args.shapes or [(4, 64) if args.quick else HEADS[head][2]]:
                rows.append(run_row(args, tmp, head, shape, config))
    peak = max(peak_start, peak_end := peak_flops("float32", platform_name, args.quick))
    for side in (r[name] for r in rows if "jax" in r for name in ("jax", "torch")):
        side["mfu"], side["mfu_cpu"] = side["flops_per_s"] / peak, side["flops_per_cpu_s"] / cpu_peak
    env.update(uptime_end=_uptime(), peak_start=peak_start, peak_end=peak_end, matmul_flops_per_cpu_s=cpu_peak)
    print(f"f32 matmul: {peak_start / 1e9:.1f} GFLOP/s before the workers, {peak_end / 1e9:.1f} after (MFU uses the "
          f"better); {cpu_peak / 1e9:.1f} GFLOP per CPU-second (for MFU per CPU-s)\nuptime at end: {env['uptime_end']}")
    print("\n" + markdown(rows) + "\n", flush=True)
    return {"env": env, "rows": rows, "failures": [r["failure"] for r in rows if "failure" in r]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--model", choices=("distilbert", "bert"), default="distilbert",
                   help="distilbert (DistilBertConfig(): distilbert-base-uncased's shape; default) or bert")
    p.add_argument("--head", type=lambda s: [h for h in s.split(",") if h], default=["sequence-classification"],
                   help=f"comma list of {','.join(HEADS)} (default sequence-classification)")
    p.add_argument("--shapes", type=parse_shapes, default=None,
                   help="BATCHxLENGTH list for every head (default 32x128; 8x384 for question-answering)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per row (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny model (2 layers, dim 64), 4x64, one timed step")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest first-step |loss difference| allowed")
    p.add_argument("--json", metavar="OUT", help="also write every figure to this file")
    p.add_argument("--system-malloc", action="store_true",
                   help="leave glibc malloc as it is (default: distilbert_jax.host_malloc's settings, for both "
                        "frameworks and every worker)")
    args = p.parse_args(argv)
    tune_malloc(system=args.system_malloc)  # the workers inherit the choice
    if args.worker:
        return worker_main(args.worker) or 0
    args.repeats = args.repeats or (1 if args.quick else 3)
    if not args.head or set(args.head) - set(HEADS) or args.repeats < 1:
        p.error(f"--head takes a comma list of {', '.join(HEADS)}; --repeats must be at least 1")
    result = run(args)
    print(json.dumps(result, default=str))  # one line with every number
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
