"""`export --format stablehlo`: artifacts run in a process that never imports this package, equal to the model.

The child process loads the `stablehlo_loader.py` that export copied into each folder, by path, and
must end with no `distilbert_jax` module imported: that is what a server copying the folder gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import torch

import distilbert_jax as dj
from distilbert_jax.cli import main
from distilbert_jax.errors import UserError
from distilbert_jax.inference.stablehlo_export import export_stablehlo
from distilbert_jax.inference.stablehlo_loader import load_stablehlo
from tests.conftest import TINY_BERT, TINY_DISTILBERT, TINY_GPT2, TINY_ROBERTA, random_batch

CASES = {  # architecture: (tiny config, the main output the artifact returns)
    "BertForMaskedLM": (TINY_BERT, "logits"),
    "BertForSequenceClassification": (TINY_BERT, "logits"),
    "DistilBertForMaskedLM": (TINY_DISTILBERT, "logits"),
    "DistilBertForSequenceClassification": (TINY_DISTILBERT, "logits"),
    "DistilBertModel": (TINY_DISTILBERT, "last_hidden_state"),
    "DistilBertForMultipleChoice": (TINY_DISTILBERT, "logits"),
    "RobertaForMaskedLM": (TINY_ROBERTA, "logits"),
    "GPT2LMHeadModel": (TINY_GPT2, "logits"),
}
LENGTHS = (16, 32)
RUNS = [(1, 11), (3, 23)]  # (batch, tokens): both batch sizes through one artifact each, padding stripped after
# Measured max |exported - model| over these runs and architectures: 1.2e-7 (the artifact's XLA
# attention against the chunked CPU form the model runs here); against PyTorch 7.2e-7.
TOL_MODEL, TOL_TORCH = 1e-6, 5e-6

CHILD = textwrap.dedent("""
    import importlib.util, json, sys
    import numpy as np
    folders, io = json.loads(sys.argv[1]), sys.argv[2]
    inputs, results = np.load(io + "/inputs.npz"), {}
    for arch, folder in folders.items():
        spec = importlib.util.spec_from_file_location("loader_" + arch, folder + "/stablehlo_loader.py")
        loader = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loader)
        run = loader.load_stablehlo(folder)
        for key in [k for k in inputs.files if k.startswith(arch + ":") and k.endswith(":input_ids")]:
            prefix = key[: -len("input_ids")]
            given = {n: inputs[prefix + n] for n in ("input_ids", "attention_mask", "token_type_ids")
                     if prefix + n in inputs.files}
            for name, value in run(**given).items():
                results[prefix + name] = value
    np.savez(io + "/outputs.npz", **results)
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "distilbert_jax")))
""")


def _inputs(arch: str, batch: int, tokens: int) -> dict[str, np.ndarray]:
    choices = 3 if arch.endswith("MultipleChoice") else None
    ids, mask = random_batch(99, batch, tokens, seed=batch * 100 + tokens, choices=choices)
    given = {"input_ids": ids, "attention_mask": mask}
    if arch.startswith("Bert"):  # two segments, so a token_type_ids that was ignored would show
        given["token_type_ids"] = (np.arange(tokens) >= tokens // 2).astype(np.int64) * mask
    return given


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """{arch: (model folder, export folder, torch model)}; one export goes through the CLI."""
    root = tmp_path_factory.mktemp("stablehlo")
    made = {}
    for arch, (config, _) in CASES.items():
        folder, torch_model = checkpoint(arch, **config)
        out = str(root / arch)
        if arch == "DistilBertForSequenceClassification":
            assert main(["export", "--format", "stablehlo", "--lengths", "32,16", "--platforms", "cpu,cuda",
                         folder, out]) == 0
        else:
            export_stablehlo(dj.from_pretrained(folder), out, lengths=LENGTHS)
        made[arch] = (folder, out, torch_model)
    return made


@pytest.fixture(scope="module")
def child_outputs(exported, tmp_path_factory):
    """Every run of every artifact, computed in a fresh interpreter from the copied loader alone."""
    io = tmp_path_factory.mktemp("stablehlo_io")
    inputs = {f"{arch}:{b}:{n}:{k}": v for arch in CASES for b, n in RUNS for k, v in _inputs(arch, b, n).items()}
    np.savez(io / "inputs.npz", **inputs)
    folders = {arch: out for arch, (_, out, _) in exported.items()}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(folders), str(io)], cwd=io, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    return dict(np.load(io / "outputs.npz")), imported


def test_child_process_never_imports_the_package(child_outputs):
    assert child_outputs[1] == []


@pytest.mark.parametrize("arch", list(CASES))
def test_exported_forward_equals_model_and_torch(arch, exported, child_outputs):
    folder, _, torch_model = exported[arch]
    outputs, _ = child_outputs
    model = dj.from_pretrained(folder)
    worst_model = worst_torch = 0.0
    for b, n in RUNS:
        given = _inputs(arch, b, n)
        ours = model(**given)
        with torch.no_grad():
            theirs = torch_model(**{k: torch.as_tensor(v) for k, v in given.items()})
        name = CASES[arch][1]
        prefix = f"{arch}:{b}:{n}:"
        assert [k for k in outputs if k.startswith(prefix)] == [prefix + name]  # the main output, only
        got = outputs[prefix + name]
        assert got.shape == getattr(ours, name).shape  # padding stripped back to n tokens
        worst_model = max(worst_model, float(np.abs(got - np.asarray(getattr(ours, name))).max()))
        worst_torch = max(worst_torch, float(np.abs(got - getattr(theirs, name).numpy()).max()))
    assert worst_model < TOL_MODEL and worst_torch < TOL_TORCH, (worst_model, worst_torch)


def test_manifest_describes_inputs_outputs_and_platforms(exported):
    manifests = {arch: json.load(open(os.path.join(out, "manifest.json"))) for arch, (_, out, _) in exported.items()}
    assert manifests["BertForMaskedLM"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifests["DistilBertForMaskedLM"]["inputs"] == ["input_ids", "attention_mask"]
    assert manifests["BertForMaskedLM"]["outputs"] == {"logits": {"length_axis": 1, "dtype": "float32"}}
    assert manifests["DistilBertForSequenceClassification"]["outputs"]["logits"]["length_axis"] is None
    assert list(manifests["DistilBertModel"]["outputs"]) == ["last_hidden_state"]
    assert manifests["DistilBertForMultipleChoice"]["input_shape"] == ["b", "c", "length"]
    for arch in ("RobertaForMaskedLM", "GPT2LMHeadModel"):  # one token type, or none: no token_type_ids
        assert manifests[arch]["inputs"] == ["input_ids", "attention_mask"]
    assert manifests["RobertaForMaskedLM"]["pad_token_id"] == 1  # RoBERTa's positions skip its padding id
    cli = manifests["DistilBertForSequenceClassification"]
    assert cli["lengths"] == [16, 32] and cli["platforms"] == ["cpu", "cuda"]
    assert cli["jax_version"] == jax.__version__
    for length, name in cli["artifacts"].items():
        path = os.path.join(exported["DistilBertForSequenceClassification"][1], name)
        artifact = jax.export.deserialize(bytearray(open(path, "rb").read()))
        assert artifact.platforms == ("cpu", "cuda")
        assert str(artifact.in_avals[-1].shape) == f"(b, {length})"
    assert manifests["BertForMaskedLM"]["platforms"] == ["cpu"]  # default here: the CPU backend


def test_tokenizer_files_are_written(checkpoint, tmp_path):
    """The CLI copies the folder's files as they are; the API saves the loaded tokenizer."""
    folder, _ = checkpoint("DistilBertForMaskedLM", tokenizer=True, **TINY_DISTILBERT)
    assert main(["export", folder, str(tmp_path / "cli"), "--lengths", "16"]) == 0
    export_stablehlo(dj.from_pretrained(folder), tmp_path / "api", lengths=[16])
    for out in ("cli", "api"):
        written = set(os.listdir(tmp_path / out))
        assert {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json"} <= written, (out, written)
        with open(tmp_path / out / "vocab.txt") as f, open(os.path.join(folder, "vocab.txt")) as g:
            assert f.read() == g.read()
    assert sorted(os.listdir(tmp_path)) == ["api", "cli"]  # the temporary folders were renamed, none left behind


def test_loader_rejects_bad_input(exported):
    distil = load_stablehlo(exported["DistilBertForMaskedLM"][1])
    ids = np.ones((2, 5), np.int32)
    with pytest.raises(ValueError, match="longer than the longest exported length"):
        distil(np.ones((2, 33), np.int32))
    with pytest.raises(ValueError, match="takes no token_type_ids"):
        distil(ids, token_type_ids=ids)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        distil(ids, np.ones((2, 6), np.int32))


def test_failed_export_leaves_nothing(checkpoint, tmp_path, monkeypatch):
    folder, _ = checkpoint("DistilBertForMaskedLM", **TINY_DISTILBERT)
    model = dj.from_pretrained(folder)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError):
        export_stablehlo(model, tmp_path / "out", lengths=[16])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", ["format", "missing", "too_long", "not_numbers", "out_used", "platform"])
