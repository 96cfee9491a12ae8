"""The distillation trainer, end to end on a tiny corpus, vocabulary and BERT teacher.

What is proven, with numbers: the data-parallel and fully sharded 8-device layouts give the
1-device losses; nothing compiles after every bucket length has been seen; an interrupted run
resumes bit for bit (mid-accumulation too); a 1-device checkpoint resumes on a
sharded 8-device mesh; two processes train like one; a diverging run stops with the step and
its last good checkpoint; bad input is one `error:` line that leaves existing checkpoints alone.

Cost is the design constraint: each distinct train step is an XLA compile of several seconds on
a small CPU, and each child process re-imports JAX and compiles again. So the fixtures are
module-scoped and made once; runs that must agree share one config, hence one program, which a
persistent compilation cache local to this module serves to every later `train` call; the runs
compared across meshes and processes use a single bucket length (one compile per layout); every
8-device check happens in ONE child; the multi-bucket config is used only where buckets matter,
and differs from the single-bucket one in nothing else, so its 64-token program is a cache hit.
The children start as soon as their inputs exist and compile while this process works; learning
curve PNGs are not drawn (matplotlib, ~1.5 s a run).

Tolerances across meshes and processes: 1e-5 absolute on losses of about 11 (float32's spacing
there is 9.5e-7, so this admits ~10 ulps of reduction-order noise from sharded matmuls and
all-reduces, a 1e-6 relative bound; up to 2.9e-6 was measured). 1e-4 absolute on the trained
parameters: Adam divides by sqrt(v) + 1e-6, which can magnify that noise where a gradient is near
zero (up to 2e-6 was measured), while a real layout bug moves parameters by about the learning
rate, 1e-3. Within one process and one program (resume) everything must be bit-identical.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from distilbert_jax.cli import main
from distilbert_jax.config import BertConfig
from distilbert_jax.data.dataset import TokenDataset
from distilbert_jax.data.loader import BatchLoader
from distilbert_jax.data.prepare import prepare_corpus
from distilbert_jax.distill import trainer
from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.distill.trainer import train
from distilbert_jax.errors import UserError
from distilbert_jax.pretrained import PretrainedModel, from_pretrained
from distilbert_jax.tokenizer import Tokenizer
from distilbert_jax.training import loop
from distilbert_jax.training.checkpoint import Checkpointer
from distilbert_jax.training.loop import TrainingDiverged
from distilbert_jax.training.metrics import read_metrics
from subprocess_jax import SLURM_PORTS, child_env, free_port, slurm_env

TOL = 1e-5  # losses; see the module docstring
PARAM_TOL = 1e-4  # trained parameters
BUCKETS = (16, 32, 64)
STEPS = 8  # micro-batches of the single-bucket runs: 4 updates of 2
STOP = 5  # where the 1-device run that the 8-device child resumes was stopped (mid-accumulation)
MULTI_STEPS = STEPS  # micro-batches of the multi-bucket runs
MULTI_STOPS = (3, 6)  # interruptions of the resumed multi-bucket run: mid-accumulation, then on a boundary

# ------------------------------------------------------------------------------------------ corpus
_WORDS = {
    "det": "the a this that every one some no each my your our".split(),
    "adj": ("quick brown lazy small large old young happy sad bright dark cold warm green blue red quiet loud "
            "gentle strange tall short heavy light").split(),
    "noun": ("cat dog fox bird tree river mountain house garden child book city street car friend teacher "
             "student song window road boat forest village letter morning evening").split(),
    "verb": ("sees finds follows watches carries paints reads remembers builds opens visits crosses calls "
             "leaves answers helps").split(),
    "prep": "over under near behind beside through across into from with".split(),
    "join": "and but while because so".split(),
}


def _sentence(rng: random.Random, words: int) -> str:
    """Clauses `det adj noun verb det noun prep det adj noun` joined by conjunctions, cut to `words`."""
    out: list[str] = []
    while len(out) < words:
        if out:
            out.append(rng.choice(_WORDS["join"]))
        for part in ("det", "adj", "noun", "verb", "det", "noun", "prep", "det", "adj", "noun"):
            out.append(rng.choice(_WORDS[part]))
    return " ".join(out[:words]).capitalize() + "."


def write_corpus(path: str, lines: int = 300, seed: int = 0) -> None:
    """Three length classes, one per bucket: [CLS] words . [SEP] is words + 3 tokens."""
    rng = random.Random(seed)
    classes = ((9, 13), (15, 28), (31, 45))  # -> 12-16, 18-31 and 34-48 tokens
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            low, high = classes[i % 3]
            f.write(_sentence(rng, rng.randint(low, high)) + "\n")


# ------------------------------------------------------------------------------------------ fixtures
@dataclasses.dataclass(frozen=True)
class Fixture:
    root: str
    corpus: str
    data: str
    teacher: str
    tokenizer: Tokenizer
    seed: int  # data-order seed with every bucket early in the first epoch

    def config(self, name: str, **changes) -> DistillConfig:
        """The single-bucket run every cross-mesh comparison uses; mesh -1 = all devices, data-parallel."""
        base = DistillConfig(name="tiny", teacher=self.teacher, student_layers=(0, 3), data=self.data, batch_size=8,
                             max_updates=STEPS // 2, buckets=(64,), workdir=os.path.join(self.root, name),
                             progress=False, log_every=1, eval_batches=1, dropout=False, seed=self.seed)
        base = base.replace(**{"optimizer.accumulate": 2, "optimizer.learning_rate": 1e-3})
        return base.replace(**changes)

    def multi_config(self, name: str, **changes) -> DistillConfig:
        """Three buckets and a checkpoint every update: the no-recompile and exact-resume runs. Dropout
        stays off (the one program with `config`): the masking RNG, folded from the step in the state
        exactly as dropout's is, already proves that a resumed run draws what the uninterrupted one did."""
        return self.config(name, buckets=BUCKETS, checkpoint_every=1, **changes)


def _first_buckets(data: str, seed: int, steps: int) -> list[int]:
    loader = BatchLoader(TokenDataset.open(data), batch_size=8, seed=seed, buckets=BUCKETS, prefetch=0)
    return [loader.make_batch(0, i).input_ids.shape[1] for i in range(steps)]


