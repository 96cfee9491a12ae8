"""Turn a model argument into a local folder: a path as-is, a hub name through huggingface_hub.

Only users who are online reach the download; tests and the demo always pass folders.
"""

from __future__ import annotations

import os

from distilbert_jax.errors import UserError

_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "vocab.txt",
             "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]
_FALLBACK_PATTERNS = ["pytorch_model.bin", "flax_model.msgpack"]


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1) or name.count("/") > 1


def resolve(name_or_path: str | os.PathLike, revision: str | None = None) -> str:
    path = os.path.expanduser(os.fspath(name_or_path))
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise UserError(f"{path} is a file; pass the folder that holds config.json and the weights")
    if not path or _looks_like_path(path):
        raise UserError(f"model folder {path!r} does not exist; pass a folder written by save_pretrained")
    return _download(path, revision)


def _download(repo_id: str, revision: str | None) -> str:
    try:
        import huggingface_hub
    except ImportError:
        raise UserError(
            f"{repo_id!r} is not a local folder, and downloading it needs huggingface_hub "
            "(pip install huggingface_hub)"
        ) from None
    try:
        folder = huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=_PATTERNS)
        if not any(f.endswith(".safetensors") for f in os.listdir(folder)):
            folder = huggingface_hub.snapshot_download(
                repo_id, revision=revision, allow_patterns=_PATTERNS + _FALLBACK_PATTERNS
            )
    except Exception as err:  # offline, unknown repo, auth: the hub raises many types
        raise UserError(
            f"{repo_id!r} is not a local folder and could not be downloaded from the hub "
            f"({type(err).__name__}); check the name and the network, or pass a local folder"
        ) from None
    return folder
