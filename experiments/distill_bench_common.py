"""What both sides of experiments/bench_distill.py share: the inputs, RSS probes and the worker pipe.

Each framework runs in a worker process of its own (bench_distill.py --worker jax|torch), fed JSON
commands on stdin, so neither's threads, allocator or peak memory disturbs the other's figures.
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

DEFAULT_SHAPES = ((8, 128), (2, 512))  # 1024 tokens each; (4, 512) alone would add ~5 minutes on 2 cores
DTYPES = ("float32", "bfloat16")
MASK_ID, SPECIAL_IDS = 103, (0, 100, 101, 102, 103)  # bert-base-uncased [PAD] [UNK] [CLS] [SEP] [MASK]
TOTAL_UPDATES = 10_000  # only shapes the LR schedule; both frameworks use the same one
SEED = 0
CHECKED = ("loss", "loss_ce", "loss_mlm", "loss_cos", "grad_norm")


# ----------------------------------------------------------------------------------------------- inputs



def synthetic_counts(vocab: int, seed: int = SEED) -> np.ndarray:
    """Zipf-distributed corpus counts over a shuffled vocabulary: what the masking weights are built from."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(vocab, np.int64)
    counts[rng.permutation(vocab)] = (1e9 / np.arange(1, vocab + 1)).astype(np.int64)
    return counts


def make_batch(batch: int, length: int, counts: np.ndarray, seed: int = SEED) -> dict[str, np.ndarray]:
    """[CLS] tokens [SEP] then padding; lengths between 3/4 of the bucket and all of it, as the loader buckets."""
    rng = np.random.default_rng(seed + 1000 * batch + length)
    p = counts.astype(np.float64)
    p[list(SPECIAL_IDS)] = 0
    p /= p.sum()
    lengths = rng.integers(max(2, (3 * length) // 4), length + 1, batch)
    lengths[0] = length
    ids = np.zeros((batch, length), np.int32)
    mask = np.zeros((batch, length), np.int32)
    for i, n in enumerate(lengths):
        ids[i, 0], ids[i, n - 1] = 101, 102
        ids[i, 1:n - 1] = rng.choice(len(p), n - 2, p=p)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def mask_tables(counts: np.ndarray) -> dict[str, np.ndarray]:
    """As distill.evaluate.mask_tables builds them for training: smoothing 0.7, non-special replacements."""
    from distilbert_jax.data.masking import token_weights

    return {"weights": token_weights(counts, SPECIAL_IDS, smoothing=0.7),
            "replacement_ids": np.setdiff1d(np.arange(len(counts)), SPECIAL_IDS).astype(np.int32)}


def masked_like_step(batch: dict, tables: dict, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The masked ids and labels the JAX train step draws at `step` from the benchmark's key."""
    import jax

    from distilbert_jax.data.masking import mask_tokens

    mask_key, _ = jax.random.split(jax.random.fold_in(jax.random.key(SEED), step))
    fn = jax.jit(lambda k, ids, m, w, r: mask_tokens(k, ids, m, w, mask_id=MASK_ID, replacement_ids=r))
    ids, labels = fn(mask_key, batch["input_ids"], batch["attention_mask"], tables["weights"],
                     tables["replacement_ids"])
    return np.asarray(ids), np.asarray(labels)


def build_models(directory: str) -> dict:
    """Random bert-base-uncased-size teacher from transformers, our extracted student; both saved as HF folders."""
    import torch
    import transformers

    import distilbert_jax as dj
    from distilbert_jax.distill.extract import extract_student

    torch.manual_seed(SEED)
    teacher_dir, student_dir = os.path.join(directory, "teacher"), os.path.join(directory, "student")
    transformers.BertForMaskedLM(transformers.BertConfig()).save_pretrained(teacher_dir)
    teacher = dj.from_pretrained(teacher_dir, task="masked-lm")
    student = extract_student(teacher)
    student.save_pretrained(student_dir)
    return {"teacher_dir": teacher_dir, "student_dir": student_dir, "teacher_config": teacher.config,
            "student_config": student.config}


# ---------------------------------------------------------------------------------------------- workers

def _rss_kb() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_report(before_kb: int, reset: bool) -> dict:
    """Peak resident set since the reset (the steps) and its rise over the resident set before them."""
    rss, hwm = _rss_kb()
    return {"rss_peak_bytes": hwm * 1024 if reset else None,
            "rss_peak_delta_bytes": (hwm - before_kb) * 1024 if reset else None,
            "rss_before_bytes": before_kb * 1024, "rss_end_bytes": rss * 1024}


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, kind: str, spec: dict):
        self.kind = kind
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_distill.py"), "--worker", kind],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.call_raw(spec)

    def call_raw(self, message: dict) -> dict:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.kind} worker exited (code {self.proc.wait()}); its stderr is above")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the {self.kind} worker failed: {reply['error']}")
        return reply

    def __call__(self, cmd: str, **args) -> dict:
        return self.call_raw({"cmd": cmd, "args": args})

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            self.proc.wait(timeout=60)
