"""The paper's fine-tuning table (Sanh et al. 2019, tables 1 and 2) as data: every run, its settings,
and the numbers it is compared with.

    python experiments/run_paper_table.py --glue glue_data --imdb aclImdb --squad squad_data --output runs/paper
    python experiments/results_table.py runs/paper          # Markdown, ours beside the published numbers

One run is also a preset for the CLI (the GLUE settings; pass the task, data and model):

    distilbert-jax finetune --config experiments/configs/finetune_paper.py \
        --task rte --data glue_data --model distilbert-base-uncased --output runs/rte

Settings: the paper gives none for fine-tuning beyond "median of 5 runs", so these are the ones
of transformers' example scripts, which produced the model cards' numbers: AdamW lr 2e-5, batch
32, 3 epochs, 128 tokens for GLUE; lr 3e-5, batch 12, 2 epochs, 384 tokens with a 128-token
stride for SQuAD; 512 tokens, batch 16, 2 epochs for IMDb (its reviews are long). Five seeds each.
"""

from __future__ import annotations

import os

from distilbert_jax.finetune.config import FinetuneConfig
from distilbert_jax.training.optimizer import OptimizerConfig

MODELS = {"distilbert": "distilbert-base-uncased", "bert": "bert-base-uncased"}
SEEDS = (1, 2, 3, 4, 5)
GLUE = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli")  # the paper's column order

# task -> (which data folder, overrides of the GLUE settings)
RUNS: dict[str, tuple[str, dict]] = {
    **{task: ("glue", {}) for task in GLUE},
    "imdb": ("imdb", {"task": "classification", "max_length": 512, "batch_size": 16, "epochs": 2.0}),
    "squad": ("squad", {"optimizer.learning_rate": 3e-5, "batch_size": 12, "epochs": 2.0, "max_length": 384,
                        "doc_stride": 128}),
}

# Published dev-set results in percent (RECIPE.md; the paper's tables 1 and 2). GLUE cells are the
# paper's one number per task; "score" is their plain mean. IMDb is test accuracy.
PUBLISHED = {
    "distilbert": {"score": 77.0, "cola": 51.3, "mnli": 82.2, "mrpc": 87.5, "qnli": 89.2, "qqp": 88.5, "rte": 59.9,
                   "sst2": 91.3, "stsb": 86.9, "wnli": 56.3, "imdb": 92.82, "squad_em": 77.7, "squad_f1": 85.8},
    "bert": {"score": 79.5, "cola": 56.3, "mnli": 84.7, "mrpc": 88.6, "qnli": 91.8, "qqp": 89.6, "rte": 69.3,
             "sst2": 92.7, "stsb": 89.0, "wnli": 53.5, "imdb": 93.46, "squad_em": 81.2, "squad_f1": 88.5},
}


def get_config() -> FinetuneConfig:
    return FinetuneConfig(name="paper-glue", max_length=128, batch_size=32, eval_batch_size=64, epochs=3.0,
                          optimizer=OptimizerConfig(learning_rate=2e-5, warmup_fraction=0.0, b1=0.9, b2=0.999,
                                                    eps=1e-8, weight_decay=0.0, max_grad_norm=1.0),
                          seeds=SEEDS)


def config_for(model: str, task: str, data: dict[str, str], output_root: str) -> FinetuneConfig:
    """The run of `task` for `model` (a MODELS key); `data` maps "glue"/"imdb"/"squad" to folders."""
    source, overrides = RUNS[task]
    fields = {"task": task, **overrides}
    return get_config().replace(name=f"{model}-{task}", model=MODELS[model], data=data[source],
                                output=os.path.join(output_root, model, task), **fields)
