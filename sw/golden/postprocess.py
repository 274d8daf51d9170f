"""What the post-processing unit does to an accumulator line on its way out (SETPP + STORE).

For each element, with the column's bias ``B`` (saturated to the range of an ``acc_bits``-wide accumulator:
a bias is a value the accumulator could hold), multiplier ``M`` and shift ``S``:

    t = (acc + B) * M                       exact integer
    v = t * 2 ** (acc_exponent - S)         exact dyadic rational

Integer outputs: ``q = clamp(rne(v) + zero_point, format range)``; minifloat outputs: ``q`` is the code
nearest to ``v`` (ties to even, saturating); a ``v`` that rounds to zero gives +0, never -0. Then ``q`` is
clamped by value to ``[clamp_lo, clamp_hi]``.
A non-finite accumulator (a NaN or Inf operand reached it) gives the NaN code where the output format has
one, else the code of zero (plus zero point); the store engine flags it in its status. The clamp maps values
at or below ``clamp_lo`` to the code ``clamp_lo`` (so ReLU never leaves -0), at or above ``clamp_hi`` to ``clamp_hi``.
"""

from __future__ import annotations

import numpy as np

from hw.spec.formats import Format, IntFormat, get_format

__all__ = ["rescale", "round_half_even_shift", "clamp_codes"]


def round_half_even_shift(t: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``rne(t * 2**shift)`` for integer ``t`` and integer ``shift`` (element-wise, any sign), exactly."""
    t = np.asarray(t, dtype=object)
    shift = np.broadcast_to(np.asarray(shift, dtype=object), t.shape)
    out = np.empty(t.shape, dtype=object)
    for i, (v, s) in enumerate(zip(t.ravel(), shift.ravel())):
        v, s = int(v), int(s)
        if s >= 0:
            out.flat[i] = v << s
            continue
        k = -s
        q = v >> k                      # floor
        r = v - (q << k)                # 0 <= r < 2**k
        half = 1 << (k - 1)
        if r > half or (r == half and q & 1):
            q += 1
        out.flat[i] = q
    return out


def clamp_codes(codes: np.ndarray, fmt: Format, lo: int, hi: int) -> np.ndarray:
    """Clamp codes by value: a value at or above that of code ``hi`` gives ``hi``, else one at or below that of
    ``lo`` gives ``lo``. "At" matters for zeros: a ReLU (``lo`` = +0) turns -0 into +0, which keeps the clamped
    output monotone in the accumulator (max pooling before or after post-processing is then the same)."""
    values = fmt.decode(codes)
    lo_v, hi_v = fmt.decode(np.array([lo, hi]))
    out = np.where(values <= lo_v, lo, codes)
    return np.where(values >= hi_v, hi, out).astype(codes.dtype)


def rescale(acc: np.ndarray, nonfinite: np.ndarray, acc_exponent: int, bias, multiplier, shift,
            out_format: Format | str, zero_point: int = 0, clamp_lo: int | None = None,
            clamp_hi: int | None = None, *, acc_bits: int | None = None) -> np.ndarray:
    """Output codes of accumulator values ``acc`` (n, cols); bias/multiplier/shift broadcast per column.

    ``acc_bits``: the accumulator width the bias saturates to (``None``: no saturation).
    """
    fmt = get_format(out_format)
    acc = np.asarray(acc, dtype=object)
    bias = np.asarray(bias, dtype=object)
    if acc_bits is not None:
        lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
        bias = np.array([min(max(int(b), lo), hi) for b in bias.ravel()], dtype=object).reshape(bias.shape)
    t = (acc + bias) * np.asarray(multiplier, dtype=object)
    exponent = acc_exponent - np.broadcast_to(np.asarray(shift, dtype=object), t.shape)
    if isinstance(fmt, IntFormat):
        lo, hi = int(fmt.min), int(fmt.max)
        y = round_half_even_shift(t, exponent) + zero_point
        y = np.where(np.asarray(nonfinite), zero_point, y)
        y = np.array([min(max(int(v), lo), hi) for v in y.ravel()], dtype=np.int64).reshape(t.shape)
        codes = (y & ((1 << fmt.bits) - 1)).astype(np.uint8 if fmt.bits <= 8 else np.uint16)
    else:
        codes = np.empty(t.shape, dtype=np.uint8 if fmt.bits <= 8 else np.uint16)
        for e in np.unique(np.asarray(exponent, dtype=np.int64)):
            sel = np.asarray(exponent, dtype=np.int64) == e
            codes[sel] = fmt.quantize_scaled(t[sel], int(e))
        sign = 1 << (fmt.bits - 1)
        codes = np.where(codes == sign, 0, codes).astype(codes.dtype)     # rounded to zero: +0, never -0
        fallback = fmt.nan_code if fmt.has_nan else 0
        codes = np.where(np.asarray(nonfinite), fallback, codes).astype(codes.dtype)
    lo = int(fmt.quantize(fmt.min)) if clamp_lo is None else clamp_lo
    hi = int(fmt.quantize(fmt.max)) if clamp_hi is None else clamp_hi
    nan = np.isnan(fmt.decode(codes))
    return np.where(nan, codes, clamp_codes(codes, fmt, lo, hi)).astype(codes.dtype)
