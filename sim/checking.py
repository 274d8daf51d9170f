"""Comparing what the RTL produced with the golden model, and recording waveforms when they differ."""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["Mismatch", "compare", "split_psums"]


class Mismatch(AssertionError):
    """RTL and golden model disagree; the message lists the first differences."""


def split_psums(raw, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned words ``{nonfinite, value[bits]}`` into (signed values as Python ints, flags)."""
    words = [int(w) for w in np.asarray(raw).ravel()]
    top = 1 << (bits - 1)
    values = [((w & ((1 << bits) - 1)) ^ top) - top for w in words]
    flags = [(w >> bits) & 1 for w in words]
    shape = np.shape(raw)
    return np.array(values, dtype=object).reshape(shape), np.array(flags, dtype=bool).reshape(shape)


def compare(expected: np.ndarray, observed: np.ndarray, describe: Callable[[int], str],
            waves: Callable[[], str] | None = None, limit: int = 10) -> None:
    """Raise :class:`Mismatch` unless ``observed`` equals ``expected`` element for element.

    ``describe(i)`` names the stimulus of flat element ``i``; ``waves()``, called only on failure, reruns the
    simulation with tracing and returns the waveform's path.
    """
    expected, observed = np.asarray(expected, dtype=object), np.asarray(observed, dtype=object)
    if expected.shape != observed.shape:
        raise Mismatch(f"RTL produced shape {observed.shape}, golden model {expected.shape}")
    bad = np.flatnonzero(expected.ravel() != observed.ravel())
    if bad.size == 0:
        return
    lines = [f"{bad.size} of {expected.size} results differ from the golden model:"]
    for i in bad[:limit]:
        lines.append(f"  {describe(int(i))}: expected {expected.ravel()[i]}, RTL {observed.ravel()[i]}")
    if waves is not None:
        lines.append(f"waveform: {waves()}")
    raise Mismatch("\n".join(lines))
