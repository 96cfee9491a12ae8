"""The main job: the paper's recipe and its key ablation, in miniature, offline, on a laptop CPU.

1. A corpus of real English prose (the standard library's docstrings, see corpus.py).
2. A WordPiece vocabulary trained on it, and the corpus prepared as for the full run.
3. A small BERT teacher pretrained with MLM.

`family="roberta"` runs the same with a byte-level BPE vocabulary and a RoBERTa teacher
(DistilRoBERTa's recipe); `family="gpt2"` with a GPT-2 teacher pretrained on next-token
prediction and DistilGPT2's causal loss (KL on every position, alpha_clm 2), every model then
scored on held-out next-token accuracy.
4. A student with half the teacher's layers, initialised from them, distilled with the triple loss.
5. The same student architecture from random init, trained with MLM alone for the same number
   of updates: the paper's "no teacher" baseline.
Every model is then scored on the same held-out masked positions (15%, uniform), next to a
reference that needs no model: the most frequent training token answered everywhere (its
perplexity is the unigram distribution's). The table gives each accuracy as a multiple of that
floor, and the last line says in one sentence what it shows. The distilled student must beat
the baseline (lower held-out perplexity), or the demo fails: that would be a bug. Every step is
deterministic (the vocabulary too: see Tokenizer.train), so a second run writes the same table.
The demo's own settings are a frozen dataclass saved beside the results, and each of the three
runs keeps its full DistillConfig in its own folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from distilbert_jax.config import BertConfig, GPT2Config, RobertaConfig
from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.errors import UserError


REFERENCE = "reference (most frequent token)"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    output: str = "runs/distill-demo"
    family: str = "bert"  # "roberta": DistilRoBERTa's recipe; "gpt2": DistilGPT2's (causal)
    corpus_bytes: int = 1_200_000
    vocab_size: int = 1000  # measured: 4000 and 2000 put the teacher at 2.05x and 2.85x the reference, 1000 at 3.3x
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
    teacher_learning_rate: float = 2e-3
    teacher_mlm_probability: float = 0.15  # the teacher's pretraining only; every model is scored at 15%
    student_learning_rate: float = 5e-4  # the recipe's; 1e-3 let the distilled student drift down from its start
    warmup_fraction: float = 0.1  # of each run's updates
    buckets: tuple[int, ...] = (32, 64)
    eval_batches: int = 40
    eval_every: int = 100  # updates
    seed: int = 56
    progress: bool = True

    @property
    def objective(self) -> str:
        """The models' own LM objective: "clm" for GPT-2, "mlm" for the encoders."""
        return "clm" if self.family == "gpt2" else "mlm"

    def teacher_config(self, tokenizer):
        """The teacher's architecture in this family, at the demo's sizes."""
        if self.family not in ("bert", "roberta", "gpt2"):
            raise UserError(f"family {self.family!r} is not one of bert, roberta, gpt2")
        if self.family == "gpt2":
            return GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=self.hidden, n_layer=self.teacher_layers,
                              n_head=self.heads, n_inner=self.ffn, max_position_embeddings=self.max_length,
                              bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                              architectures=("GPT2LMHeadModel",))
        cls, extra = BertConfig, {"architectures": ("BertForMaskedLM",)}
        if self.family == "roberta":  # positions from pad + 1; one token type, as roberta-base
            cls, extra = RobertaConfig, {"architectures": ("RobertaForMaskedLM",), "type_vocab_size": 1,
                                         "pad_token_id": tokenizer.pad_token_id,
                                         "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
        positions = self.max_length + (tokenizer.pad_token_id + 1 if self.family == "roberta" else 0)
        return cls(vocab_size=tokenizer.vocab_size, hidden_size=self.hidden, num_hidden_layers=self.teacher_layers,
                   num_attention_heads=self.heads, intermediate_size=self.ffn, max_position_embeddings=positions,
                   **extra)

    def run_config(self, name: str, learning_rate: float, **changes) -> DistillConfig:
        """The DistillConfig of one of the three runs: the recipe's loss and optimizer, demo sizes."""
        if self.family == "gpt2" and changes.get("objective", "distill") == "distill":  # DistilGPT2's weights
            changes = {"loss.alpha_mlm": 0.0, "loss.alpha_clm": 2.0, "freeze": ("transformer/wpe",), **changes}
        base = DistillConfig(name=name, data=os.path.join(self.output, "data"), batch_size=self.batch_size,
                             buckets=self.buckets, seed=self.seed, student_layers=self.student_layers,
                             workdir=os.path.join(self.output, name), checkpoint_every=100, log_every=10,
                             eval_batches=self.eval_batches, eval_every=self.eval_every, progress=self.progress)
        return base.replace(**{"optimizer.accumulate": 1, "optimizer.learning_rate": learning_rate,
                               "optimizer.warmup_fraction": self.warmup_fraction}, **changes)


def run_demo(demo: DemoConfig) -> dict:
    from distilbert_jax.data.prepare import prepare_corpus
    from distilbert_jax.distill.corpus import write_stdlib_corpus
    from distilbert_jax.distill.evaluate import reference_for
    from distilbert_jax.distill.extract import extract_student
    from distilbert_jax.distill.trainer import train
    from distilbert_jax.pretrained import PretrainedModel, from_pretrained
    from distilbert_jax.tokenizer import Tokenizer
    from distilbert_jax.training.metrics import plot_curves, read_metrics

    t0 = time.time()
    phases: dict[str, float] = {}  # wall seconds of each step, compiles included
    mark = t0

    def lap(name: str) -> None:
        nonlocal mark
        phases[name], mark = round(time.time() - mark, 1), time.time()

    out = demo.output
    os.makedirs(out, exist_ok=True)
    _say(f"[1/5] corpus: docstrings of the Python standard library -> {out}/corpus.txt")
    corpus_path = os.path.join(out, "corpus.txt")
    corpus = write_stdlib_corpus(corpus_path, max_bytes=demo.corpus_bytes, seed=demo.seed)
    _say(f"      {corpus['paragraphs']:,} paragraphs, {corpus['bytes'] / 1e6:.2f} MB from {corpus['files']} files")

    lap("corpus")
    kind = "WordPiece" if demo.family == "bert" else "byte-level BPE"
    _say(f"[2/5] {kind} vocabulary of {demo.vocab_size} and prepared data")
    tokenizer = Tokenizer.train([corpus_path], vocab_size=demo.vocab_size, family=demo.family)
    data_dir = os.path.join(out, "data")
    manifest = prepare_corpus(tokenizer, [corpus_path], data_dir, max_length=demo.max_length,
                              heldout_fraction=demo.heldout_fraction, seed=demo.seed, progress=demo.progress,
                              overwrite=True)

    lap("vocabulary and data")
    objective, task = demo.objective, ("causal-lm" if demo.objective == "clm" else "masked-lm")
    teacher_config = demo.teacher_config(tokenizer)
    _say(f"[3/5] teacher: {teacher_config.model_type} {demo.teacher_layers} layers x {demo.hidden}, "
         f"{objective.upper()} for {demo.teacher_updates} updates")
    teacher_init = PretrainedModel.from_config(teacher_config, task, seed=demo.seed, tokenizer=tokenizer)
    teacher_run = train(demo.run_config("teacher", demo.teacher_learning_rate, objective=objective, teacher=None,
                                        mlm_probability=demo.teacher_mlm_probability,
                                        max_updates=demo.teacher_updates), student=teacher_init)
    teacher = from_pretrained(teacher_run["exported"], task=task)

    lap("teacher")
    _say(f"[4/5] student: layers {list(demo.student_layers)} of the teacher, distilled for "
         f"{demo.student_updates} updates")
    student = extract_student(teacher, demo.student_layers)
    student_run = train(demo.run_config("student", demo.student_learning_rate, teacher=teacher_run["exported"],
                                        max_updates=demo.student_updates), teacher=teacher, student=student)

    lap("distilled student")
    _say(f"[5/5] baseline: the same student from random init, {objective.upper()} only, "
         f"{demo.student_updates} updates")
    baseline_init = PretrainedModel.from_config(student.config, task, seed=demo.seed + 1, tokenizer=tokenizer)
    baseline_run = train(demo.run_config("baseline", demo.student_learning_rate, objective=objective, teacher=None,
                                         max_updates=demo.student_updates), student=baseline_init)

    lap("baseline")
    runs = {"teacher": teacher_run, "distilled student": student_run, "baseline (no teacher)": baseline_run}
    workdirs = {"teacher": "teacher", "distilled student": "student", "baseline (no teacher)": "baseline"}
    table = {name: {"parameters": r["parameters"], **r["heldout"]} for name, r in runs.items()}
    table[REFERENCE] = {"parameters": 0, **reference_for(demo.run_config("reference", 0.0), objective)}
    curves = {name: read_metrics(os.path.join(out, workdirs[name], "metrics.jsonl")) for name in runs}
    what = "MLM loss on the masked" if objective == "mlm" else "next-token loss on the"
    plot = plot_curves(curves, os.path.join(out, "curves.png"), keys=(f"loss_{objective}",),
                       title=f"{what} training tokens", smooth=5)
    accuracy = f"{objective}_accuracy"
    accuracy_plot = plot_curves(curves, os.path.join(out, "heldout.png"), keys=(accuracy,), split="heldout",
                                title=f"held-out {objective.upper()} accuracy",
                                lines={accuracy: {REFERENCE: table[REFERENCE][accuracy]}})
    results = {"demo": _jsonable(dataclasses.asdict(demo)), "corpus": corpus,
               "data_fingerprint": manifest["fingerprint"], "table": table,
               "student_beats_baseline": table["distilled student"]["perplexity"]
               < table["baseline (no teacher)"]["perplexity"],
               "summary": summary(table, objective), "seconds": time.time() - t0, "phase_seconds": phases,
               "plots": [plot, accuracy_plot]}
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    _say("")
    _say(format_table(table, objective))
    _say(f"\nwrote {out}/results.json, {plot}, {accuracy_plot}; each run's config.json, metrics and final model "
         f"in {out}/{{teacher,student,baseline}}; {results['seconds']:.0f} s in all")
    _say(results["summary"])
    if not results["student_beats_baseline"]:
        raise UserError("the distilled student did not beat the baseline: this is a bug, not a result; "
                        f"see {out}/results.json")
    return results


def format_table(table: dict, objective: str = "mlm") -> str:
    """Markdown; accuracy also as a multiple of the reference row's (what a model learned beyond
    always answering the most frequent token)."""
    key = f"{objective}_accuracy"
    floor = table[REFERENCE][key]
    lines = [f"| model | parameters | held-out {objective.upper()} accuracy | x reference | perplexity |",
             "|---|---:|---:|---:|---:|"]
    for name, row in table.items():
        parameters = f"{row['parameters']:,}" if row["parameters"] else "-"
        lines.append(f"| {name} | {parameters} | {row[key]:.2%} | {row[key] / floor:.2f} | "
                     f"{row['perplexity']:.1f} |")
    return "\n".join(lines)


def summary(table: dict, objective: str = "mlm") -> str:
    """The table in one sentence."""
    key = f"{objective}_accuracy"
    teacher, student = table["teacher"], table["distilled student"]
    baseline, floor = table["baseline (no teacher)"], table[REFERENCE][key]
    return (f"The distilled student keeps {student[key] / teacher[key]:.0%} of its teacher's "
            f"held-out accuracy with {student['parameters'] / teacher['parameters']:.0%} of its parameters "
            f"({student[key] / floor:.1f}x the most-frequent-token reference, the teacher "
            f"{teacher[key] / floor:.1f}x); the same student trained without its teacher reaches "
            f"{baseline[key] / floor:.1f}x.")


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
