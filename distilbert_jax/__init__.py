"""distilbert_jax: DistilBERT and its BERT teacher in JAX/Flax, with exact PyTorch parity.

    import distilbert_jax as dj
    m = dj.from_pretrained("path/to/folder")      # an HF-format folder or a hub name
    out = m(input_ids, attention_mask)            # out.logits, out.last_hidden_state, ...
    m.save_pretrained("out/")                     # loadable by transformers

Importing this package never imports torch.
"""

from distilbert_jax.config import BertConfig, DistilBertConfig
from distilbert_jax.errors import UserError
from distilbert_jax.models.outputs import ModelOutput
from distilbert_jax.pretrained import PretrainedModel, from_pretrained

__all__ = ["BertConfig", "DistilBertConfig", "ModelOutput", "PretrainedModel", "UserError", "from_pretrained"]
__version__ = "0.1.0"
