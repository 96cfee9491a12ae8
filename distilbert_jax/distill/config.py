"""The distillation run's configuration: one frozen dataclass, saved with every run and checkpoint.

Presets are Python files in `experiments/configs/` whose `get_config()` returns a `DistillConfig`
(big_vision / Flax-examples style); `--set key=value` overrides single fields on the command line.
Defaults are the released distilbert-base-uncased run (RECIPE.md): the loss weights 5/2/1 that
produced the published weights, not the reference script's own defaults.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from distilbert_jax.distill.step import LossWeights
from distilbert_jax.training import run_config
from distilbert_jax.training.mesh import MeshShape
from distilbert_jax.training.optimizer import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class DistillConfig(run_config.RunConfig):
    legacy_names: ClassVar[dict[str, str]] = {
        **run_config.LEGACY_NAMES, "loss_chunk_size": "loss.chunk_size",
        **{name: f"loss.{name}" for name in ("temperature", "alpha_ce", "alpha_mlm", "alpha_cos", "alpha_mse",
                                             "restrict_ce_to_mask")}}

    name: str = "distilbert-base-uncased"
    # --- models ----------------------------------------------------------------------------
    teacher: str | None = "bert-base-uncased"  # BertForMaskedLM, RobertaForMaskedLM or GPT2LMHeadModel folder/hub name
    student: str | None = None  # folder of a language model of the teacher's vocabulary; None: extracted
    student_layers: tuple[int, ...] = (0, 2, 4, 7, 9, 11)  # teacher layers copied into the student
    student_init: str = "teacher"  # "teacher" (copy layers) or "random" (the paper's ablation)
    student_overrides: dict = dataclasses.field(default_factory=dict)  # config fields for a random student
    objective: str = "distill"  # "distill" (triple loss), "mlm" / "clm" (the student alone on its LM loss)
    freeze: tuple[str, ...] = ()  # parameter path prefixes kept fixed, e.g. "transformer/wpe" (distilgpt2)
    # --- data ------------------------------------------------------------------------------
    data: str = ""  # a folder written by `distilbert-jax prepare-data`
    batch_size: int = 40  # sequences per micro-batch, whole mesh (5 per GPU x 8 GPUs); x optimizer.accumulate
    epochs: float = 3.0
    max_updates: int | None = None  # stop after this many updates (overrides epochs)
    buckets: tuple[int, ...] = (64, 128, 256, 512)
    # --- masking ---------------------------------------------------------------------------
    mlm_probability: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1
    mlm_smoothing: float = 0.7  # token weights count**-0.7; 0 = uniform masking
    random_from_vocab: bool = False  # True: random replacements over the whole vocab, as the reference
    # --- loss, optimisation ----------------------------------------------------------------
    # 5 CE + 2 MLM + 1 cos at T = 2; chunk_size: positions whose logits exist at once (~8 x chunk x V x 4 bytes)
    loss: LossWeights = LossWeights(chunk_size=1024)
    optimizer: OptimizerConfig = OptimizerConfig(learning_rate=5e-4, warmup_fraction=0.05, b1=0.9, b2=0.98, eps=1e-6,
                                                 weight_decay=0.0, max_grad_norm=5.0, accumulate=50)
    seed: int = 56
    # --- precision, memory, devices ----------------------------------------------------------
    precision: str = "params=float32,compute=float32"  # compute=bfloat16: bf16 matmuls (precision.py)
    attention: str = "auto"  # auto, chunked, xla, cudnn, materialised (models/attention.py)
    remat: bool = False  # recompute each layer in the backward pass (long sequences)
    dropout: bool = True  # False trains the student without dropout (and makes steps mesh-independent)
    mesh: MeshShape = MeshShape()  # data=-1, fsdp=1: data-parallel; data=1, fsdp=-1: fully sharded
    shard_teacher: bool = False  # shard the teacher's parameters over fsdp too
    # --- bookkeeping -----------------------------------------------------------------------
    workdir: str = "runs/distill"
    checkpoint_every: int = 500  # updates
    keep_checkpoints: int = 3
    log_every: int = 10  # micro-batches
    eval_every: int = 0  # updates; 0: only at the end
    eval_batches: int = 50
    progress: bool = True

    def __post_init__(self) -> None:
        self.check([
            (self.objective in ("distill", "mlm", "clm"), "objective must be 'distill', 'mlm' or 'clm'"),
            (self.student_init in ("teacher", "random"), "student_init must be 'teacher' or 'random'"),
            (self.objective != "distill" or self.teacher, "objective 'distill' needs a teacher"),
            (self.batch_size > 0 and self.optimizer.accumulate > 0,
             "batch_size and optimizer.accumulate must be positive"),
            (self.loss.temperature > 0, "loss.temperature must be positive"),
            (0 < self.mlm_probability < 1, "mlm_probability must be in (0, 1)"),
        ])


apply_overrides = run_config.apply_overrides


def load_config(path: str | None, overrides: list[str] | None = None) -> DistillConfig:
    """A preset file (`get_config()`), a saved `config.json`, or the defaults; then overrides."""
    return run_config.load_config(DistillConfig, path, overrides)
