"""One output record for every model, so callers never index into tuples, but can.

Fields a model does not produce are None (a pytree with None leaves passes through jit).

It also reads like transformers' `ModelOutput`, so code written against transformers keeps working:
`out.logits`, `out["logits"]`, `out[0]`, `len(out)`, `keys()`, `to_tuple()`, iteration over the
keys. As there, None fields are skipped, so `out[0]` is the first field the model produced. One
record serves every class here, while transformers has one per head, so the keys are the fields of
the transformers class this output stands for (`_VIEWS`, picked by which head fields are set), in
that class's order: a masked-LM output's `out[0]` is its logits, not the encoder state it also
carries. Fields outside that class (an MLM output's `last_hidden_state`) stay reachable by name.
"""

from __future__ import annotations

from typing import Any, Iterator

import flax.struct

# (the field whose presence picks this view, the fields of the transformers class it mimics, in order)
_VIEWS = (
    ("start_logits", ("start_logits", "end_logits", "hidden_states", "attentions")),  # QuestionAnsweringModelOutput
    ("logits", ("logits", "past_key_values", "hidden_states", "attentions")),  # MaskedLM/...Classifier/CausalLM
    (None, ("last_hidden_state", "pooler_output", "past_key_values", "mlm_features", "hidden_states",
            "attentions")),  # BaseModelOutput*
)


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
    past_key_values: Any = None  # GPT-2 called with a key-value cache: the updated cache (models/gpt2.py)

    def keys(self) -> tuple[str, ...]:
        for marker, order in _VIEWS:
            if marker is None or getattr(self, marker) is not None:
                return tuple(name for name in order if getattr(self, name) is not None)
        raise AssertionError("the last view has no marker")

    def values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.keys())

    def items(self) -> tuple[tuple[str, Any], ...]:
        return tuple((name, getattr(self, name)) for name in self.keys())

    def to_tuple(self) -> tuple:
        return self.values()

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.__dataclass_fields__ or getattr(self, key) is None:
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())
