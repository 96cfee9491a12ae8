"""Throughput of our jitted distillation train step against the same step in transformers' PyTorch, in one run.

    python experiments/bench_distill.py                        # ~10 minutes on the shared 2-core CPUs (load 7)
    python experiments/bench_distill.py --quick --shapes 4x128 --dtypes float32 --json distill.json
    python experiments/bench_distill.py --breakdown --shapes 8x128 --dtypes float32   # where the time goes
    python experiments/bench_distill.py --family gpt2          # DistilGPT2's causal step instead

The step is one distillation micro-batch at base size: a bert-base-uncased-shaped BertForMaskedLM
teacher (transformers' BertConfig defaults, random weights from seed 0) and the 6-layer
DistilBertForMaskedLM student extracted from it (teacher layers 0, 2, 4, 7, 9, 11). transformers
builds the teacher, save_pretrained writes it, distilbert_jax.from_pretrained reads it,
extract_student makes the student and its save_pretrained writes it for transformers to read: both
frameworks train the same weights.

JAX runs the production step: `make_train_step(student, teacher, make_optimizer(...), LossWeights,
Masking)` from distilbert_jax.distill.step, jitted with the train state donated, as the trainer does
(masking inside the step, teacher forward under stop_gradient, student forward and backward with
dropout, the chunked float32 loss, clipping and AdamW every call: accumulate=1). PyTorch runs the
reference distiller's step: the teacher BertForMaskedLM forward under torch.no_grad() in eval mode,
the student DistilBertForMaskedLM forward in train mode (default sdpa attention), full [B, L, V]
logits, loss = 5.0 * KLDiv(batchmean) * T^2 over non-pad tokens + 2.0 * CE on the MLM targets +
1.0 * CosineEmbeddingLoss over non-pad last hidden states, backward, clip_grad_norm_(5.0),
AdamW(0.9, 0.98, eps 1e-6), linear warmup/decay LR schedule step, zero_grad. PyTorch's batch is
masked once beforehand (its step does no masking); JAX masks inside every step (--breakdown times
that part: it is a small fraction of the step).

Each framework runs in its own fresh worker process (so each one's peak memory is its own, and
neither's thread pool competes with the other's), and their steps alternate: JAX step, PyTorch step,
JAX step, ..., so load from other processes on a shared machine hits both alike. JAX's warm-up is
its first call after the compile; PyTorch's is the check step below (or one more step). Figures are
the median of the timed steps. Tokens/s counts batch x length (padding included, as the FLOPs do).
Model FLOP/s is `step_flops` (teacher forward + 3x student forward, MLM heads
included, matmuls only) over the step time. MFU compares it with a jitted 2048^3 matmul of the same
dtype (`measure_matmul_peak`) timed in this process before and after the workers (the better of
the two). On a shared machine both numbers move with the load, so MFU/cpu is also given: the step's
FLOPs per CPU-second of the JAX worker over the matmul's FLOPs per CPU-second, which load barely
moves (a thread spinning while it waits counts as busy, so it errs low). Compile time is lowering
plus XLA compilation of the step, the first call's extra time apart.

Memory: "XLA GB" is the compiled step's memory_analysis(): arguments + outputs + temporaries -
the outputs aliased to donated arguments, i.e. the whole footprint of one step. "rss peak (+step)"
is each worker's resident-set high-water mark over its steps (Linux VmHWM, reset through
/proc/self/clear_refs once the models are loaded and, for JAX, the step compiled) and, in brackets,
its rise over the resident set before the steps: measured the same way for both frameworks. PyTorch
creates its gradients and AdamW moments in its first step, so they are in its rise; JAX's state
holds them from the start. transformers maps the safetensors weights lazily, so PyTorch's rise also
includes its weights being paged in.

Correctness: before timing the first shape, both frameworks run one step with dropout off on the
same masked batch (JAX: the production step built with dropout=False, its own compile; PyTorch:
the student in eval mode), and the loss, its three parts and the gradient's global norm before
clipping are compared; the run fails if they differ by more than --tolerance (relative).

--family gpt2 runs DistilGPT2's step instead: a gpt2-shaped GPT2LMHeadModel teacher (transformers'
GPT2Config defaults, random weights from seed 0), the 6-layer GPT2LMHeadModel student
extract_student makes from its layers 0, 2, 4, 7, 9, 11, batches framed by <|endoftext|>. JAX: the
same production step, which for a GPT-2 student masks nothing and trains on next_token_labels, with
LossWeights(alpha_ce=5, alpha_mlm=0, alpha_clm=2, alpha_cos=1). PyTorch: the reference distiller's
causal step (distill_bench_torch.py): both models called without an attention mask as the reference
does, loss = 5.0 * KLDiv(batchmean) * T^2 over non-pad tokens + 2.0 * CE of logits[:, :-1] on the
ids[:, 1:] (padding ignored) + 1.0 * cosine of the last hidden states, then the same backward,
clipping, AdamW and schedule. FLOPs: as above, but GPT-2's LM head is the tied vocabulary projection
alone (bench_forward.forward_flops takes the MLM transform off the package's formula).

PyTorch bfloat16 (--torch-bf16, autocast) on a CPU without native bf16 matmul runs at a fraction
of a GFLOP/s; a step predicted to take longer than --torch-bf16-limit seconds is not run. bfloat16
rows are compared with PyTorch float32 otherwise, and say so. On a GPU the same script runs JAX on
it (torch too if its CUDA build is installed) and measures the matmul peak at n=8192.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the repo, for `experiments.` and `distilbert_jax` from a checkout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the worker modules beside this file
from distill_bench_common import *  # noqa: E402,F401,F403  (inputs, constants, the worker pipe)
from distill_bench_jax import JaxWorker, jax_breakdown  # noqa: E402,F401
from distill_bench_torch import TorchWorker  # noqa: E402
from experiments.matmul_peak import parse_shapes, torch_bf16_rate  # noqa: E402
from distilbert_jax.host_malloc import malloc_setting, tune_malloc  # noqa: E402


def worker_main(kind: str) -> int:
    """JSON lines in on stdin, out on the original stdout (everything else printed goes to stderr)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    spec = json.loads(sys.stdin.readline())
    try:
        worker = (JaxWorker if kind == "jax" else TorchWorker)(spec)
        proto.write(json.dumps({"ok": True}) + "\n")
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "exit":
                break
            args = cmd.get("args", {})
            proto.write(json.dumps(getattr(worker, cmd["cmd"])(**args)) + "\n")
    except BaseException as e:  # report, so the parent can say which worker failed and why
        import traceback

        traceback.print_exc()
        proto.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        return 1
    return 0


