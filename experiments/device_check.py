"""The figures an accelerator owes, in one command: parity, forward, attention forms, distillation and
fine-tuning steps, each against PyTorch on the same device; one JSON and one Markdown table.

    PYTHONPATH=. python experiments/device_check.py --out OUT      # on a GPU: <= 8 minutes on one H200
    python experiments/device_check.py --smoke --out /tmp/check     # tiny sizes on CPU, < 2 minutes

Sections (each timed; a section that fails is recorded as failed and the rest still run):
  parity     the parity tests on this device: float32 with jax_default_matmul_precision=highest,
             then the bf16/fp16 tests at their own tolerances (pytest in a child, before this
             process takes the device)
  forward    distilbert-base encoder and MLM forward at (64, 128) and (32, 512), float32 and
             bfloat16, against transformers (bf16: torch.autocast) on the same device: ms, tokens/s,
             MFU against the datasheet peak of the dtype, max |ours - torch float32|
  attention  every attention form (materialised, xla, cudnn, chunked) forward and forward+backward,
             with and without dropout, at the same shapes, bf16
  distill    the base-size distillation step (BERT-base teacher, 6-layer student, triple loss, AdamW)
             in bf16 at a batch that fills the device, against the reference distiller's step in
             PyTorch with bf16 autocast: tokens/s, MFU, peak device memory, compile seconds
  finetune   a base-size sequence-classification step, bf16, against transformers' Trainer step
MFU counts matmul FLOPs only (training/flops.py) against the datasheet dense peak of the dtype.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "experiments"))

from device_check_report import markdown  # noqa: E402  (after the path: a script run from anywhere)

SHAPES = ((64, 128), (32, 512))
SMOKE_SHAPES = ((4, 32),)
TINY_BERT = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                 max_position_embeddings=128)


def _median_seconds(fn, repeats: int, sync=None, warmup: int = 1) -> float:
    """Median seconds of `fn` (JAX callers block on their results; PyTorch passes its `sync`)."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Context:
    """What every section shares: the device, both frameworks, the sizes, the peaks."""

    def __init__(self, args):
        import jax
        import torch

        from distilbert_jax.training.flops import datasheet_peak, measure_matmul_peak

        self.args, self.jax, self.torch = args, jax, torch
        self.device = jax.devices()[0]
        self.torch_device = "cuda" if torch.cuda.is_available() else "cpu"
        self.repeats = 2 if args.smoke else args.repeats
        self.shapes = SMOKE_SHAPES if args.smoke else SHAPES
        self.peaks = {}
        for dtype in ("float32", "bfloat16"):
            peak = datasheet_peak(self.device.device_kind, dtype) if self.device.platform != "cpu" else None
            self.peaks[dtype] = peak or measure_matmul_peak(dtype, n=256 if args.smoke else 2048)
        self.tmp = tempfile.mkdtemp(prefix="device_check_")

    def torch_sync(self):
        if self.torch_device == "cuda":
            self.torch.cuda.synchronize()

    def peak_memory(self) -> int | None:
        stats = self.device.memory_stats() or {}
        return stats.get("peak_bytes_in_use")

    def bert_config(self):
        import transformers

        return transformers.BertConfig(**(TINY_BERT if self.args.smoke else {}))

    def distilbert_config(self):
        import transformers

        if self.args.smoke:
            t = TINY_BERT
            return transformers.DistilBertConfig(vocab_size=t["vocab_size"], dim=t["hidden_size"], n_layers=2,
                                                 n_heads=t["num_attention_heads"], hidden_dim=t["intermediate_size"],
                                                 max_position_embeddings=t["max_position_embeddings"])
        return transformers.DistilBertConfig()


# ------------------------------------------------------------------------------------------- parity

