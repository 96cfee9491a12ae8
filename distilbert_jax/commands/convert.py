"""`distilbert-jax convert SRC DST [--to pytorch|flax] [--dtype D] [--max-shard-size S]`: move weights
between frameworks, dtypes and file layouts.

The PyTorch layout is written tensor by tensor straight from the source file (a lazy load), so a
conversion holds one tensor at a time, not the model twice (tests/test_convert.py measures it).
"""

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
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="write the weights in this dtype (default: as they are stored)")
    p.add_argument("--max-shard-size", default="50GB",
                   help="split the weights into files of at most this size, e.g. 500MB, 2GB (default 50GB, "
                        "as transformers); pytorch layout only")


def run(args) -> int:
    from distilbert_jax.errors import UserError
    from distilbert_jax.pretrained import from_pretrained
    from distilbert_jax.weights import files

    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise UserError("SRC and DST are the same folder; write the conversion to a new folder")
    size = files.parse_size(int(args.max_shard_size) if args.max_shard_size.isdigit() else args.max_shard_size)
    flax = args.to == "flax"
    model = from_pretrained(args.src, task=args.task, lazy=not flax)
    model.save_pretrained(args.dst, flax_msgpack=flax, dtype=args.dtype, max_shard_size="50GB" if flax else size)
    if flax:  # a Flax-only folder, as the former transformers Flax classes wrote
        os.remove(os.path.join(args.dst, files.SAFETENSORS))
    written = sorted(os.listdir(args.dst))
    print(f"wrote {model.architecture.name} ({model.num_parameters:,} parameters) to {args.dst}: "
          f"{', '.join(written)}", file=sys.stderr)
    return 0


COMMAND = Command("convert", "convert a checkpoint between PyTorch (safetensors) and Flax (msgpack) layouts, "
                  "dtypes and shard sizes", add_arguments, run)
