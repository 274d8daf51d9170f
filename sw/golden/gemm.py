"""Exact GEMM and matrix-vector products of quantized operands.

Every product of two codes is an integer times a power of two, so the sum of any number of products is
exact in a fixed-point integer whose least significant bit weighs ``2 ** product_of(a, b).min_exponent``.
These functions return that integer: the result depends on neither summation order nor tiling.

Non-finite codes (NaN, Inf) contribute nothing to the sum and set the ``nonfinite`` flag of every
result they touch, which is what the hardware does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw.spec.formats import Format, get_format, product_of

__all__ = ["Accumulation", "multiply", "gemm", "matvec"]


@dataclass(frozen=True)
class Accumulation:
    """An exact sum: ``value * 2 ** exponent``; ``nonfinite`` marks sums that met a NaN or Inf operand."""

    value: np.ndarray        # int64, or Python ints (dtype object) when 63 bits are not enough
    exponent: int
    nonfinite: np.ndarray    # bool, same shape as value

    def to_float(self) -> np.ndarray:
        """The sum as float64 (rounded if it needs more than 53 bits), NaN where ``nonfinite``."""
        v = np.vectorize(lambda x: float(x), otypes=[np.float64])(self.value) if self.value.dtype == object \
            else self.value.astype(np.float64)
        return np.where(self.nonfinite, np.nan, np.ldexp(v, self.exponent))


def _fixed(fmt: Format, codes: np.ndarray, wide: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each code as an integer in units of ``2 ** lsb_exponent``, and its finiteness."""
    sig, shift, finite = fmt.exact(codes)
    if wide:
        sig = sig.astype(object)
        shift = shift.astype(object)
    return sig << shift, finite


def _needs_wide(a: Format, b: Format, terms: int) -> bool:
    p = product_of(a, b)
    return max(abs(p.fixed_min), abs(p.fixed_max)) * max(terms, 1) >= 1 << 62


def multiply(a_codes, b_codes, a_format: Format | str, b_format: Format | str) -> Accumulation:
    """Element-wise exact products (broadcasting)."""
    fa, fb = get_format(a_format), get_format(b_format)
    wide = _needs_wide(fa, fb, 1)
    a, a_ok = _fixed(fa, np.asarray(a_codes), wide)
    b, b_ok = _fixed(fb, np.asarray(b_codes), wide)
    ok = a_ok & b_ok
    value = np.where(ok, a * b, 0)
    if not wide:
        value = value.astype(np.int64)
    return Accumulation(value, fa.lsb_exponent + fb.lsb_exponent, ~ok)


def gemm(a_codes, w_codes, a_format: Format | str, w_format: Format | str) -> Accumulation:
    """Exact ``A @ W`` for codes ``A`` of shape (M, K) in ``a_format`` and ``W`` of shape (K, N) in ``w_format``."""
    fa, fw = get_format(a_format), get_format(w_format)
    a_codes, w_codes = np.asarray(a_codes), np.asarray(w_codes)
    if a_codes.ndim != 2 or w_codes.ndim != 2 or a_codes.shape[1] != w_codes.shape[0]:
        raise ValueError(f"gemm needs A (M, K) and W (K, N), not {a_codes.shape} and {w_codes.shape}")
    wide = _needs_wide(fa, fw, a_codes.shape[1])
    a, a_ok = _fixed(fa, a_codes, wide)
    w, w_ok = _fixed(fw, w_codes, wide)
    a = np.where(a_ok, a, 0)
    w = np.where(w_ok, w, 0)
    value = a.dot(w) if wide else a.astype(np.int64) @ w.astype(np.int64)
    nonfinite = (~a_ok).astype(np.int64) @ np.ones_like(w, dtype=np.int64) + \
        np.ones_like(a, dtype=np.int64) @ (~w_ok).astype(np.int64)
    return Accumulation(value, fa.lsb_exponent + fw.lsb_exponent, nonfinite > 0)


def matvec(w_codes, a_codes, w_format: Format | str, a_format: Format | str) -> Accumulation:
    """Exact ``W @ a`` for a weight matrix (N, K) and an activation vector (K,)."""
    a_codes = np.asarray(a_codes)
    if a_codes.ndim != 1:
        raise ValueError(f"matvec needs an activation vector, not shape {a_codes.shape}")
    r = gemm(a_codes[None, :], np.asarray(w_codes).T, a_format, w_format)
    return Accumulation(r.value[0], r.exponent, r.nonfinite[0])
