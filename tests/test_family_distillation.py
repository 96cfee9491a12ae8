"""DistilRoBERTa's and DistilGPT2's recipes end to end, in miniature, through the command line:
a byte-level BPE vocabulary, a teacher pretrained from scratch (MLM / next-token), a student from
its layers distilled with the family's loss, and the same student trained without the teacher.
The distilled student must beat that baseline, and what it writes must load in transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import distilbert_jax as dj
from test_distill_demo import TOY


@pytest.mark.parametrize("family, arch", [("roberta", "RobertaForMaskedLM"), ("gpt2", "GPT2LMHeadModel")])
def test_distilled_student_beats_the_baseline_and_loads_in_transformers(tmp_path, capsys, family, arch):
    import transformers

    from distilbert_jax.cli import main

    out = tmp_path / family
    overrides = [arg for key, value in {**TOY, "family": family}.items() for arg in ("--set", f"{key}={value!r}")]
    assert main(["distill", "--workdir", str(out), *overrides]) == 0
    results = json.loads((out / "results.json").read_text())
    table, objective = results["table"], "clm" if family == "gpt2" else "mlm"
    assert results["student_beats_baseline"]
    assert table["distilled student"]["perplexity"] < table["baseline (no teacher)"]["perplexity"]
    assert set(table["teacher"]) == {"parameters", f"{objective}_loss", f"{objective}_accuracy", "perplexity",
                                     "targets"}
    steps = [json.loads(line) for line in (out / "student" / "metrics.jsonl").read_text().splitlines()]
    assert any(f"loss_{objective}" in s and "loss_ce" in s for s in steps)  # the family's triple loss was trained

    folder = out / "student" / "final"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [arch]
    assert config["n_layer" if family == "gpt2" else "num_hidden_layers"] == len(TOY["student_layers"])
    ours = dj.from_pretrained(folder)
    theirs = getattr(transformers, arch).from_pretrained(folder).eval()
    fast = transformers.AutoTokenizer.from_pretrained(folder)
    text = "Return the number of items in a container."
    ids = ours.tokenizer(text, return_tensors="np")["input_ids"]
    assert ids[0].tolist() == fast(text)["input_ids"]
    with torch.no_grad():
        expected = theirs(torch.tensor(ids)).logits.numpy()
    assert float(np.max(np.abs(np.asarray(ours(ids).logits) - expected))) < 1e-4
    if family == "gpt2":
        from distilbert_jax.inference.generate import generate

        # DistilGPT2 keeps its teacher's position table (--freeze_pos_embs); the layers do train
        teacher = dj.from_pretrained(out / "teacher" / "final").state_dict()
        student = ours.state_dict()
        assert np.array_equal(student["transformer.wpe.weight"], teacher["transformer.wpe.weight"])
        assert not np.array_equal(student["transformer.h.0.mlp.c_fc.weight"], teacher["transformer.h.0.mlp.c_fc.weight"])

        with torch.no_grad():
            greedy = theirs.generate(torch.tensor(ids), max_new_tokens=10, do_sample=False,
                                     pad_token_id=config["eos_token_id"]).numpy()
        np.testing.assert_array_equal(generate(ours, ids, max_new_tokens=10), greedy)
        capsys.readouterr()
        assert main(["generate", "--model", str(folder), "--max-new-tokens", "10", text]) == 0
        printed = json.loads(capsys.readouterr().out)
        prompt = ours.tokenizer.encode(text, add_special_tokens=False)
        assert printed["generated"] == ours.tokenizer.decode(greedy[0, len(prompt):].tolist())


def test_presets_state_the_reference_settings():
    from distilbert_jax.distill.config import load_config

    gpt2 = load_config("experiments/configs/distilgpt2.py")
    assert (gpt2.teacher, gpt2.freeze, gpt2.student_layers) == ("gpt2", ("transformer/wpe",), (0, 2, 4, 7, 9, 11))
    assert (gpt2.loss.alpha_ce, gpt2.loss.alpha_clm, gpt2.loss.alpha_cos, gpt2.loss.alpha_mlm) == (5.0, 2.0, 1.0, 0.0)
    roberta = load_config("experiments/configs/distilroberta_base.py")
    multilingual = load_config("experiments/configs/distilbert_base_multilingual_cased.py")
    base = load_config("experiments/configs/distilbert_base_uncased.py")
    for preset, teacher in ((roberta, "roberta-base"), (multilingual, "bert-base-multilingual-cased")):
        assert preset.teacher == teacher
        assert (preset.loss, preset.optimizer, preset.batch_size) == (base.loss, base.optimizer, base.batch_size)
