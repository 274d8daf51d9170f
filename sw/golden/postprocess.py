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
With a second multiplier and shift per column (STORE ``negative_param``), an element whose ``acc + B`` is
negative takes those instead: the rescale is then piecewise linear in ``acc + B``, a PRelu with one slope per
channel folded into the requantization (``M_neg * 2**-S_neg ~ slope * M * 2**-S``).
Finally, when the SETPP asks for the lookup table, ``q`` is replaced by ``table[q]`` (:func:`lookup`): the table
holds a code for every code of the format (a nonlinear activation; :mod:`sw.golden.activation` makes it).

How it is computed, exactly, on int64 arrays (:func:`scaled_product`): ``acc + B`` below ``2**62`` and ``|M| <=
2**31`` give ``t`` as two 31-bit limbs; when ``t`` needs more than 62 bits it is rounded to odd at ``2**31``
(its floor with the lowest bit set when anything was dropped). Rounding to odd keeps every comparison with a
number that is a multiple of twice its step, and such a ``t`` has 32 or more significant bits, so the midpoints
an integer or a minifloat of at most 16 bits rounds at are all such multiples wherever ``v`` can be near them
(the rounding-to-odd argument of Boldo and Melquiond); far from them the step is too small to matter. Elements
whose ``acc + B`` does not fit (``acc_bits`` above 61, as for fp8_e5m2, or an unsaturated huge bias) take the
Python-int path of :func:`rescale_exact`, element by element.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hw.spec.formats import Format, IntFormat, get_format

from .exact import max_abs

__all__ = ["rescale", "rescale_exact", "negative_sum", "round_half_even_shift", "clamp_codes", "scaled_product",
           "lookup"]

#: ``acc + B`` below this magnitude takes the int64 path; it needs two 31-bit limbs at most.
_SUM_LIMIT = 1 << 62
_LIMB = 31
#: Rounded integer results are clipped to this magnitude before the zero point: any integer format of up to
#: 16 bits saturates there whatever zero point below ``_ZERO_POINT_LIMIT`` is added.
_ROUND_LIMIT = 1 << 29
_ZERO_POINT_LIMIT = 1 << 28
#: Integers below this magnitude are exact in float64.
_FLOAT64_EXACT = 1 << 53


