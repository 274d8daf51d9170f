"""External memory for a batch of samples that run one program: shared where they agree, private where not.

Every sample of a batch starts from the same memory image (program, weights, parameters) and differs only where
its input was written and where the program stored results. So the memory is one shared array plus, per page of
:data:`PAGE` bytes, a private copy per sample once a page holds per-sample data. The private copies live in one
``(batch, size)`` array allocated with zeros, which the operating system maps lazily: pages never made private
cost nothing. A read of shared pages returns one row (batch axis of length 1) that broadcasts over the batch, so
weights loaded from shared memory stay shared on chip too.
"""

from __future__ import annotations

import numpy as np

from . import workspace

__all__ = ["PAGE", "BatchedMemory", "DivergentProgram"]

PAGE = 4096


class DivergentProgram(RuntimeError):
    """The samples of a batch hold different instructions: they cannot share one run."""


class BatchedMemory:
    """External memory of ``batch`` samples that start from one ``image``."""

    def __init__(self, image, batch: int = 1):
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, not {batch!r}")
        self.base = np.frombuffer(bytearray(image), dtype=np.uint8).copy()
        self.batch = batch
        self.size = self.base.size
        self._private = None                                     # (batch, size) uint8 once needed
        self._is_private = np.zeros(-(-self.size // PAGE) or 1, dtype=bool)

    # --- pages -----------------------------------------------------------------------------------------
    def _pages(self, lo: int, hi: int) -> slice:
        return slice(lo // PAGE, -(-hi // PAGE))

    def _shared(self, lo: int, hi: int) -> bool:
        return self.batch == 1 or not self._is_private[self._pages(lo, hi)].any()

    def _make_private(self, lo: int, hi: int, covered: tuple[int, int] = (0, 0)) -> None:
        """Give every sample its own copy of the pages of bytes ``lo..hi``; pages inside ``covered`` are about to
        be overwritten whole and are not copied."""
        pages = self._pages(lo, hi)
        if self._private is None:
            self._private = workspace.zeros((self.batch, self.size), np.uint8)
        for p in np.flatnonzero(~self._is_private[pages]) + pages.start:
            at = slice(p * PAGE, min((p + 1) * PAGE, self.size))
            if not covered[0] <= at.start <= at.stop <= covered[1]:
                self._private[:, at] = self.base[at]
        self._is_private[pages] = True

    def _array(self, lo: int, hi: int, private: bool, covered: tuple[int, int] = (0, 0)) -> np.ndarray:
        """The (rows, size) array that holds bytes ``lo..hi`` (shared: one row)."""
        if private:
            self._make_private(lo, hi, covered)
            return self._private
        return self.base[None]

    # --- access ----------------------------------------------------------------------------------------
    def rows(self, addr: int, count: int, stride: int, nbytes: int) -> np.ndarray:
        """``count`` runs of ``nbytes`` bytes from ``addr`` on, ``stride`` apart: a read-only view shaped
        (1 or batch, count, nbytes)."""
        hi = addr + (count - 1) * stride + nbytes
        array = self._array(addr, hi, not self._shared(addr, hi))
        return workspace.strided(array, addr, (array.shape[0], count, nbytes), (array.strides[0], stride, 1),
                                 writeable=False)

    def write_rows(self, addr: int, stride: int, data: np.ndarray) -> None:
        """Write ``data`` shaped (1 or batch, count, nbytes) as runs ``stride`` apart from ``addr`` on; a later
        run wins where runs overlap."""
        rows, count, nbytes = data.shape
        hi = addr + (count - 1) * stride + nbytes
        covered = (addr, hi) if stride == nbytes or count == 1 else (0, 0)
        array = self._array(addr, hi, not (rows == 1 and self._shared(addr, hi)), covered)
        if stride >= nbytes or count == 1:
            workspace.strided(array, addr, (array.shape[0], count, nbytes), (array.strides[0], stride, 1))[...] = data
        else:
            for y in range(count):
                array[:, addr + y * stride:addr + y * stride + nbytes] = data[:, y]

    def write(self, addr: int, data: np.ndarray) -> None:
        """Write per-sample bytes ``data`` (batch, n) (or (n,) for every sample) at ``addr``."""
        data = np.asarray(data, dtype=np.uint8)
        data = data[None] if data.ndim == 1 else data
        self.write_rows(addr, 0, data[:, None, :])

    def read(self, addr: int, nbytes: int) -> np.ndarray:
        """Bytes ``addr..addr+nbytes`` of every sample: (batch, nbytes), a copy."""
        view = self.rows(addr, 1, 0, nbytes)[:, 0]
        return np.broadcast_to(view, (self.batch, nbytes)).copy()

    def code(self, addr: int, nbytes: int) -> bytes:
        """Bytes at ``addr`` that every sample holds alike (instructions)."""
        view = self.rows(addr, 1, 0, nbytes)[:, 0]
        if view.shape[0] > 1 and (view != view[:1]).any():
            raise DivergentProgram(f"the samples hold different bytes from {addr:#x} on, where the engine fetches "
                                   f"instructions; run them one at a time")
        return view[0].tobytes()

    def word(self, addr: int, nbytes: int) -> int:
        """Little-endian integer at ``addr``, the same in every sample (an instruction)."""
        return int.from_bytes(self.code(addr, nbytes), "little")

    def release(self) -> None:
        """Give the private pages back to the workspace; the memory is unusable afterwards."""
        if self._private is not None:
            pages = np.flatnonzero(self._is_private)
            workspace.give_back(self._private, [(slice(None), slice(p * PAGE, (p + 1) * PAGE)) for p in pages])
            self._private = self.base = None

    def sample(self, index: int) -> np.ndarray:
        """The whole memory of one sample (a copy, unless the batch is one sample: then the memory itself)."""
        if self.batch == 1:
            return self.base
        out = self.base.copy()
        if self._private is not None:
            for p in np.flatnonzero(self._is_private):
                at = slice(p * PAGE, min((p + 1) * PAGE, self.size))
                out[at] = self._private[index, at]
        return out
