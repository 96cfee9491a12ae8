"""`finetune(config)`: every seed of a fine-tuning run, their median, the chosen model and its predictions.

    OUTPUT/                      an HF-format checkpoint (config.json, model.safetensors, tokenizer):
                                 the best dev model of the best seed, loadable by transformers
    OUTPUT/finetune_config.json  the full FinetuneConfig
    OUTPUT/results.json          per-seed best dev metrics, their median, seeds, steps, data counts
    OUTPUT/predictions/          dev predictions, and test predictions (GLUE submission files)
    OUTPUT/loss.png, dev.png     curves of every seed
    OUTPUT/seeds/seed-N/         each seed's checkpoints, metrics.jsonl, TensorBoard, best/ model

The paper reports the median of five seeds; `seeds=(...)` runs them in one command. Running the
same command again resumes: finished seeds are read back, an interrupted one continues from its
checkpoint, and a changed config (other than bookkeeping fields) is refused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
from typing import Any

import jax

from distilbert_jax.errors import UserError
from distilbert_jax.finetune.config import FinetuneConfig
from distilbert_jax.finetune.predict import make_predictor, predict_split
from distilbert_jax.finetune.tasks import Task, make_task
from distilbert_jax.finetune.trainer import recover_best_dir, selection, train_seed
from distilbert_jax.pretrained import from_pretrained, load_tokenizer
from distilbert_jax.training import distributed
from distilbert_jax.training.distributed import barrier
from distilbert_jax.training.loop import write_json
from distilbert_jax.training.mesh import make_mesh
from distilbert_jax.training.metrics import plot_curves, read_metrics

log = logging.getLogger("distilbert_jax")

CONFIG_FILE = "finetune_config.json"
_RESUMABLE_CHANGES = {"output", "progress", "log_every", "keep_checkpoints", "mesh.data", "mesh.fsdp",
                      "mesh.allow_replication", "eval_batch_size", "predict_test", "seeds"}


def require_tokenizer(tokenizer):
    if tokenizer is None:
        raise UserError("the model folder has no tokenizer files (vocab.txt or tokenizer.json); "
                        "copy them from the checkpoint the model came from")
    return tokenizer


def read_split(task: Task, split: str, tokenizer, *, for_training: bool):
    result = task.read(split).report(f"the {task.name} {split} data in {task.data}")
    encoded = task.encode(split, result.examples, tokenizer, for_training=for_training)
    encoded.skipped = len(result.skipped)
    return encoded


def finetune(config: FinetuneConfig, *, stop_at_step: int | None = None) -> dict[str, Any]:
    for name in ("task", "data", "model"):
        if not getattr(config, name):
            raise UserError(f"fine-tuning needs --{name}")
    distributed.initialize()
    primary = jax.process_index() == 0
    task = make_task(config)
    tokenizer = require_tokenizer(load_tokenizer(config.model))
    train = task.read("train").report(f"the {task.name} training data in {config.data}")
    task.fit_labels(train.examples)
    train_set = task.encode("train", train.examples, tokenizer, for_training=True)
    evals = {s: read_split(task, s, tokenizer, for_training=False) for s in task.eval_splits() if task.has_split(s)}
    if not evals:
        log.warning("no dev data for %s in %s: the last model is kept, nothing is selected", task.name, config.data)
    _prepare_output(config, primary)

    seeds = []
    for seed in config.seeds:
        workdir = os.path.join(config.output, "seeds", f"seed-{seed}")
        done = os.path.join(workdir, "results.json")
        if os.path.isfile(done):
            with open(done, encoding="utf-8") as f:
                seeds.append(json.load(f))
            continue
        if primary:  # one writer: the others wait until the folder is whole again
            recover_best_dir(workdir)
        barrier(f"seed {seed} folder")
        model = from_pretrained(config.model, task=task.head, seed=seed, config_overrides=task.config_overrides(),
                                lazy=True)  # each host reads its own slices when placed
        result = train_seed(config, task, model, train_set, evals, seed, workdir, pad_id=tokenizer.pad_token_id,
                            stop_at_step=stop_at_step)
        seeds.append(result)
        if result["interrupted"]:
            print(f"stopped seed {seed} at step {result['steps']} of {result['total_steps']}; checkpoint saved in "
                  f"{workdir}/checkpoints: run the same command again to resume", flush=True)
            return {"interrupted": True, "seeds": seeds, "output": config.output}

    metric, higher = selection(task, config)
    first = next(iter(evals), None)
    chosen = _choose(seeds, first, metric, higher)
    results: dict[str, Any] = {
        "task": task.name, "model": config.model, "labels": list(task.labels) if task.labels else None,
        "select_metric": metric, "eval_splits": list(evals), "train_examples": len(train.examples),
        "train_features": len(train_set.features), "skipped_rows": {"train": len(train.skipped),
                                                                    **{s: e.skipped for s, e in evals.items()}},
        "seeds": [_seed_summary(r) for r in seeds], "median": _median(seeds, evals), "chosen_seed": chosen["seed"],
        "interrupted": False, "output": config.output,
    }
    if primary:
        _install_model(chosen["model_dir"], config.output)
    barrier("model installed")
    results["predictions"] = _write_predictions(config, task, tokenizer, evals, primary)
    if primary:
        results["plots"] = _plots(config, seeds, first, metric)
        write_json(os.path.join(config.output, "results.json"), results)
    return results


def _prepare_output(config: FinetuneConfig, primary: bool) -> None:
    path = os.path.join(config.output, CONFIG_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        changed = config.changed_from(saved, _RESUMABLE_CHANGES)
        if changed:
            raise UserError(f"{config.output} holds a run with a different config ({', '.join(changed)}); "
                            f"use another --output, or the saved {CONFIG_FILE}")
    if primary:
        try:
            os.makedirs(config.output, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the output folder {config.output}: {err.strerror or err}; "
                            "choose a writable folder") from None
        write_json(path, config.to_dict())


def _choose(seeds: list[dict], split: str | None, metric: str, higher: bool) -> dict:
    """The seed whose best dev score is best (the last seed when there is no dev data)."""
    if split is None:
        return seeds[-1]
    return (max if higher else min)(seeds, key=lambda r: r["best"][split][metric])


def _median(seeds: list[dict], evals: dict) -> dict[str, dict[str, float]]:
    out = {}
    for split in evals:
        names = seeds[0]["best"][split].keys() if seeds[0].get("best") else ()
        out[split] = {name: statistics.median(r["best"][split][name] for r in seeds) for name in names}
    return out


def _seed_summary(result: dict) -> dict:
    return {k: result.get(k) for k in ("seed", "best_step", "best", "steps", "updates", "epochs", "seconds", "train")}


def _install_model(best_dir: str, output: str) -> None:
    """The chosen model's files at the top of the output folder, so OUTPUT is itself a checkpoint."""
    if not os.path.isdir(best_dir):
        raise UserError(f"{best_dir} is missing; run the command again to re-export the best model")
    for name in os.listdir(best_dir):
        source = os.path.join(best_dir, name)
        if os.path.isfile(source):
            shutil.copyfile(source, os.path.join(output, name + ".tmp"))
            os.replace(os.path.join(output, name + ".tmp"), os.path.join(output, name))


