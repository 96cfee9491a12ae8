"""`distilbert-jax export --format stablehlo MODEL OUT`: a servable artifact of the forward.

Not to be confused with training/export.py, which writes a trained model as an HF folder.
"""

from __future__ import annotations

import os
import sys

from distilbert_jax.commands import Command
from distilbert_jax.errors import UserError

FORMATS = ("stablehlo",)


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated integers like 128,512; got {text!r}") from None


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="HF-format folder or hub name")
    p.add_argument("out", metavar="OUT", help="output folder (must not exist, or be empty)")
    p.add_argument("--format", default="stablehlo", help="stablehlo: serialized jax.export artifacts (the only one)")
    p.add_argument("--lengths", default=None,
                   help="sequence lengths to export, e.g. 128,512 (default: the bucket lengths up to the model's maximum)")
    p.add_argument("--platforms", default=None,
                   help="comma-separated subset of cpu,cuda,rocm,tpu (default: this machine's backend plus cpu)")
    p.add_argument("--task", default=None, help="load as this task instead of config.json's architecture")
    p.add_argument("--dtype", default=None, help="compute dtype: float32 (default) or bfloat16")


def run(args) -> int:
    if args.format not in FORMATS:
        raise UserError(f"unknown export format {args.format!r}; use one of {', '.join(FORMATS)}")
    lengths = _int_list(args.lengths, "--lengths") if args.lengths else None
    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()] if args.platforms else None

    from distilbert_jax.hub import resolve
    from distilbert_jax.inference.stablehlo_export import check_output_folder, export_stablehlo
    from distilbert_jax.pretrained import from_pretrained

    check_output_folder(os.path.abspath(args.out))  # before the (slow) load
    folder = resolve(args.model)
    model = from_pretrained(folder, task=args.task, dtype=args.dtype)
    manifest = export_stablehlo(model, args.out, lengths=lengths, platforms=platforms, tokenizer_dir=folder)
    mib = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out)) / 2**20
    lengths_text, platforms_text = ",".join(map(str, manifest["lengths"])), ",".join(manifest["platforms"])
    loader = os.path.join(args.out, "stablehlo_loader.py")
    print(f"wrote {manifest['architecture']} ({mib:.1f} MiB) for lengths {lengths_text} on {platforms_text} "
          f"to {args.out}; serve it with load_stablehlo from {loader}", file=sys.stderr)
    return 0


COMMAND = Command("export", "write a servable artifact of the model's forward (StableHLO via jax.export)",
                  add_arguments, run)
