"""Training checkpoints: the train state, the data position and the run's config, saved together.

One `Checkpointer` wraps one Orbax `CheckpointManager` over a run folder. Each step is a folder
`<directory>/<step>/` holding three Orbax items:

* `state`: any pytree of `jax.Array`s (parameters, optimizer state, step counter, PRNG key),
  written by every process for the shards it owns (Orbax's OCDBT/TensorStore format), so a
  sharded state is never gathered on one host;
* `data_state`: the data iterator position, JSON;
* `config`: the run's full config, JSON, so a checkpoint always says how it was made.

Why it is built this way:

* Writes are atomic. Orbax writes `<step>.orbax-checkpoint-tmp/` and renames it to `<step>/`
  when every item is complete, so a killed save leaves only a `*.orbax-checkpoint-tmp` folder.
  Steps are found by their final names, so `latest_step` and `restore` never see it; it is
  deleted when the next `Checkpointer` opens the folder (`cleanup_tmp_directories`), and a save
  of the same step replaces it.
* Saves are asynchronous by default: `save` returns once the arrays are copied to host memory
  (so the caller may donate or delete them at once), and the files are written in a background
  thread. Call `wait()` before reading the folder, and `close()` before the process exits, or the
  last checkpoint may be lost.
* Restoring takes a target tree of `jax.ShapeDtypeStruct`s (or concrete arrays) whose
  `.sharding` says where each restored array goes; each process reads only the pieces its
  devices hold. That is how a checkpoint written on one mesh resumes on another (8 devices ->
  (2, 4), or a single device). The target is checked against the checkpoint's metadata first,
  so a different model or optimizer gives one line naming what differs instead of a deep Orbax
  error, and a dtype change (which Orbax would cast silently) is refused.
* PRNG keys: typed keys (`jax.random.key`) are accepted as they are; Orbax 0.12 stores their key
  data ([..., 2] uint32) and restores a typed key when the target leaf has a key dtype
  (`jax.eval_shape(lambda: jax.random.key(0))`). Raw `jax.random.key_data(key)` arrays work too
  (rebuild with `jax.random.wrap_key_data`). Either way the target must use the same form the
  state was saved with.
* Multi-process (`jax.distributed`): every process calls `save`, `restore`, `wait` and `close`
  with the same arguments; Orbax syncs the processes and lets the primary host write the JSON
  items and rename folders. Nothing here writes array data from one process only.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import jax
import numpy as np

from distilbert_jax.errors import UserError

STATE, DATA_STATE, CONFIG = "state", "data_state", "config"
_SHOWN = 3  # how many differing paths an error message names per kind


class Checkpointer:
    """Keep the last `keep` checkpoints of a run in `directory`; see the module docstring."""

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
        import orbax.checkpoint as ocp

        if keep < 1:
            raise UserError(f"keep={keep} checkpoints: keep at least 1")
        self.directory = directory if "://" in directory else os.path.abspath(directory)
        _check_writable(self.directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # leftovers of a killed save
            create=True,
        )
        handlers = {
            STATE: ocp.StandardCheckpointHandler(),
            DATA_STATE: ocp.JsonCheckpointHandler(),
            CONFIG: ocp.JsonCheckpointHandler(),
        }  # named up front, so a fresh Checkpointer can read metadata before its first restore
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def save(self, step: int, state: Any, *, data_state: dict, config: dict, force: bool = False) -> bool:
        """Start writing checkpoint `step`; True if a save was started.

        A step that is not newer than the latest checkpoint is skipped (False) unless `force`,
        which saves it anyway and replaces a checkpoint of the same step. `data_state` and
        `config` come back from `restore` as JSON gives them (tuples become lists).
        """
        import orbax.checkpoint as ocp

        step = int(step)
        for name, value in ((DATA_STATE, data_state), (CONFIG, config)):
            try:
                json.dumps(value, allow_nan=True)
            except (TypeError, ValueError) as err:
                raise TypeError(f"checkpoint {name} must be JSON-serialisable: {err}") from None
        if force and step in self.all_steps():
            self._manager.wait_until_finished()
            self._manager.delete(step)
        args = ocp.args.Composite(
            **{
                STATE: ocp.args.StandardSave(state),
                DATA_STATE: ocp.args.JsonSave(data_state),
                CONFIG: ocp.args.JsonSave(config),
            }
        )
        return bool(self._manager.save(step, args=args, force=force))

    def latest_step(self) -> int | None:
        """The newest step, counting a save still being written (`restore` waits for it)."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict, dict]:
        """(state, data_state, config) of `step` (default: the latest), arrays placed as `target` says.

        `target` has the structure of the saved state; its leaves are `jax.ShapeDtypeStruct`s
        with a `.sharding`, or concrete `jax.Array`s (whose shape, dtype and sharding are used).
        """
        import orbax.checkpoint as ocp

        self.wait()
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise UserError(f"no checkpoint in {self.directory}; start a new run or point at a run folder")
            step = steps[-1]
        elif step not in steps:
            have = ", ".join(map(str, steps)) or "none"
            raise UserError(f"no checkpoint for step {step} in {self.directory} (steps there: {have})")
        abstract = _abstract_target(target)
        where = f"{self.directory}/{step}"
        try:
            stored = self._manager.item_metadata(step)[STATE]
        except (OSError, ValueError, KeyError) as err:
            stored, problem = None, f"{type(err).__name__}: {err}".splitlines()[0]
        else:
            problem = "no state metadata"
        if stored is None:
            raise UserError(f"cannot read checkpoint {where} ({problem}); restore an earlier step")
        _check_matches(getattr(stored, "tree", stored), abstract, where)
        args = ocp.args.Composite(
            **{
                STATE: ocp.args.StandardRestore(abstract),
                DATA_STATE: ocp.args.JsonRestore(),
                CONFIG: ocp.args.JsonRestore(),
            }
        )
        try:
            restored = self._manager.restore(step, args=args)
        except (OSError, ValueError) as err:  # a damaged step folder
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise UserError(f"cannot read checkpoint {where} ({first}); restore an earlier step") from None
        return restored[STATE], restored[DATA_STATE], restored[CONFIG]

    def wait(self) -> None:
        """Block until every started save is on disk (re-raises a failed background save)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_writable(directory: str) -> None:
    """Fail now, with the folder's name, rather than in a background thread hours into a run."""
    from etils import epath

    path = epath.Path(directory)
    probe = path / f".write-probe-{socket.gethostname()}-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise UserError(f"cannot write checkpoints to {directory}: {reason}; choose a writable folder") from None


