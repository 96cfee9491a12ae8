"""A strict check that code reads nothing back from the device: for tests of the training loop.

`jax.transfer_guard("disallow")` turns implicit transfers into errors, but on the CPU backend device
memory is host memory and JAX's device-to-host guard never fires (`float(x)` is a zero-copy read).
So `no_device_reads()` also makes every read of a `jax.Array`'s value (`float`, `np.asarray`,
`.item()`, `jax.device_get`: all go through `ArrayImpl._value`) raise while it is active.
"""

from __future__ import annotations

import contextlib
import threading

import jax
from jax._src import array as _array

_active = threading.local()
_original = _array.ArrayImpl._value


class DeviceRead(AssertionError):
    pass


def _guarded(self):
    if getattr(_active, "on", False):
        raise DeviceRead(f"device-to-host read of an array of shape {self.shape} inside a no-read region")
    return _original.fget(self)


_array.ArrayImpl._value = property(_guarded)


@contextlib.contextmanager
def no_device_reads():
    previous = getattr(_active, "on", False)
    _active.on = True
    try:
        with jax.transfer_guard("disallow"):
            yield
    finally:
        _active.on = previous
