"""Forward throughput of our jitted DistilBERT (BERT, RoBERTa, GPT-2) against transformers' PyTorch, same run.

    python experiments/bench_forward.py                      # full run, about 5 minutes on 2 idle CPU cores
    python experiments/bench_forward.py --quick --shapes 8x128 --dtypes float32 --json speed.json
    python experiments/bench_forward.py --family gpt2        # bert, roberta, gpt2: the other families

Both frameworks run the same random distilbert-base-uncased weights: transformers builds the model
(its DistilBertConfig defaults), save_pretrained writes it and distilbert_jax.from_pretrained reads
it. `--family` swaps the model (`FAMILIES`): bert-base-uncased (BertConfig defaults), roberta-base
(RobertaConfig at roberta-base's vocabulary, positions and LayerNorm eps) or gpt2 (GPT2Config
defaults; its models are "decoder", the GPT2Model, and "lm", the logits). JAX runs one `jax.jit`
of `module.apply` with the parameters as an argument (not folded into the program as constants),
float32 parameters and float32 or bfloat16 compute; PyTorch runs eager under
`torch.inference_mode()` with all CPU threads and its default attention (sdpa), the whole model cast
for bfloat16. Every row gets a full attention mask of ones.

Each figure is the best of timed runs after a warm-up, every run waited for (`block_until_ready`),
with JAX, PyTorch and a jitted 2048^3 `jnp.dot` of the same dtype (experiments/matmul_peak.py)
alternating: on a machine shared with other jobs the best run is the one least disturbed by them,
and the matmul timed beside the forwards sees the same interference (medians are in the --json
output). Achieved FLOP/s is `forward_flops` over that time; "% peak" divides it by that matmul's
FLOP/s, the ceiling for a forward made of matmuls on this machine. Every output is compared with
PyTorch's float32 output (max abs difference) so the benchmark cannot silently time two different
computations; the run exits 1 if the float32 outputs disagree.

bfloat16 on a CPU without native bf16 matmul (AVX512-BF16/AMX, e.g. AVX2 only): XLA upcasts each
bf16 dot to float32 (converts around an f32 GEMM), so JAX bf16 is no faster than f32, and PyTorch
bf16 is several times slower than its f32. A PyTorch bf16 forward predicted to take longer than
--torch-bf16-limit seconds is not run, and the output says so.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo, for `experiments.`
from experiments.matmul_peak import parse_shapes, torch_bf16_rate  # noqa: E402
from distilbert_jax.host_malloc import malloc_setting, tune_malloc  # noqa: E402

DEFAULT_SHAPES = ((8, 128), (32, 128), (8, 512))
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family as both frameworks name it: the LM model with its base model inside."""

    size: str  # the released checkpoint whose shape the random model has
    config: str  # transformers config class, built with `config_kwargs`
    lm: str  # the transformers class and our architecture name of the LM model ("head" below)
    base: str  # our architecture name of the base model
    base_attr: str  # where the LM model keeps the base model (torch attribute, our parameter prefix)
    models: tuple[str, str]  # names of (base, head) on the command line
    config_kwargs: tuple = ()
    base_kwargs: tuple = ()  # for our base module: BERT's carries no pooler inside an MLM model


FAMILIES = {
    "distilbert": Family("distilbert-base-uncased", "DistilBertConfig", "DistilBertForMaskedLM", "DistilBertModel",
                         "distilbert", ("encoder", "mlm")),
    "bert": Family("bert-base-uncased", "BertConfig", "BertForMaskedLM", "BertModel", "bert", ("encoder", "mlm"),
                   base_kwargs=(("add_pooling_layer", False),)),
    "roberta": Family("roberta-base", "RobertaConfig", "RobertaForMaskedLM", "RobertaModel", "roberta",
                      ("encoder", "mlm"), (("vocab_size", 50265), ("max_position_embeddings", 514),
                                           ("type_vocab_size", 1), ("layer_norm_eps", 1e-5)),
                      base_kwargs=(("add_pooling_layer", False),)),
    "gpt2": Family("gpt2", "GPT2Config", "GPT2LMHeadModel", "GPT2Model", "transformer", ("decoder", "lm")),
}
MODELS = tuple(dict.fromkeys(m for f in FAMILIES.values() for m in f.models))
F32_TOLERANCE = {"base": 1e-3, "head": 2e-3}  # max |jax - torch| in float32; measured 3e-6 to 6e-6, every family