def _warm_step(buckets: list[int]) -> int:
    """1-based step at which the last bucket length is seen for the first time."""
    return max(buckets.index(b) for b in set(buckets)) + 1


def _early_buckets_seed(data: str) -> int:
    """A data-order seed whose first batches show every bucket early, so several steps follow warm-up."""
    for seed in range(56, 256):
        buckets = _first_buckets(data, seed, MULTI_STEPS)
        if set(buckets) == set(BUCKETS) and _warm_step(buckets) <= MULTI_STOPS[0] + 1:
            return seed
    raise AssertionError("no seed shows every bucket early: the corpus lacks a length class")


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Corpus, WordPiece vocabulary, prepared data and a random 4-layer BERT teacher, made once.

    Also points JAX's persistent compilation cache at a folder of this module for its duration,
    so a `train` call whose step was compiled by an earlier one only traces it.
    """
    from jax.experimental.compilation_cache import compilation_cache as cc

    root = str(tmp_path_factory.mktemp("distill"))
    corpus = os.path.join(root, "corpus.txt")
    write_corpus(corpus)
    tokenizer = Tokenizer.train([corpus], vocab_size=300)
    data = os.path.join(root, "data")
    prepare_corpus(tokenizer, [corpus], data, max_length=64, heldout_fraction=0.1, seed=0, progress=False)
    teacher = os.path.join(root, "teacher")
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, architectures=("BertForMaskedLM",))
    PretrainedModel.from_config(config, "masked-lm", seed=0, tokenizer=tokenizer).save_pretrained(teacher)
    seed = _early_buckets_seed(data)

    cache = os.path.join(root, "xla-cache")
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    saved = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    cc.reset_cache()
    try:
        yield Fixture(root, corpus, data, teacher, tokenizer, seed)
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        cc.reset_cache()


@pytest.fixture(scope="module", autouse=True)
def no_plots():
    """The learning-curve PNG every run draws costs ~1.5 s of matplotlib; test_metrics covers plotting."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "plot_curves", lambda records, path, **kwargs: path)
        yield


def train_losses(workdir: str) -> dict[int, float]:
    """step -> loss of the train records; each step exactly once (resume truncation works)."""
    records = [r for r in read_metrics(workdir) if r["split"] == "train"]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"duplicated steps in {workdir}: {steps}"
    return {r["step"]: r["loss"] for r in records}


def checkpoint_steps(workdir: str) -> list[int]:
    with Checkpointer(os.path.join(workdir, "checkpoints")) as checkpoints:
        return checkpoints.all_steps()


def host(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def exported(workdir: str) -> dict[str, np.ndarray]:
    return load_file(os.path.join(workdir, "final", "model.safetensors"))


def max_abs_diff(a: dict[int, float] | dict[str, np.ndarray], b) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))) for k in a)


@pytest.fixture(scope="module")
def reference(fx):
    """The 1-device single-bucket run, uninterrupted: what the other layouts must reproduce."""
    config = fx.config("reference")
    results = train(config)
    assert results["steps"] == STEPS and not results["interrupted"]
    return {"config": config, "losses": train_losses(config.workdir), "params": exported(config.workdir),
            "results": results}


@pytest.fixture(scope="module")
def stopped(fx, reference):
    """The same run stopped after STOP micro-batches (as by Ctrl-C): the checkpoint test 4 resumes elsewhere."""
    config = fx.config("stopped")
    results = train(config, stop_at_step=STOP)
    assert results["interrupted"] and results["steps"] == STOP
    assert checkpoint_steps(config.workdir) == [STOP]
    return config


# ------------------------------------------------------------------------------------------ children
EIGHT_DEVICES = r"""
import json, os, shutil, time
import jax
from distilbert_jax.distill import trainer
from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.training.metrics import read_metrics

args = json.loads(ARGS)
trainer.plot_curves = lambda records, path, **kwargs: path  # matplotlib costs ~1.5 s a run; test_metrics covers it
jax.config.update("jax_compilation_cache_dir", args["cache"])  # the resumed run reuses the fsdp program
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
base = DistillConfig.from_dict(args["config"])
teacher_specs = []
real_shardings = trainer.tree_shardings

def spy(tree, mesh, *args, **kwargs):
    out = real_shardings(tree, mesh, *args, **kwargs)
    if isinstance(tree, dict) and "cls" in tree:  # the teacher's parameters (BertForMaskedLM)
        teacher_specs.extend(list(s.spec) for s in jax.tree.leaves(out))
    return out

trainer.tree_shardings = spy

def layout(state):
    rows = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
        rows.append([jax.tree_util.keystr(path), list(leaf.shape), list(leaf.sharding.spec),
                     list(leaf.addressable_shards[0].data.shape), len(leaf.addressable_shards)])
    opt = [list(leaf.sharding.spec) for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim == 2]
    return {"params": rows, "opt_specs": opt}

def losses(workdir):
    return [[r["step"], r["loss"]] for r in read_metrics(workdir) if r["split"] == "train"]

out = {"devices": jax.device_count(), "seconds": {}}
for name, mesh in (("data", dict(mesh_data=8, mesh_fsdp=1)),
                   ("fsdp", dict(mesh_data=1, mesh_fsdp=8, shard_teacher=True))):
    t0 = time.time()
    teacher_specs.clear()
    config = base.replace(workdir=os.path.join(args["root"], "eight-" + name), **mesh)
    results = trainer.train(config)
    out[name] = {"losses": losses(config.workdir), "steps": results["steps"], "layout": layout(results["state"]),
                 "teacher_specs": list(teacher_specs), "workdir": config.workdir}
    out["seconds"][name] = time.time() - t0

# 4. the 1-device checkpoint, resumed on the fully sharded mesh
t0 = time.time()
workdir = os.path.join(args["root"], "eight-resumed")
shutil.copytree(args["stopped"], workdir)
config = base.replace(workdir=workdir, mesh_data=1, mesh_fsdp=8, shard_teacher=True)
results = trainer.train(config)
out["resumed"] = {"losses": losses(workdir), "steps": results["steps"], "interrupted": results["interrupted"],
                  "layout": layout(results["state"]), "workdir": workdir}
out["seconds"]["resumed"] = time.time() - t0
out["seconds"]["cpu"] = time.process_time()
print(json.dumps(out))
"""