# ------------------------------------------------------------------------------------------------- main

def peak_flops(dtype: str, platform_name: str, quick: bool) -> float:
    from distilbert_jax.training.flops import measure_matmul_peak

    if platform_name == "cpu":
        return measure_matmul_peak(dtype, repeats=2 if quick else 4)
    return measure_matmul_peak(dtype, n=8192, repeats=5, inner=10)


def matmul_flops_per_cpu_second(dtype: str, n: int = 2048, repeats: int = 4) -> float:
    """The same jitted n x n matmul, FLOPs per second of this process's CPU time (all its threads together).

    On a shared machine wall-clock rates depend on what else runs; CPU time counts only the work
    this process got to do, so step FLOPs per CPU-second over this gives a utilisation that load
    barely moves (threads that spin while waiting count too, so it errs low).
    """
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.dtype(dtype))
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    best = 0.0
    for _ in range(repeats):
        c0 = time.process_time()
        dot(a, a).block_until_ready()
        best = max(best, 2.0 * n**3 / max(time.process_time() - c0, 1e-9))
    return best




def run(args) -> dict:
    import jax
    import torch

    family = FAMILIES[args.family]
    repeats = args.repeats or (1 if args.quick else 2)
    platform_name = jax.devices()[0].platform
    load_start = os.getloadavg()
    env = {"jax": jax.__version__, "torch": torch.__version__, "device": jax.devices()[0].device_kind,
           "platform": platform_name, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "repeats": repeats,
           "chunk_size": args.chunk_size, "uptime": _uptime(), "malloc": malloc_setting(), "family": args.family,
           "teacher": family.size}
    peaks_start = {dtype: peak_flops(dtype, platform_name, args.quick) for dtype in args.dtypes}
    cpu_peaks = ({dtype: matmul_flops_per_cpu_second(dtype) for dtype in args.dtypes} if platform_name == "cpu"
                 else {})
    counts = synthetic_counts(family.vocab_size)
    tables = mask_tables(counts, family.special_ids)
    bf16_rate = torch_bf16_rate(512) if args.torch_bf16 else None

    rows, checks, failures, breakdowns = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        models = build_models(tmp, family)
        s_cfg, t_cfg = models["student_config"], models["teacher_config"]
        print(f"jax {env['jax']} ({env['device']}, {env['cpus']} CPUs) vs torch {env['torch']} eager, "
              f"{torch.get_num_threads()} threads; {family.size}-size teacher (random, seed {SEED}), 6-layer "
              f"student from its layers 0,2,4,7,9,11 (models built in {time.perf_counter() - t0:.0f} s); "
              f"median of {repeats} steps after a warm-up step, JAX and PyTorch steps alternating; "
              f"malloc: {env['malloc']}")
        print("matmul peak (jitted jnp.dot, this process, before the workers): " +
              ", ".join(f"{d} {p / 1e9:.1f} GFLOP/s" for d, p in peaks_start.items()), flush=True)
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)}", flush=True)

        for si, (batch, length) in enumerate(args.shapes):
            data = make_batch(batch, length, counts, family=family)
            masked_ids, labels = masked_like_step(data, tables, causal=family.causal)
            batch_file = os.path.join(tmp, f"batch_{batch}x{length}.npz")
            np.savez(batch_file, **data, **tables, masked_ids=masked_ids, labels=labels)
            spec = {"family": args.family, "teacher_dir": models["teacher_dir"], "student_dir": models["student_dir"],
                    "batch_file": batch_file, "chunk_size": args.chunk_size, "torch_bf16": False}
            flops = step_flops(s_cfg, t_cfg, batch, length)
            tokens = batch * length
            torch_row = None  # torch float32 at this shape, shared by the rows of every JAX dtype
            for dtype in args.dtypes:
                torch_bf16 = dtype == "bfloat16" and args.torch_bf16
                run_torch = torch_row is None or torch_bf16
                note = ""
                if torch_bf16:
                    projected = flops / bf16_rate
                    if projected > args.torch_bf16_limit:
                        run_torch = False
                        note = (f"torch bf16 not run (~{projected:.0f} s/step at {bf16_rate / 1e9:.1f} GFLOP/s); "
                                "ratio against torch float32")
                elif dtype == "bfloat16":
                    note = "ratio against torch float32"
                jw = Worker("jax", {**spec, "dtype": dtype})
                tw = None
                try:
                    check = None
                    if si == 0 and dtype == args.dtypes[0] and not args.no_check:
                        check = jw("check")
                    setup = jw("setup")
                    if run_torch or check is not None:
                        tw = Worker("torch", {**spec, "torch_bf16": torch_bf16 and run_torch})
                        if check is not None:
                            checks.append(_compare(check, tw("check"), labels, dtype, batch, length,
                                                   args.tolerance, failures, family))
                        t_setup = tw("setup") if run_torch else None
                    # JAX's warm-up was its first call (in setup); PyTorch's is the check step or one more.
                    if run_torch and check is None:
                        tw("step")
                    jax_steps, torch_steps = [], []
                    for _ in range(repeats):
                        jax_steps.append(jw("step"))
                        if run_torch:
                            torch_steps.append(tw("step"))
                    jax_times, torch_times = [s["s"] for s in jax_steps], [s["s"] for s in torch_steps]
                    j_end = jw("finish")  # before the breakdown, whose programs would raise the high-water marks
                    t_end = tw("finish") if run_torch else None
                    if args.breakdown:
                        breakdowns.append({"batch": batch, "length": length, "dtype": dtype,
                                           "jax": jw("breakdown", repeats=max(1, repeats)),
                                           "torch": tw("breakdown", repeats=max(1, repeats)) if run_torch else None,
                                           "jax_step_s": statistics.median(jax_times),
                                           "torch_step_s": statistics.median(torch_times) if torch_times else None})
                finally:
                    jw.close()
                    if tw is not None:
                        tw.close()
                if run_torch:
                    row_torch = {"times": torch_times, "s": statistics.median(torch_times),
                                 "cpu_s": statistics.median(s["cpu_s"] for s in torch_steps), "dtype":
                                 "bfloat16 autocast" if torch_bf16 else "float32", **t_end,
                                 "cuda_peak_bytes": t_end.get("cuda_peak_bytes"), "attention": t_setup["attention"],
                                 "device": t_setup["device"], "threads": t_setup["threads"]}
                    if not torch_bf16:
                        torch_row = row_torch
                else:
                    row_torch = torch_row
                jax_s = statistics.median(jax_times)
                peak = peaks_start[dtype]
                row = {
                    "batch": batch, "length": length, "dtype": dtype, "tokens": tokens, "flops": flops,
                    "jax_times": jax_times, "jax_s": jax_s, "jax_tokens_per_s": tokens / jax_s,
                    "jax_cpu_s": statistics.median(s["cpu_s"] for s in jax_steps),
                    "jax_flops_per_s": flops / jax_s, "compile_s": setup["lower_s"] + setup["compile_s"],
                    "lower_s": setup["lower_s"], "xla_compile_s": setup["compile_s"],
                    "jax_first_step_s": setup["first_step_s"], "jax_memory": setup["memory"],
                    "jax_rss": j_end,
                    "jax_first_metrics": setup["first_metrics"], "torch": row_torch,
                    "torch_tokens_per_s": tokens / row_torch["s"] if row_torch else None,
                    "ratio": row_torch["s"] / jax_s if row_torch else None,
                    "torch_flops_per_s": flops / row_torch["s"] if row_torch else None, "note": note,
                    "shared_torch_row": not run_torch,
                }
                rows.append(row)
                print(_format_row(row, header=len(rows) == 1), flush=True)

    peaks_end = {dtype: peak_flops(dtype, platform_name, args.quick) for dtype in args.dtypes}
    peaks = {d: max(peaks_start[d], peaks_end[d]) for d in args.dtypes}
    for row in rows:
        row["peak_flops_per_s"] = peaks[row["dtype"]]
        row["mfu"] = row["jax_flops_per_s"] / peaks[row["dtype"]]
        if cpu_peaks:
            row["cpu_peak_flops_per_cpu_s"] = cpu_peaks[row["dtype"]]
            row["mfu_cpu_time"] = row["flops"] / row["jax_cpu_s"] / cpu_peaks[row["dtype"]]
    load_end = os.getloadavg()
    print("matmul peak after the workers: " + ", ".join(f"{d} {p / 1e9:.1f} GFLOP/s" for d, p in peaks_end.items()) +
          "; MFU uses the better of the two measurements" +
          ("" if not cpu_peaks else "; MFU/cpu is step FLOPs per CPU-second of the JAX worker over the matmul's (" +
           ", ".join(f"{d} {p / 1e9:.1f} GFLOP per CPU-s" for d, p in cpu_peaks.items()) + "): what load barely moves"))
    print("\n".join([_COLUMNS] + [_format_row(r) for r in rows]))
    for r in rows:
        t = r["torch"] or {}
        print(f"  {r['batch']}x{r['length']} {r['dtype']}: jax steps {', '.join(f'{x:.2f}' for x in r['jax_times'])} s "
              f"(median {r['jax_cpu_s']:.2f} CPU-s), first call {r['jax_first_step_s']:.2f} s, lower "
              f"{r['lower_s']:.1f} s + XLA compile {r['xla_compile_s']:.1f} s; torch {t.get('dtype', '-')} steps "
              f"{', '.join(f'{x:.2f}' for x in t.get('times', []))} s (median {t.get('cpu_s', float('nan')):.2f} CPU-s)"
              + (" (shared with the float32 row)" if r["shared_torch_row"] else ""))
    print(f"load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f} (on {env['cpus']} CPUs; "
          "anything above ~0 means other processes shared the cores)")
    for row in rows:
        if row["note"]:
            print(f"  {row['batch']}x{row['length']} {row['dtype']}: {row['note']}")
    what, lm = ("unmasked", "next-token") if family.causal else ("masked", "MLM")
    for c in checks:
        print(f"same-step check ({c['shape']}, dropout off, same {what} batch: {c['targets']} {lm} targets): " +
              ", ".join(f"{k} jax {c['jax'][k]:.6f} torch {c['torch'][k]:.6f} (rel {c['rel'][k]:.1e})"
                        for k in family.checked) +
              f"; torch grad_norm in float64 (clip_grad_norm_'s float32 says {c['torch_clip_grad_norm_']:.6f})")
    for b in breakdowns:
        print(_format_breakdown(b))
    for failure in failures:
        print(f"MISMATCH {failure}", file=sys.stderr)
    return {"env": {**env, "load_start": load_start, "load_end": load_end, "uptime_end": _uptime()},
            "peaks_start_flops_per_s": peaks_start, "peaks_end_flops_per_s": peaks_end,
            "matmul_flops_per_cpu_s": cpu_peaks, "rows": rows, "checks": checks, "breakdowns": breakdowns,
            "failures": failures}


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _compare(jax_m: dict, torch_m: dict, labels, dtype, batch, length, tolerance, failures, family) -> dict:
    targets, checked = int((labels != -100).sum()), family.checked
    if int(jax_m["targets"]) != targets or torch_m["targets"] != targets:
        failures.append(f"target counts differ: jax step {jax_m['targets']}, batch {targets}, "
                        f"torch {torch_m['targets']}")
    rel = {k: abs(jax_m[k] - torch_m[k]) / max(abs(torch_m[k]), 1e-12) for k in checked}
    bad = [k for k in checked if not rel[k] <= tolerance]
    if bad and dtype == "float32":
        failures.append(f"{batch}x{length}: " + ", ".join(f"{k} jax {jax_m[k]:.6g} torch {torch_m[k]:.6g}"
                                                            for k in bad))
    return {"shape": f"{batch}x{length}", "dtype": dtype, "targets": targets, "jax": {k: jax_m[k] for k in checked},
            "torch": {k: torch_m[k] for k in checked}, "rel": rel,
            "torch_clip_grad_norm_": torch_m["clip_grad_norm_"]}


