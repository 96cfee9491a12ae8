"""GLUE scores computed the way the published numbers were computed, with numpy alone.

Fine-tuning results are only comparable with the papers if every metric matches the reference
implementations the papers used (scikit-learn's `matthews_corrcoef`/`f1_score`, scipy's
`pearsonr`/`spearmanr`, called by transformers' old `glue_compute_metrics`), including their
degenerate cases: MCC is 0.0 when it is undefined (constant predictions), F1 is 0.0 when there is
no positive prediction and no positive label, Spearman averages the ranks of ties, and Pearson and
Spearman are NaN for a constant input, as scipy returns. The tests check each against those
libraries; this module does not import them, so evaluation needs no extra dependency.

Every metric is a fraction in [0, 1] (or [-1, 1] for correlations), never a percentage.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from distilbert_jax.errors import UserError
from distilbert_jax.finetune.glue import GLUE_TASKS, glue_task

log = logging.getLogger("distilbert_jax")

# The nine tasks of the GLUE score. AX (the diagnostic set) is predicted with the MNLI model and
# reported on its own; it is not part of the score.
GLUE_SCORE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")

# Metric names per task, as transformers' glue_compute_metrics named them ("mcc" for CoLA,
# "accuracy"/"f1" for MRPC and QQP, "pearson"/"spearman" for STS-B; the table lives with the
# tasks in glue.py). AX is scored by the GLUE server with the multi-class Matthews correlation.
TASK_METRICS = {name: task.metrics for name, task in GLUE_TASKS.items()}


def _pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} must be 1-D and of the same length")
    if p.size == 0:
        raise ValueError("no predictions to score")
    return p, y


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to their label."""
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y))


def f1_binary(predictions, labels, positive=1) -> float:
    """F1 of the positive class: 2TP / (2TP + FP + FN); 0.0 when that is 0/0 (scikit-learn's
    zero_division=0 result)."""
    p, y = _pair(predictions, labels)
    tp = int(np.sum((p == positive) & (y == positive)))
    fp = int(np.sum((p == positive) & (y != positive)))
    fn = int(np.sum((p != positive) & (y == positive)))
    denominator = 2 * tp + fp + fn
    return 0.0 if denominator == 0 else 2.0 * tp / denominator


def matthews_corrcoef(predictions, labels) -> float:
    """Matthews correlation, binary or multi-class (Gorodkin's R_K, as scikit-learn computes it).

    From the confusion matrix C: (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) with t, p the true
    and predicted class counts, c the correct count, s the sample count; 0.0 when a factor of the
    denominator is 0 (all predictions, or all labels, in one class)."""
    p, y = _pair(predictions, labels)
    _, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    codes = codes.reshape(-1)
    k = int(codes.max()) + 1
    confusion = np.zeros((k, k), np.float64)
    np.add.at(confusion, (codes[: y.size], codes[y.size:]), 1.0)
    t_sum, p_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = float(y.size), float(np.trace(confusion))
    cov_yp = correct * n - float(t_sum @ p_sum)
    cov_pp = n * n - float(p_sum @ p_sum)
    cov_yy = n * n - float(t_sum @ t_sum)
    if cov_pp * cov_yy == 0.0:
        return 0.0
    return cov_yp / math.sqrt(cov_yy * cov_pp)


def pearson(predictions, labels) -> float:
    """Pearson correlation; NaN when either input is constant (scipy returns NaN too)."""
    p, y = _pair(predictions, labels)
    p = p.astype(np.float64) - np.mean(p, dtype=np.float64)
    y = y.astype(np.float64) - np.mean(y, dtype=np.float64)
    p_norm, y_norm = np.linalg.norm(p), np.linalg.norm(y)
    if p_norm == 0.0 or y_norm == 0.0:
        return float("nan")
    return float(np.clip((p / p_norm) @ (y / y_norm), -1.0, 1.0))


def average_ranks(values) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span ([10, 20, 20, 30] -> 1, 2.5,
    2.5, 4), as scipy.stats.rankdata(method="average")."""
    x = np.asarray(values).reshape(-1)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]]))
    ends = np.append(starts[1:], x.size)  # exclusive end of each tie group in sorted order
    group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def spearman(predictions, labels) -> float:
    """Spearman correlation: Pearson of the average ranks; NaN when either input is constant."""
    p, y = _pair(predictions, labels)
    return pearson(average_ranks(p), average_ranks(y))


_METRIC_FUNCTIONS = {"accuracy": accuracy, "f1": f1_binary, "mcc": matthews_corrcoef,
                     "pearson": pearson, "spearman": spearman}


def _known_task(task: str) -> str:
    return glue_task(task).name


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The task's metrics, as fractions, keyed as transformers' glue_compute_metrics keyed them.

    Classification tasks take class indices (index i is label name i of the task's label list,
    so index 1 is the positive class of MRPC and QQP) for both arguments; STS-B takes float
    scores. Label names (as the GLUE reader returns them) are turned into those indices. For MNLI
    call it once per dev split (matched, mismatched)."""
    name = _known_task(task)
    predictions, labels = _indices(name, predictions), _indices(name, labels)
    return {metric: _METRIC_FUNCTIONS[metric](predictions, labels) for metric in TASK_METRICS[name]}