def forward_flops(config, batch: int, length: int, *, head: bool) -> float:
    """Matmul FLOPs of one forward (the package's one formula: distilbert_jax.training.flops).

    Elementwise work (GELU, softmax, LayerNorm, embeddings) is not counted, as in MaxText's and
    PaLM's model-FLOPs accounting, so "% of peak" is a model-FLOPs utilisation. Attention counts
    every score, causal or not (GPT-2's masked half is computed too).
    """
    from distilbert_jax.training.flops import encoder_forward_flops

    return encoder_forward_flops(config, batch, length, mlm_head=head)


class JaxForward:
    """One compiled program per (model, dtype, shape): `module.apply` jitted, params as an argument."""

    def __init__(self, ours, family: Family, head: bool, dtype: str):
        import jax
        import jax.numpy as jnp

        from distilbert_jax.models.registry import ARCHITECTURES

        arch = ARCHITECTURES[family.lm if head else family.base]
        kwargs = {} if head else dict(family.base_kwargs)
        module = arch.build(ours.config, dtype=jnp.dtype(dtype).type, **kwargs)  # f32 params, `dtype` compute
        self.params = ours.params if head else ours.params[family.base_attr]
        field = "logits" if head else "last_hidden_state"
        self.fn = jax.jit(lambda params, ids, mask: getattr(module.apply({"params": params}, ids, mask), field))

    def compile(self, ids, mask) -> float:
        t0 = time.perf_counter()
        self.compiled = self.fn.lower(self.params, ids, mask).compile()
        return time.perf_counter() - t0

    def __call__(self, ids, mask):
        self.out = self.compiled(self.params, ids, mask).block_until_ready()
        return self.out


class TorchForward:
    """The transformers model called as users call it: eager, under inference_mode."""

    def __init__(self, pt_lm, family: Family, head: bool):
        self.model = pt_lm if head else getattr(pt_lm, family.base_attr)
        self.field = "logits" if head else "last_hidden_state"

    def __call__(self, ids, mask):
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                             attention_mask=torch.from_numpy(mask.astype(np.int64)))
        self.out = getattr(out, self.field)
        return self.out


