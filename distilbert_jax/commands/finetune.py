"""`distilbert-jax finetune` and `distilbert-jax evaluate`: fine-tune a checkpoint on a task, or score one.

    distilbert-jax finetune --task sst2 --data glue_data/SST-2 --model distilbert-base-uncased --output out/
    distilbert-jax evaluate --task sst2 --data glue_data/SST-2 --model out/

`--config` takes a preset from experiments/configs/ (or a run's finetune_config.json); the named
flags and then `--set key=value` override its fields. Running `finetune` again on the same
output resumes it.
"""

from __future__ import annotations

import json

from distilbert_jax.commands import Command


def _common(p) -> None:
    p.add_argument("--task", default=None, help="cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, ax, squad, "
                                                "squad_v2, classification (CSV/JSONL/folder-per-label) or ner (CoNLL)")
    p.add_argument("--data", default=None, help="the task's data folder (e.g. glue_data/SST-2)")
    p.add_argument("--model", default=None, help="an HF-format folder or hub name")
    p.add_argument("--config", default=None, help="a preset .py (get_config()) or a saved finetune_config.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (repeatable), e.g. --set optimizer.learning_rate=3e-5")


def add_finetune_arguments(p) -> None:
    _common(p)
    p.add_argument("--output", default=None, help="the output folder (an HF-format checkpoint when done)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, one run each; the median is reported")


def add_evaluate_arguments(p) -> None:
    _common(p)
    p.add_argument("--split", action="append", default=[], help="split(s) to score (default: the dev split(s))")
    p.add_argument("--output", default=None, help="write the predictions to this folder")


def _config(args, **extra):
    from distilbert_jax.errors import UserError
    from distilbert_jax.finetune.config import load_config

    seeds = None
    if getattr(args, "seeds", None):
        try:
            seeds = tuple(int(s) for s in args.seeds.split(","))
        except ValueError:
            raise UserError(f"--seeds {args.seeds!r}: give comma-separated integers, e.g. --seeds 1,2,3") from None
    return load_config(args.config, args.overrides, task=args.task, data=args.data, model=args.model, seeds=seeds,
                       **extra)


def run_finetune(args) -> int:
    from distilbert_jax.finetune.runner import finetune

    results = finetune(_config(args, output=args.output))
    if results["interrupted"]:
        return 130
    print(json.dumps({k: results[k] for k in ("task", "select_metric", "median", "chosen_seed", "output",
                                              "predictions")}, indent=1))
    return 0


def run_evaluate(args) -> int:
    from distilbert_jax.finetune.runner import evaluate_model

    print(json.dumps(evaluate_model(_config(args), splits=tuple(args.split), output=args.output), indent=1))
    return 0


FINETUNE = Command("finetune", "fine-tune a DistilBERT/BERT checkpoint on GLUE, SQuAD, text classification or NER",
                   add_finetune_arguments, run_finetune)
EVALUATE = Command("evaluate", "score a fine-tuned checkpoint on a task's dev (or other) split",
                   add_evaluate_arguments, run_evaluate)
