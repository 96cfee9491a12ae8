"""`distilbert-jax fill-mask` and `distilbert-jax embed`: JSON on stdout, one line per text."""

from __future__ import annotations

import json
import sys

from distilbert_jax.commands import Command
from distilbert_jax.errors import UserError


def _texts(args) -> list[str]:
    texts = list(args.text)
    if args.input:
        try:
            with open(args.input, encoding="utf-8") as f:
                texts += [line.rstrip("\n") for line in f if line.strip()]
        except OSError as err:
            raise UserError(f"cannot read {args.input}: {err.strerror}") from None
    if not texts:
        raise UserError("no text given: pass TEXT arguments or --input FILE")
    return texts


def _common(p) -> None:
    p.add_argument("--model", required=True, help="HF-format folder or hub name")
    p.add_argument("--input", help="a file with one text per line (in addition to TEXT arguments)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default=None, help="compute dtype: float32 (default) or bfloat16")
    p.add_argument("text", nargs="*", metavar="TEXT")


def _fill_mask_args(p) -> None:
    _common(p)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--targets", nargs="+", default=None, help="score only these words")


def _fill_mask(args) -> int:
    from distilbert_jax.inference.fill_mask import FillMask
    from distilbert_jax.pretrained import from_pretrained

    texts = _texts(args)
    model = from_pretrained(args.model, task="masked-lm", dtype=args.dtype)
    results = FillMask(model, batch_size=args.batch_size)(texts, top_k=args.top_k, targets=args.targets)
    for text, result in zip(texts, results):
        print(json.dumps({"text": text, "predictions": result}, ensure_ascii=False))
    return 0


def _embed_args(p) -> None:
    _common(p)
    p.add_argument("--pooling", choices=("mean", "cls"), default="mean")
    p.add_argument("--no-normalize", action="store_true", help="return raw pooled vectors, not unit vectors")
    p.add_argument("--truncate", action="store_true", help="cut texts longer than the model's maximum")
    p.add_argument("--max-length", type=int, default=None)


def _embed(args) -> int:
    from distilbert_jax.inference.embeddings import SentenceEmbedder
    from distilbert_jax.pretrained import from_pretrained

    texts = _texts(args)
    model = from_pretrained(args.model, task="base", dtype=args.dtype)
    embedder = SentenceEmbedder(model, pooling=args.pooling, normalize=not args.no_normalize,
                                batch_size=args.batch_size, max_length=args.max_length, truncate=args.truncate)
    for text, vector in zip(texts, embedder(texts)):
        print(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vector]}, ensure_ascii=False))
    sys.stdout.flush()
    return 0


FILL_MASK = Command("fill-mask", "predict the [MASK] tokens of each TEXT (JSON lines, like transformers' pipeline)",
                    _fill_mask_args, _fill_mask)
EMBED = Command("embed", "sentence embeddings of each TEXT (JSON lines)", _embed_args, _embed)
