"""The main job: the paper's recipe and its key ablation, in miniature, offline, on a laptop CPU.

1. A corpus of real English prose (the standard library's docstrings, see corpus.py).
2. A WordPiece vocabulary trained on it, and the corpus prepared as for the full run.
3. A small BERT teacher pretrained with MLM.
4. A student with half the teacher's layers, initialised from them, distilled with the triple loss.
5. The same student architecture from random init, trained with MLM alone for the same number
   of updates: the paper's "no teacher" baseline.
Every model is then scored on the same held-out masked positions; the distilled student must
beat the baseline (lower held-out perplexity), or the demo fails: that would be a bug. The
demo's own settings are a frozen dataclass saved beside the results, and each of the three runs
keeps its full DistillConfig in its own folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from distilbert_jax.config import BertConfig
from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    output: str = "runs/distill-demo"
    corpus_bytes: int = 1_200_000
    vocab_size: int = 4000
    max_length: int = 64  # most docstring paragraphs are shorter; longer ones are cut into chunks
    heldout_fraction: float = 0.04
    teacher_layers: int = 4
    hidden: int = 128
    heads: int = 4
    ffn: int = 512
    student_layers: tuple[int, ...] = (0, 3)
    batch_size: int = 32
    teacher_updates: int = 600
    student_updates: int = 300  # distilled student and baseline alike
    teacher_learning_rate: float = 1e-3
    student_learning_rate: float = 1e-3
    buckets: tuple[int, ...] = (32, 64)
    eval_batches: int = 40
    eval_every: int = 100  # updates
    seed: int = 56
    progress: bool = True

    def run_config(self, name: str, learning_rate: float, **changes) -> DistillConfig:
        """The DistillConfig of one of the three runs: the recipe's loss and optimizer, demo sizes."""
        base = DistillConfig(name=name, data=os.path.join(self.output, "data"), batch_size=self.batch_size,
                             buckets=self.buckets, seed=self.seed, student_layers=self.student_layers,
                             workdir=os.path.join(self.output, name), checkpoint_every=100, log_every=10,
                             eval_batches=self.eval_batches, eval_every=self.eval_every, progress=self.progress)
        return base.replace(**{"optimizer.accumulate": 1, "optimizer.learning_rate": learning_rate}, **changes)


def run_demo(demo: DemoConfig) -> dict:
    from distilbert_jax.data.prepare import prepare_corpus
    from distilbert_jax.distill.corpus import write_stdlib_corpus
    from distilbert_jax.distill.extract import extract_student
    from distilbert_jax.distill.trainer import train
    from distilbert_jax.pretrained import PretrainedModel, from_pretrained
    from distilbert_jax.tokenizer import Tokenizer
    from distilbert_jax.training.metrics import plot_curves, read_metrics

    t0 = time.time()
    out = demo.output
    os.makedirs(out, exist_ok=True)
    _say(f"[1/5] corpus: docstrings of the Python standard library -> {out}/corpus.txt")
    corpus_path = os.path.join(out, "corpus.txt")
    corpus = write_stdlib_corpus(corpus_path, max_bytes=demo.corpus_bytes, seed=demo.seed)
    _say(f"      {corpus['paragraphs']:,} paragraphs, {corpus['bytes'] / 1e6:.2f} MB from {corpus['files']} files")

    _say(f"[2/5] WordPiece vocabulary of {demo.vocab_size} and prepared data")
    tokenizer = Tokenizer.train([corpus_path], vocab_size=demo.vocab_size)
    data_dir = os.path.join(out, "data")
    manifest = prepare_corpus(tokenizer, [corpus_path], data_dir, max_length=demo.max_length,
                              heldout_fraction=demo.heldout_fraction, seed=demo.seed, progress=demo.progress,
                              overwrite=True)

    _say(f"[3/5] teacher: BERT {demo.teacher_layers} layers x {demo.hidden}, MLM for {demo.teacher_updates} updates")
    teacher_config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=demo.hidden,
                                num_hidden_layers=demo.teacher_layers, num_attention_heads=demo.heads,
                                intermediate_size=demo.ffn, max_position_embeddings=demo.max_length,
                                architectures=("BertForMaskedLM",))
    teacher_init = PretrainedModel.from_config(teacher_config, "masked-lm", seed=demo.seed, tokenizer=tokenizer)
    teacher_run = train(demo.run_config("teacher", demo.teacher_learning_rate, objective="mlm", teacher=None,
                                        max_updates=demo.teacher_updates), student=teacher_init)
    teacher = from_pretrained(teacher_run["exported"], task="masked-lm")

    _say(f"[4/5] student: layers {list(demo.student_layers)} of the teacher, distilled for {demo.student_updates} updates")
    student = extract_student(teacher, demo.student_layers)
    student_run = train(demo.run_config("student", demo.student_learning_rate, teacher=teacher_run["exported"],
                                        max_updates=demo.student_updates), teacher=teacher, student=student)

    _say(f"[5/5] baseline: the same student from random init, MLM only, {demo.student_updates} updates")
    baseline_init = PretrainedModel.from_config(student.config, "masked-lm", seed=demo.seed + 1, tokenizer=tokenizer)
    baseline_run = train(demo.run_config("baseline", demo.student_learning_rate, objective="mlm", teacher=None,
                                         max_updates=demo.student_updates), student=baseline_init)

    runs = {"teacher": teacher_run, "distilled student": student_run, "baseline (no teacher)": baseline_run}
    workdirs = {"teacher": "teacher", "distilled student": "student", "baseline (no teacher)": "baseline"}
    table = {name: {"parameters": r["parameters"], **r["heldout"]} for name, r in runs.items()}
    curves = {name: read_metrics(os.path.join(out, workdirs[name], "metrics.jsonl")) for name in runs}
    plot = plot_curves(curves, os.path.join(out, "curves.png"), keys=("loss_mlm",),
                       title="MLM loss on the masked training tokens", smooth=5)
    accuracy_plot = plot_curves(curves, os.path.join(out, "heldout.png"), keys=("mlm_accuracy",), split="heldout",
                                title="held-out MLM accuracy")
    results = {"demo": _jsonable(dataclasses.asdict(demo)), "corpus": corpus,
               "data_fingerprint": manifest["fingerprint"], "table": table,
               "student_beats_baseline": table["distilled student"]["perplexity"]
               < table["baseline (no teacher)"]["perplexity"],
               "seconds": time.time() - t0, "plots": [plot, accuracy_plot]}
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    _say("")
    _say(format_table(table))
    _say(f"\nwrote {out}/results.json, {plot}; each run's config.json, metrics and final model in "
         f"{out}/{{teacher,student,baseline}}; {results['seconds']:.0f} s in all")
    if not results["student_beats_baseline"]:
        raise UserError("the distilled student did not beat the baseline: this is a bug, not a result; "
                        f"see {out}/results.json")
    return results


def format_table(table: dict) -> str:
    lines = ["| model | parameters | held-out MLM accuracy | perplexity |", "|---|---:|---:|---:|"]
    for name, row in table.items():
        lines.append(f"| {name} | {row['parameters']:,} | {row['mlm_accuracy']:.2%} | {row['perplexity']:.1f} |")
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
