"""Greedy generation with our KV cache against transformers' `generate`, same weights, same run.

    python experiments/bench_generate.py                          # gpt2 and distilgpt2 shapes, ~2 minutes
    python experiments/bench_generate.py --layers 6 --batch 8 --prompt 32 --new 64 --json gen.json

transformers builds a random GPT2LMHeadModel (its GPT2Config defaults: the 124M gpt2; `--layers 6`
is distilgpt2's shape), save_pretrained writes it and distilbert_jax.from_pretrained reads it.
Both decode the same left-padded prompts greedily: JAX with `Generator` (one compiled program:
the prompt fills a static cache, `lax.scan` decodes), PyTorch with `model.generate(do_sample=False,
use_cache=True)` under inference_mode, eager, all CPU threads. The tokens must be identical (exit 1
otherwise), so the two cannot time different work. Calls alternate (JAX, PyTorch, JAX, ...); each
figure is the best of the timed runs, beside a jitted 2048^3 matmul timed in the same loop
(experiments/matmul_peak.py), whose FLOP/s is the ceiling "% peak" divides by. FLOPs count the
matmuls of the prompt's forward and of every decoding step (weights, attention over the filled
cache, the vocabulary projection of one position per row), as a model-FLOPs utilisation. Decoding
a token at a time is bound by reading the weights, not by matmul throughput, so "% peak" is low for
both frameworks at small batches: the ratio is the figure to read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo, for `experiments.`
from distilbert_jax.host_malloc import tune_malloc  # noqa: E402


def generation_flops(config, batch: int, prompt: int, new: int) -> float:
    """Matmul FLOPs of a prompt forward (last position projected) and `new - 1` cached decode steps."""
    d, f, v, n = config.n_embd, config.intermediate_size, config.vocab_size, config.n_layer
    weights = 2 * (4 * d * d + 2 * d * f) * n  # q, k, v, out projections and the MLP, per token

    def attention(queries: int, keys: int) -> float:
        return 2 * 2 * queries * keys * d * n  # scores and context

    total = batch * (prompt * weights + attention(prompt, prompt) + 2 * d * v)
    size = prompt + new
    for _ in range(new - 1):  # the static cache is attended whole: `size` keys a step
        total += batch * (weights + attention(1, size) + 2 * d * v)
    return float(total)


def build(directory: str, layers: int):
    import torch
    import transformers

    import distilbert_jax as dj

    torch.manual_seed(0)
    pt = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=layers)).eval()
    pt.save_pretrained(directory)
    return pt, dj.from_pretrained(directory)


def prompts(vocab: int, batch: int, length: int, pad: int):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab - 1, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    for row in range(1, batch):  # ragged prompts, padded on the left as transformers wants
        mask[row, : row % max(length // 2, 1)] = 0
    return np.where(mask == 1, ids, pad), mask


def run_case(args, layers: int) -> dict:
    import torch

    from distilbert_jax.inference.generate import GenerationConfig, Generator
    from experiments.matmul_peak import measure_matmul_peak

    with tempfile.TemporaryDirectory() as directory:
        pt, ours = build(directory, layers)
    eos = ours.config.eos_token_id
    ids, mask = prompts(ours.config.vocab_size, args.batch, args.prompt, eos)
    # never stop early: both decode exactly `new` tokens
    generator = Generator(ours, GenerationConfig(max_new_tokens=args.new, eos_token_id=-1))
    t0 = time.perf_counter()
    ours_tokens = generator(ids, mask)
    compile_s = time.perf_counter() - t0

    def run_torch():
        with torch.inference_mode():
            return pt.generate(torch.from_numpy(ids.astype(np.int64)), attention_mask=torch.from_numpy(mask.astype(np.int64)),
                               max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False, use_cache=True,
                               pad_token_id=eos).numpy()

    theirs = run_torch()
    same = ours_tokens.shape == theirs.shape and bool((ours_tokens == theirs).all())
    jax_s, torch_s, peak = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        generator(ids, mask)
        jax_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_torch()
        torch_s.append(time.perf_counter() - t0)
        peak.append(measure_matmul_peak("float32", repeats=2))
    flops = generation_flops(ours.config, args.batch, args.prompt, args.new)
    best_peak = max(peak)
    tokens = args.batch * args.new
    row = {"layers": layers, "batch": args.batch, "prompt": args.prompt, "new": args.new, "identical": same,
           "jax_s": min(jax_s), "torch_s": min(torch_s), "jax_tokens_per_s": tokens / min(jax_s),
           "torch_tokens_per_s": tokens / min(torch_s), "speedup": min(torch_s) / min(jax_s),
           "jax_peak_fraction": flops / min(jax_s) / best_peak, "torch_peak_fraction": flops / min(torch_s) / best_peak,
           "matmul_peak_gflops": best_peak / 1e9, "jax_compile_and_first_s": compile_s,
           "jax_median_s": float(np.median(jax_s)), "torch_median_s": float(np.median(torch_s))}
    del pt, ours, generator
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", default="12,6", help="GPT-2 depths to run (12: gpt2, 6: distilgpt2)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    tune_malloc()
    rows = [run_case(args, int(n)) for n in args.layers.split(",")]
    print("| layers | batch x prompt + new | JAX tokens/s | PyTorch tokens/s | JAX / PyTorch | JAX % peak | "
          "PyTorch % peak | identical |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['layers']} | {r['batch']} x {r['prompt']} + {r['new']} | {r['jax_tokens_per_s']:.1f} | "
              f"{r['torch_tokens_per_s']:.1f} | {r['speedup']:.2f}x | {r['jax_peak_fraction']:.1%} | "
              f"{r['torch_peak_fraction']:.1%} | {r['identical']} |")
    first = ", ".join(f"{r['jax_compile_and_first_s']:.1f}" for r in rows)
    print(f"matmul peak {max(r['matmul_peak_gflops'] for r in rows):.0f} GFLOP/s (float32, jitted 2048^3); "
          f"JAX's compile + first call {first} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if not all(r["identical"] for r in rows):
        print("FAIL: JAX and PyTorch generated different tokens", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
