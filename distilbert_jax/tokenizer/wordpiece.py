"""BERT's WordPiece pipeline, as transformers' BertTokenizer builds it around a vocabulary."""

from __future__ import annotations

from tokenizers import Tokenizer as _RustTokenizer
from tokenizers import decoders, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

# tokenizer_config.json keys that decide the normalizer (transformers lets them beat tokenizer.json's)
FLAG_KEYS = ("do_lower_case", "strip_accents", "tokenize_chinese_chars")


def normalizer(flags: dict, clean_text: bool = True):
    return normalizers.BertNormalizer(
        clean_text=clean_text, handle_chinese_chars=flags["tokenize_chinese_chars"],
        strip_accents=flags["strip_accents"], lowercase=flags["do_lower_case"])


def pipeline(model: WordPiece, flags: dict) -> _RustTokenizer:
    """The pipeline transformers' BertTokenizer builds around a vocabulary (template added later)."""
    rust = _RustTokenizer(model)
    rust.normalizer = normalizer(flags)
    rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    rust.decoder = decoders.WordPiece(prefix="##")
    return rust