_COLUMNS = ("shape    dtype     jax tok/s  torch tok/s  ratio  jax TFLOP/s    MFU  MFU/cpu  torch TFLOP/s  compile s  "
            "XLA GB  rss peak (+step) GB: jax      torch")


def _format_row(row: dict, header: bool = False) -> str:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    gb = lambda b: None if b is None else b / 2**30
    torch = row["torch"] or {}
    jrss = row["jax_rss"] or {}
    mem = row["jax_memory"] or {}
    mfu = row.get("mfu")
    rss = lambda r: f"{fmt(gb(r.get('rss_peak_bytes')), '.2f')} (+{fmt(gb(r.get('rss_peak_delta_bytes')), '.2f')})"
    line = (f"{row['batch']:>2d}x{row['length']:<4d}  {row['dtype']:8s} {row['jax_tokens_per_s']:10.0f} "
            f"{fmt(row['torch_tokens_per_s'], '12.0f'):>12s} {fmt(row['ratio'], '6.2f'):>6s} "
            f"{row['jax_flops_per_s'] / 1e12:12.4f} {fmt(None if mfu is None else 100 * mfu, '5.1f'):>5s}% "
            f"{fmt(None if row.get('mfu_cpu_time') is None else 100 * row['mfu_cpu_time'], '6.1f'):>6s}% "
            f"{fmt(None if row['torch_flops_per_s'] is None else row['torch_flops_per_s'] / 1e12, '14.4f'):>14s} "
            f"{row['compile_s']:10.1f} {fmt(gb(mem.get('total')), '7.2f'):>7s} "
            f"{rss(jrss):>24s} {rss(torch) if torch else '-':>12s}")
    return f"{_COLUMNS}\n{line}" if header else line