def timed(fns, *, warmup: int, repeats: int) -> list[list[float]]:
    """Seconds of each timed call of each function (which waits for its result), alternating them.

    Alternating puts the frameworks under the same conditions while other processes come and go.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            fn_times.append(time.perf_counter() - t0)
    return times




def build_models(directory: str, family: Family):
    """A random torch LM of the family (transformers' config) and ours, read from its save_pretrained."""
    import torch
    import transformers

    import distilbert_jax as dj
    from distilbert_jax.models.registry import ARCHITECTURES

    torch.manual_seed(0)
    config = getattr(transformers, family.config)(**dict(family.config_kwargs))
    pt = getattr(transformers, family.lm)(config).eval()
    pt.save_pretrained(directory)
    return pt, dj.from_pretrained(directory, task=ARCHITECTURES[family.lm].task)


class Bench:
    """Runs the rows: every (dtype, model, shape), JAX and PyTorch, checked against PyTorch float32."""

    def __init__(self, args, pt_f32, ours):
        self.args, self.pt_f32, self.ours = args, pt_f32, ours
        self.family = FAMILIES[args.family]
        self.warmup, self.repeats = (1, 1) if args.quick else (1, 3)
        self.inputs = {s: np.random.default_rng(s).integers(1000, ours.config.vocab_size, s).astype(np.int32)
                       for s in args.shapes}
        self.references: dict = {}  # (model, shape) -> PyTorch float32 output
        self.bf16_rate = torch_bf16_rate() if "bfloat16" in args.dtypes else None
        self.failures: list[str] = []

    def rows(self):
        import torch

        for dtype in self.args.dtypes:
            pt = self.pt_f32 if dtype == "float32" else copy.deepcopy(self.pt_f32).to(torch.bfloat16)
            for model in self.args.models:
                head = model == self.family.models[1]
                jax_fwd = JaxForward(self.ours, self.family, head, dtype)
                torch_fwd = TorchForward(pt, self.family, head)
                for shape in self.args.shapes:
                    yield self.row(dtype, model, shape, jax_fwd, torch_fwd)

    def row(self, dtype, model, shape, jax_fwd, torch_fwd) -> dict:
        from experiments.matmul_peak import measure_matmul_peak

        ids = self.inputs[shape]
        mask = np.ones_like(ids)
        flops = forward_flops(self.ours.config, *shape, head=model == self.family.models[1])
        compile_s = jax_fwd.compile(ids, mask)
        jax_call, torch_call = (lambda: jax_fwd(ids, mask)), (lambda: torch_fwd(ids, mask))
        # The matmul peak is sampled in the same alternation, so it sees the same interference from
        # other processes as the forwards beside it: "% peak" compares like with like.
        peaks: list[float] = []
        peak_call = lambda: peaks.append(measure_matmul_peak(dtype, repeats=1))
        note = ""
        if dtype == "float32":
            jax_times, torch_times, _ = timed([jax_call, torch_call, peak_call], warmup=self.warmup,
                                              repeats=self.repeats)
        else:
            jax_times, _ = timed([jax_call, peak_call], warmup=self.warmup, repeats=self.repeats)
            predicted = flops / self.bf16_rate
            if predicted <= self.args.torch_bf16_limit:  # seconds per call: once, its first call is no slower
                [torch_times] = timed([torch_call], warmup=0, repeats=1)
                self.bf16_rate = flops / torch_times[0]  # a whole forward predicts the next better than a Linear
            else:
                torch_times = []
                note = (f"torch bf16 not run: ~{predicted:.0f} s per forward at {self.bf16_rate / 1e9:.1f} "
                        f"GFLOP/s (--torch-bf16-limit {self.args.torch_bf16_limit:g} s)")
        err = self.check(dtype, model, shape, jax_fwd, torch_fwd)
        tokens = shape[0] * shape[1]
        jax_s, torch_s = min(jax_times), (min(torch_times) if torch_times else None)
        return {
            "model": model, "batch": shape[0], "length": shape[1], "dtype": dtype, "flops": flops,
            "jax_s": jax_s, "jax_median_s": statistics.median(jax_times), "jax_times": jax_times,
            "torch_s": torch_s, "torch_median_s": statistics.median(torch_times) if torch_times else None,
            "torch_times": torch_times, "jax_tokens_per_s": tokens / jax_s,
            "torch_tokens_per_s": tokens / torch_s if torch_s else None, "ratio": torch_s / jax_s if torch_s else None,
            "jax_flops_per_s": flops / jax_s, "torch_flops_per_s": flops / torch_s if torch_s else None,
            "compile_s": compile_s, "max_abs_err_vs_torch_f32": err, "note": note,
            "peak_flops_per_s": max(peaks), "fraction_of_peak": flops / jax_s / max(peaks),
        }

    def check(self, dtype, model, shape, jax_fwd, torch_fwd) -> float:
        """Max |JAX - PyTorch float32| of this row's output; float32 must agree to F32_TOLERANCE."""
        if (model, shape) not in self.references:
            head = model == self.family.models[1]
            out = torch_fwd.out if dtype == "float32" else TorchForward(self.pt_f32, self.family, head)(
                self.inputs[shape], np.ones(shape, np.int32))
            self.references[(model, shape)] = out.float().numpy()
        err = float(np.abs(np.asarray(jax_fwd.out, np.float32) - self.references[(model, shape)]).max())
        tolerance = F32_TOLERANCE["head" if model == self.family.models[1] else "base"]
        if dtype == "float32" and not err <= tolerance:
            self.failures.append(f"{model} {shape[0]}x{shape[1]}: max |jax - torch| = {err:.2e}")
        return err


def environment(args) -> dict:
    import jax
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"jax": jax.__version__, "torch": torch.__version__, "device": jax.devices()[0].device_kind, "cpu": cpu,
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "warmup": 1, "repeats": 1 if args.quick else 3,
            "statistic": "best of the timed runs (medians also recorded)", "load_start": os.getloadavg(),
            "malloc": malloc_setting(), "family": args.family, "size": FAMILIES[args.family].size}


