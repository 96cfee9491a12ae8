"""DistilGPT2 as the reference distillation code trained it, as a DistillConfig.

    distilbert-jax distill --config experiments/configs/distilgpt2.py --set data=DATA_DIR

Teacher gpt2; the student is a 6-layer GPT-2 from teacher layers [0, 2, 4, 7, 9, 11] (the
reference extracts DistilGPT2 and DistilRoBERTa from the same layers); the causal triple loss
5.0 KL at T = 2 on every position + 2.0 next-token cross-entropy + 1.0 cosine of the last hidden
states (`--alpha_ce 5.0 --alpha_clm 2.0 --alpha_cos 1.0 --alpha_mlm 0.0`), with the position
embeddings frozen (`--freeze_pos_embs`); the optimiser and batch of the DistilBERT run. Prepare
DATA_DIR with `distilbert-jax prepare-data --tokenizer <gpt2 folder>`: each line becomes
`<|endoftext|> text <|endoftext|>`, as the reference's binarized_data.py frames it.
"""

from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.distill.step import LossWeights


def get_config() -> DistillConfig:
    # DistillConfig's defaults are the distilbert-base-uncased run (optimiser, batch, layers, seed)
    return DistillConfig(name="distilgpt2", teacher="gpt2", freeze=("transformer/wpe",),
                         buckets=(128, 256, 512, 1024),
                         loss=LossWeights(temperature=2.0, alpha_ce=5.0, alpha_mlm=0.0, alpha_clm=2.0, alpha_cos=1.0,
                                          chunk_size=1024),
                         precision="params=float32,compute=bfloat16", workdir="runs/distilgpt2")
