"""The released distilbert-base-uncased run (RECIPE.md), as a DistillConfig.

    distilbert-jax distill --config experiments/configs/distilbert_base_uncased.py \
        --set data=DATA_DIR [--set teacher=PATH_OR_HUB_NAME]

Teacher bert-base-uncased; student layers [0, 2, 4, 7, 9, 11] of it; loss 5.0 CE + 2.0 MLM +
1.0 cosine at T = 2 (the weights that produced the released model, not the reference script's
defaults); AdamW(0.9, 0.98, eps 1e-6), no weight decay, peak 5e-4 after 5% linear warmup, linear
decay, clip 5.0; 40 sequences per micro-batch x 50 = 2,000 sequences per update; 3 epochs;
seed 56. Prepare DATA_DIR with `distilbert-jax prepare-data --tokenizer <bert-base-uncased folder>`.
"""

from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.distill.step import LossWeights
from distilbert_jax.training.optimizer import OptimizerConfig


def get_config() -> DistillConfig:
    return DistillConfig(
        name="distilbert-base-uncased",
        teacher="bert-base-uncased",
        student_layers=(0, 2, 4, 7, 9, 11),
        objective="distill",
        batch_size=40,
        epochs=3.0,
        buckets=(64, 128, 256, 512),
        mlm_probability=0.15, mask_prob=0.8, random_prob=0.1, mlm_smoothing=0.7,
        loss=LossWeights(temperature=2.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0, alpha_mse=0.0, chunk_size=1024),
        optimizer=OptimizerConfig(learning_rate=5e-4, warmup_fraction=0.05, b1=0.9, b2=0.98, eps=1e-6,
                                  weight_decay=0.0, max_grad_norm=5.0, accumulate=50),
        seed=56,
        precision="params=float32,compute=bfloat16",  # the released run: fp16 + loss scaling on V100s
        workdir="runs/distilbert-base-uncased",
        checkpoint_every=500,
    )