def _format_breakdown(b: dict) -> str:
    lines = [f"breakdown {b['batch']}x{b['length']} {b['dtype']} (each piece jitted alone; median seconds): "
             f"whole step jax {b['jax_step_s']:.2f}" +
             (f", torch {b['torch_step_s']:.2f}" if b["torch_step_s"] else "")]
    for name, v in b["jax"].items():
        lines.append(f"  jax   {name:24s} {v['s']:8.3f} s  ({100 * v['s'] / b['jax_step_s']:5.1f}% of the step; "
                     f"compile {v['compile_s']:.1f} s)")
    for name, v in (b["torch"] or {}).items():
        lines.append(f"  torch {name:24s} {v['s']:8.3f} s  ({100 * v['s'] / b['torch_step_s']:5.1f}% of the step)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--family", choices=tuple(FAMILIES), default="bert",
                   help="bert (default): BERT teacher, DistilBERT student; gpt2: GPT-2 teacher, DistilGPT2 student")
    p.add_argument("--quick", action="store_true", help="one timed step after the warm-up (default: median of 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per row (default 2; 1 with --quick)")
    p.add_argument("--shapes", type=parse_shapes, default=list(DEFAULT_SHAPES),
                   help="BATCHxLENGTH list (default 8x128,2x512)")
    p.add_argument("--dtypes", type=lambda s: [d for d in s.split(",") if d], default=["float32"],
                   help="JAX compute dtypes: float32,bfloat16 (default float32; PyTorch stays float32)")
    p.add_argument("--torch-bf16", action="store_true", help="run PyTorch's bfloat16 rows under CPU/CUDA autocast")
    p.add_argument("--torch-bf16-limit", type=float, default=60.0,
                   help="skip a PyTorch bf16 step predicted to take longer than this many seconds")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="loss chunk size in positions (default: DistillConfig().loss.chunk_size, as the trainer)")
    p.add_argument("--no-check", action="store_true", help="skip the dropout-off loss comparison (saves a compile)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="relative loss/grad-norm difference allowed")
    p.add_argument("--breakdown", action="store_true", help="also time the pieces of each step (teacher, student, "
                   "loss, optimizer) in both frameworks")
    p.add_argument("--json", metavar="OUT", help="also write every figure (and the environment) to this file")
    p.add_argument("--system-malloc", action="store_true",
                   help="leave glibc malloc as it is (default: distilbert_jax.host_malloc's settings, for both "
                        "frameworks and every worker)")
    args = p.parse_args(argv)
    tune_malloc(system=args.system_malloc)  # the workers inherit the choice
    if args.worker:
        return worker_main(args.worker)
    if set(args.dtypes) - set(DTYPES) or not args.dtypes:
        p.error(f"--dtypes takes {','.join(DTYPES)}")
    if args.chunk_size is None:
        from distilbert_jax.distill.config import DistillConfig

        args.chunk_size = DistillConfig().loss.chunk_size
    result = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
