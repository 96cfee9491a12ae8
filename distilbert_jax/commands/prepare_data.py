"""`distilbert-jax prepare-data --tokenizer T --input FILE... --output DIR`: text -> token-id dataset."""

from __future__ import annotations

from distilbert_jax.commands import Command


def add_arguments(p) -> None:
    p.add_argument("--tokenizer", required=True,
                   help="folder with tokenizer.json, vocab.txt or vocab.json + merges.txt (a model folder works)")
    p.add_argument("--family", choices=("bert", "roberta", "gpt2"), default=None,
                   help="tokenizer family, which decides the framing ([CLS] ... [SEP], <s> ... </s>, "
                        "<|endoftext|> ... <|endoftext|>); default: read from the folder")
    p.add_argument("--input", required=True, nargs="+", metavar="FILE", help="text files, one sequence per line")
    p.add_argument("--output", required=True, metavar="DIR", help="dataset folder to create")
    p.add_argument("--max-length", type=int, default=512, help="longer sequences are cut into chunks (default 512)")
    p.add_argument("--min-length", type=int, default=12,
                   help="shorter sequences, the two framing tokens included, are dropped (default 12)")
    p.add_argument("--heldout-fraction", type=float, default=0.01, help="share of lines held out (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prepared dataset in DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from distilbert_jax.data.prepare import prepare_corpus
    from distilbert_jax.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(args.tokenizer, family=args.family)
    m = prepare_corpus(tokenizer, args.input, args.output, max_length=args.max_length, min_length=args.min_length,
                       heldout_fraction=args.heldout_fraction, seed=args.seed, progress=not args.no_progress,
                       overwrite=args.overwrite)
    train, heldout = m["splits"]["train"], m["splits"]["heldout"]
    dropped = ", ".join(f"{reason} {n:,}" for reason, n in m["dropped"].items())
    print(f"wrote {args.output} ({m['family']} framing): {m['lines_read']:,} lines read, "
          f"{m['chunked_lines']:,} split into {m['chunks']:,} chunks")
    print(f"kept: train {train['sequences']:,} sequences / {train['tokens']:,} tokens, "
          f"heldout {heldout['sequences']:,} / {heldout['tokens']:,}; "
          f"lengths {train['min_length']}-{train['max_length']}, mean {train['mean_length']}")
    print(f"dropped: {dropped}; undecodable lines {m['undecodable_lines']:,}, empty files {m['empty_files']:,}")
    print(f"fingerprint: {m['fingerprint']}")
    return 0


COMMAND = Command("prepare-data", "tokenize text files (one sequence per line) into a memory-mapped training dataset",
                  add_arguments, run)
