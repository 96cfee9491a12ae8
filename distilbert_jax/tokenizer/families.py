"""What differs between the tokenizer families, as data: special tokens, model inputs, framing.

A family is what transformers' tokenizer class decides (BertTokenizer, RobertaTokenizer,
GPT2Tokenizer), so it is read from `tokenizer_class` first, then from config.json's model_type,
and only then guessed from the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# transformers' SPECIAL_TOKENS_ATTRIBUTES order: all_special_ids lists them in it, duplicates once.
SPECIAL_NAMES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")


@dataclass(frozen=True)
class Family:
    name: str
    tokenizer_class: str  # what tokenizer_config.json names, as transformers writes it
    specials: dict = field(default_factory=dict)  # name -> default token; absent names are None
    model_input_names: tuple = ("input_ids", "attention_mask")
    default_max_length: int = 512  # when the config has none or transformers' "no limit" sentinel
    # prepare-data's (first, last) tokens around every sequence, as the reference's binarized_data.py
    framing: tuple = ("cls", "sep")


FAMILIES = {
    "bert": Family("bert", "BertTokenizer",
                   {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
                   ("input_ids", "token_type_ids", "attention_mask")),
    "roberta": Family("roberta", "RobertaTokenizer",
                      {"bos": "<s>", "eos": "</s>", "sep": "</s>", "cls": "<s>", "unk": "<unk>", "pad": "<pad>",
                       "mask": "<mask>"}),
    "gpt2": Family("gpt2", "GPT2Tokenizer",
                   {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|endoftext|>"},
                   default_max_length=1024, framing=("bos", "eos")),
}

# tokenizer_class (without "Fast") or config.json model_type -> family
_CLASS_FAMILY = {"BertTokenizer": "bert", "DistilBertTokenizer": "bert", "RobertaTokenizer": "roberta",
                 "GPT2Tokenizer": "gpt2"}
_MODEL_TYPE_FAMILY = {"bert": "bert", "distilbert": "bert", "roberta": "roberta", "gpt2": "gpt2"}


def family_from_config(tokenizer_config: dict, model_config: dict) -> str | None:
    name = tokenizer_config.get("tokenizer_class")
    if isinstance(name, str) and name.removesuffix("Fast") in _CLASS_FAMILY:
        return _CLASS_FAMILY[name.removesuffix("Fast")]
    return _MODEL_TYPE_FAMILY.get(model_config.get("model_type"))
