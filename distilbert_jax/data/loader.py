"""Length-grouped, bucket-padded, seeded, resumable batches; each process reads its own rows.

The epoch plan is a pure function of (seed, epoch): permute every sequence index with
`np.random.default_rng((seed, epoch))`, cut the permutation into groups of `group_size` batches,
sort each group by length (so a batch holds sequences of similar length and pads little), cut
into batches and shuffle the batch order with the same generator. Every process computes the same
plan, so nothing is communicated, every epoch is reshuffled (the reference repeated one order
under distributed training), and a position (epoch, batch) is all a checkpoint needs.

Choices made here:
* The last partial batch of an epoch is padded with empty rows (ids = pad, attention_mask 0)
  rather than dropped, so no sequence is ever skipped; losses that normalise by the number of
  real tokens ignore those rows.
* A batch is padded to the smallest bucket that holds the longest sequence of the GLOBAL batch,
  so all processes build the same shape and the step compiles once per bucket.
* Process p of P gets rows [p*b/P, (p+1)*b/P) of each global batch of b rows.
* A background thread prepares the next few batches; `state()` counts the batches the consumer
  has received, never the producer's, so it is exact whatever was prefetched.
"""

from __future__ import annotations

import dataclasses
import queue
import threading

import numpy as np

from distilbert_jax.data.buckets import DEFAULT_BUCKETS, bucket_length, clip_to_longest
from distilbert_jax.errors import UserError

_EMPTY = -1  # plan entry of a padding row


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous; compare fields instead
class Batch:
    """This process's rows of global batch `index` of `epoch`: int32 arrays [rows, bucket]."""
    input_ids: np.ndarray
    attention_mask: np.ndarray
    epoch: int
    index: int


