"""A fine-tuning run's configuration: one frozen dataclass, saved beside every result it produced.

Defaults are what a user of transformers' example scripts (run_glue.py, run_qa.py, run_ner.py)
gets: AdamW(0.9, 0.999, eps 1e-8), lr 2e-5 decayed linearly to 0 without warmup, no weight
decay, clipping at global norm 1.0, batch 32, 3 epochs, 128 tokens (384 with a 128-token
stride for SQuAD). Presets in experiments/configs/ are Python files whose `get_config()` returns
one; `--set key=value` overrides single fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from distilbert_jax.data.buckets import buckets_up_to
from distilbert_jax.training import run_config
from distilbert_jax.training.mesh import MeshShape
from distilbert_jax.training.optimizer import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(run_config.RunConfig):
    name: str = "finetune"
    task: str = ""  # a GLUE task (cola, sst2, ...), squad, squad_v2, classification or ner
    data: str = ""  # the task's data folder
    model: str = ""  # an HF-format folder (a converted checkpoint, a distilled student) or a hub name
    output: str = "runs/finetune"
    # --- data --------------------------------------------------------------------------------
    max_length: int = 0  # tokens per input; 0: 384 for SQuAD, 128 otherwise
    doc_stride: int = 128  # SQuAD: tokens shared by consecutive windows of a long context
    max_query_length: int = 64
    text_column: str | None = None  # classification files: None picks text/sentence/review/content
    text_pair_column: str | None = None
    label_column: str = "label"
    label_all_subtokens: bool = False  # NER: label every sub-token of a word, not only the first
    buckets: tuple[int, ...] = ()  # padded lengths; (): 16, 32, 64, ... up to max_length
    # --- optimisation --------------------------------------------------------------------------
    batch_size: int = 32  # sequences per micro-batch, whole mesh; x optimizer.accumulate per update
    eval_batch_size: int = 64
    epochs: float = 3.0
    max_updates: int | None = None  # stop after this many updates (overrides epochs)
    optimizer: OptimizerConfig = OptimizerConfig(learning_rate=2e-5, warmup_fraction=0.0, b1=0.9, b2=0.999, eps=1e-8,
                                                 weight_decay=0.0, max_grad_norm=1.0, accumulate=1)
    seeds: tuple[int, ...] = (42,)  # one run per seed; the paper reports the median of 5
    dropout: bool = True
    precision: str = "params=float32,compute=float32"  # compute=bfloat16: bf16 matmuls (precision.py)
    attention: str = "auto"  # auto, chunked, xla, cudnn, materialised (models/attention.py)
    mesh: MeshShape = MeshShape()
    # --- evaluation ----------------------------------------------------------------------------
    eval_every: int = 0  # updates between dev evaluations; 0: once per epoch
    select_metric: str = ""  # the dev metric that picks the best checkpoint; "": the task's main one
    predict_test: bool = True  # write test-set predictions (GLUE submission files) when a test split exists
    n_best: int = 20  # SQuAD decoding
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0  # SQuAD v2: predict no answer when null beats best by more
    # --- bookkeeping -------------------------------------------------------------------------
    keep_checkpoints: int = 2
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        self.check([
            (self.batch_size > 0 and self.eval_batch_size > 0 and self.optimizer.accumulate > 0,
             "batch_size, eval_batch_size and optimizer.accumulate must be positive"),
            (self.epochs > 0 or self.max_updates, "epochs must be positive (or set max_updates)"),
            (self.max_length >= 0, "max_length must be 0 (the task's default) or positive"),
            (len(self.seeds) > 0, "seeds must name at least one seed"),
            (len(set(self.seeds)) == len(self.seeds), "seeds must be distinct"),
            (self.optimizer.learning_rate > 0, "optimizer.learning_rate must be positive"),
        ])

    # --- derived -----------------------------------------------------------------------------
    @property
    def sequence_length(self) -> int:
        if self.max_length:
            return self.max_length
        return 384 if self.task.startswith("squad") else 128

    @property
    def bucket_lengths(self) -> tuple[int, ...]:
        return tuple(sorted(self.buckets)) if self.buckets else buckets_up_to(self.sequence_length)

def load_config(path: str | None, overrides: list[str] | None = None, **fields: Any) -> FinetuneConfig:
    """A preset (`get_config()`), a saved finetune_config.json, or the defaults; then the named
    command-line fields (None: not given), then `--set` overrides."""
    config = run_config.load_config(FinetuneConfig, path)
    given = {k: v for k, v in fields.items() if v is not None}
    if given:
        config = config.replace(**given)
    return run_config.apply_overrides(config, overrides or [])
