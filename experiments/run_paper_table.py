"""Run the paper's fine-tuning table: every (model, task) of experiments/configs/finetune_paper.py
whose data folder was given, five seeds each, one after the other; then write the Markdown table.

    python experiments/run_paper_table.py --glue glue_data --imdb aclImdb --squad squad_data \
        --output runs/paper [--models distilbert,bert] [--tasks rte,mrpc] [--dry-run]

Runs resume: a finished (model, task) is read back, an interrupted one continues from its
checkpoint. The GPU/TPU budget is the user's: the full table is 2 models x 11 tasks x 5 seeds.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs"))

import finetune_paper as paper  # noqa: E402  (the table of runs lives with the other presets)
from results_table import markdown_table  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--glue", help="the GLUE data folder (holding CoLA/, SST-2/, ...)")
    p.add_argument("--imdb", help="the IMDb folder (aclImdb, with train/ and test/)")
    p.add_argument("--squad", help="the folder holding train-v1.1.json and dev-v1.1.json")
    p.add_argument("--output", default="runs/paper")
    p.add_argument("--models", default=",".join(paper.MODELS))
    p.add_argument("--tasks", default=",".join(paper.RUNS))
    p.add_argument("--dry-run", action="store_true", help="print the runs and their commands only")
    args = p.parse_args(argv)
    data = {k: v for k, v in (("glue", args.glue), ("imdb", args.imdb), ("squad", args.squad)) if v}
    runs = []
    for model in args.models.split(","):
        for task in args.tasks.split(","):
            if model not in paper.MODELS or task not in paper.RUNS:
                p.error(f"unknown model {model!r} or task {task!r}; models: {', '.join(paper.MODELS)}; "
                        f"tasks: {', '.join(paper.RUNS)}")
            if paper.RUNS[task][0] not in data:
                print(f"skipping {model} {task}: no --{paper.RUNS[task][0]} folder given", file=sys.stderr)
                continue
            runs.append(paper.config_for(model, task, data, args.output))
            sets = "".join(f" --set {k}={v}" for k, v in paper.RUNS[task][1].items() if k != "task")
            c = runs[-1]
            print(f"distilbert-jax finetune --config experiments/configs/finetune_paper.py --task {c.task} "
                  f"--data {c.data} --model {c.model} --output {c.output}{sets}")
    if args.dry_run:
        return 0
    from distilbert_jax import compile_cache
    from distilbert_jax.finetune.runner import finetune

    compile_cache.enable()
    for config in runs:
        if finetune(config)["interrupted"]:
            return 130
    table = markdown_table(args.output)
    with open(os.path.join(args.output, "table.md"), "w", encoding="utf-8") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
