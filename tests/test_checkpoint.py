"""Checkpoints: bit-exact round trips, retention, killed saves, bad folders, new meshes, wrong trees."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from orbax.checkpoint import utils as ocp_utils

from distilbert_jax.errors import UserError
from distilbert_jax.training.checkpoint import Checkpointer
from subprocess_jax import run_python

TMP_SUFFIX = ".orbax-checkpoint-tmp"  # what Orbax appends to a step folder until the save commits


def train_state(seed: int = 0):
    """Params, an AdamW state after one real update (non-zero moments), a step, and both key forms."""
    rng = np.random.default_rng(seed)
    params = {
        "dense": {"kernel": jnp.asarray(rng.standard_normal((8, 6)), jnp.float32),
                  "bias": jnp.asarray(rng.standard_normal(6), jnp.float32)},
        "norm": {"scale": jnp.asarray(rng.standard_normal(6), jnp.float32)},
    }
    tx = optax.adamw(1e-3, b2=0.98, weight_decay=0.01)
    opt_state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.sin(p) * 1e-3, params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    key = jax.random.key(seed + 56)
    return {"params": params, "opt_state": opt_state, "step": jnp.asarray(1234, jnp.int32),
            "rng": jax.random.key_data(key), "dropout_key": jax.random.fold_in(key, 1)}


def host_leaves(tree) -> list[np.ndarray]:
    """Leaves as NumPy arrays; typed PRNG keys as their key data."""
    def one(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return [one(x) for x in jax.tree.leaves(tree)]


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def step_folders(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if not name.startswith("."))


def test_round_trip_is_bit_exact_and_json_items_come_back(tmp_path):
    state = train_state()
    expected = host_leaves(state)
    target = abstract(state)
    data_state = {"epoch": 1, "position": 4096, "shard_order": [3, 1, 2], "seed": 56}
    config = {"student": {"dim": 32, "n_layers": 2}, "alpha": {"ce": 5.0, "mlm": 2.0, "cos": 1.0},
              "lr": 5e-4, "name": "tiny"}
    ckpt = Checkpointer(str(tmp_path / "run"))
    assert ckpt.latest_step() is None and ckpt.all_steps() == []
    assert ckpt.save(1234, state, data_state=data_state, config=config) is True
    # the async save copied the arrays to host before returning: the caller may donate them now
    for leaf in jax.tree.leaves(state):
        leaf.delete()
    ckpt.wait()
    assert step_folders(tmp_path / "run") == ["1234"]
    restored, got_data, got_config = ckpt.restore(target)
    ckpt.close()

    assert jax.tree.structure(restored) == jax.tree.structure(target)
    got = host_leaves(restored)
    assert len(got) == len(expected) == 13  # 3 params, count + 2 x 3 moments, step, 2 keys
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()  # bit-exact, not just close
    assert int(restored["opt_state"][0].count) == 1
    assert restored["dropout_key"].dtype == target["dropout_key"].dtype  # a typed key comes back typed
    assert jax.random.key_data(restored["dropout_key"]).dtype == np.uint32
    assert restored["params"]["dense"]["kernel"].sharding == target["params"]["dense"]["kernel"].sharding
    assert got_data == data_state and got_config == config


def test_keep_two_of_four_and_reopen_sees_them(tmp_path):
    state = {"w": jnp.arange(6.0)}
    directory = str(tmp_path / "run")
    with Checkpointer(directory, keep=2) as ckpt:
        for step in (10, 20, 30, 40):
            assert ckpt.save(step, jax.tree.map(lambda x: x + step, state), data_state={"step": step}, config={})
        ckpt.wait()
        assert ckpt.all_steps() == [30, 40]
    assert step_folders(directory) == ["30", "40"]
    with Checkpointer(directory, keep=2) as again:
        assert again.latest_step() == 40 and again.all_steps() == [30, 40]
        restored, data_state, _ = again.restore(abstract(state), step=30)
        np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(6.0) + 30)
        assert data_state == {"step": 30}
        with pytest.raises(UserError, match=r"no checkpoint for step 10 .*steps there: 30, 40"):
            again.restore(abstract(state), step=10)


def test_old_step_is_skipped_unless_forced(tmp_path):
    state = {"w": jnp.zeros(3)}
    with Checkpointer(str(tmp_path / "run")) as ckpt:
        assert ckpt.save(5, state, data_state={"v": 1}, config={})
        assert ckpt.save(5, state, data_state={"v": 2}, config={}) is False
        assert ckpt.save(4, state, data_state={"v": 2}, config={}) is False
        assert ckpt.save(5, {"w": jnp.ones(3)}, data_state={"v": 3}, config={}, force=True) is True
        restored, data_state, _ = ckpt.restore(abstract(state))
        assert ckpt.all_steps() == [5] and data_state == {"v": 3}
        np.testing.assert_array_equal(np.asarray(restored["w"]), np.ones(3))


def test_folder_left_by_a_killed_save_is_ignored_then_replaced(tmp_path):
    assert ocp_utils.TMP_DIR_SUFFIX == TMP_SUFFIX
    directory = str(tmp_path / "run")
    # a real kill: the child starts an async save of 200 MB and exits before it can commit
    run_python(f"""
        import os, json
        import jax.numpy as jnp
        from distilbert_jax.training.checkpoint import Checkpointer
        ckpt = Checkpointer({directory!r})
        ckpt.save(1, {{"w": jnp.full((50_000_000,), 1.0)}}, data_state={{"n": 1}}, config={{}})
        ckpt.wait()
        ckpt.save(2, {{"w": jnp.full((50_000_000,), 2.0)}}, data_state={{"n": 2}}, config={{}})
        print(json.dumps({{}}), flush=True)
        os._exit(0)
    """, devices=1, timeout=120)
    assert step_folders(directory) == ["1", "2" + TMP_SUFFIX]

    ckpt = Checkpointer(directory)
    assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"w": jax.ShapeDtypeStruct((50_000_000,), jnp.float32, sharding=one_device)}
    restored, data_state, _ = ckpt.restore(target)
    assert data_state == {"n": 1} and float(restored["w"][-1]) == 1.0
    del restored
    # the same step now saves cleanly over the leftover
    assert ckpt.save(2, {"w": jnp.full((50_000_000,), 3.0)}, data_state={"n": 3}, config={})
    ckpt.wait()
    assert step_folders(directory) == ["1", "2"]
    restored, data_state, _ = ckpt.restore(target)
    assert data_state == {"n": 3} and float(restored["w"][0]) == 3.0
    ckpt.close()


def test_unwritable_folder_is_a_user_error_naming_it(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    bad = str(blocker / "ckpt")
    with pytest.raises(UserError, match=r"cannot write checkpoints to .*file\.txt/ckpt: .*choose a writable folder"):
        Checkpointer(bad)
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o500")
def test_read_only_folder_is_a_user_error(tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    os.chmod(read_only, 0o500)
    try:
        with pytest.raises(UserError, match=r"cannot write checkpoints to .*ro"):
            Checkpointer(str(read_only))
    finally:
        os.chmod(read_only, 0o700)


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(UserError, match="keep at least 1"):
        Checkpointer(str(tmp_path / "run"), keep=0)


def test_no_checkpoint_and_tree_mismatch_are_user_errors(tmp_path):
    state = train_state()
    with Checkpointer(str(tmp_path / "run")) as ckpt:
        with pytest.raises(UserError, match=r"no checkpoint in .*run"):
            ckpt.restore(abstract(state))
        ckpt.save(1, state, data_state={}, config={})
        wrong = abstract(state)
        wrong["params"]["dense"]["kernel"] = jax.ShapeDtypeStruct((8, 7), jnp.float32,
                                                                  sharding=wrong["params"]["norm"]["scale"].sharding)
        wrong["params"]["extra"] = wrong["params"].pop("norm")
        wrong["step"] = jax.ShapeDtypeStruct((), jnp.float32, sharding=wrong["step"].sharding)
        with pytest.raises(UserError) as err:
            ckpt.restore(wrong)
        message = str(err.value)
        assert "\n" not in message
        assert "missing from the checkpoint: params.extra.scale" in message
        assert "not in the target: params.norm.scale" in message
        assert "shape of params.dense.kernel: checkpoint (8, 6), target (8, 7)" in message
        assert "dtype of step: checkpoint int32, target float32" in message
        # an optimizer without Adam moments (e.g. plain SGD) is named too
        sgd = dict(abstract(state), opt_state=abstract(optax.sgd(0.1).init(state["params"])))
        with pytest.raises(UserError, match=r"not in the target: opt_state\.0\.count, opt_state\.0\.mu"):
            ckpt.restore(sgd)
        # a finalized step whose files were damaged afterwards
        os.remove(tmp_path / "run" / "1" / "state" / "_METADATA")
        with pytest.raises(UserError, match=r"cannot read checkpoint .*run/1 .*restore an earlier step"):
            ckpt.restore(abstract(state))


def test_restore_onto_other_meshes():
    """Saved split 8 ways over one axis; restored over a (2, 4) mesh with another spec, and on 1 device."""
    out = run_python("""
        import json, tempfile
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
        from distilbert_jax.training.checkpoint import Checkpointer

        assert len(jax.devices()) == 8
        mesh8 = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Explicit,))
        kernel = np.arange(64 * 24, dtype=np.float32).reshape(64, 24) / 7
        bias = np.linspace(-1, 1, 24, dtype=np.float32)
        state = {"params": {"kernel": jax.device_put(kernel, NamedSharding(mesh8, P("fsdp", None))),
                            "bias": jax.device_put(bias, NamedSharding(mesh8, P("fsdp")))},
                 "step": jax.device_put(jnp.asarray(7, jnp.int32), NamedSharding(mesh8, P())),
                 "key": jax.device_put(jax.random.key(3), NamedSharding(mesh8, P()))}
        saved_shards = len({str(s.index) for s in state["params"]["kernel"].addressable_shards})
        directory = tempfile.mkdtemp()
        ckpt = Checkpointer(directory)
        ckpt.save(7, state, data_state={"pos": 1}, config={"mesh": [8]})
        ckpt.wait()

        def target(sharding_for):
            return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_for(x)), state)

        def report(restored, wanted):
            return {
                "kernel_equal": bool(np.array_equal(np.asarray(restored["params"]["kernel"]), kernel)),
                "bias_equal": bool(np.array_equal(np.asarray(restored["params"]["bias"]), bias)),
                "step": int(restored["step"]),
                "key_equal": bool(np.array_equal(jax.random.key_data(restored["key"]),
                                                 jax.random.key_data(jax.random.key(3)))),
                "shardings_match": all(r.sharding == w.sharding for r, w in
                                       zip(jax.tree.leaves(restored), jax.tree.leaves(wanted))),
                "kernel_shard_shape": list(restored["params"]["kernel"].addressable_shards[0].data.shape),
                "kernel_devices": len(restored["params"]["kernel"].sharding.device_set),
            }

        mesh24 = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
        specs = {2: P("model", "data"), 1: P("data"), 0: P()}
        wanted24 = target(lambda x: NamedSharding(mesh24, specs[x.ndim]))
        restored24, data_state, config = ckpt.restore(wanted24)
        mesh1 = jax.make_mesh((1,), ("x",), devices=jax.devices()[:1], axis_types=(AxisType.Explicit,))
        wanted1 = target(lambda x: NamedSharding(mesh1, P()))
        restored1, _, _ = ckpt.restore(wanted1)
        ckpt.close()
        print(json.dumps({"saved_shards": saved_shards, "mesh24": report(restored24, wanted24),
                          "mesh1": report(restored1, wanted1), "data_state": data_state, "config": config}))
    """, devices=8, timeout=120)
    assert out["saved_shards"] == 8
    for name, shard_shape, devices in (("mesh24", [16, 12], 8), ("mesh1", [64, 24], 1)):
        got = out[name]
        assert got["kernel_equal"] and got["bias_equal"] and got["key_equal"], name
        assert got["step"] == 7 and got["shardings_match"], name
        assert got["kernel_shard_shape"] == shard_shape and got["kernel_devices"] == devices, name
    assert out["data_state"] == {"pos": 1} and out["config"] == {"mesh": [8]}
