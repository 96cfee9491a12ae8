"""Fine-tuning on 8 CPU devices, data-parallel and fully sharded, and as two processes, gives what
one device gives (dropout off: bitwise RNG equality across meshes is not promised)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
import transformers

from conftest import minilm_dir
from distilbert_jax.finetune.config import FinetuneConfig
from distilbert_jax.finetune.runner import finetune
from distilbert_jax.training.metrics import read_metrics
from distilbert_jax.weights.files import read_state_dict
from subprocess_jax import run_python

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TOL = 2e-5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharding")
    torch.manual_seed(0)
    cfg = transformers.DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                        max_position_embeddings=128)
    transformers.DistilBertForMaskedLM(cfg).save_pretrained(root / "model")
    for f in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm_dir(), f), root / "model")
    config = FinetuneConfig(task="sst2", data=os.path.join(FIXTURES, "glue"), model=str(root / "model"),
                            output=str(root / "one"), batch_size=16, eval_batch_size=16, epochs=2,
                            dropout=False, progress=False, log_every=1, eval_every=2).replace(learning_rate=1e-2)
    finetune(config)
    return root, config


def _curves(output):
    records = read_metrics(os.path.join(output, "seeds", "seed-42"))
    train = {r["step"]: r["loss"] for r in records if r["split"] == "train"}
    dev = {r["step"]: r["loss"] for r in records if r["split"] == "dev"}
    return train, dev


def _params(output):
    return read_state_dict(os.path.join(output, "model.safetensors"))


def _compare(output, reference):
    (train, dev), (ref_train, ref_dev) = _curves(output), _curves(reference)
    assert sorted(train) == sorted(ref_train) and sorted(dev) == sorted(ref_dev)
    loss = max(abs(train[s] - ref_train[s]) for s in train)
    dev_loss = max(abs(dev[s] - ref_dev[s]) for s in dev)
    ours, ref = _params(output), _params(reference)
    params = max(float(np.abs(ours[k] - ref[k]).max()) for k in ref)
    return loss, dev_loss, params


CHILD = r"""
import json, sys
import jax
from distilbert_jax.finetune.config import FinetuneConfig
from distilbert_jax.finetune.runner import finetune

args = json.loads(sys.argv[1])
base = FinetuneConfig.from_dict(args["config"])
out = {"devices": jax.device_count()}
for name, data, fsdp in (("data", 8, 1), ("fsdp", 1, 8)):
    results = finetune(base.replace(output=args["root"] + "/" + name, mesh_data=data, mesh_fsdp=fsdp))
    out[name] = results["median"]
print(json.dumps(out))
"""


def test_eight_devices_data_parallel_and_fully_sharded_match_one(setup):
    root, config = setup
    code = CHILD.replace("sys.argv[1]", repr(json.dumps({"config": config.to_dict(), "root": str(root)})))
    child = run_python(code, devices=8, timeout=900)
    assert child["devices"] == 8
    for name in ("data", "fsdp"):
        loss, dev_loss, params = _compare(str(root / name), config.output)
        print(f"{name} (8 devices) vs 1 device: train loss {loss:.2g}, dev loss {dev_loss:.2g}, params {params:.2g}")
        assert loss < TOL and dev_loss < TOL and params < 1e-4


TWO = r"""
import json, os, sys
import jax
from distilbert_jax.finetune.config import FinetuneConfig
from distilbert_jax.finetune.runner import finetune

args = json.loads(sys.argv[1])
results = finetune(FinetuneConfig.from_dict(args["config"]).replace(output=args["root"] + "/two"))
from distilbert_jax.training.mesh import MeshShape, make_mesh
hosts = [[d.process_index for d in row] for row in make_mesh(MeshShape(-1, 1)).devices.tolist()]
print(json.dumps({"processes": jax.process_count(), "median": results["median"], "mesh_hosts": hosts}))
"""


def test_two_processes_match_one(setup):
    import socket
    import subprocess
    import sys

    from subprocess_jax import child_env

    root, config = setup
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = TWO.replace("sys.argv[1]", repr(json.dumps({"config": config.to_dict(), "root": str(root)})))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env(1, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                            JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    printed = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [p["processes"] for p in printed] == [2, 2]
    assert printed[0]["mesh_hosts"] == [[0], [1]]  # the data axis runs across hosts, one block each
    assert printed[0]["median"] == printed[1]["median"]  # both processes score the whole dev set
    loss, dev_loss, params = _compare(str(root / "two"), config.output)
    print(f"2 processes vs 1: train loss {loss:.2g}, dev loss {dev_loss:.2g}, params {params:.2g}")
    assert loss < TOL and dev_loss < TOL and params < 1e-4
