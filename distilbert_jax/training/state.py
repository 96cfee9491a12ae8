"""The train state every trainer here checkpoints: one pytree, sharded by the mesh rules."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # micro-batches consumed (int32 scalar); updates = step // accumulate
    params: Any  # the model being trained
    opt_state: Any
