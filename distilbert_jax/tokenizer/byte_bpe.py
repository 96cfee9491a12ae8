"""The byte-level BPE pipeline of RoBERTa and GPT-2, built as transformers 5 builds it.

transformers' RobertaTokenizer and GPT2Tokenizer take only the vocabulary, the merges and the
added tokens from the files, and rebuild the rest from tokenizer_config.json: a plain BPE model,
ByteLevel(add_prefix_space) pre-tokenizer and decoder, no normalizer. RoBERTa always gets
RobertaProcessing (`<s> A </s>` and `<s> A </s></s> B </s>`, type ids all 0); GPT-2 keeps the
tokenizer.json's post-processor (none: plain concatenation, when there is none) unless the config
sets add_bos_token / add_eos_token. The same rebuild here gives the same ids, whichever files a
folder holds.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, decoders, pre_tokenizers, processors
from tokenizers import Tokenizer as _RustTokenizer
from tokenizers.models import BPE

from distilbert_jax.errors import UserError

BPE_FILES = ("vocab.json", "merges.txt")
SETTING_KEYS = ("add_prefix_space", "trim_offsets", "add_bos_token", "add_eos_token")


def _is_byte_level(pre_tokenizer: dict | None) -> bool:
    if not pre_tokenizer:
        return False
    if pre_tokenizer.get("type") == "Sequence":
        return any(_is_byte_level(p) for p in pre_tokenizer.get("pretokenizers", []))
    return pre_tokenizer.get("type") == "ByteLevel"


def read_files(folder: Path, data: dict | None) -> dict:
    """vocab, merges, added tokens and (GPT-2) the stored post-processor, from the parsed
    tokenizer.json `data` when given, else from vocab.json + merges.txt."""
    if data is None:
        vocab_path, merges_path = (folder / n for n in BPE_FILES)
        try:
            vocab, merges = BPE.read_file(str(vocab_path), str(merges_path))
        except Exception as e:  # the Rust reader raises plain Exception
            raise UserError(f"{folder}: vocab.json/merges.txt are not readable ({e}); re-download them") from None
        return {"vocab": vocab, "merges": merges, "added": [], "post_processor": None}
    model = data.get("model") or {}
    if not _is_byte_level(data.get("pre_tokenizer")):
        raise UserError(f"{folder}/tokenizer.json holds a BPE tokenizer that is not byte-level; only byte-level "
                        "BPE (RoBERTa, GPT-2) and WordPiece (BERT) tokenizers are supported")
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    post = None
    if data.get("post_processor"):
        minimal = {**data, "model": {**model, "vocab": {}, "merges": []}, "added_tokens": []}
        post = _RustTokenizer.from_str(json.dumps(minimal)).post_processor
    return {"vocab": dict(model.get("vocab") or {}), "merges": merges, "added": data.get("added_tokens") or [],
            "post_processor": post}


def build(parts: dict, family: str, specials: dict, settings: dict) -> _RustTokenizer:
    """The Rust pipeline. `specials` name -> token text (None where the family has none);
    `settings` holds add_prefix_space, trim_offsets and GPT-2's add_bos_token / add_eos_token."""
    try:
        model = BPE(parts["vocab"], parts["merges"], dropout=None, continuing_subword_prefix="",
                    end_of_word_suffix="", fuse_unk=False)
    except Exception as e:
        raise UserError(f"the BPE vocabulary and merges do not fit together ({e}); re-download the tokenizer") from None
    rust = _RustTokenizer(model)
    prefix = bool(settings.get("add_prefix_space", False))
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
    rust.decoder = decoders.ByteLevel()
    for t in sorted(parts["added"], key=lambda t: t.get("id", 0)):
        rust.add_tokens([AddedToken(t["content"], single_word=t.get("single_word", False), lstrip=t.get("lstrip", False),
                                    rstrip=t.get("rstrip", False), normalized=t.get("normalized", False),
                                    special=t.get("special", False))])
    known = {str(t) for t in rust.get_added_tokens_decoder().values()}
    missing = [t for t in dict.fromkeys(specials.values()) if t is not None and t not in known]
    if missing:  # transformers registers every named special token, adding those the vocabulary lacks
        rust.add_special_tokens(missing)
    if family == "roberta":
        sep, cls = specials["sep"], specials["cls"]
        rust.post_processor = processors.RobertaProcessing(
            (sep, rust.token_to_id(sep)), (cls, rust.token_to_id(cls)),
            trim_offsets=bool(settings.get("trim_offsets", True)), add_prefix_space=prefix)
    elif "add_bos_token" in settings or "add_eos_token" in settings or parts["post_processor"] is None:
        rust.post_processor = _gpt2_template(rust, specials, settings)
    else:
        rust.post_processor = parts["post_processor"]
    return rust


def _gpt2_template(rust: _RustTokenizer, specials: dict, settings: dict):
    """transformers' TokenizersBackend.update_post_processor: optional bos/eos around each segment."""
    bos = specials.get("bos") if settings.get("add_bos_token") else None
    eos = specials.get("eos") if settings.get("add_eos_token") else None
    single = f"{bos + ':0 ' if bos else ''}$A:0{' ' + eos + ':0' if eos else ''}"
    pair = f"{single}{' ' + bos + ':1' if bos else ''} $B:1{' ' + eos + ':1' if eos else ''}"
    tokens = [(t, rust.token_to_id(t)) for t in dict.fromkeys(x for x in (bos, eos) if x)]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=tokens)


def save(rust: _RustTokenizer, folder: Path, config: dict) -> None:
    """tokenizer.json (what transformers 5 reads) plus vocab.json and merges.txt (what older
    loaders and the reference scripts read), and the config that rebuilds the same pipeline."""
    rust.save(str(folder / "tokenizer.json"))
    rust.model.save(str(folder))  # vocab.json + merges.txt
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