def run(args) -> dict:
    import torch

    from experiments.matmul_peak import measure_matmul_peak

    torch.set_num_threads(os.cpu_count() or 1)
    env = environment(args)
    peaks = {dtype: measure_matmul_peak(dtype, repeats=3) for dtype in args.dtypes}
    with tempfile.TemporaryDirectory() as tmp:
        pt_f32, ours = build_models(tmp, FAMILIES[args.family])
    env["torch_attention"] = pt_f32.config._attn_implementation
    print(f"jax {env['jax']} vs torch {env['torch']} on {env['cpus']} x {env['cpu']}; torch eager, inference_mode, "
          f"{env['torch_threads']} threads, attention={env['torch_attention']}; {FAMILIES[args.family].size} size, "
          f"random weights; best of {env['repeats']} timed runs after {env['warmup']} warm-up, JAX, PyTorch and "
          f"the matmul peak alternating; malloc: {env['malloc']}", flush=True)
    bench = Bench(args, pt_f32, ours)
    rows = []
    for row in bench.rows():
        rows.append(row)
        print(_format_row(row, header=len(rows) == 1), flush=True)
    env["load_end"] = os.getloadavg()
    peaks = {dtype: max(peak, measure_matmul_peak(dtype, repeats=3)) for dtype, peak in peaks.items()}
    print("% peak: against the best of the jitted 2048^3 jnp.dot (same dtype, experiments/matmul_peak.py) timed "
          "alternately with that row's forwards; best before and after all rows: " +
          ", ".join(f"{d} {p / 1e9:.1f} GFLOP/s" for d, p in peaks.items()))
    print(f"load average {env['load_start'][0]:.1f} at start, {env['load_end'][0]:.1f} at end, on {env['cpus']} CPUs "
          "(above ~0: other processes shared the cores and the figures are noisy)")
    print("ratio = jax tok/s / torch tok/s; max|d| = max abs difference from torch float32 (for bf16: rounding error)")
    for row in rows:
        if row["note"]:
            print(f"  {row['model']} {row['batch']}x{row['length']}: {row['note']}")
    for failure in bench.failures:
        print(f"MISMATCH {failure}", file=sys.stderr)
    return {"env": env, "peaks_flops_per_s": peaks, "rows": rows, "failures": bench.failures}


_COLUMNS = ("model   shape    dtype     jax tok/s  torch tok/s  ratio  jax GFLOP/s  % peak  torch GFLOP/s  "
            "compile s  max|d|")


def _format_row(row: dict, header: bool = False) -> str:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    torch_gflops = None if row["torch_flops_per_s"] is None else row["torch_flops_per_s"] / 1e9
    line = (f"{row['model']:7s} {row['batch']:>2d}x{row['length']:<4d}  {row['dtype']:8s} "
            f"{row['jax_tokens_per_s']:10.0f} {fmt(row['torch_tokens_per_s'], '12.0f'):>12s} "
            f"{fmt(row['ratio'], '6.2f'):>6s} {row['jax_flops_per_s'] / 1e9:12.1f} "
            f"{100 * row['fraction_of_peak']:6.1f}% {fmt(torch_gflops, '14.1f'):>14s} "
            f"{row['compile_s']:10.1f}  {row['max_abs_err_vs_torch_f32']:.1e}")
    return f"{_COLUMNS}\n{line}" if header else line




def _choices(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        chosen = [c for c in text.split(",") if c]
        if not chosen or set(chosen) - set(allowed):
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(allowed)}")
        return chosen
    return parse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one timed run after one warm-up (default: best of 3)")
    p.add_argument("--shapes", type=parse_shapes, default=list(DEFAULT_SHAPES),
                   help="BATCHxLENGTH list (default 8x128,32x128,8x512)")
    p.add_argument("--dtypes", type=_choices(DTYPES), default=list(DTYPES), help="float32,bfloat16 (default both)")
    p.add_argument("--family", choices=tuple(FAMILIES), default="distilbert",
                   help="the model: distilbert (default), bert, roberta or gpt2, each at its base size")
    p.add_argument("--models", type=_choices(MODELS), default=None,
                   help="encoder,mlm (gpt2: decoder,lm; default both)")
    p.add_argument("--torch-bf16-limit", type=float, default=20.0,
                   help="skip a PyTorch bf16 forward predicted to take longer than this many seconds (default 20)")
    p.add_argument("--json", metavar="OUT", help="also write every figure and the environment to this file")
    p.add_argument("--system-malloc", action="store_true",
                   help="leave glibc malloc as it is (default: distilbert_jax.host_malloc's settings, for both "
                        "frameworks and every worker)")
    args = p.parse_args(argv)
    family_models = FAMILIES[args.family].models
    args.models = args.models or list(family_models)
    if set(args.models) - set(family_models):
        p.error(f"--models for --family {args.family}: {','.join(family_models)}")
    tune_malloc(system=args.system_malloc)  # the workers inherit the choice
    result = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
