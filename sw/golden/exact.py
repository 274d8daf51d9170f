"""Exact integer arithmetic on fast numpy paths: when a float or int64 computation provably gives the exact result.

Every code of every format is an integer in units of its least significant bit (``Format.exact``), so every sum
of products the golden model and the emulator form is an integer. numpy multiplies float32/float64 matrices with
BLAS, which is fast, and integer matrices with plain loops, which are not. A float matrix product is exact when
every product and every partial sum is an integer below ``2**24`` (float32) or ``2**53`` (float64) in magnitude,
whatever order BLAS adds them in (a fused multiply-add rounds once, an exact value not at all); this module
decides that from bounds on the operands and falls back to a product split into halves that each satisfy the
bound, and last to Python integers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hw.spec.formats import Format

__all__ = ["FLOAT32_EXACT", "FLOAT64_EXACT", "INT64_SAFE", "MIN_FLOAT32_SLICE", "fixed_values", "float32_slice",
           "float_dtype_for", "matmul_exact", "max_abs", "value_table"]

#: Integers of magnitude below these are exact in float32 / float64.
FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53
#: Sums of int64 values below this magnitude cannot overflow when two of them are added.
INT64_SAFE = 1 << 62
#: Shortest slice of a long reduction worth an exact float32 product of its own (BLAS runs float32 twice as fast as
#: float64, and int8 operands allow slices of 1,023).
MIN_FLOAT32_SLICE = 64


@lru_cache(maxsize=None)
def fixed_values(fmt: Format) -> tuple[np.ndarray, np.ndarray, int]:
    """Every code's value in units of ``2 ** fmt.lsb_exponent`` (0 for NaN/Inf), its finiteness, and the
    largest magnitude. int64 when every value fits in 62 bits, else Python ints (wide minifloats)."""
    sig, shift, finite = fmt.exact(fmt.codes)
    largest = max(abs(v) for v in fmt.fixed_range)
    if largest < INT64_SAFE:
        values = sig << shift
    else:
        values = sig.astype(object) << shift.astype(object)
    values = np.where(finite, values, 0)
    for a in (values, finite):
        a.setflags(write=False)
    return values, finite, largest


@lru_cache(maxsize=None)
def value_table(fmt: Format, dtype) -> np.ndarray:
    """:func:`fixed_values` of every code in ``dtype`` (which must hold them exactly)."""
    table = fixed_values(fmt)[0].astype(dtype)
    table.setflags(write=False)
    return table


def float32_slice(a_max: int, w_max: int) -> int:
    """The longest slice of a reduction whose float32 product is exact for operands bounded so, or 0 when it would
    be shorter than :data:`MIN_FLOAT32_SLICE` (then float64 or integers are faster)."""
    piece = (FLOAT32_EXACT - 1) // max(a_max * w_max, 1)
    return piece if piece >= MIN_FLOAT32_SLICE else 0


def float_dtype_for(bound: int):
    """float32 or float64 if every integer up to ``bound`` in magnitude is exact in it, else None."""
    if bound < FLOAT32_EXACT:
        return np.float32
    if bound < FLOAT64_EXACT:
        return np.float64
    return None


def max_abs(values: np.ndarray) -> int:
    """Largest magnitude in an integer or float array of integers (0 when empty), as a Python int."""
    if values.size == 0:
        return 0
    return int(max(abs(int(values.max())), abs(int(values.min()))))


def _split(values: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``values = high * 2**bits + low`` with ``0 <= low < 2**bits`` (int64 in, int64 out)."""
    return values >> bits, values & ((1 << bits) - 1)


def matmul_exact(a: np.ndarray, w: np.ndarray, a_max: int | None = None, w_max: int | None = None) -> np.ndarray:
    """The exact integer product ``a @ w`` of integer-valued arrays (int64, float or Python ints).

    ``a_max``/``w_max`` bound the operands' magnitudes (measured when not given). The result is int64 when it
    provably fits in 62 bits, else Python ints. Paths, first that is exact: one float32 product; float32 operands
    (:func:`sw.golden.gemm.operand_dtype` chose them) in slices of the reduction, summed in int64; one float64
    product; four float64 products of 2-limb operands recombined in int64 or Python ints; Python ints.
    """
    k = a.shape[-1]
    a_max = max_abs(a) if a_max is None else a_max
    w_max = max_abs(w) if w_max is None else w_max
    bound = k * a_max * w_max
    dtype = float_dtype_for(bound)
    piece = float32_slice(a_max, w_max)
    if dtype is not np.float32 and a.dtype == w.dtype == np.float32 and piece and bound < INT64_SAFE:
        # float32 operands of a long reduction: exact products of slices of it, summed in int64
        total = np.zeros(np.broadcast_shapes(a.shape[:-2], w.shape[:-2]) + (a.shape[-2], w.shape[-1]), np.int64)
        for at in range(0, k, piece):
            total += np.matmul(a[..., at:at + piece], w[..., at:at + piece, :]).astype(np.int64)
        return total
    if dtype is not None:
        return np.matmul(a.astype(dtype, copy=False), w.astype(dtype, copy=False)).astype(np.int64)
    if a_max < INT64_SAFE and w_max < INT64_SAFE:
        ab, wb = a_max.bit_length() // 2, w_max.bit_length() // 2
        # high limbs reach (max >> bits) + 1 (floor of negatives), low limbs 2**bits - 1
        limb = k * max((a_max >> ab) + 1, 1 << ab) * max((w_max >> wb) + 1, 1 << wb)
        if limb < FLOAT64_EXACT:
            wide = k * (a_max + (1 << ab)) * (w_max + (1 << wb)) >= INT64_SAFE
            return _matmul_limbs(np.asarray(a).astype(np.int64), np.asarray(w).astype(np.int64), ab, wb, wide)
    return np.matmul(np.asarray(a, dtype=object), np.asarray(w, dtype=object))


def _matmul_limbs(a: np.ndarray, w: np.ndarray, ab: int, wb: int, wide: bool) -> np.ndarray:
    """``a @ w`` from the four float64 products of ``a = ah*2**ab + al`` and ``w = wh*2**wb + wl``, recombined
    in Python ints when ``wide`` (the terms may not fit in int64)."""
    ah, al = (x.astype(np.float64) for x in _split(a, ab))
    wh, wl = (x.astype(np.float64) for x in _split(w, wb))
    hh, hl, lh, ll = ((x @ y).astype(np.int64) for x, y in ((ah, wh), (ah, wl), (al, wh), (al, wl)))
    if not wide:
        return (hh << (ab + wb)) + (hl << ab) + (lh << wb) + ll
    hh, hl, lh = (x.astype(object) for x in (hh, hl, lh))
    return (hh << (ab + wb)) + (hl << ab) + (lh << wb) + ll.astype(object)
