"""`distilbert-jax convert SRC DST [--to pytorch|flax]`: move weights between frameworks."""

from __future__ import annotations

import os
import sys

from distilbert_jax.commands import Command


def add_arguments(p) -> None:
    p.add_argument("src", help="HF-format folder (safetensors, sharded safetensors, .bin or .msgpack) or hub name")
    p.add_argument("dst", help="output folder")
    p.add_argument("--to", choices=("pytorch", "flax"), default="pytorch",
                   help="pytorch: model.safetensors with PyTorch key names (default); flax: flax_model.msgpack")
    p.add_argument("--task", default=None, help="load as this task instead of config.json's architecture")


def run(args) -> int:
    from distilbert_jax.errors import UserError
    from distilbert_jax.pretrained import from_pretrained
    from distilbert_jax.weights import files

    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise UserError("SRC and DST are the same folder; write the conversion to a new folder")
    model = from_pretrained(args.src, task=args.task)
    model.save_pretrained(args.dst, flax_msgpack=args.to == "flax")
    if args.to == "flax":  # a Flax-only folder, as the former transformers Flax classes wrote
        os.remove(os.path.join(args.dst, files.SAFETENSORS))
    written = sorted(os.listdir(args.dst))
    print(f"wrote {model.architecture.name} ({model.num_parameters:,} parameters) to {args.dst}: "
          f"{', '.join(written)}", file=sys.stderr)
    return 0


COMMAND = Command("convert", "convert a checkpoint between PyTorch (safetensors) and Flax (msgpack) layouts",
                  add_arguments, run)