def round_half_even_shift(t: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``rne(t * 2**shift)`` for integer ``t`` and integer ``shift`` (element-wise, any sign), exactly, as
    Python ints."""
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


def _round_scaled(t: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``rne(t * 2**k)`` for int64 ``|t| <= 2**62 + 2**31`` and int64 ``k`` (broadcast); clipped to
    ``±_ROUND_LIMIT`` unless every ``k`` lies in -62..-1, where one floor shift with a correction is exact."""
    if k.size == 1 and -62 <= int(k.reshape(-1)[0]) <= -1:
        s = -int(k.reshape(-1)[0])
        # floor((t + 2**(s-1) - 1 + lowest kept bit) / 2**s): rounds up above half, and at half when odd
        odd = (t >> s) & 1
        odd += t
        odd += (1 << (s - 1)) - 1
        odd >>= s
        return odd
    if k.size and -62 <= k.min() and k.max() <= -1:
        s = -k
        return (t + ((np.int64(1) << (s - 1)) - 1) + ((t >> s) & 1)) >> s
    k = np.broadcast_to(k, t.shape)
    left = np.clip(t, -_ROUND_LIMIT, _ROUND_LIMIT) << np.clip(k, 0, 32)
    s = np.clip(-k, 1, 63)
    q = t >> s
    r = t & np.where(s == 63, np.int64(2 ** 63 - 1), (np.int64(1) << np.minimum(s, 62)) - 1)
    half = np.int64(1) << (s - 1)
    q = q + ((r > half) | ((r == half) & (q & 1 == 1)))
    right = np.where(k <= -64, 0, q)    # |t| < 2**63 <= 2**(-k-1): |v| < 1/2
    return np.clip(np.where(k >= 0, left, right), -_ROUND_LIMIT, _ROUND_LIMIT)


def scaled_product(a: np.ndarray, multiplier: np.ndarray, exponent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(t, k)`` int64 with ``t * 2**k`` equal to ``a * multiplier * 2**exponent``, or its round-to-odd at
    ``2**(exponent + 31)`` when the product needs more than 62 bits; ``|a| < 2**62``, ``|multiplier| <= 2**31``."""
    high, low = a >> _LIMB, a & ((1 << _LIMB) - 1)
    part = low * multiplier
    hi = high * multiplier + (part >> _LIMB)
    lo = part & ((1 << _LIMB) - 1)
    small = (hi >= -(1 << _LIMB)) & (hi < (1 << _LIMB))
    t = np.where(small, (np.where(small, hi, 0) << _LIMB) + lo, hi | (lo != 0))
    return t, exponent + np.where(small, 0, _LIMB)


@dataclass(frozen=True)
class _Columns:
    """The per-column constants of a rescale, prepared once per distinct parameter set (int64)."""

    bias: np.ndarray              # saturated; 0 where ``bias_big``
    bias_big: np.ndarray | None   # where the bias needs Python ints
    multiplier: np.ndarray
    exponent: np.ndarray          # acc_exponent - shift
    #: The multipliers shifted left to the smallest exponent of a column whose multiplier is not 0 (None: they
    #: span too much), that exponent and the largest aligned multiplier.
    aligned: np.ndarray | None
    low: int
    aligned_max: int
    multiplier_max: int


def _key(values) -> tuple:
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.shape, values.dtype.str, values.tobytes()
    return values.shape, tuple(int(v) for v in values.ravel())


def _columns(bias, multiplier, shift, acc_exponent: int, acc_bits: int | None) -> _Columns | None:
    """:class:`_Columns` of these parameters, or None if a multiplier or shift is outside what the int64
    path takes (``|M| <= 2**31``, ``|S| < 2**40``)."""
    return _prepared(_key(bias), _key(multiplier), _key(shift), acc_exponent, acc_bits)


@lru_cache(maxsize=4096)
def _prepared(bias, multiplier, shift, acc_exponent: int, acc_bits: int | None) -> _Columns | None:
    bias, multiplier, shift = (_array(k) for k in (bias, multiplier, shift))
    fitted = [_fit(v, limit) for v, limit in ((_saturated_bias(bias, acc_bits), _SUM_LIMIT >> 1),
                                              (multiplier, (1 << 31) + 1), (shift, 1 << 40))]
    if any(f is None for f in fitted) or any(f[1] is not None for f in fitted[1:]):
        return None
    (b64, b_big), (m64, _), (s64, _) = fitted
    m64, exponent = np.broadcast_arrays(m64.astype(np.int64), acc_exponent - s64.astype(np.int64))
    live = exponent[m64 != 0]
    low = int(live.min()) if live.size else 0
    spread = int(live.max()) - low if live.size else 0
    m_max = max_abs(m64)
    aligned = None
    if m_max << spread < _SUM_LIMIT:
        aligned = np.where(m64 != 0, m64 << np.maximum(exponent - low, 0), 0)
    return _Columns(b64.astype(np.int64), b_big, m64, exponent, aligned, low, m_max << spread, m_max)


def _array(key: tuple) -> np.ndarray:
    shape, *data = key
    if len(data) == 2:
        return np.frombuffer(data[1], dtype=np.dtype(data[0])).reshape(shape)
    return np.array(data[0], dtype=object).reshape(shape)


def _product(a: np.ndarray, c: _Columns, a_max: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(t, k)`` with ``t * 2**k == a * multiplier * 2**exponent`` (or its round to odd, see
    :func:`scaled_product`): one exponent for all when the aligned multipliers keep the product in 62 bits
    (columns with multiplier 0 give 0 at any exponent); else one per column; else limbs (one per element).
    ``a_max`` bounds ``|a|`` (None, or too loose for one exponent: measured)."""
    if a_max is None or c.aligned is None or a_max * c.aligned_max >= _SUM_LIMIT:
        a_max = max_abs(a)
    if c.aligned is not None and a_max * c.aligned_max < _SUM_LIMIT:
        return np.multiply(a, c.aligned, out=a if a.shape == np.broadcast(a, c.aligned).shape else None), \
            np.array(c.low)
    if a_max * c.multiplier_max < _SUM_LIMIT:
        return a * c.multiplier, c.exponent
    return scaled_product(a, c.multiplier, c.exponent)


@lru_cache(maxsize=1024)
def _int_bounds(fmt: IntFormat, clamp_lo: int | None, clamp_hi: int | None) -> tuple[int, int, int, int]:
    """(format min, format max, value of clamp_lo, value of clamp_hi) as ints."""
    lo, hi = int(fmt.min), int(fmt.max)
    lo_v = lo if clamp_lo is None else int(fmt.decode(np.array([clamp_lo]))[0])
    hi_v = hi if clamp_hi is None else int(fmt.decode(np.array([clamp_hi]))[0])
    return lo, hi, lo_v, hi_v


def clamp_codes(codes: np.ndarray, fmt: Format, lo: int, hi: int) -> np.ndarray:
    """Clamp codes by value: a value at or above that of code ``hi`` gives ``hi``, else one at or below that of
    ``lo`` gives ``lo``. "At" matters for zeros: a ReLU (``lo`` = +0) turns -0 into +0, which keeps the clamped
    output monotone in the accumulator (max pooling before or after post-processing is then the same)."""
    values = fmt.decode(codes)
    lo_v, hi_v = fmt.decode(np.array([lo, hi]))
    out = np.where(values <= lo_v, lo, codes)
    return np.where(values >= hi_v, hi, out).astype(codes.dtype)


def _code_dtype(fmt: Format):
    return np.uint8 if fmt.bits <= 8 else np.uint16


def _finish(codes: np.ndarray, fmt: Format, clamp_lo: int | None, clamp_hi: int | None) -> np.ndarray:
    """The clamp by value (NaN codes pass)."""
    lo = int(fmt.quantize(fmt.min)) if clamp_lo is None else clamp_lo
    hi = int(fmt.quantize(fmt.max)) if clamp_hi is None else clamp_hi
    nan = np.isnan(fmt.decode(codes))
    return np.where(nan, codes, clamp_codes(codes, fmt, lo, hi)).astype(codes.dtype)


def _saturated_bias(bias, acc_bits: int | None) -> np.ndarray:
    bias = np.asarray(bias)
    if acc_bits is None:
        return bias
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    if bias.dtype.kind in "iu" and acc_bits <= 64:
        return np.clip(bias.astype(np.int64), lo, hi)
    return np.array([min(max(int(b), lo), hi) for b in bias.ravel()], dtype=object).reshape(bias.shape)


def _fit(values, limit: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``values`` (integers, or Python ints) as int64 with 0 where a magnitude reaches ``limit``, and the mask
    of those (None when there are none); None if ``values`` are not an integer or object array."""
    values = np.asarray(values)
    if values.dtype == np.uint64:
        values = values.astype(object)
    if values.dtype.kind not in "iuO":
        return None
    if values.dtype.kind in "iu" and (values.dtype.itemsize <= 4 and limit >= 1 << 32 or values.size == 0
                                      or (values.max() < limit and values.min() > -limit)):
        return values, None
    big = (values >= limit) | (values <= -limit)
    if not big.any():
        return values.astype(np.int64), None
    return np.where(big, 0, values).astype(np.int64), big


def negative_sum(acc: np.ndarray, bias, acc_bits: int | None) -> np.ndarray:
    """Where ``acc + B`` is negative (``B`` saturated to ``acc_bits``): the elements a negative-side multiplier
    and shift apply to (STORE ``negative_param``), exactly."""
    b = _saturated_bias(bias, acc_bits)
    fa, fb = _fit(acc, _SUM_LIMIT >> 1), _fit(b, _SUM_LIMIT >> 1)
    if fa is not None and fb is not None and fa[1] is None and fb[1] is None:
        return np.asarray(fa[0], dtype=np.int64) + np.asarray(fb[0], dtype=np.int64) < 0
    total = np.asarray(acc, dtype=object) + np.asarray(b, dtype=object)
    return np.asarray(total < 0, dtype=bool)


def rescale(acc: np.ndarray, nonfinite: np.ndarray, acc_exponent: int, bias, multiplier, shift,
            out_format: Format | str, zero_point: int = 0, clamp_lo: int | None = None,
            clamp_hi: int | None = None, *, acc_bits: int | None = None, wrapped: bool = False,
            multiplier_neg=None, shift_neg=None) -> np.ndarray:
    """Output codes of accumulator values ``acc`` (..., cols); bias/multiplier/shift broadcast per column.

    ``acc_bits``: the accumulator width the bias saturates to (``None``: no saturation). ``wrapped``: the caller
    guarantees ``acc`` holds ``acc_bits``-wide two's-complement values (the emulator's accumulators), which
    bounds the products without measuring them. ``multiplier_neg``, ``shift_neg`` (per column, both or neither):
    an element whose ``acc + B`` is negative is rescaled with them instead (STORE ``negative_param``: a PRelu
    with one slope per channel); everything else (bias, zero point, clamps) is shared.
    """
    if (multiplier_neg is None) != (shift_neg is None):
        raise ValueError("multiplier_neg and shift_neg go together: give both or neither")
    if multiplier_neg is not None:
        args = (out_format, zero_point, clamp_lo, clamp_hi)
        kw = {"acc_bits": acc_bits, "wrapped": wrapped}
        positive = rescale(acc, nonfinite, acc_exponent, bias, multiplier, shift, *args, **kw)
        negative = rescale(acc, nonfinite, acc_exponent, bias, multiplier_neg, shift_neg, *args, **kw)
        return np.where(negative_sum(np.asarray(acc), bias, acc_bits), negative, positive).astype(positive.dtype)
    fmt = get_format(out_format)
    acc = np.asarray(acc)
    nonfinite = np.asarray(nonfinite, dtype=bool)
    columns = _columns(bias, multiplier, shift, acc_exponent, acc_bits)
    fitted = _fit(acc, _SUM_LIMIT >> 1)
    if columns is None or fitted is None or abs(int(zero_point)) >= _ZERO_POINT_LIMIT:
        return rescale_exact(acc, nonfinite, acc_exponent, _saturated_bias(bias, acc_bits), multiplier, shift,
                             fmt, zero_point, clamp_lo, clamp_hi)
    a64, big = fitted
    if isinstance(fmt, IntFormat) and big is None and columns.bias_big is None:
        codes = _int_codes_float64(a64, columns, nonfinite, fmt, int(zero_point), clamp_lo, clamp_hi)
        if codes is not None:
            return codes
    bound = (1 << (acc_bits - 1)) + max_abs(columns.bias) if wrapped and acc_bits and big is None else None
    t, k = _product(a64 + columns.bias, columns, bound)
    clamps = (clamp_lo, clamp_hi)
    if isinstance(fmt, IntFormat):
        codes = _int_codes(t, k, nonfinite, fmt, int(zero_point), *clamps)
    else:
        codes = _finish(_minifloat_codes(t, k, nonfinite, fmt), fmt, *clamps)
    if columns.bias_big is not None:
        big = columns.bias_big if big is None else big | columns.bias_big
    if big is None:
        return codes
    big = np.broadcast_to(big, codes.shape)
    codes = np.array(codes, copy=True)
    full = [np.broadcast_to(np.asarray(v, dtype=object), codes.shape)[big]
            for v in (acc, _saturated_bias(bias, acc_bits), multiplier, shift)]
    codes[big] = rescale_exact(full[0], np.broadcast_to(nonfinite, codes.shape)[big], acc_exponent, *full[1:],
                               fmt, zero_point, clamp_lo, clamp_hi)
    return codes


def _int_codes_float64(a: np.ndarray, c: _Columns, nonfinite: np.ndarray, fmt: IntFormat, zero_point: int,
                       clamp_lo: int | None, clamp_hi: int | None) -> np.ndarray | None:
    """:func:`_int_codes` of ``(a + B) * M * 2**(acc_exponent - S)`` on float64, or None where that is not exact.

    Exact when every ``|(a + B) * aligned| * 2**max(low, 0)`` is below 2**53: the sum, the product by the
    aligned multiplier and the scaling by a power of two are then exact integers or dyadic rationals, and
    ``np.rint`` rounds half to even, as the engine does. Half the memory passes of the int64 path."""
    if c.aligned is None or not -1000 <= c.low <= 1000 or a.size == 0:
        return None
    bound = (max_abs(a) + max_abs(c.bias)) * c.aligned_max << max(c.low, 0)
    if bound >= _FLOAT64_EXACT:
        return None
    y = np.add(a, c.bias, dtype=np.float64)
    y = y * (c.aligned.astype(np.float64) * 2.0 ** c.low)
    np.rint(y, out=y)
    y += zero_point
    if nonfinite.any():
        y = np.where(nonfinite, zero_point, y)
    lo, hi, lo_v, hi_v = _int_bounds(fmt, clamp_lo, clamp_hi)
    if lo_v <= hi_v:                                  # both bounds lie in the format's range
        np.clip(y, lo_v, hi_v, out=y)
    else:
        np.clip(y, lo, hi, out=y)
        y = np.where(y >= hi_v, hi_v, np.where(y <= lo_v, lo_v, y))
    if fmt.bits in (8, 16):                           # two's complement in the same width: the code
        return y.astype(f"{'i' if fmt.signed else 'u'}{fmt.bits // 8}").view(_code_dtype(fmt))
    return (y.astype(np.int64) & ((1 << fmt.bits) - 1)).astype(_code_dtype(fmt))


def _int_codes(t: np.ndarray, k: np.ndarray, nonfinite: np.ndarray, fmt: IntFormat, zero_point: int,
               clamp_lo: int | None, clamp_hi: int | None) -> np.ndarray:
    """Integer output codes of ``t * 2**k``, zero point added, saturated, clamped by value."""
    y = _round_scaled(t, k)
    y += zero_point
    if nonfinite.any():
        y = np.where(nonfinite, zero_point, y)
    lo, hi, lo_v, hi_v = _int_bounds(fmt, clamp_lo, clamp_hi)
    if lo_v <= hi_v:                                  # both bounds lie in the format's range
        np.maximum(y, lo_v, out=y)                    # (np.clip is slow on integers)
        np.minimum(y, hi_v, out=y)
    else:
        y = np.clip(y, lo, hi)
        y = np.where(y >= hi_v, hi_v, np.where(y <= lo_v, lo_v, y))
    if fmt.bits in (8, 16):                           # two's complement in the same width: the code
        return y.astype(f"{'i' if fmt.signed else 'u'}{fmt.bits // 8}").view(_code_dtype(fmt))
    return (y & ((1 << fmt.bits) - 1)).astype(_code_dtype(fmt))


def _minifloat_codes(t: np.ndarray, k: np.ndarray, nonfinite: np.ndarray, fmt: Format) -> np.ndarray:
    """Minifloat codes nearest to ``t * 2**k`` (before the clamp by value); exponents per column or element."""
    codes = np.empty(t.shape, dtype=_code_dtype(fmt))
    if k.size == 1 or k.shape[:-1] == (1,) * (k.ndim - 1) and k.ndim <= t.ndim:
        per_column = np.broadcast_to(k.reshape(-1), t.shape[-1:])
        for e in np.unique(per_column):
            cols = np.flatnonzero(per_column == e)
            if cols.size == per_column.size:
                codes[...] = fmt.quantize_scaled(t, int(e))
            else:
                codes[..., cols] = fmt.quantize_scaled(t[..., cols], int(e))
    else:
        k = np.broadcast_to(k, t.shape)
        for e in np.unique(k):
            sel = k == e
            codes[sel] = fmt.quantize_scaled(t[sel], int(e))
    sign = 1 << (fmt.bits - 1)
    codes = np.where(codes == sign, 0, codes).astype(codes.dtype)       # rounded to zero: +0, never -0
    if nonfinite.any():
        codes = np.where(nonfinite, fmt.nan_code if fmt.has_nan else 0, codes).astype(codes.dtype)
    return codes


def rescale_exact(acc, nonfinite, acc_exponent: int, bias, multiplier, shift, out_format: Format | str,
                  zero_point: int = 0, clamp_lo: int | None = None, clamp_hi: int | None = None) -> np.ndarray:
    """:func:`rescale` on Python ints, element by element: for values no int64 path holds (the bias is taken
    as given: saturate it first)."""
    fmt = get_format(out_format)
    acc = np.asarray(acc, dtype=object)
    t = (acc + np.asarray(bias, dtype=object)) * np.asarray(multiplier, dtype=object)
    exponent = acc_exponent - np.broadcast_to(np.asarray(shift, dtype=object), t.shape)
    nonfinite = np.broadcast_to(np.asarray(nonfinite, dtype=bool), t.shape)
    if isinstance(fmt, IntFormat):
        lo, hi = int(fmt.min), int(fmt.max)
        y = round_half_even_shift(t, exponent) + zero_point
        y = np.where(nonfinite, zero_point, y)
        y = np.array([min(max(int(v), lo), hi) for v in y.ravel()], dtype=np.int64).reshape(t.shape)
        codes = (y & ((1 << fmt.bits) - 1)).astype(_code_dtype(fmt))
    else:
        codes = np.empty(t.shape, dtype=_code_dtype(fmt))
        exponent = np.asarray(exponent, dtype=np.int64)
        for e in np.unique(exponent):
            sel = exponent == e
            codes[sel] = fmt.quantize_scaled(np.asarray(t[sel], dtype=object), int(e))
        sign = 1 << (fmt.bits - 1)
        codes = np.where(codes == sign, 0, codes).astype(codes.dtype)     # rounded to zero: +0, never -0
        codes = np.where(nonfinite, fmt.nan_code if fmt.has_nan else 0, codes).astype(codes.dtype)
    return _finish(codes, fmt, clamp_lo, clamp_hi)


def lookup(codes: np.ndarray, table) -> np.ndarray:
    """``table[q]`` for every code ``q``: the post-processing unit's lookup stage (SETPP ``lut``). ``table`` holds
    one output code per code of the activation format (``2**bits`` entries)."""
    table = np.asarray(table)
    codes = np.asarray(codes)
    if table.ndim != 1 or table.dtype.kind not in "iu":
        raise ValueError(f"A lookup table is a 1-D array of integer codes, not {table.shape} {table.dtype}")
    if codes.size and int(codes.max()) >= table.size:
        raise ValueError(f"Code {int(codes.max())} has no entry in a table of {table.size}")
    return table.astype(codes.dtype if codes.dtype.kind == "u" else np.int64)[codes]