def test_cli_user_errors_are_one_line(case, checkpoint, tmp_path, capsys):
    folder, _ = checkpoint("DistilBertForMaskedLM", **TINY_DISTILBERT)
    out, used = tmp_path / "out", tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("not ours")
    args, expected = {
        "format": (["--format", "onnx", folder, str(out)], "unknown export format 'onnx'"),
        "missing": ([str(tmp_path / "nowhere"), str(out)], "does not exist"),
        "too_long": (["--lengths", "16,128", folder, str(out)], "lengths must be between 1 and 64"),
        "not_numbers": (["--lengths", "16,long", folder, str(out)], "comma-separated integers"),
        "out_used": ([folder, str(used)], "is not an empty folder"),
        "platform": (["--platforms", "cpu,gpu", folder, str(out)], "unknown platform 'gpu'"),
    }[case]
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err, err
    assert not out.exists()


def test_api_rejects_bad_lengths(exported, tmp_path):
    model = dj.from_pretrained(exported["DistilBertForMaskedLM"][0])
    with pytest.raises(UserError, match="between 1 and 64"):
        export_stablehlo(model, tmp_path / "out", lengths=[0, 16])
    roberta = dj.from_pretrained(exported["RobertaForMaskedLM"][0])  # 66 positions, the first two never used
    with pytest.raises(UserError, match="between 1 and 64"):
        export_stablehlo(roberta, tmp_path / "out", lengths=[16, 65])
    assert os.listdir(tmp_path) == []