MULTI_PROCESS = r"""
import json, time
import numpy as np
import jax
from jax.experimental import multihost_utils
from distilbert_jax.distill import trainer
from distilbert_jax.distill.config import DistillConfig
from distilbert_jax.weights import lazy

args = json.loads(ARGS)
trainer.plot_curves = lambda records, path, **kwargs: path  # matplotlib costs ~1.5 s a run; test_metrics covers it
rows = []  # this process's rows of each global batch
placed = []  # per placement (student, teacher, masking tables): bytes here, bytes in all, all live arrays
# here, bytes read from weight files so far in this run
gathered = []  # bytes each host received through process_allgather (the agreed-stop flag only)
read_before = [0]


def held(arrays):  # bytes on this process's devices, each buffer once (a global array and its shards share them)
    buffers = {(shard.device.id, shard.data.unsafe_buffer_pointer()): shard.data.nbytes
               for x in arrays for shard in x.addressable_shards}
    return sum(buffers.values())


real_batch, real_place, real_allgather = trainer.global_batch, trainer.place, multihost_utils.process_allgather

def batch_spy(local, mesh):
    rows.append(np.asarray(local["input_ids"]).tolist())
    return real_batch(local, mesh)

def place_spy(tree, shardings):
    out = real_place(tree, shardings)
    leaves = jax.tree.leaves(out)
    placed.append([held(leaves), sum(x.nbytes for x in leaves), held(jax.live_arrays()),
                   lazy.bytes_read() - read_before[0]])
    return out

def allgather_spy(x, tiled=False):
    out = real_allgather(x, tiled=tiled)
    gathered.append(int(sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(out))))
    return out

trainer.global_batch, trainer.place, multihost_utils.process_allgather = batch_spy, place_spy, allgather_spy
runs = []
for config in args["configs"]:
    t0, cpu0 = time.time(), time.process_time()
    for record in (rows, placed, gathered):
        record.clear()
    read_before[0] = lazy.bytes_read()
    results = trainer.train(DistillConfig.from_dict(config))
    leaves = jax.tree.leaves(results["state"])
    runs.append({"state_fraction": held(leaves) / sum(x.nbytes for x in leaves),
                 "state_all": sum(x.nbytes for x in leaves), "placed": list(placed),
                 "file_bytes_read": lazy.bytes_read() - read_before[0], "gathered": list(gathered),
                 "rows": list(rows), "steps": results["steps"], "exported": results.get("exported"),
                 "seconds": time.time() - t0, "cpu": time.process_time() - cpu0})
print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(), "devices": jax.device_count(),
                  "local_devices": jax.local_device_count(), "runs": runs}))
"""


class Children:
    """Child processes started at once and collected later, so they compile while this process does.

    Output goes to files (no pipe can fill up and block a child); `results` waits with a deadline
    counted from the start, and kills every child of the group as soon as one fails (a peer of a
    multi-process run would otherwise wait for it forever) or the deadline passes.
    """

    def __init__(self, folder: str):
        self.folder = folder
        self.procs: dict[str, tuple[subprocess.Popen, float]] = {}

    def start(self, name: str, code: str, env: dict[str, str]) -> None:
        with open(os.path.join(self.folder, f"{name}.out"), "w") as out, \
                open(os.path.join(self.folder, f"{name}.err"), "w") as err:
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=err, env=env)
        self.procs[name] = (proc, time.monotonic())

    def results(self, *names: str, timeout: float) -> list[dict]:
        procs = [self.procs[name][0] for name in names]
        deadline = min(self.procs[name][1] for name in names) + timeout
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.kill(*names)
        outputs = []
        for name, proc in zip(names, procs):
            with open(os.path.join(self.folder, f"{name}.err")) as f:
                stderr = f.read()
            assert proc.returncode == 0, f"{name} exited {proc.returncode} (-9: killed, after {timeout} s or " \
                                         f"when a peer failed):\n{stderr[-4000:]}"
            with open(os.path.join(self.folder, f"{name}.out")) as f:
                lines = [line for line in f.read().splitlines() if line.startswith("{")]
            assert lines, f"{name} printed no JSON; stderr:\n{stderr[-4000:]}"
            outputs.append(json.loads(lines[-1]))
        return outputs

    def kill(self, *names: str) -> None:
        for name in names or list(self.procs):
            proc = self.procs[name][0]
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def children(fx, tmp_path_factory):
    """The child processes of this module, started as early as their inputs exist: the two processes
    of test 5 at once, the 8-device child of tests 1 and 4 by `eight_started`. The tests that read
    their results come last in this file; the heavy tests of this process start them (`overlap`)."""
    group = Children(str(tmp_path_factory.mktemp("children")))
    config = fx.config("two-processes", mesh_data=1, mesh_fsdp=4, shard_teacher=True)  # sharded across both
    _processes(group, "process", 2, [config])
    group.two_processes_config = config
    group.four_processes_configs = [fx.config("four-data", mesh_data=8, mesh_fsdp=1),
                                    fx.config("four-fsdp", mesh_data=1, mesh_fsdp=8, shard_teacher=True)]
    _processes(group, "four", 4, group.four_processes_configs)
    try:
        yield group
    finally:
        group.kill()


def _processes(group: Children, name: str, count: int, configs: list[DistillConfig]) -> None:
    """`count` processes of 2 CPU devices each, started as `srun -n count` starts them (SLURM's
    variables, no JAX_* ones), that run `configs` one after the other."""
    code = MULTI_PROCESS.replace("ARGS", repr(json.dumps({"configs": [c.to_dict() for c in configs]})))
    port = free_port(*SLURM_PORTS)
    for i in range(count):
        group.start(f"{name}{i}", code, child_env(2, **slurm_env(count, i, port)))


