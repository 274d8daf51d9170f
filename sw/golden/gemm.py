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

from .exact import INT64_SAFE, fixed_values, float32_slice, float_dtype_for, matmul_exact, value_table

__all__ = ["Accumulation", "multiply", "gemm", "matvec", "decode", "product_sum", "operand_dtype", "has_specials"]


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


def has_specials(fmt: Format) -> bool:
    """Whether ``fmt`` has NaN or Inf codes (only then can a sum be non-finite)."""
    return fmt.has_nan or fmt.has_inf


def operand_dtype(a: Format, w: Format, terms: int):
    """The dtype operands of a sum of ``terms`` products take for :func:`~sw.golden.exact.matmul_exact`: float32
    when it is exact for every such sum or for slices of it, float64 when that is, else int64 (or Python ints for
    the widest formats)."""
    bound = max(terms, 1) * fixed_values(a)[2] * fixed_values(w)[2]
    dtype = float_dtype_for(bound)
    if dtype is np.float64 and float32_slice(fixed_values(a)[2], fixed_values(w)[2]):
        return np.float32                           # a long reduction in exact float32 slices
    if dtype is not None:
        return dtype
    return np.int64 if max(fixed_values(a)[2], fixed_values(w)[2]) < INT64_SAFE else object


def decode(fmt: Format, codes: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point values of ``codes`` (0 for NaN/Inf) in ``dtype``, and their finiteness; checks the codes."""
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        raise TypeError(f"Codes must be an integer array, not {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= (1 << fmt.bits)):
        raise ValueError(f"Codes of {fmt.name} must lie in 0..{(1 << fmt.bits) - 1}")
    return value_table(fmt, dtype)[codes], fixed_values(fmt)[1][codes]


def product_sum(a: np.ndarray, a_ok: np.ndarray | None, w: np.ndarray, w_ok: np.ndarray | None,
                a_format: Format, w_format: Format, w_terms: int = 1) -> Accumulation:
    """Exact ``a @ w`` (stacks broadcast) of decoded values (:func:`decode`); a sum is non-finite when a row of
    ``a`` or a column of ``w`` it uses holds a non-finite operand (``None``: all finite). ``w`` may be the sum of
    ``w_terms`` weight tensors (its bound grows with them)."""
    value = matmul_exact(a, w, fixed_values(a_format)[2], w_terms * fixed_values(w_format)[2])
    shape = value.shape
    nonfinite = np.zeros(shape, dtype=bool)
    if a_ok is not None:
        nonfinite |= ~a_ok.all(axis=-1)[..., :, None]
    if w_ok is not None:
        nonfinite |= ~w_ok.all(axis=-2)[..., None, :]
    return Accumulation(value, a_format.lsb_exponent + w_format.lsb_exponent, nonfinite)


def gemm(a_codes, w_codes, a_format: Format | str, w_format: Format | str) -> Accumulation:
    """Exact ``A @ W`` for codes ``A`` of shape (M, K) in ``a_format`` and ``W`` of shape (K, N) in ``w_format``."""
    fa, fw = get_format(a_format), get_format(w_format)
    a_codes, w_codes = np.asarray(a_codes), np.asarray(w_codes)
    if a_codes.ndim != 2 or w_codes.ndim != 2 or a_codes.shape[1] != w_codes.shape[0]:
        raise ValueError(f"gemm needs A (M, K) and W (K, N), not {a_codes.shape} and {w_codes.shape}")
    dtype = operand_dtype(fa, fw, a_codes.shape[1])
    a, a_ok = decode(fa, a_codes, dtype)
    w, w_ok = decode(fw, w_codes, dtype)
    return product_sum(a, a_ok if has_specials(fa) else None, w, w_ok if has_specials(fw) else None, fa, fw)


def matvec(w_codes, a_codes, w_format: Format | str, a_format: Format | str) -> Accumulation:
    """Exact ``W @ a`` for a weight matrix (N, K) and an activation vector (K,)."""
    a_codes = np.asarray(a_codes)
    if a_codes.ndim != 1:
        raise ValueError(f"matvec needs an activation vector, not shape {a_codes.shape}")
    r = gemm(a_codes[None, :], np.asarray(w_codes).T, a_format, w_format)
    return Accumulation(r.value[0], r.exponent, r.nonfinite[0])
