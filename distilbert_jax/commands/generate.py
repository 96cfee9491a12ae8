"""`distilbert-jax generate --model M TEXT...`: continue each text with a causal LM (JSON lines)."""

from __future__ import annotations

import json

from distilbert_jax.commands import Command
from distilbert_jax.commands.inference import _texts
from distilbert_jax.errors import UserError


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="HF-format folder or hub name of a GPT-2 (causal LM) model")
    p.add_argument("--input", help="a file with one prompt per line (in addition to TEXT arguments)")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample among the most likely tokens of this mass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default=None, help="compute dtype: float32 (default) or bfloat16")
    p.add_argument("text", nargs="*", metavar="TEXT")


def run(args) -> int:
    from distilbert_jax.inference.generate import GenerationConfig, Generator
    from distilbert_jax.pretrained import from_pretrained

    texts = _texts(args)
    model = from_pretrained(args.model, task="causal-lm", dtype=args.dtype)
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise UserError(f"{args.model} has no tokenizer files (tokenizer.json or vocab.json + merges.txt); "
                        "copy the tokenizer of the model it was trained from into the folder")
    settings = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
                                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    generator = Generator(model, settings)
    for text in texts:  # one prompt at a time: no padding, so nothing depends on the others
        prompt = tokenizer.encode(text, add_special_tokens=False)
        if not prompt:
            raise UserError(f"prompt {text!r} has no tokens; give some text to continue")
        ids = generator([prompt], seed=args.seed)[0]
        print(json.dumps({"text": text, "generated": tokenizer.decode(ids[len(prompt):].tolist()),
                          "tokens": len(ids) - len(prompt)}, ensure_ascii=False), flush=True)
    return 0


COMMAND = Command("generate", "continue each TEXT with a GPT-2 model (greedy or sampled; JSON lines)",
                  add_arguments, run)