@pytest.fixture(scope="module")
def eight_started(children, fx, reference, stopped):
    args = {"cache": os.path.join(fx.root, "xla-cache-8"), "root": fx.root, "config": reference["config"].to_dict(),
            "stopped": stopped.workdir}
    children.start("eight", EIGHT_DEVICES.replace("ARGS", repr(json.dumps(args))), child_env(8))
    return children


@pytest.fixture(scope="module")
def overlap(request):
    """Named first by the heavy tests of this process: starts the children that the selected tests
    read (none under `-k` of some other test), so that they compile while this process works."""
    selected = {item.originalname for item in request.session.items}
    if selected & {"test_data_parallel_and_fully_sharded_layouts_give_the_one_device_losses",
                   "test_one_device_checkpoint_resumes_on_a_sharded_mesh"}:
        request.getfixturevalue("eight_started")
    elif selected & {"test_two_processes_train_like_one", "test_four_processes_train_like_one_in_both_layouts"}:
        request.getfixturevalue("children")


class CompileTimeline(logging.Handler):
    """Interleaves JAX's "Compiling <fn>" log lines with the trainer's micro-batches and steps."""

    def __init__(self, monkeypatch):
        super().__init__(level=logging.DEBUG)
        self.events: list[tuple] = []
        real_batch, real_flops = trainer.global_batch, trainer.distillation_step_flops

        def batch(local, mesh):
            self.events.append(("batch", local["input_ids"].shape[1]))
            return real_batch(local, mesh)

        def flops(*args):  # the loop calls it right after each step call, with that step's shape
            self.events.append(("stepped", args[-1]))
            return real_flops(*args)

        monkeypatch.setattr(trainer, "global_batch", batch)
        monkeypatch.setattr(trainer, "distillation_step_flops", flops)

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.events.append(("compile", message.split()[1]))

    def __enter__(self):
        self._previous = jax.config.jax_log_compiles
        jax.config.update("jax_log_compiles", True)
        logging.getLogger("jax").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("jax").removeHandler(self)
        jax.config.update("jax_log_compiles", self._previous)

    def steps(self) -> list[tuple[int, list[str], list[str]]]:
        """Per step: (bucket, compiles during its step call, compiles after it until the next batch is
        put on the devices). The loop puts batch k + 1 on the devices just before step k runs, so each
        batch event opens the segment of the next step; segments with no step (the first) are dropped."""
        out: list[dict] = []
        for kind, *value in self.events:
            if kind == "batch":
                out.append({"bucket": None, "during": [], "after": [], "stepped": False})
            elif kind == "stepped":
                out[-1].update(stepped=True, bucket=value[0])
            elif out:
                out[-1]["after" if out[-1]["stepped"] else "during"].append(value[0])
        return [(step["bucket"], step["during"], step["after"]) for step in out if step["stepped"]]


@pytest.fixture(scope="module")
def multi_runs(fx):
    """Run A (multi-bucket) uninterrupted, and run B interrupted at MULTI_STOPS and resumed,
    each call's compiles recorded."""
    with pytest.MonkeyPatch.context() as mp:
        timeline = CompileTimeline(mp)
        with timeline:
            a = train(fx.multi_config("multi-a"))
        runs = {"a": (a, timeline.steps())}
        config = fx.multi_config("multi-b")
        for stop in (*MULTI_STOPS, None):
            timeline.events.clear()
            with timeline:
                results = train(config, stop_at_step=stop)
            runs[f"b{stop or ''}"] = (results, timeline.steps())
    return {"config_a": fx.multi_config("multi-a"), "config_b": config, "runs": runs}


# ------------------------------------------------------------------------------------------ 2. no recompiles
def test_nothing_compiles_after_every_bucket_was_seen(overlap, fx, multi_runs):
    results, steps = multi_runs["runs"]["a"]
    buckets = [bucket for bucket, _, _ in steps]
    assert len(steps) == results["steps"] == MULTI_STEPS
    assert buckets == _first_buckets(fx.data, fx.seed, MULTI_STEPS) and set(buckets) == set(BUCKETS)
    warm = _warm_step(buckets)
    assert warm <= MULTI_STEPS - 3  # the claim below covers several steps
    for number, (bucket, during, after) in enumerate(steps, 1):
        first_time = bucket not in buckets[:number - 1]
        assert during.count("jit(train_step)") == int(first_time), (number, bucket, during)
        if number > warm:
            assert during == [] and (after == [] or number == len(steps)), (number, during, after)
    # The resumed calls: a restored state must not cost a second compile of a bucket it has seen.
    for name in (f"b{MULTI_STOPS[0]}", f"b{MULTI_STOPS[1]}", "b"):
        _, steps = multi_runs["runs"][name]
        buckets = [bucket for bucket, _, _ in steps]
        compiles = [during.count("jit(train_step)") for _, during, _ in steps]
        assert compiles == [int(b not in buckets[:i]) for i, b in enumerate(buckets)], (name, buckets, compiles)


# ------------------------------------------------------------------------------------------ 3. exact resume
def test_interrupted_run_resumes_bit_for_bit(multi_runs):
    runs = multi_runs["runs"]
    first, second = MULTI_STOPS
    assert first % 2 == 1 and second % 2 == 0  # mid-accumulation, then on an update boundary
    for stop in MULTI_STOPS:
        assert runs[f"b{stop}"][0]["interrupted"] and runs[f"b{stop}"][0]["steps"] == stop
    assert [len(runs[f"b{s}"][1]) for s in MULTI_STOPS] == [first, second - first]  # each call ran only its steps
    a, b = runs["a"][0], runs["b"][0]
    assert not b["interrupted"] and b["steps"] == a["steps"] == MULTI_STEPS
    losses_a = train_losses(multi_runs["config_a"].workdir)
    losses_b = train_losses(multi_runs["config_b"].workdir)
    assert sorted(losses_b) == list(range(1, MULTI_STEPS + 1))
    assert losses_b == losses_a  # floats from JSON: bit for bit
    state_a, state_b = host(a["state"]), host(b["state"])
    assert len(state_a) == len(state_b) and all(x.dtype == y.dtype and np.array_equal(x, y)
                                                for x, y in zip(state_a, state_b))
    assert b["heldout"] == a["heldout"]
    files_a, files_b = exported(multi_runs["config_a"].workdir), exported(multi_runs["config_b"].workdir)
    assert sorted(files_a) == sorted(files_b) and all(np.array_equal(files_a[k], files_b[k]) for k in files_a)


