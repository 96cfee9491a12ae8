"""Tokenizer folders in and out, read and written as transformers reads and writes them.

Which family a folder holds, which of its files decide the ids, and which settings transformers
takes from tokenizer_config.json over tokenizer.json: all of it lives here, so tokenizer.py only
encodes and decodes.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as _RustTokenizer

from distilbert_jax.errors import UserError
from distilbert_jax.tokenizer import byte_bpe, wordpiece
from distilbert_jax.tokenizer.families import FAMILIES, SPECIAL_NAMES, family_from_config


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not readable JSON ({e}); re-download or re-save the tokenizer") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} should hold a JSON object; re-download or re-save the tokenizer")
    return data


def token_text(value, default: str | None) -> str | None:
    """Config files store special tokens either as a string or as a serialized AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else default


def _guess_family(folder: Path, data: dict | None, has_vocab_txt: bool, has_bpe_files: bool) -> str:
    """Only when neither tokenizer_config.json nor config.json names the family: WordPiece is BERT;
    a byte-level BPE with RoBERTa's template or its <s>/<mask> tokens is RoBERTa, else GPT-2."""
    if data is not None:
        model = data.get("model") or {}
        if model.get("type") == "WordPiece":
            return "bert"
        if model.get("type") != "BPE":
            raise UserError(f"{folder}/tokenizer.json holds a {model.get('type')} tokenizer; only BERT WordPiece and "
                            "byte-level BPE (RoBERTa, GPT-2) ones are supported")
        if (data.get("post_processor") or {}).get("type") == "RobertaProcessing":
            return "roberta"
        vocab = model.get("vocab") or {}
    elif has_vocab_txt:
        return "bert"
    elif has_bpe_files:
        vocab = read_json(folder / "vocab.json")
    else:
        raise UserError(f"{folder} has neither tokenizer.json, vocab.txt nor vocab.json + merges.txt; "
                        "point at a tokenizer folder")
    return "roberta" if "<s>" in vocab and "<mask>" in vocab else "gpt2"


