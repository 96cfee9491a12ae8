"""One output record for every model, so callers never index into tuples.

Fields a model does not produce are None (a pytree with None leaves passes through jit).
"""

from __future__ import annotations

from typing import Any

import flax.struct


@flax.struct.dataclass
class ModelOutput:
    last_hidden_state: Any = None
    logits: Any = None  # MLM [B, L, V]; classification [B, labels]; tokens [B, L, labels]; QA [B, L, 2]
    start_logits: Any = None  # question answering only
    end_logits: Any = None
    pooler_output: Any = None  # BERT with a pooler only
    mlm_features: Any = None  # masked LM with features_only=True: [B, L, D] before the vocabulary projection
    hidden_states: tuple | None = None  # embeddings output, then every layer's output
    attentions: tuple | None = None  # [B, heads, L, L] per layer