def _write_predictions(config: FinetuneConfig, task: Task, tokenizer, evals: dict, primary: bool) -> dict[str, str]:
    """Dev and test predictions of the installed model, one file per split. Every process predicts
    (the batches span all of them); process 0 writes."""
    model = from_pretrained(config.output, task=task.head)
    directory = os.path.join(config.output, "predictions")
    if primary:
        os.makedirs(directory, exist_ok=True)
    mesh = make_mesh(config.mesh)
    predictor = make_predictor(model.module, task.kind, mesh)
    splits = dict(evals)
    if config.predict_test:
        for split in task.test_splits():
            if task.has_split(split):
                splits[split] = read_split(task, split, tokenizer, for_training=False)
    written = {}
    for split, encoded in splits.items():
        predictions, _ = predict_split(task, predictor, model.params, encoded, mesh, config, tokenizer.pad_token_id,
                                       score=False)
        if primary:
            written[split] = task.write_predictions(encoded, predictions, directory)
    return written


def _plots(config: FinetuneConfig, seeds: list[dict], split: str | None, metric: str) -> list[str]:
    runs = {}
    for r in seeds:
        path = os.path.join(config.output, "seeds", f"seed-{r['seed']}", "metrics.jsonl")
        if os.path.isfile(path):
            runs[f"seed {r['seed']}"] = read_metrics(path)
    plots = []
    if runs:
        plots.append(plot_curves(runs, os.path.join(config.output, "loss.png"), keys=("loss",),
                                 title=f"{config.name}: training loss", smooth=5))
        if split is not None:
            plots.append(plot_curves(runs, os.path.join(config.output, "dev.png"), keys=(metric, "loss"),
                                     split=split, title=f"{config.name}: {split}"))
    return plots


def evaluate_model(config: FinetuneConfig, *, splits: tuple[str, ...] = (), output: str | None = None) -> dict:
    """Score a fine-tuned model on a task's dev splits (or `splits`); write predictions to `output`."""
    for name in ("task", "data", "model"):
        if not getattr(config, name):
            raise UserError(f"evaluation needs --{name}")
    task = make_task(config)
    model = from_pretrained(config.model, task=task.head)
    if model.load_report.missing:
        missing = ", ".join(model.load_report.missing[:3])
        raise UserError(f"{config.model} has no fine-tuned {task.head} head (missing {missing}); "
                        "fine-tune it first with `distilbert-jax finetune`")
    tokenizer = require_tokenizer(model.tokenizer)
    task.fit_labels(None, model.config)
    mesh = make_mesh(config.mesh)
    predictor = make_predictor(model.module, task.kind, mesh)
    results = {"task": task.name, "model": config.model}
    for split in splits or task.eval_splits():
        encoded = read_split(task, split, tokenizer, for_training=False)
        predictions, results[split] = predict_split(task, predictor, model.params, encoded, mesh, config,
                                                    tokenizer.pad_token_id)
        if output:
            os.makedirs(output, exist_ok=True)
            results.setdefault("predictions", {})[split] = task.write_predictions(encoded, predictions, output)
    return results