def load(cls, directory, family: str | None = None, pad_token: str | None = None):
    """Tokenizer.from_pretrained's body; `cls` is that class, passed in because tokenizer.py imports this module."""
    folder = Path(directory)
    if not folder.is_dir():
        raise UserError(f"tokenizer folder {folder} does not exist; pass a folder with tokenizer.json, "
                        "vocab.txt or vocab.json + merges.txt")
    config_path = folder / "tokenizer_config.json"
    config = read_json(config_path) if config_path.is_file() else {}
    json_path, vocab_path = folder / "tokenizer.json", folder / "vocab.txt"
    data = read_json(json_path) if json_path.is_file() else None
    if data is not None:
        try:
            rust = _RustTokenizer.from_str(json.dumps(data))
        except Exception as e:  # the Rust side raises plain Exception for schema errors
            raise UserError(f"{json_path} is not a valid tokenizer.json ({e}); re-download or re-save it") from None
    has_bpe_files = all((folder / n).is_file() for n in byte_bpe.BPE_FILES)
    if family is None:
        model_config = folder / "config.json"
        family = family_from_config(config, read_json(model_config) if model_config.is_file() else {})
    if family is None:
        family = _guess_family(folder, data, vocab_path.is_file(), has_bpe_files)
    if family not in FAMILIES:
        raise UserError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    max_len = config.get("model_max_length", FAMILIES[family].default_max_length)
    if not isinstance(max_len, int) or isinstance(max_len, bool) or not 0 < max_len < 10**9:
        max_len = FAMILIES[family].default_max_length
    clean_up = bool(config.get("clean_up_tokenization_spaces", False))
    specials = {n: token_text(config.get(f"{n}_token"), d) for n, d in FAMILIES[family].specials.items()}
    if pad_token is not None:
        specials["pad"] = pad_token
    if family != "bert":
        model_type = (data.get("model") or {}).get("type") if data is not None else None
        if data is not None and model_type != "BPE":
            raise UserError(f"{json_path} holds a {model_type} tokenizer, but {family} needs a byte-level BPE "
                            "one; pass the right folder (or family=)")
        if data is None and not has_bpe_files:
            raise UserError(f"{folder} has neither tokenizer.json nor vocab.json + merges.txt for a {family} "
                            "tokenizer; point at the tokenizer folder")
        settings = {k: config[k] for k in byte_bpe.SETTING_KEYS if k in config}
        rust = byte_bpe.build(byte_bpe.read_files(folder, data), family, specials, settings)
        return cls(rust, specials=specials, family=family, model_max_length=max_len,
                   clean_up_tokenization_spaces=clean_up, bpe_settings=settings)

    config_flags = {k: config[k] for k in wordpiece.FLAG_KEYS if k in config}
    if data is not None:
        model_type = (data.get("model") or {}).get("type")
        if model_type != "WordPiece":
            raise UserError(f"{json_path} holds a {model_type} tokenizer; BERT needs WordPiece, RoBERTa and "
                            "GPT-2 byte-level BPE ones")
        norm = data.get("normalizer") or {}
        flags = None
        if norm.get("type") == "BertNormalizer":
            flags = {"do_lower_case": norm.get("lowercase", True), "strip_accents": norm.get("strip_accents"),
                     "tokenize_chinese_chars": norm.get("handle_chinese_chars", True)}
            if any(flags[k] != v for k, v in config_flags.items()):
                flags.update(config_flags)  # transformers lets the config win; so do we
                rust.normalizer = wordpiece.normalizer(flags, norm.get("clean_text", True))
        return cls(rust, specials=specials, flags=flags, model_max_length=max_len,
                   clean_up_tokenization_spaces=clean_up)
    if vocab_path.is_file():
        tok = cls.from_vocab(vocab_path, do_lower_case=config.get("do_lower_case", True),
                             strip_accents=config.get("strip_accents"),
                             tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
                             model_max_length=max_len, special_tokens=specials)
        tok.clean_up_tokenization_spaces = clean_up
        return tok
    raise UserError(f"{folder} has neither tokenizer.json nor vocab.txt; point at a BERT tokenizer folder")


def save(tok, directory) -> None:
    """Writes what transformers' AutoTokenizer needs to rebuild the same tokenizer: in transformers
    the config decides the normalizer (BERT) or the whole pipeline around the vocabulary and
    merges (RoBERTa, GPT-2), so the config must describe ours exactly."""
    folder = Path(directory)
    tokens = {f"{n}_token": tok._specials.get(n) for n in SPECIAL_NAMES if n in tok._specials}
    if tok.family != "bert":
        folder.mkdir(parents=True, exist_ok=True)
        config = {"tokenizer_class": FAMILIES[tok.family].tokenizer_class, "errors": "replace",
                  "add_prefix_space": False, **tok._bpe_settings, "model_max_length": tok.model_max_length,
                  "clean_up_tokenization_spaces": tok.clean_up_tokenization_spaces, **tokens}
        byte_bpe.save(tok._rust, folder, config)
        (folder / "special_tokens_map.json").write_text(
            json.dumps({k: v for k, v in tokens.items() if v is not None}, indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8")
        return
    if tok._flags is None:
        raise UserError("this tokenizer.json's normalizer is not a BertNormalizer, so transformers' "
                        "BertTokenizer cannot represent it; save the original tokenizer.json instead")
    folder.mkdir(parents=True, exist_ok=True)
    by_id = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise UserError("the vocabulary ids have gaps, so no vocab.txt can express them; rebuild the vocabulary")
    (folder / "vocab.txt").write_text("".join(t + "\n" for t, _ in by_id), encoding="utf-8")
    tok._rust.save(str(folder / "tokenizer.json"))  # truncation/padding are always off on tok._rust
    config = {"tokenizer_class": "BertTokenizer", **tok._flags, "model_max_length": tok.model_max_length,
              "clean_up_tokenization_spaces": tok.clean_up_tokenization_spaces, **tokens}
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", tokens)):
        (folder / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