# ------------------------------------------------------------------------------------------ 6. divergence
def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(overlap, fx, reference):
    """learning_rate=1e6 blows up within a few updates. Logging every step shows which step went NaN;
    logging every 3rd (the host reads the scalars only at log and checkpoint points, every step's at
    once) must stop at the same step, before the next checkpoint. Both runs are one compiled program."""
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                          reference["results"]["state"])
    bad = None
    for log_every in (1, 3):
        # a checkpoint every update; 10 updates leave room: the NaN comes after a few (at step 3 to 7 in
        # our runs: the WordPiece trainer's ties, hence the data, vary from run to run)
        config = fx.config(f"diverges-{log_every}", learning_rate=1e6, checkpoint_every=1, max_updates=10,
                           log_every=log_every)
        with pytest.raises(TrainingDiverged) as info:
            train(config)
        assert isinstance(info.value, UserError)
        logged = train_losses(config.workdir)
        assert all(np.isfinite(list(logged.values())))
        if log_every == 1:
            bad = max(logged) + 1  # the step that went NaN is the first one not logged
            assert sorted(logged) == list(range(1, bad))
            assert bad > 2  # some updates, and checkpoints, came before the divergence
        assert all(step < bad for step in logged)  # (with log_every=3 there may be no record at all)
        last = (bad - 1) // 2 * 2  # the last update boundary before the NaN
        message = str(info.value)
        assert f"at step {bad};" in message and f"the last good checkpoint is step {last}" in message, message
        with Checkpointer(os.path.join(config.workdir, "checkpoints")) as checkpoints:
            steps = checkpoints.all_steps()
            assert steps and max(steps) == last < bad  # nothing newer than the divergence was written
            state, data_state, saved = checkpoints.restore(target)  # the last good one is intact
        assert int(state.step) == last and saved["optimizer"]["learning_rate"] == 1e6
        assert data_state["loader"]["batch"] == last and all(np.isfinite(x).all() for x in host(state))


def test_the_host_reads_the_device_only_at_log_and_checkpoint_points(fx, reference):
    """The production loop under a guard that fails on any device read or implicit transfer between
    its read points; it trains exactly as the unguarded reference run and reports per-device figures."""
    from device_reads import no_device_reads

    config = fx.config("guarded", log_every=3, checkpoint_every=2, progress=True)
    results = train(config, guard=no_device_reads)
    assert results["steps"] == STEPS and not results["interrupted"]
    ref = train_losses(reference["config"].workdir)
    logged = train_losses(config.workdir)
    assert sorted(logged) == [3, 6, 8]
    assert abs(logged[3] - np.mean([ref[s] for s in (1, 2, 3)])) < TOL  # every step counted once
    assert results["device_count"] == 1 and results["process_count"] == 1 and results["mesh"] == {"data": 1, "fsdp": 1}
    train_figures = results["train"]
    assert train_figures["devices"] == 1 and train_figures["tokens_per_s_per_device"] > 0
    assert 0 < train_figures["mfu"] < 1.5
    records = [r for r in read_metrics(config.workdir) if r["split"] == "train"]
    assert all(r["tokens_per_s_per_device"] > 0 and "mfu" in r for r in records)
    saved = json.loads(open(os.path.join(config.workdir, "results.json")).read())
    assert saved["mesh"] == {"data": 1, "fsdp": 1} and saved["device_count"] == 1


def test_a_nan_gradient_stops_the_run_before_its_checkpoint():
    """A finite loss with a NaN gradient: the update of this very step would carry the NaN into the
    parameters and into the checkpoint saved right after it, so the gradient norm is checked too."""
    class Checkpoints:
        closed = False

        def latest_step(self):
            return 4

        def close(self):
            self.closed = True

    checkpoints = Checkpoints()
    metrics = {"loss": 11.0, "grad_norm": float("nan"), "tokens": 100.0}
    with pytest.raises(TrainingDiverged, match=r"gradient norm became nan at step 6; the last good checkpoint is "
                                               r"step 4"):
        loop.check_finite(6, metrics, checkpoints)
    assert checkpoints.closed


# ------------------------------------------------------------------------------------------ 7. bad input
def _tree_hash(folder: str) -> str:
    h = hashlib.sha256()
    for directory, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            path = os.path.join(directory, name)
            h.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def bad_inputs(fx, reference, tmp_path_factory):
    """An existing run (a copy of the reference, checkpoint and data) and the wrong things to give it."""
    root = tmp_path_factory.mktemp("bad-input")
    run = str(root / "run")
    shutil.copytree(reference["config"].workdir, run)
    data = str(root / "data")  # a copy, for prepare-data --overwrite to fail on
    shutil.copytree(fx.data, data)
    config = json.loads((root / "run" / "config.json").read_text())
    config["workdir"] = run
    (root / "config.json").write_text(json.dumps(config))
    base = BertConfig(vocab_size=fx.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64)
    # a BERT encoder without its MLM head
    PretrainedModel.from_config(base.replace(architectures=("BertModel",)), tokenizer=fx.tokenizer) \
        .save_pretrained(root / "no-head")
    # a masked LM with a vocabulary of another size, and one of the same size with two tokens swapped
    other = Tokenizer.train([fx.corpus], vocab_size=200)
    PretrainedModel.from_config(base.replace(vocab_size=other.vocab_size, architectures=("BertForMaskedLM",)),
                                "masked-lm", tokenizer=other).save_pretrained(root / "other-vocab")
    tokens = sorted(fx.tokenizer.get_vocab(), key=fx.tokenizer.get_vocab().get)
    tokens[-1], tokens[-2] = tokens[-2], tokens[-1]
    PretrainedModel.from_config(base.replace(architectures=("BertForMaskedLM",)), "masked-lm",
                                tokenizer=Tokenizer.from_vocab(tokens)).save_pretrained(root / "swapped-vocab")
    (root / "empty.txt").write_text("")
    (root / "a-file").write_text("not a folder")
    return {"root": root, "run": run, "data": data, "config": str(root / "config.json")}


