"""`distilbert-jax distill [--config FILE] [--set key=value ...]`: a distillation run, or the demo.

With `--config` (a preset in experiments/configs/, or a run's saved config.json) it runs that
configuration and resumes it if its workdir holds a checkpoint. With no config it runs the
offline demo experiment (distill/demo.py), whose fields `--set` overrides the same way.
"""

from __future__ import annotations

import json

from distilbert_jax.commands import Command


def add_arguments(p) -> None:
    p.add_argument("--config", default=None,
                   help="preset .py (get_config()) or saved config.json; omit to run the offline demo")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (repeatable), e.g. --set optimizer.learning_rate=1e-4")
    p.add_argument("--workdir", default=None, help="shorthand for --set workdir=DIR (demo: output=DIR)")


def run(args) -> int:
    if args.config is None:
        from distilbert_jax.distill.config import apply_overrides
        from distilbert_jax.distill.demo import DemoConfig, run_demo

        overrides = args.overrides + ([f"output={args.workdir}"] if args.workdir else [])
        run_demo(apply_overrides(DemoConfig(), overrides))
        return 0

    from distilbert_jax.distill.config import load_config
    from distilbert_jax.distill.trainer import train

    overrides = args.overrides + ([f"workdir={args.workdir}"] if args.workdir else [])
    config = load_config(args.config, overrides)
    results = train(config)
    results.pop("state", None)
    print(json.dumps({k: v for k, v in results.items() if k in ("name", "steps", "updates", "interrupted",
                                                                   "heldout", "exported", "train")}, indent=1))
    return 130 if results["interrupted"] else 0


COMMAND = Command("distill", "distil a DistilBERT student from a BERT teacher (no arguments: the offline demo)",
                  add_arguments, run)
