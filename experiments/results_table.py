"""Turn a folder of fine-tuning results into the paper's table, ours beside the published numbers.

    python experiments/results_table.py runs/paper > table.md

Reads OUTPUT/<model>/<task>/results.json as written by experiments/run_paper_table.py (or any
`distilbert-jax finetune --output` laid out that way). Each cell is the median over seeds, in
percent. A GLUE cell is the task's leaderboard score, the mean of its metrics (MRPC and QQP:
accuracy and F1; STS-B: Pearson and Spearman; MNLI: matched and mismatched accuracy), because the
paper does not say which one it prints; the per-metric medians are listed under the table. The
GLUE score is the mean of the nine cells, as the paper's 77.0 is the mean of its nine numbers, and
is left out unless all nine tasks are present.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs"))

import finetune_paper as paper  # noqa: E402

from distilbert_jax.finetune.metrics import task_score  # noqa: E402

COLUMNS = ("score",) + paper.GLUE + ("imdb", "squad_em", "squad_f1")
HEADINGS = {"score": "GLUE score", "cola": "CoLA", "mnli": "MNLI", "mrpc": "MRPC", "qnli": "QNLI", "qqp": "QQP",
            "rte": "RTE", "sst2": "SST-2", "stsb": "STS-B", "wnli": "WNLI", "imdb": "IMDb", "squad_em": "SQuAD EM",
            "squad_f1": "SQuAD F1"}


def read_results(root: str, model: str, task: str) -> dict | None:
    path = os.path.join(root, model, task, "results.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cells(root: str, model: str) -> tuple[dict[str, float], list[str]]:
    """{column: percent} for one model, and one detail line per task."""
    out, details = {}, []
    for task in paper.RUNS:
        results = read_results(root, model, task)
        if results is None or results.get("interrupted"):
            continue
        median = results["median"]
        seeds = len(results.get("seeds", []))
        if task in paper.GLUE:
            if task == "mnli":
                m, mm = median["dev_matched"]["accuracy"], median["dev_mismatched"]["accuracy"]
                out[task] = 100 * (m + mm) / 2
                details.append(f"{model} MNLI: matched {100 * m:.2f}, mismatched {100 * mm:.2f} ({seeds} seeds)")
            else:
                dev = median["dev"]
                out[task] = 100 * task_score(task, dev)
                parts = ", ".join(f"{k} {100 * v:.2f}" for k, v in dev.items() if k != "loss")
                details.append(f"{model} {HEADINGS[task]}: {parts} ({seeds} seeds)")
        elif task == "imdb":
            out["imdb"] = 100 * median["dev"]["accuracy"]
            details.append(f"{model} IMDb: accuracy {out['imdb']:.2f} on the test split ({seeds} seeds)")
        elif task == "squad":
            out["squad_em"], out["squad_f1"] = 100 * median["dev"]["exact_match"], 100 * median["dev"]["f1"]
            details.append(f"{model} SQuAD 1.1 dev: EM {out['squad_em']:.2f}, F1 {out['squad_f1']:.2f} ({seeds} seeds)")
    if all(t in out for t in paper.GLUE):
        out["score"] = sum(out[t] for t in paper.GLUE) / len(paper.GLUE)
    return out, details


def markdown_table(root: str) -> str:
    lines = ["| model | " + " | ".join(HEADINGS[c] for c in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    all_details = []
    for model in paper.MODELS:
        ours, details = cells(root, model)
        all_details += details
        for label, values in ((f"{paper.MODELS[model]} (ours, median)", ours),
                              (f"{paper.MODELS[model]} (published)", paper.PUBLISHED[model])):
            lines.append(f"| {label} | " + " | ".join(f"{values[c]:.1f}" if c in values else "—" for c in COLUMNS)
                         + " |")
    text = "\n".join(lines) + "\n"
    if all_details:
        text += "\n" + "\n".join(f"- {d}" for d in all_details) + "\n"
    return text


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} RESULTS_FOLDER")
    sys.stdout.write(markdown_table(sys.argv[1]))