def _path_name(path) -> str:
    """'params.w', 'opt.0.mu.w': the dotted names Orbax also uses for array files."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


def _abstract_target(target: Any) -> Any:
    """Target leaves -> ShapeDtypeStructs with shardings (a missing sharding is a caller bug)."""

    def one(path, leaf):
        sharding = getattr(leaf, "sharding", None)
        if sharding is None:
            raise ValueError(
                f"restore target leaf {_path_name(path) or '<root>'} has no sharding: give each "
                "jax.ShapeDtypeStruct a sharding=, or pass concrete jax.Arrays"
            )
        return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding)

    return jax.tree_util.tree_map_with_path(one, target)


def _stored_form(leaf: jax.ShapeDtypeStruct) -> tuple[tuple[int, ...], str]:
    """(shape, dtype) as Orbax stores the leaf: typed PRNG keys are stored as their key data."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
        return tuple(data.shape), str(data.dtype)
    return tuple(leaf.shape), str(leaf.dtype)


def _check_matches(stored_tree: Any, abstract: Any, where: str) -> None:
    """UserError naming the paths, shapes and dtypes where `abstract` differs from the checkpoint."""
    stored = {
        _path_name(p): (tuple(m.shape), str(m.dtype))
        for p, m in jax.tree_util.tree_flatten_with_path(stored_tree)[0]
    }
    wanted = {_path_name(p): _stored_form(leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    problems = []
    for label, names in (("missing from the checkpoint", sorted(set(wanted) - set(stored))),
                         ("not in the target", sorted(set(stored) - set(wanted)))):
        if names:
            more = f" (+{len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
            problems.append(f"{label}: {', '.join(names[:_SHOWN])}{more}")
    for kind, index in (("shape", 0), ("dtype", 1)):
        differ = [n for n in sorted(set(stored) & set(wanted)) if stored[n][index] != wanted[n][index]]
        for name in differ[:_SHOWN]:
            problems.append(f"{kind} of {name}: checkpoint {stored[name][index]}, target {wanted[name][index]}")
        if len(differ) > _SHOWN:
            problems.append(f"+{len(differ) - _SHOWN} more {kind} differences")
    if problems:
        raise UserError(
            f"checkpoint {where} does not match the state to restore ({'; '.join(problems)}); "
            "restore with the model and optimizer config saved with it, or use a new run folder"
        )
