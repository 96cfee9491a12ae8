"""distilbert-base-multilingual-cased as a DistillConfig: the recipe on the 104-language cased BERT.

    distilbert-jax distill --config experiments/configs/distilbert_base_multilingual_cased.py --set data=DATA_DIR

Teacher bert-base-multilingual-cased (a 119,547-token cased WordPiece vocabulary: no lowercasing,
accents kept); otherwise the distilbert-base-uncased run. prepare-data stores ids above 65,535 as
int32, so the whole vocabulary goes through data, masking, loss and conversion unchanged.
"""

from distilbert_jax.distill.config import DistillConfig


def get_config() -> DistillConfig:
    # DistillConfig's defaults are the distilbert-base-uncased run (loss, optimiser, batch, masking)
    return DistillConfig(name="distilbert-base-multilingual-cased", teacher="bert-base-multilingual-cased", precision="params=float32,compute=bfloat16",
                         workdir="runs/distilbert-base-multilingual-cased")
