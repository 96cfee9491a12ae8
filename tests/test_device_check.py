"""experiments/device_check.py --smoke: the GPU check runs end to end before any GPU is lent.

Every section (parity tests in a child pytest, forward, attention forms, distillation and
fine-tuning steps against PyTorch) runs at tiny sizes on CPU and writes its JSON and Markdown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from subprocess_jax import REPO, child_env


def test_smoke_run_writes_every_section(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "device_check.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=900,
                          env=child_env(devices=1, XLA_FLAGS=""), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "device_check.json").read_text())
    sections = report["sections"]
    assert set(sections) == {"parity", "forward", "attention", "distill", "finetune"}
    assert all("error" not in s for s in sections.values()), sections
    for run in sections["parity"]["result"].values():
        assert run["exit"] == 0 and run["passed"] > 0 and run.get("failed", 0) == 0, run
    forward = sections["forward"]["result"]
    assert {(r["model"], r["dtype"]) for r in forward} == {(m, d) for m in ("encoder", "mlm")
                                                           for d in ("float32", "bfloat16")}
    assert all(r["max_abs_err_vs_torch_f32"] < 1e-4 for r in forward if r["dtype"] == "float32")
    assert all(r["max_abs_err_vs_torch_f32"] < 0.1 for r in forward if r["dtype"] == "bfloat16")
    forms = {(r["form"], r["dropout"]) for r in sections["attention"]["result"] if "ms" in r}
    assert {("materialised", True), ("chunked", True), ("xla", False), ("chunked", False)} <= forms
    distill = sections["distill"]["result"]
    assert distill["jax"]["tokens_per_s"] > 0 and distill["torch"]["tokens_per_s"] > 0 and distill["speedup"] > 0
    # the first losses of the two steps are the same objective on the same batch (different dropout)
    assert abs(distill["jax"]["first_loss"] - distill["torch"]["first_loss"]) < 0.2 * distill["torch"]["first_loss"]
    assert sections["finetune"]["result"]["jax_ms"] > 0
    text = (out / "device_check.md").read_text()
    assert "| ours |" in text and "Distillation step: ours" in text