BAD_INPUTS = {
    "empty-corpus": lambda r: ["prepare-data", "--tokenizer", r["data"], "--input", str(r["root"] / "empty.txt"),
                               "--output", r["data"], "--overwrite", "--no-progress"],
    "teacher-without-mlm-head": lambda r: ["distill", "--config", r["config"], "--set",
                                           f"teacher={r['root'] / 'no-head'}"],
    "vocabulary-size-differs": lambda r: ["distill", "--config", r["config"], "--set",
                                          f"teacher={r['root'] / 'other-vocab'}"],
    "vocabulary-tokens-differ": lambda r: ["distill", "--config", r["config"], "--set",
                                           f"teacher={r['root'] / 'swapped-vocab'}"],
    "unwritable-workdir": lambda r: ["distill", "--config", r["config"], "--workdir",
                                     str(r["root"] / "a-file" / "run")],
    "unknown-set-key": lambda r: ["distill", "--config", r["config"], "--set", "learning_rat=1e-4"],
    "resume-with-another-config": lambda r: ["distill", "--config", r["config"], "--set", "learning_rate=2e-3"],
}
EXPECTED = {
    "empty-corpus": "no training sequences left from 0 lines",
    "teacher-without-mlm-head": "has no masked-lm head",
    "vocabulary-size-differs": "the teacher has a vocabulary of",
    "vocabulary-tokens-differ": "tokenized with another vocabulary",
    "unwritable-workdir": "cannot create the run folder",
    "unknown-set-key": "--set 'learning_rat=1e-4'",
    "resume-with-another-config": "with a different config (optimizer.learning_rate)",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_error_line_and_keeps_the_checkpoint(bad_inputs, case, capsys):
    before = {name: _tree_hash(bad_inputs[name]) for name in ("run", "data")}
    steps = checkpoint_steps(bad_inputs["run"])
    capsys.readouterr()
    assert main(BAD_INPUTS[case](bad_inputs)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert EXPECTED[case] in errors[0], errors[0]
    assert {name: _tree_hash(bad_inputs[name]) for name in ("run", "data")} == before
    assert checkpoint_steps(bad_inputs["run"]) == steps == [STEPS]


# ------------------------------------------------------------------------------------------ 1 + 4. 8 devices
@pytest.fixture(scope="module")
def eight(eight_started):
    return eight_started.results("eight", timeout=600)[0]


def test_data_parallel_and_fully_sharded_layouts_give_the_one_device_losses(eight, reference):
    assert eight["devices"] == 8
    measured = {}
    for name in ("data", "fsdp"):
        run = eight[name]
        losses = {step: loss for step, loss in run["losses"]}
        assert run["steps"] == STEPS and sorted(losses) == list(range(1, STEPS + 1))
        measured[name] = (max_abs_diff(losses, reference["losses"]),
                          max_abs_diff(exported(run["workdir"]), reference["params"]))
    print(f"8 devices vs 1: max |loss diff| / |param diff|: {measured}; child seconds {eight['seconds']}")
    assert all(loss < TOL and params < PARAM_TOL for loss, params in measured.values()), measured
    # data-parallel: every parameter whole on each of the 8 devices
    assert all(shard == shape and count == 8 for _, shape, _, shard, count in eight["data"]["layout"]["params"])
    # fully sharded: every matrix split 8 ways along its model dimension, optimizer state alike
    rows = eight["fsdp"]["layout"]["params"]
    sharded = [(name, shape, spec, shard) for name, shape, spec, shard, _ in rows if "fsdp" in spec]
    matrices = [row for row in rows if len(row[1]) == 2]
    # every matrix has a model dimension of 32, which 8 divides (and so do the biases of layers whose
    # output is the model dimension: out_lin, lin2)
    assert len([row for row in sharded if len(row[1]) == 2]) == len(matrices) > 10
    for name, shape, spec, shard in sharded:
        axis = spec.index("fsdp")
        assert shard[axis] * 8 == shape[axis], name
        assert all(shard[i] == shape[i] for i in range(len(shape)) if i != axis), name
    assert sum("fsdp" in spec for spec in eight["fsdp"]["layout"]["opt_specs"]) >= 2 * len(sharded)  # mu, nu, acc
    assert any("fsdp" in spec for spec in eight["fsdp"]["teacher_specs"])  # shard_teacher=True
    assert not any("fsdp" in spec for spec in eight["data"]["teacher_specs"])  # replicated teacher


def test_one_device_checkpoint_resumes_on_a_sharded_mesh(eight, reference):
    run = eight["resumed"]
    losses = {step: loss for step, loss in run["losses"]}
    assert run["steps"] == STEPS and not run["interrupted"] and sorted(losses) == list(range(1, STEPS + 1))
    before = {s: losses[s] for s in range(1, STOP + 1)}  # written by the 1-device run before it stopped
    assert before == {s: reference["losses"][s] for s in before}
    after = {s: losses[s] for s in range(STOP + 1, STEPS + 1)}
    loss_diff = max_abs_diff(after, {s: reference["losses"][s] for s in after})
    param_diff = max_abs_diff(exported(run["workdir"]), reference["params"])
    print(f"resumed on (1 x 8) vs 1 device: max |loss diff| {loss_diff:.3g}, |param diff| {param_diff:.3g}")
    assert loss_diff < TOL and param_diff < PARAM_TOL
    assert any("fsdp" in spec for _, _, spec, _, _ in run["layout"]["params"])


# ------------------------------------------------------------------------------------------ 5. several processes
def _trains_like_one(fx, reference, config: DistillConfig, outputs: list[dict], run: int) -> tuple[float, float]:
    """What every multi-process run must show: one run of N processes, each reading only its rows of
    every global batch, process 0 logging each step once, the 1-process losses and exported model,
    a log per process, and nothing but the agreed-stop flags gathered to the hosts (the export
    reaches process 0 alone, through shard files). Returns (max |loss diff|, max |param diff|)."""
    count = len(outputs)
    assert [o["process"] for o in outputs] == list(range(count))
    assert all(o["processes"] == count and o["devices"] == 2 * count and o["local_devices"] == 2 for o in outputs)
    runs = [o["runs"][run] for o in outputs]
    assert all(r["steps"] == STEPS for r in runs)
    for i in range(count):  # each process kept its own log, which says where it ran
        with open(os.path.join(config.workdir, "logs", f"process-{i}.log")) as f:
            assert f"{count} process(es), this is {i}; {2 * count} devices (2 local" in f.read()
    rows = 8 // count
    loader = BatchLoader(TokenDataset.open(fx.data), batch_size=8, seed=fx.seed, buckets=config.buckets, prefetch=0)
    for index in range(STEPS):
        whole = loader.make_batch(0, index).input_ids
        for process, r in enumerate(runs):
            assert np.array_equal(np.asarray(r["rows"][index]), whole[rows * process:rows * (process + 1)]), \
                (index, process)
    for r in runs:
        # one int32 per process at each log point: the agreed stop, never parameters
        assert r["gathered"] and max(r["gathered"]) == 4 * count, r["gathered"]
    assert runs[0]["exported"] == os.path.join(config.workdir, "final")
    assert not os.path.exists(os.path.join(config.workdir, "final.parts"))
    losses = train_losses(config.workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return max_abs_diff(losses, reference["losses"]), max_abs_diff(exported(config.workdir), reference["params"])


def test_two_processes_train_like_one(fx, children, reference):
    outputs = children.results("process0", "process1", timeout=600)
    config = children.two_processes_config
    loss_diff, param_diff = _trains_like_one(fx, reference, config, outputs, 0)
    runs = [o["runs"][0] for o in outputs]
    # fully sharded: each process's devices hold about half the train state (parameters, Adam moments,
    # accumulator), not all of it (dimensions fsdp=4 does not divide are whole on every device) ...
    assert all(0.45 < r["state_fraction"] < 0.6 for r in runs), [r["state_fraction"] for r in runs]
    # ... and no host ever held the whole model: each placed about half of the student's parameters and
    # of the teacher's on its devices, read about half of the bytes they take from the weight file,
    # and once both were placed held about half of (train state + teacher) in all its live arrays
    for process, r in enumerate(runs):
        (student_here, student_all, _, _), (teacher_here, teacher_all, live, read), _ = r["placed"]
        assert 0.45 < student_here / student_all < 0.6 and 0.45 < teacher_here / teacher_all < 0.6, r["placed"]
        assert 0.45 < read / (student_all + teacher_all) < 0.6, r["placed"]
        assert 0.45 < live / (r["state_all"] + teacher_all) < 0.65, (live, r["state_all"], teacher_all)
        # after that, only process 0 read anything: the exported student's shards, once
        assert r["file_bytes_read"] - read == (student_all if process == 0 else 0)
    print(f"2 processes x 2 devices vs 1 device: max |loss diff| {loss_diff:.3g}, |param diff| {param_diff:.3g}; "
          f"seconds {[round(r['seconds']) for r in runs]}, cpu {[round(r['cpu']) for r in runs]}; "
          f"held per process: train state {[round(r['state_fraction'], 3) for r in runs]}, teacher "
          f"{[round(r['placed'][1][0] / r['placed'][1][1], 3) for r in runs]}, weight-file bytes read "
          f"{[round(r['placed'][1][3] / (r['placed'][0][1] + r['placed'][1][1]), 3) for r in runs]}, all live "
          f"arrays {[round(r['placed'][1][2] / (r['state_all'] + r['placed'][1][1]), 3) for r in runs]}")
    assert loss_diff < TOL and param_diff < PARAM_TOL
    model = from_pretrained(os.path.join(config.workdir, "final"))
    assert model.architecture.name == "DistilBertForMaskedLM" and model.tokenizer is not None
    # the final checkpoint, written in pieces by both processes, restores whole on this 1-device process
    state = reference["results"]["state"]
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
    with Checkpointer(os.path.join(config.workdir, "checkpoints")) as checkpoints:
        restored, data_state, saved = checkpoints.restore(target)
    assert int(restored.step) == STEPS and saved["mesh"]["fsdp"] == 4 and data_state["loader"]["batch"] == STEPS
    assert max(float(np.max(np.abs(x - y))) for x, y in zip(host(restored), host(state))) < PARAM_TOL


def test_four_processes_train_like_one_in_both_layouts(fx, children, reference):
    """4 processes x 2 devices: data-parallel (every device a whole model) and fully sharded over all
    8 devices (each process's pair holds about a quarter of the train state and of the teacher)."""
    outputs = children.results(*[f"four{i}" for i in range(4)], timeout=900)
    measured = {}
    for run, config in enumerate(children.four_processes_configs):
        loss_diff, param_diff = _trains_like_one(fx, reference, config, outputs, run)
        runs = [o["runs"][run] for o in outputs]
        state = [r["state_fraction"] for r in runs]
        teacher = [r["placed"][1][0] / r["placed"][1][1] for r in runs]
        measured[os.path.basename(config.workdir)] = (loss_diff, param_diff, [round(f, 3) for f in state],
                                                      [round(f, 3) for f in teacher],
                                                      [round(r["seconds"]) for r in runs])
        assert loss_diff < TOL and param_diff < PARAM_TOL, measured
        if config.mesh.fsdp == 1:  # a whole copy on each of a process's 2 devices
            assert all(f == 2.0 for f in state + teacher), measured
        else:
            assert all(0.2 < f < 0.35 for f in state + teacher), measured
    print(f"4 processes x 2 devices vs 1 device (max |loss diff|, |param diff|, train state and teacher held "
          f"per process, seconds): {measured}")


def test_a_moved_data_folder_resumes_and_other_data_is_refused(bad_inputs, tmp_path, capsys):
    """The data path may change between runs (the fingerprint says whether it is the same data)."""
    run, data = tmp_path / "run", tmp_path / "moved-data"
    shutil.copytree(bad_inputs["run"], run)
    shutil.copytree(bad_inputs["data"], data)
    assert main(["distill", "--config", bad_inputs["config"], "--workdir", str(run), "--set", f"data={data}"]) == 0
    assert checkpoint_steps(run) == [STEPS]
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["fingerprint"] = "0" * len(str(manifest.get("fingerprint", "x")))
    (data / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["distill", "--config", bad_inputs["config"], "--workdir", str(run), "--set", f"data={data}"]) == 2
    assert "was trained on other data" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ 6. preemption
PREEMPTIBLE = r"""
import json, sys, time
from distilbert_jax.cli import main
from distilbert_jax.distill import trainer

trainer.plot_curves = lambda records, path, **kwargs: path
real_batch = trainer.global_batch

def slowed(local, mesh):  # so the parent can signal mid-run
    time.sleep(SLEEP)
    return real_batch(local, mesh)

trainer.global_batch = slowed
code = main(["distill", "--config", CONFIG, "--workdir", WORKDIR])
print(json.dumps({"exit": code}))
"""


def _preemptible(config_path: str, workdir: str, sleep: float) -> str:
    return (PREEMPTIBLE.replace("SLEEP", repr(sleep)).replace("CONFIG", repr(config_path))
            .replace("WORKDIR", repr(workdir)))


def _two(children: Children, name: str, code: str, **extra: str) -> None:
    port = free_port(*SLURM_PORTS)
    for i in range(2):
        children.start(f"{name}{i}", code, child_env(2, **slurm_env(2, i, port), **extra))


def _config_file(config: DistillConfig, tmp_path) -> str:
    """The config as a file for `distill --config`, its workdir made."""
    os.makedirs(config.workdir, exist_ok=True)
    path = str(tmp_path / "config.json")
    with open(path, "w") as f:
        json.dump(config.to_dict(), f)
    return path


def _wait_for_step(workdir: str, step: int) -> None:
    deadline = time.monotonic() + 400
    while not any(r["step"] >= step for r in _train_records(workdir)):
        assert time.monotonic() < deadline, f"the run never reached step {step}"
        time.sleep(0.05)


def test_sigterm_to_one_of_two_processes_stops_both_and_resumes_exactly(fx, reference, tmp_path):
    """A preempted host (SIGTERM to one process): both processes stop after the same step, exit 130,
    and leave one complete checkpoint; the same command resumes it on 2 processes and on 1 (with
    the devices of both) to the uninterrupted run's losses."""
    config = fx.config("preempted", mesh_data=1, mesh_fsdp=4)
    config_path = _config_file(config, tmp_path)
    group = Children(str(tmp_path))
    try:
        _two(group, "first", _preemptible(config_path, config.workdir, 0.6))
        _wait_for_step(config.workdir, 2)
        os.kill(group.procs["first1"][0].pid, signal.SIGTERM)
        signalled = time.monotonic()
        first = group.results("first0", "first1", timeout=600)
        assert time.monotonic() - signalled < 60
        assert [o["exit"] for o in first] == [130, 130]
        with Checkpointer(os.path.join(config.workdir, "checkpoints")) as checkpoints:
            stopped_at = checkpoints.latest_step()
        assert 2 <= stopped_at < STEPS, stopped_at
        alone = str(tmp_path / "alone")
        shutil.copytree(config.workdir, alone)

        _two(group, "resumed", _preemptible(config_path, config.workdir, 0.0))
        group.start("one", _preemptible(config_path, alone, 0.0), child_env(4))
        resumed = group.results("resumed0", "resumed1", "one", timeout=600)
    finally:
        group.kill()
    assert [o["exit"] for o in resumed] == [0, 0, 0]
    for workdir in (config.workdir, alone):
        losses = train_losses(workdir)
        assert sorted(losses) == list(range(1, STEPS + 1))
        assert max_abs_diff(losses, reference["losses"]) < TOL, workdir


def _train_records(workdir: str) -> list[dict]:
    try:
        return [r for r in read_metrics(workdir) if r["split"] == "train"]
    except UserError:  # not written yet
        return []


def test_a_killed_process_fails_the_other_naming_it_and_the_last_checkpoint_resumes(fx, reference, tmp_path):
    """A host lost without warning (SIGKILL): the other process fails within the heartbeat timeout
    with a message naming the lost one instead of hanging in a collective, and the last checkpoint
    on disk is whole: the same command on 1 process resumes it to the uninterrupted run's losses."""
    config = fx.config("killed", mesh_data=1, mesh_fsdp=4, checkpoint_every=1)
    config_path = _config_file(config, tmp_path)
    group = Children(str(tmp_path))
    try:
        _two(group, "doomed", _preemptible(config_path, config.workdir, 0.6), DISTILBERT_JAX_HEARTBEAT_S="10")
        _wait_for_step(config.workdir, 5)
        os.kill(group.procs["doomed1"][0].pid, signal.SIGKILL)
        killed = time.monotonic()
        survivor = group.procs["doomed0"][0]
        while survivor.poll() is None and time.monotonic() - killed < 120:
            time.sleep(0.1)
        seconds = time.monotonic() - killed
        with open(tmp_path / "doomed0.err") as f:
            stderr = f.read()
        assert survivor.returncode not in (None, 0), f"process 0 still ran {seconds:.0f} s after its peer died"
        print(f"process 0 failed {seconds:.1f} s after process 1 was killed: {stderr.strip().splitlines()[-1]}")
        assert seconds < 60 and ("process 1" in stderr.lower() or "task 1" in stderr.lower()), stderr[-3000:]
        with Checkpointer(os.path.join(config.workdir, "checkpoints")) as checkpoints:
            last = checkpoints.latest_step()
        assert last is not None and 4 <= last < STEPS, last
        group.start("after", _preemptible(config_path, config.workdir, 0.0), child_env(4))
        resumed = group.results("after", timeout=600)
    finally:
        group.kill()
    assert resumed[0]["exit"] == 0
    losses = train_losses(config.workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert max_abs_diff(losses, reference["losses"]) < TOL
