"""What both sides of experiments/bench_distill.py share: the inputs, RSS probes and the worker pipe.

Each framework runs in a worker process of its own (bench_distill.py --worker jax|torch), fed JSON
commands on stdin, so neither's threads, allocator or peak memory disturbs the other's figures.
"""

from __future__ import annotations

import argparse
import dataclasses
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


@dataclasses.dataclass(frozen=True)
class Family:
    """A teacher and its student as transformers names them, and how their batches look.

    bert: masked (the step masks; `mask_id`), DistilBERT's loss. gpt2: causal (no masking; every
    real position predicts the next token), DistilGPT2's loss, sequences framed by <|endoftext|>.
    """

    size: str  # the released teacher whose shape the random teacher has
    teacher: str  # transformers config and model class names
    teacher_config: str
    student: str
    task: str  # from_pretrained's task for both
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    special_ids: tuple[int, ...]
    mask_id: int | None  # None: a causal student, nothing is masked
    alphas: tuple = ()  # LossWeights fields that differ from the defaults

    @property
    def causal(self) -> bool:
        return self.mask_id is None

    @property
    def lm_loss(self) -> str:
        return "loss_clm" if self.causal else "loss_mlm"

    @property
    def checked(self) -> tuple[str, ...]:
        return ("loss", "loss_ce", self.lm_loss, "loss_cos", "grad_norm")


FAMILIES = {
    "bert": Family("bert-base-uncased", "BertForMaskedLM", "BertConfig", "DistilBertForMaskedLM", "masked-lm", 30522,
                   101, 102, 0, SPECIAL_IDS, MASK_ID),
    "gpt2": Family("gpt2", "GPT2LMHeadModel", "GPT2Config", "GPT2LMHeadModel", "causal-lm", 50257, 50256, 50256,
                   50256, (50256,), None, (("alpha_mlm", 0.0), ("alpha_clm", 2.0))),
}
CHECKED = FAMILIES["bert"].checked


# ----------------------------------------------------------------------------------------------- inputs



def synthetic_counts(vocab: int, seed: int = SEED) -> np.ndarray:
    """Zipf-distributed corpus counts over a shuffled vocabulary: what the masking weights are built from."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(vocab, np.int64)
    counts[rng.permutation(vocab)] = (1e9 / np.arange(1, vocab + 1)).astype(np.int64)
    return counts


def make_batch(batch: int, length: int, counts: np.ndarray, seed: int = SEED,
               family: Family = FAMILIES["bert"]) -> dict[str, np.ndarray]:
    """[CLS] tokens [SEP] (GPT-2: <|endoftext|> tokens <|endoftext|>) then padding; lengths between
    3/4 of the bucket and all of it, as the loader buckets."""
    rng = np.random.default_rng(seed + 1000 * batch + length)
    p = counts.astype(np.float64)
    p[list(family.special_ids)] = 0
    p /= p.sum()
    lengths = rng.integers(max(2, (3 * length) // 4), length + 1, batch)
    lengths[0] = length
    ids = np.full((batch, length), family.pad_id, np.int32)
    mask = np.zeros((batch, length), np.int32)
    for i, n in enumerate(lengths):
        ids[i, 0], ids[i, n - 1] = family.bos_id, family.eos_id
        ids[i, 1:n - 1] = rng.choice(len(p), n - 2, p=p)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def mask_tables(counts: np.ndarray, special_ids: tuple[int, ...] = SPECIAL_IDS) -> dict[str, np.ndarray]:
    """As distill.evaluate.mask_tables builds them for training: smoothing 0.7, non-special replacements.

    A causal step takes them too and reads neither."""
    from distilbert_jax.data.masking import token_weights

    return {"weights": token_weights(counts, special_ids, smoothing=0.7),
            "replacement_ids": np.setdiff1d(np.arange(len(counts)), special_ids).astype(np.int32)}


def masked_like_step(batch: dict, tables: dict, step: int = 0, causal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The masked ids and labels the JAX train step draws at `step` from the benchmark's key (causal:
    the ids as they are and `next_token_labels`)."""
    import jax

    from distilbert_jax.data.masking import mask_tokens
    from distilbert_jax.losses import next_token_labels

    if causal:
        return batch["input_ids"], np.asarray(next_token_labels(batch["input_ids"], batch["attention_mask"]))
    mask_key, _ = jax.random.split(jax.random.fold_in(jax.random.key(SEED), step))
    fn = jax.jit(lambda k, ids, m, w, r: mask_tokens(k, ids, m, w, mask_id=MASK_ID, replacement_ids=r))
    ids, labels = fn(mask_key, batch["input_ids"], batch["attention_mask"], tables["weights"],
                     tables["replacement_ids"])
    return np.asarray(ids), np.asarray(labels)


def build_models(directory: str, family: Family = FAMILIES["bert"]) -> dict:
    """Random base-size teacher from transformers (its config's defaults), our extracted student; both
    saved as HF folders."""
    import torch
    import transformers

    import distilbert_jax as dj
    from distilbert_jax.distill.extract import extract_student

    torch.manual_seed(SEED)
    teacher_dir, student_dir = os.path.join(directory, "teacher"), os.path.join(directory, "student")
    getattr(transformers, family.teacher)(getattr(transformers, family.teacher_config)()).save_pretrained(teacher_dir)
    teacher = dj.from_pretrained(teacher_dir, task=family.task)
    student = extract_student(teacher)
    student.save_pretrained(student_dir)
    return {"teacher_dir": teacher_dir, "student_dir": student_dir, "teacher_config": teacher.config,
            "student_config": student.config}


def step_flops(student, teacher, batch: int, length: int) -> float:
    """Teacher forward + 3x student forward, LM heads included (the package's formula)."""
    from distilbert_jax.training.flops import distillation_step_flops

    return distillation_step_flops(student, teacher, batch, length)


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
