"""Run an exported folder (`distilbert-jax export --format stablehlo`) with jax and numpy alone.

`export` copies this file into the folder it writes, so a server copies one file and needs
neither this package nor its model code: only jax (any version that reads the artifact's
serialization format) and numpy. Keep it that way: no imports from distilbert_jax here.

    run = load_stablehlo("out/")
    outputs = run(input_ids, attention_mask)   # {"logits": np.ndarray, ...}, padding stripped
"""

import json
import os

import jax
import numpy as np


def load_stablehlo(folder):
    """A callable `(input_ids, attention_mask=None, token_type_ids=None) -> {name: np.ndarray}`:
    pads the last axis to the smallest exported length that holds it, runs, strips the padding."""
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    weights = jax.device_put(dict(np.load(os.path.join(folder, manifest["weights"]))))
    programs = {}
    for length, name in manifest["artifacts"].items():
        with open(os.path.join(folder, name), "rb") as f:
            programs[int(length)] = jax.jit(jax.export.deserialize(bytearray(f.read())).call)
    outputs = manifest["outputs"]

    def run(input_ids, attention_mask=None, token_type_ids=None):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        extra = [k for k, v in given.items() if v is not None and k not in manifest["inputs"]]
        if extra:
            raise ValueError(f"this {manifest['architecture']} artifact takes no {', '.join(extra)}")
        ids = np.asarray(input_ids, np.int32)
        n = ids.shape[-1]
        fits = [length for length in sorted(programs) if length >= n]
        if not fits:
            raise ValueError(f"input of {n} tokens is longer than the longest exported length ({max(programs)})")
        defaults = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        pad = {"input_ids": manifest["pad_token_id"]}
        args = []
        for k in manifest["inputs"]:
            x = defaults[k] if given[k] is None else np.asarray(given[k], np.int32)
            if x.shape != ids.shape:
                raise ValueError(f"{k} has shape {x.shape} but input_ids has {ids.shape}")
            widths = [(0, 0)] * (x.ndim - 1) + [(0, fits[0] - n)]
            args.append(np.pad(x, widths, constant_values=pad.get(k, 0)))
        result = programs[fits[0]](weights, *args)
        return {k: np.asarray(result[k]).take(np.arange(n), axis=out["length_axis"])
                if out["length_axis"] is not None else np.asarray(result[k]) for k, out in outputs.items()}

    run.manifest = manifest
    return run