def parity(args) -> dict:
    """The parity tests in a child pytest on this device: f32 at highest matmul precision, then 16-bit."""
    runs = {
        "float32 (highest precision)": (["tests/test_parity.py", "tests/test_attention.py", "tests/test_precision.py",
                                         "-k", "not bfloat16 and not float16 and not low_precision"],
                                        {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}),
        "bfloat16 / float16": (["tests/test_parity.py", "tests/test_attention.py", "-k",
                                "bfloat16 or float16 or low_precision"], {}),
    }
    if args.smoke:  # the mechanism, on a few quick tests
        smoke = {"float32 (highest precision)": "auto_choice", "bfloat16 / float16": "bfloat16 and xla"}
        runs = {name: (["tests/test_attention.py", "-k", smoke[name]], env) for name, (_, env) in runs.items()}
    out = {}
    for name, (selection, extra) in runs.items():
        env = {**os.environ, **extra, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=args.parity_timeout)
        except subprocess.TimeoutExpired as err:  # what ran is still reported; the other sections still run
            stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            out[name] = {"exit": "timeout", "summary": f"timed out after {args.parity_timeout:.0f} s",
                         "output_tail": stdout[-600:], "seconds": round(time.perf_counter() - t0, 1)}
            continue
        summary = (proc.stdout.strip().splitlines() or [""])[-1]
        counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|error|errors|skipped)", summary)}
        failures = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        out[name] = {"exit": proc.returncode, "summary": summary, **counts, "failures": failures[:20],
                     "seconds": round(time.perf_counter() - t0, 1)}
    return out


# ------------------------------------------------------------------------------------------ forward