def _positive_int(name: str, value) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class BatchLoader:
    def __init__(self, dataset, *, batch_size: int, seed: int, buckets=DEFAULT_BUCKETS, process_index: int = 0,
                 process_count: int = 1, pad_id: int | None = None, group_size: int = 100, prefetch: int = 2):
        """`dataset` needs `__len__`, `__getitem__` and `lengths` (a TokenDataset has them).
        `batch_size` counts sequences of the global batch, over all processes; pad_id None means
        the dataset's [PAD] id (0 if it names none)."""
        self.dataset = dataset
        self.batch_size = _positive_int("batch_size", batch_size)
        self.process_count = _positive_int("process_count", process_count)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise UserError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        if not isinstance(process_index, (int, np.integer)) or not 0 <= process_index < self.process_count:
            raise UserError(f"process_index must be in [0, {self.process_count}), got {process_index!r}")
        self.process_index = int(process_index)
        if self.batch_size % self.process_count:
            raise UserError(f"batch_size {self.batch_size} is not divisible by the {self.process_count} processes; "
                            "pick a multiple of the process count")
        self.rows = self.batch_size // self.process_count
        self.group_size = _positive_int("group_size", group_size)
        self.prefetch = int(prefetch)
        self.lengths = np.asarray(dataset.lengths, np.int64)
        if len(self.lengths) == 0:
            raise UserError("the dataset has no sequences; prepare it from a non-empty corpus")
        self.pad_id = int(pad_id if pad_id is not None else getattr(dataset, "special_ids", {}).get("pad", 0))
        self.buckets = clip_to_longest([_positive_int("a bucket length", b) for b in buckets],
                                       int(self.lengths.max()))
        self._epoch, self._batch = 0, 0
        self._generation = 0  # bumped by restore() and each new iterator; stale iterators stop
        self._plan_cache: tuple[int, np.ndarray] | None = None

    # ---------------------------------------------------------------- the plan
    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def epoch_plan(self, epoch: int) -> np.ndarray:
        """[batches_per_epoch, batch_size] sequence indices of the global batches, -1 = padding row."""
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        n, b = len(self.lengths), self.batch_size
        rng = np.random.default_rng((self.seed, int(epoch)))
        perm = rng.permutation(n)
        group = self.group_size * b
        for start in range(0, n, group):
            part = perm[start:start + group]
            perm[start:start + group] = part[np.argsort(self.lengths[part], kind="stable")]
        plan = np.full(self.batches_per_epoch * b, _EMPTY, np.int64)
        plan[:n] = perm
        plan = plan.reshape(-1, b)[rng.permutation(self.batches_per_epoch)]
        self._plan_cache = (epoch, plan)
        return plan

    def make_batch(self, epoch: int, index: int) -> Batch:
        """Global batch `index` of `epoch`, this process's rows."""
        rows = self.epoch_plan(epoch)[index]
        real = rows[rows != _EMPTY]
        longest = int(self.lengths[real].max())
        length = bucket_length(longest, self.buckets)
        mine = rows[self.process_index * self.rows:(self.process_index + 1) * self.rows]
        ids = np.full((self.rows, length), self.pad_id, np.int32)
        mask = np.zeros((self.rows, length), np.int32)
        for r, i in enumerate(mine):
            if i != _EMPTY:
                seq = self.dataset[int(i)]
                ids[r, :len(seq)] = seq
                mask[r, :len(seq)] = 1
        return Batch(ids, mask, int(epoch), int(index))

    def epoch_batches(self, epoch: int, start: int = 0):
        """One epoch's batches from `start`, in order; does not move the loader's position."""
        for index in range(start, self.batches_per_epoch):
            yield self.make_batch(epoch, index)

    # ---------------------------------------------------------------- position
    def state(self) -> dict:
        """The next batch `for batch in loader` will yield; save it in the checkpoint."""
        return {"epoch": self._epoch, "batch": self._batch, "seed": self.seed}

    def state_after(self, batch) -> dict:
        """The position once `batch` (a Batch or FeatureBatch) is consumed, however far the
        iterator has read ahead: what a checkpoint taken after that batch's step keeps."""
        epoch, index = self._advance(batch.epoch, batch.index)
        return {"epoch": epoch, "batch": index, "seed": self.seed}

    def restore(self, state: dict) -> None:
        """Continue exactly where `state` was taken; an iterator made before this stops."""
        try:
            epoch, batch, seed = int(state["epoch"]), int(state["batch"]), int(state["seed"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"a loader state needs int epoch, batch and seed, got {state!r}") from None
        if seed != self.seed:
            raise UserError(f"the saved data order used seed {seed}, this loader uses {self.seed}; "
                            "resume with the same data seed")
        if epoch < 0 or not 0 <= batch <= self.batches_per_epoch:
            raise UserError(f"loader state {state!r} is outside the {self.batches_per_epoch} batches per epoch; "
                            "was it saved with another dataset or batch size?")
        if batch == self.batches_per_epoch:
            epoch, batch = epoch + 1, 0
        self._epoch, self._batch = epoch, batch
        self._generation += 1

    def _advance(self, epoch: int, index: int) -> tuple[int, int]:
        index += 1
        return (epoch + 1, 0) if index == self.batches_per_epoch else (epoch, index)

    # ---------------------------------------------------------------- iteration
    def __iter__(self):
        """Forever, over epochs, from the current position."""
        self._generation += 1
        generation = self._generation
        if self.prefetch <= 0:
            while generation == self._generation:
                batch = self.make_batch(self._epoch, self._batch)
                self._epoch, self._batch = self._advance(self._epoch, self._batch)
                yield batch
            return
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(self._epoch, self._batch, ready, stop),
                                  name="BatchLoader-prefetch", daemon=True)
        worker.start()
        try:
            while generation == self._generation:
                item = ready.get()
                if isinstance(item, BaseException):
                    raise item
                self._epoch, self._batch = self._advance(item.epoch, item.index)
                yield item
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    ready.get_nowait()  # unblock a producer waiting on a full queue
                except queue.Empty:
                    worker.join(timeout=0.05)

    def _produce(self, epoch: int, index: int, ready: queue.Queue, stop: threading.Event) -> None:
        def put(item) -> None:
            while not stop.is_set():
                try:
                    return ready.put(item, timeout=0.1)
                except queue.Full:
                    continue

        try:
            while not stop.is_set():
                put(self.make_batch(epoch, index))
                epoch, index = self._advance(epoch, index)
        except BaseException as err:  # handed to the consumer, which re-raises it
            put(err)
