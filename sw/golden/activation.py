"""Activation tables: what the post-processing unit's lookup stage holds for a nonlinear activation.

A layer with an activation ``f`` (Sigmoid, HardSwish, ...) rescales its accumulators to codes of the
*pre-activation* encoding (its own scale and zero point, clamps included); the lookup stage then replaces each
code ``c`` by ``table[c]``, a code of the layer's output encoding:

    table[c] = quantize_out(f(dequantize_pre(c)))

with ``dequantize_pre(c) = s_pre * (value(c) - z_pre)`` and ``quantize_out`` the output encoding's quantizer
(integers: round half to even, add the zero point, saturate; minifloats: the format's own round-to-nearest-even,
saturating, never -0), then clamped to ``[lo, hi]`` codes by value (a narrower integer grid or a clip after the
activation). It is computed once, in float64, by the quantizer and stored with the layer; the golden model, the
emulator and the RTL apply that table, so they agree bit for bit whatever ``f`` is. Codes that stand for NaN
map to the output's NaN code (or its zero where the format has none).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from hw.spec.formats import get_format
from sw.ir import QuantTensor

from .postprocess import clamp_codes

__all__ = ["activation_table", "table_monotone"]


def activation_table(function: Callable[[np.ndarray], np.ndarray], pre: QuantTensor, out: QuantTensor,
                     lo: int | None = None, hi: int | None = None) -> np.ndarray:
    """``table[c] = quantize_out(f(dequantize_pre(c)))`` for every code ``c`` of the (shared) activation format,
    clamped to the codes ``lo``..``hi`` (by value) when given; int64 codes."""
    fmt = get_format(pre.format)
    if get_format(out.format) != fmt:
        raise ValueError(f"pre-activation ({pre.format}) and output ({out.format}) encodings must share one format")
    codes = np.arange(1 << fmt.bits)
    x = pre.dequantize(codes).astype(np.float64)
    finite = np.isfinite(x)
    with np.errstate(all="ignore"):
        y = np.asarray(function(np.where(np.isnan(x), 0.0, x)), dtype=np.float64)
    if y.shape != x.shape:
        raise ValueError(f"the activation gives shape {y.shape} for {x.shape} inputs")
    if not np.isfinite(y[finite]).all():
        raise ValueError("the activation is not finite on the finite pre-activation values")
    table = np.asarray(out.quantize(np.nan_to_num(y, nan=0.0)), dtype=np.int64)
    if lo is not None and hi is not None:
        table = np.asarray(clamp_codes(table, fmt, int(lo), int(hi)), dtype=np.int64)
    nan = np.isnan(x)
    if nan.any():
        table[nan] = int(fmt.quantize(np.nan)) if fmt.has_nan else out.zero_code()
    return table


def table_monotone(table, fmt) -> bool:
    """Whether the table never decreases: over the codes in order of their values (NaN codes aside), the values
    of the entries do not go down. Then max pooling before the lookup equals max pooling after it."""
    fmt = get_format(fmt)
    codes = np.arange(1 << fmt.bits)
    values = fmt.decode(codes)
    keep = ~np.isnan(values)
    order = codes[keep][np.argsort(values[keep], kind="stable")]
    out = fmt.decode(np.asarray(table)[order])
    return bool(not np.isnan(out).any() and np.all(np.diff(out) >= 0))