def _indices(task: str, values) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "UO":
        return values
    names = GLUE_TASKS[task].labels
    unknown = sorted({str(v) for v in values.tolist()} - set(names or ()))
    if unknown:
        raise ValueError(f"{task} has no label(s) {', '.join(map(repr, unknown[:5]))}; its labels: {names}")
    return np.asarray([names.index(v) for v in values.tolist()], np.int64)


def task_score(task: str, metrics: dict[str, float]) -> float:
    """The one number per task that the GLUE leaderboard shows and averages: the unweighted mean
    of the task's metrics (MRPC and QQP: mean of F1 and accuracy; STS-B: mean of Pearson and
    Spearman; otherwise the single metric). For MNLI, give the mean of the matched and mismatched
    accuracies to follow the leaderboard (see `glue_score`)."""
    name = _known_task(task)
    missing = [m for m in TASK_METRICS[name] if m not in metrics]
    if missing:
        raise UserError(f"metrics for {name} lack {', '.join(missing)} (got {', '.join(sorted(metrics)) or 'none'});"
                        f" pass the dict glue_metrics({name!r}, ...) returns")
    return float(np.mean([metrics[m] for m in TASK_METRICS[name]]))


_MNLI_HALVES = {"mnlimatched": "mnli_m", "mnlim": "mnli_m", "mnlimismatched": "mnli_mm", "mnlimm": "mnli_mm"}


def glue_score(task_scores: dict[str, float], require_all: bool = True) -> float:
    """The GLUE macro score: the unweighted mean of the nine task scores, in the units given
    (fractions in, fraction out; the papers' percentages in, a percentage out).

    How MNLI counts, per the official leaderboard: MNLI is ONE of the nine tasks, and its task
    score is the mean of the MNLI-m and MNLI-mm accuracies; AX is not part of the score. The GLUE
    paper (Wang et al., 2019) averages a task's metrics and then macro-averages the tasks, and
    the published leaderboard rows reproduce only with MNLI = (m + mm) / 2 counted once:
    BERT-base (CoLA 52.1, SST-2 93.5, MRPC 88.9/84.8, STS-B 85.8/87.1, QQP 71.2/89.2,
    MNLI 84.6/83.4, QNLI 90.5, RTE 66.4, WNLI 65.1) gives 78.34, the leaderboard's 78.3 (MNLI-m
    alone: 78.4; m and mm as two of ten tasks: 78.9); BERT-large gives 80.52 -> 80.5 (MNLI-m
    alone: 80.6; ten tasks: 81.1); MT-DNN without fine-tuning 81.72 -> 81.7 (MNLI-m alone:
    81.8). The rows are tabulated with their leaderboard scores in the MT-DNN paper (Liu et al.,
    2019) and the ERNIE 2.0 README. So either pass "mnli" as that mean, or pass "mnli_matched"
    and "mnli_mismatched" and they are averaged here.

    Papers that report dev-set results often average differently: DistilBERT's 77.0 (Sanh et al.
    2019, table 1) is the plain mean of the nine dev-set numbers it prints, one per task (MNLI
    82.2); passing those nine numbers reproduces it.

    With require_all=False the mean is taken over the tasks given and a warning names the
    missing ones; such a number is not a GLUE score and must not be reported as one."""
    scores = {}
    for key, value in task_scores.items():
        name = "".join(c for c in key.lower() if c.isalnum())  # "MNLI-mm", "mnli_mismatched", "SST-2"
        name = _MNLI_HALVES.get(name, name)
        if name not in GLUE_SCORE_TASKS + ("mnli_m", "mnli_mm"):
            why = " (AX is the diagnostic set, not part of the GLUE score)" if name == "ax" else ""
            raise UserError(f"{key!r} is not one of the nine GLUE score tasks{why}; "
                            f"give scores for {', '.join(GLUE_SCORE_TASKS)}")
        scores[name] = float(value)
    halves = [k for k in ("mnli_m", "mnli_mm") if k in scores]
    if halves:
        if "mnli" in scores:
            raise UserError("give MNLI either as 'mnli' or as 'mnli_matched' + 'mnli_mismatched', not both")
        if len(halves) == 1:
            raise UserError("MNLI needs both 'mnli_matched' and 'mnli_mismatched' (the leaderboard averages"
                            " them), or one 'mnli' score")
        scores["mnli"] = (scores.pop("mnli_m") + scores.pop("mnli_mm")) / 2.0
    missing = [t for t in GLUE_SCORE_TASKS if t not in scores]
    if missing and require_all:
        raise UserError(f"the GLUE score needs all nine tasks; missing: {', '.join(missing)} "
                        "(or pass require_all=False for a partial average)")
    if not scores:
        raise UserError("no task scores given")
    if missing:
        log.warning("partial GLUE average over %d of 9 tasks (missing: %s); not a GLUE score",
                    len(scores), ", ".join(missing))
    return float(np.mean([scores[t] for t in GLUE_SCORE_TASKS if t in scores]))
