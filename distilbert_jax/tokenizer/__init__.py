"""Tokenizers id-for-id with transformers' fast ones: BERT WordPiece (cased or not, multilingual
included), and the byte-level BPE of RoBERTa and GPT-2. One class, `Tokenizer`, whatever the family:
`Tokenizer.from_pretrained(folder)` picks the family from the folder's files."""

from distilbert_jax.tokenizer.tokenizer import Tokenizer

__all__ = ["Tokenizer"]