def forward(ctx: Context) -> list[dict]:
    """Encoder and MLM forward, ours vs transformers on the same device, f32 and bf16."""
    import jax
    import jax.numpy as jnp
    import torch
    import transformers

    import distilbert_jax as dj
    from distilbert_jax.models.registry import ARCHITECTURES
    from distilbert_jax.training.flops import encoder_forward_flops

    torch.manual_seed(0)
    folder = os.path.join(ctx.tmp, "distilbert")
    pt = transformers.DistilBertForMaskedLM(ctx.distilbert_config()).eval()
    pt.save_pretrained(folder)
    pt = pt.to(ctx.torch_device)
    ours = dj.from_pretrained(folder, task="masked-lm")
    rows = []
    for batch, length in ctx.shapes:
        rng = np.random.default_rng(batch * length)
        ids = rng.integers(1000 % ours.config.vocab_size, ours.config.vocab_size, (batch, length)).astype(np.int32)
        mask = np.ones((batch, length), np.int32)
        mask[1:, (3 * length) // 4:] = 0  # some padding, as a bucket holds
        t_ids, t_mask = (torch.from_numpy(a.astype(np.int64)).to(ctx.torch_device) for a in (ids, mask))
        with torch.inference_mode():
            reference = {"mlm": pt(input_ids=t_ids, attention_mask=t_mask).logits.float().cpu().numpy()}
            reference["encoder"] = pt.distilbert(input_ids=t_ids, attention_mask=t_mask).last_hidden_state.float()
            reference["encoder"] = reference["encoder"].cpu().numpy()
        for dtype in ("float32", "bfloat16"):
            for model in ("encoder", "mlm"):
                arch = ARCHITECTURES["DistilBertForMaskedLM" if model == "mlm" else "DistilBertModel"]
                module = arch.build(ours.config, dtype=getattr(jnp, dtype))
                params = ours.params if model == "mlm" else ours.params["distilbert"]
                field = "logits" if model == "mlm" else "last_hidden_state"
                fn = jax.jit(lambda p, i, m, module=module, field=field: getattr(module.apply({"params": p}, i, m),
                                                                                 field))
                t0 = time.perf_counter()
                # float32 rows are true float32 on both sides (PyTorch keeps TF32 off for matmuls by default)
                with jax.default_matmul_precision("highest" if dtype == "float32" else "default"):
                    compiled = fn.lower(params, ids, mask).compile()
                compile_s = time.perf_counter() - t0
                result = {}

                def run_jax():
                    result["out"] = compiled(params, ids, mask).block_until_ready()

                jax_s = _median_seconds(run_jax, ctx.repeats)
                target = pt if model == "mlm" else pt.distilbert

                def run_torch():
                    with torch.inference_mode(), torch.autocast(ctx.torch_device, dtype=torch.bfloat16,
                                                                enabled=dtype == "bfloat16"):
                        target(input_ids=t_ids, attention_mask=t_mask)

                torch_s = _median_seconds(run_torch, ctx.repeats, ctx.torch_sync)
                flops = encoder_forward_flops(ours.config, batch, length, mlm_head=model == "mlm")
                valid = mask.astype(bool)
                err = float(np.max(np.abs(np.asarray(result["out"], np.float32)[valid] - reference[model][valid])))
                rows.append({"model": model, "dtype": dtype, "batch": batch, "length": length,
                             "jax_ms": jax_s * 1e3, "torch_ms": torch_s * 1e3, "speedup": torch_s / jax_s,
                             "tokens_per_s": batch * length / jax_s, "mfu": flops / jax_s / ctx.peaks[dtype],
                             "torch_mfu": flops / torch_s / ctx.peaks[dtype], "max_abs_err_vs_torch_f32": err,
                             "compile_s": compile_s})
                print(f"  forward {model:7s} {dtype:8s} {batch}x{length}: {jax_s * 1e3:.2f} ms "
                      f"(torch {torch_s * 1e3:.2f}) MFU {rows[-1]['mfu']:.1%} err {err:.2e}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------- attention

def attention(ctx: Context) -> list[dict]:
    """Every attention form at the forward shapes, bf16, 12 heads of 64 (distilbert-base)."""
    import jax
    import jax.numpy as jnp

    from distilbert_jax.models.attention import DotProductAttention

    heads, head_dim = (4, 16) if ctx.args.smoke else (12, 64)
    rows = []
    for batch, length in ctx.shapes:
        rng = np.random.default_rng(0)
        q, k, v = (jnp.asarray(rng.standard_normal((batch, length, heads, head_dim)), jnp.bfloat16) for _ in range(3))
        mask = np.ones((batch, length), np.int32)
        mask[1:, (3 * length) // 4:] = 0
        # dropout masks from threefry (JAX's default) and from "rbg" keys, which MaxText uses on GPUs
        variants = [(form, mode, dropout, "threefry2x32") for form in ("materialised", "xla", "cudnn", "chunked")
                    for mode, dropout in (("forward", False), ("forward+backward", False), ("forward+backward", True))
                    if not (dropout and form in ("xla", "cudnn"))]
        variants += [(form, "forward+backward", True, "rbg") for form in ("materialised", "chunked")]
        for form, mode, dropout, rng_impl in variants:
            key = jax.random.key(0, impl=rng_impl)
            module = DotProductAttention(0.1, dtype=jnp.bfloat16, implementation=form)

            def loss(q, k, v, module=module, dropout=dropout, key=key):
                out = module.apply({}, q, k, v, mask, deterministic=not dropout, rngs={"dropout": key})[0]
                return jnp.sum(out.astype(jnp.float32) ** 2)

            fn = jax.jit(loss if mode == "forward" else jax.grad(loss, argnums=(0, 1, 2)))
            row = {"form": form, "mode": mode, "dropout": dropout, "rng": rng_impl if dropout else "-",
                   "batch": batch, "length": length}
            try:
                compiled = fn.lower(q, k, v).compile()
                seconds = _median_seconds(lambda: jax.block_until_ready(compiled(q, k, v)), ctx.repeats)
                row["ms"] = seconds * 1e3
            except Exception as err:  # noqa: BLE001  (cuDNN off NVIDIA GPUs, unsupported shapes)
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            rows.append(row)
            print(f"  attention {form:12s} {mode:16s} dropout={dropout!s:5s} rng={row['rng']:12s} {batch}x{length}: "
                  f"{row.get('ms', float('nan')):.3f} ms {row.get('error', '')}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------ distill

def distill(ctx: Context) -> dict:
    """The production distillation step in bf16 vs the reference distiller (bf16 autocast), one device."""
    import torch
    import transformers

    import distilbert_jax as dj
    from distill_bench_common import make_batch, mask_tables, masked_like_step, synthetic_counts
    from distill_bench_jax import JaxWorker
    from distill_bench_torch import TorchWorker
    from distilbert_jax.distill.extract import extract_student
    from distilbert_jax.training.flops import distillation_step_flops

    batch, length = (4, 32) if ctx.args.smoke else (ctx.args.distill_batch, 128)
    torch.manual_seed(0)
    teacher_dir, student_dir = os.path.join(ctx.tmp, "teacher"), os.path.join(ctx.tmp, "student")
    transformers.BertForMaskedLM(ctx.bert_config()).save_pretrained(teacher_dir)
    teacher = dj.from_pretrained(teacher_dir, task="masked-lm")
    layers = {"layers": (0, 2)} if ctx.args.smoke else {}  # the paper's (0, 2, 4, 7, 9, 11) at base size
    extract_student(teacher, **layers).save_pretrained(student_dir)
    student_config = dj.from_pretrained(student_dir, task="masked-lm").config
    counts = synthetic_counts(teacher.config.vocab_size)
    data = make_batch(batch, length, counts)
    tables = mask_tables(counts)
    masked_ids, labels = masked_like_step(data, tables)
    batch_file = os.path.join(ctx.tmp, "distill_batch.npz")
    np.savez(batch_file, **data, **tables, masked_ids=masked_ids, labels=labels)
    spec = {"teacher_dir": teacher_dir, "student_dir": student_dir, "batch_file": batch_file, "dtype": "bfloat16",
            "chunk_size": 1024, "torch_bf16": True}
    flops = distillation_step_flops(student_config, teacher.config, batch, length)
    tokens = batch * length
    out = {"batch": batch, "length": length, "flops_per_step": flops}

    jax_side = JaxWorker(spec)
    setup = jax_side.setup()
    seconds = statistics.median(jax_side.step()["s"] for _ in range(ctx.repeats))
    out["jax"] = {"step_ms": seconds * 1e3, "tokens_per_s": tokens / seconds, "mfu": flops / seconds /
                  ctx.peaks["bfloat16"], "compile_s": setup["compile_s"], "first_loss": setup["first_metrics"]["loss"],
                  "peak_device_bytes": ctx.peak_memory(), "compiled_memory": setup["memory"]}
    del jax_side
    print(f"  distill jax   {batch}x{length} bf16: {seconds * 1e3:.1f} ms, MFU {out['jax']['mfu']:.1%}", flush=True)

    torch_side = TorchWorker(spec)
    torch_side.setup()
    first = torch_side.step()  # also the warm-up: creates the gradients and Adam moments
    seconds = statistics.median(torch_side.step()["s"] for _ in range(ctx.repeats))
    finish = torch_side.finish()
    out["torch"] = {"step_ms": seconds * 1e3, "tokens_per_s": tokens / seconds, "first_loss": first["loss"],
                    "mfu": flops / seconds / ctx.peaks["bfloat16"], "attention": torch_side.attention,
                    "peak_device_bytes": finish.get("cuda_peak_bytes")}
    out["speedup"] = out["torch"]["step_ms"] / out["jax"]["step_ms"]
    print(f"  distill torch {batch}x{length} bf16: {seconds * 1e3:.1f} ms -> JAX {out['speedup']:.2f}x", flush=True)
    return out


# ----------------------------------------------------------------------------------------- finetune

def finetune(ctx: Context) -> dict:
    """One sequence-classification train step (AdamW, clipping, dropout), bf16, ours vs transformers."""
    import jax
    import torch
    import transformers

    import distilbert_jax as dj
    from distilbert_jax.finetune.config import FinetuneConfig
    from distilbert_jax.finetune.trainer import compiled_functions
    from distilbert_jax.training.flops import encoder_forward_flops
    from distilbert_jax.training.mesh import global_batch, make_mesh

    batch, length = (4, 32) if ctx.args.smoke else (32, 128)
    folder = os.path.join(ctx.tmp, "classifier")
    torch.manual_seed(0)
    transformers.DistilBertForSequenceClassification(ctx.distilbert_config()).save_pretrained(folder)
    model = dj.from_pretrained(folder, task="sequence-classification")
    rng = np.random.default_rng(0)
    arrays = {"input_ids": rng.integers(1000 % model.config.vocab_size, model.config.vocab_size,
                                        (batch, length)).astype(np.int32),
              "attention_mask": np.ones((batch, length), np.int32), "token_type_ids": np.zeros((batch, length), np.int32),
              "label": rng.integers(0, 2, batch).astype(np.int32),
              "weight": np.ones(batch, np.float32)}
    config = FinetuneConfig(precision="params=float32,compute=bfloat16")
    mesh = make_mesh(config.mesh)
    fns = compiled_functions(model, config, "classification", 1000, mesh)
    state = fns.init(jax.device_put(jax.tree.map(lambda x: x.copy(), model.params), fns.state_shardings.params))
    device_batch, key = global_batch(arrays, mesh), jax.random.key(0)
    t0 = time.perf_counter()
    compiled = fns.step.lower(state, device_batch, key).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def run_jax():
        holder["state"], metrics = compiled(holder["state"], device_batch, key)
        jax.block_until_ready(metrics)

    jax_s = _median_seconds(run_jax, ctx.repeats)

    pt = transformers.DistilBertForSequenceClassification.from_pretrained(folder).to(ctx.torch_device).train()
    opt = torch.optim.AdamW(pt.parameters(), lr=2e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    inputs = {"input_ids": torch.from_numpy(arrays["input_ids"].astype(np.int64)).to(ctx.torch_device),
              "attention_mask": torch.from_numpy(arrays["attention_mask"].astype(np.int64)).to(ctx.torch_device),
              "labels": torch.from_numpy(arrays["label"].astype(np.int64)).to(ctx.torch_device)}

    def run_torch():
        with torch.autocast(ctx.torch_device, dtype=torch.bfloat16):
            loss = pt(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pt.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    torch_s = _median_seconds(run_torch, ctx.repeats, ctx.torch_sync)
    flops = 3 * encoder_forward_flops(model.config, batch, length)
    print(f"  finetune {batch}x{length} bf16: {jax_s * 1e3:.1f} ms (torch {torch_s * 1e3:.1f})", flush=True)
    return {"batch": batch, "length": length, "jax_ms": jax_s * 1e3, "torch_ms": torch_s * 1e3,
            "speedup": torch_s / jax_s, "mfu": flops / jax_s / ctx.peaks["bfloat16"],
            "torch_mfu": flops / torch_s / ctx.peaks["bfloat16"], "compile_s": compile_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="device_check", help="folder for device_check.json and .md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, CPU-friendly (< 2 minutes)")
    parser.add_argument("--sections", default="parity,forward,attention,distill,finetune")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--distill-batch", type=int, default=256, help="sequences of 128 tokens per step")
    parser.add_argument("--parity-timeout", type=float, default=150, help="seconds for each of the two test runs")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    report: dict = {"date": time.strftime("%Y-%m-%d"), "smoke": args.smoke, "sections": {}}

    def record(name, fn, *fn_args):
        t0 = time.perf_counter()
        print(f"[{time.perf_counter() - start:6.1f} s] {name}", flush=True)
        try:
            report["sections"][name] = {"result": fn(*fn_args)}
        except Exception as err:  # noqa: BLE001  (one failed section must not lose the others' figures)
            traceback.print_exc()
            report["sections"][name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        report["sections"][name]["seconds"] = round(time.perf_counter() - t0, 1)

    if "parity" in sections:  # first: the child must have the device before this process takes it
        record("parity", parity, args)

    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")  # leave PyTorch the other half
    from distilbert_jax import host_settings

    report["host_settings"] = host_settings.configure()
    import jax
    import torch

    ctx = Context(args)
    report["environment"] = {"device_kind": ctx.device.device_kind, "platform": ctx.device.platform,
                             "devices": jax.device_count(), "jax": jax.__version__, "torch": torch.__version__,
                             "torch_device": ctx.torch_device, "python": platform.python_version(),
                             "xla_flags": os.environ.get("XLA_FLAGS", ""), "peaks": ctx.peaks}
    # the training steps first: JAX's peak-memory counter cannot be reset, and theirs is the figure
    for name, fn in (("distill", distill), ("finetune", finetune), ("forward", forward), ("attention", attention)):
        if name in sections:
            record(name, fn, ctx)
    report["seconds"] = round(time.perf_counter() - start, 1)
    with open(os.path.join(args.out, "device_check.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    text = markdown(report)
    with open(os.path.join(args.out, "device_check.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"device check: {report['seconds']} s; wrote {args.out}/device_check.json and .md")
    return 1 if any("error" in s for s in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
