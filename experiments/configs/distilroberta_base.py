"""DistilRoBERTa (distilroberta-base) as a DistillConfig: DistilBERT's recipe on a RoBERTa teacher.

    distilbert-jax distill --config experiments/configs/distilroberta_base.py --set data=DATA_DIR

Teacher roberta-base; the student is a 6-layer RoBERTa from teacher layers [0, 2, 4, 7, 9, 11]
(embeddings and LM head copied); masked-LM distillation with 5.0 CE + 2.0 MLM + 1.0 cosine at
T = 2 and the DistilBERT optimiser. RoBERTa's position ids start after its padding id, so the
longest input is 512 tokens of its 514 positions. Prepare DATA_DIR with
`distilbert-jax prepare-data --tokenizer <roberta-base folder>` (`<s> text </s>` per line).
"""

from distilbert_jax.distill.config import DistillConfig


def get_config() -> DistillConfig:
    # DistillConfig's defaults are the distilbert-base-uncased run (loss, optimiser, batch, masking)
    return DistillConfig(name="distilroberta-base", teacher="roberta-base", precision="params=float32,compute=bfloat16",
                         workdir="runs/distilroberta-base")
