"""`distilbert-jax verify MODEL [--texts FILE] [--task T] [--reference SRC] [--atol X]`: run a folder
here and in transformers' PyTorch class (on SRC, the folder MODEL was converted from, if given) on the
same texts and compare (weights/verify.py); exit 1 above tolerance."""

from __future__ import annotations

from distilbert_jax.commands import Command
from distilbert_jax.weights.verify import DEFAULT_ATOL  # that module imports jax and torch only when run


def add_arguments(p) -> None:
    p.add_argument("model", help="HF-format folder or hub name")
    p.add_argument("--texts", default=None, help="file of texts, one per line (default: a built-in varied handful)")
    p.add_argument("--task", default=None, help="load as this task instead of config.json's architecture")
    p.add_argument("--reference", default=None,
                   help="the folder MODEL was converted from, for transformers to load instead of MODEL: proves "
                        "the conversion, not only that both frameworks read MODEL alike")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                   help=f"largest absolute difference of any output that passes (default {DEFAULT_ATOL:.0e}, float32)")


def run(args) -> int:
    from distilbert_jax.weights.verify import read_texts, verify

    result = verify(args.model, read_texts(args.texts) if args.texts else None, task=args.task, atol=args.atol,
                    reference=args.reference)
    print(result.report())
    return 0 if result.passed else 1


COMMAND = Command("verify", "prove a checkpoint: compare its outputs here with transformers' PyTorch class",
                  add_arguments, run)
