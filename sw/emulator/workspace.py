"""Large arrays kept between emulator runs, so that batch runs do not pay for fresh memory every time.

A batch run touches tens of megabytes of new memory (private pages of external memory, per-sample buffers, work
arrays), which the operating system maps one page at a time on first touch; on small networks that costs more
than the arithmetic. :func:`zeros` hands out zeroed arrays, reusing ones a finished run gave back with
:func:`give_back`, which zeroes only the parts that run wrote. :func:`work` hands out scratch arrays (any
content) that one thread reuses from instruction to instruction. The pool holds at most :data:`LIMIT` bytes.
:func:`strided` makes the strided views instructions work on, cheaply.
"""

from __future__ import annotations

import math
import threading

import numpy as np

__all__ = ["LIMIT", "zeros", "give_back", "work", "strided", "clear"]

LIMIT = 512 << 20
_lock = threading.Lock()
_pool: dict[tuple, list[np.ndarray]] = {}
_held = 0
_local = threading.local()


def _key(shape, dtype) -> tuple:
    return tuple(int(n) for n in shape), np.dtype(dtype).str


def zeros(shape, dtype) -> np.ndarray:
    """A zeroed array: from the pool when one of this shape and type was given back, else a new one."""
    global _held
    with _lock:
        arrays = _pool.get(_key(shape, dtype))
        if arrays:
            array = arrays.pop()
            _held -= array.nbytes
            return array
    return np.zeros(shape, dtype)


def give_back(array: np.ndarray, written) -> None:
    """Return ``array`` to the pool after zeroing ``written`` (indices or slices of what a run wrote); object
    arrays and arrays beyond the pool's limit are dropped."""
    global _held
    if array.dtype == object:
        return
    for where in written:
        array[where] = 0
    with _lock:
        if _held + array.nbytes <= LIMIT:
            _pool.setdefault(_key(array.shape, array.dtype), []).append(array)
            _held += array.nbytes


def clear() -> None:
    """Drop every pooled array (and this thread's scratch arrays)."""
    global _held
    with _lock:
        _pool.clear()
        _held = 0
    _local.__dict__.pop("buffers", None)


def work(name: str, shape: tuple, dtype) -> np.ndarray:
    """A scratch array of this shape and type (its content is whatever the last user left), one per name and
    thread, grown as needed."""
    size = math.prod(shape) * np.dtype(dtype).itemsize
    buffers = _local.__dict__.setdefault("buffers", {})
    buffer = buffers.get(name)
    if buffer is None or buffer.size < size:
        buffer = buffers[name] = np.empty(size, dtype=np.uint8)
    return buffer[:size].view(dtype).reshape(shape)


def strided(array: np.ndarray, offset: int, shape: tuple, strides: tuple, writeable: bool = True) -> np.ndarray:
    """A view of the C-contiguous ``array`` from byte ``offset`` with these shape and strides (numpy checks it
    stays inside ``array``); like ``as_strided`` at a fraction of its cost per call, which counts here."""
    if array.dtype == object:
        view = np.lib.stride_tricks.as_strided(array.reshape(-1)[offset // array.itemsize:], shape, strides)
    else:
        view = np.ndarray(shape, array.dtype, buffer=array, offset=offset, strides=strides)
    if not writeable:
        view.flags.writeable = False
    return view
