"""The exact quantized meaning of every layer of a :class:`sw.ir.QuantizedNetwork`, batched.

Written from the format definitions alone (see the module docstring of :mod:`sw.ir`), independent of any
tiling or hardware: every accumulating layer returns an exact :class:`~sw.golden.gemm.Accumulation` in
units of ``2 ** e`` with ``e = product_of(acts, weights).min_exponent``, and :func:`postprocess` takes it
through :func:`sw.golden.postprocess.rescale` per output channel. Arrays carry the batch first: feature maps
are ``(N, C, H, W)``, vectors ``(N, F)``.

Sums use int64 numpy whenever they provably fit (:func:`sw.golden.gemm.operand_dtype` decides for products,
which run on BLAS in float32/float64 when that is exact, see :mod:`sw.golden.exact`; the pooling and element-wise
sums decide here from the format ranges), Python ints otherwise, so the result never depends on float rounding.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from hw.spec.formats import Format, get_format, product_of

from .gemm import Accumulation, decode, has_specials, operand_dtype, product_sum
from .postprocess import lookup, rescale

if TYPE_CHECKING:
    from sw.ir import QuantizedNetwork, QuantLayer

__all__ = ["LayerError", "conv2d", "linear", "window_sum", "global_sum", "elementwise_sum", "elementwise_product",
           "concat_values",
           "maxpool", "postprocess", "run_layer"]


#: Largest im2col matrix conv2d builds at once (it goes through the batch in slices below this).
_IM2COL_BYTES = 64 << 20


class LayerError(ValueError):
    """A layer the golden model cannot evaluate as given (bad shapes, attributes or parameters)."""


# --- geometry ----------------------------------------------------------------------------------------------

def _pair(name: str, value, default: tuple[int, int] | None, minimum: int) -> tuple[int, int]:
    if value is None:
        if default is None:
            raise LayerError(f"Missing attribute {name!r}: give it as a pair of integers (h, w)")
        return default
    v = tuple(int(x) for x in np.ravel(value))
    if len(v) != 2 or any(x < minimum for x in v):
        raise LayerError(f"Attribute {name!r} must be two integers >= {minimum} (h, w), not {value!r}")
    return v


def _padding(value) -> tuple[int, int, int, int]:
    if value is None:
        return (0, 0, 0, 0)
    v = tuple(int(x) for x in np.ravel(value))
    if len(v) != 4 or any(x < 0 for x in v):
        raise LayerError(f"Attribute 'padding' must be four integers >= 0 (top, left, bottom, right), "
                         f"not {value!r}")
    return v


def _feature_map(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise LayerError(f"{what} needs feature-map codes shaped (N, C, H, W), not {x.shape}")
    if x.dtype.kind not in "iu":
        raise LayerError(f"{what} needs integer codes, not {x.dtype} values (quantize them first)")
    return x


def _padded(x: np.ndarray, padding, fill) -> np.ndarray:
    (pt, pl, pb, pr) = padding
    n, c, h, w = x.shape
    xp = np.full((n, c, h + pt + pb, w + pl + pr), fill, dtype=x.dtype)
    xp[:, :, pt:pt + h, pl:pl + w] = x
    return xp


def _window_view(xp: np.ndarray, kernel, stride, dilation, unpadded: tuple[int, int]) -> np.ndarray:
    """Every window of the padded map ``xp`` (N, C, Hp, Wp) as a view shaped (N, C, Ho, Wo, kh, kw)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    hp, wp = xp.shape[2:]
    if hp < span_h or wp < span_w:
        raise LayerError(f"Kernel {kernel} with dilation {dilation} spans {span_h}x{span_w}, larger than the "
                         f"padded {unpadded[0]}x{unpadded[1]} map ({hp}x{wp}): no output; use a smaller kernel "
                         f"or more padding")
    view = np.lib.stride_tricks.sliding_window_view(xp, (span_h, span_w), axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw]


def _windows(x: np.ndarray, kernel, stride, padding, dilation, fill) -> np.ndarray:
    """Every window of ``x`` (N, C, H, W) padded with ``fill``: shape (N, C, kh, kw, Ho, Wo), a view."""
    return _window_view(_padded(x, padding, fill), kernel, stride, dilation, x.shape[2:]).transpose(0, 1, 4, 5, 2, 3)


def _in_code_range(fmt: Format, code: int, what: str) -> int:
    code = int(code)
    if not 0 <= code < 1 << fmt.bits:
        raise LayerError(f"{what} {code} is not a code of {fmt.name} (0..{(1 << fmt.bits) - 1})")
    return code


# --- values in accumulator units ---------------------------------------------------------------------------

def _units(codes: np.ndarray, act: Format, weight: Format, terms: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``value(codes) / 2**e`` as integers (int64 if a sum of ``terms`` of them fits, else Python ints),
    finiteness, and ``e``."""
    e = product_of(act, weight).min_exponent
    if act.lsb_exponent < e:                 # e = act.lsb + weight.lsb: a weight step above 1
        raise LayerError(f"Weight format {weight.name} has a least significant bit of 2**{weight.lsb_exponent} "
                         f"> 1, so {act.name} values are not whole accumulator units; use a weight format "
                         f"whose smallest step is at most 1")
    value, finite = _units_at(codes, act, e, terms)
    return value, finite, e


def _units_at(codes: np.ndarray, fmt: Format, e: int, terms: int) -> tuple[np.ndarray, np.ndarray]:
    """``value(codes) / 2**e`` as integers (int64 if a sum of ``terms`` of them fits, else Python ints) and
    finiteness; ``2**e`` at most ``fmt``'s least significant bit."""
    up = fmt.lsb_exponent - e
    if up < 0:
        raise LayerError(f"{fmt.name} values are not whole units of 2**{e}")
    sig, shift, finite = fmt.exact(codes)
    bound = max(abs(v) for v in fmt.fixed_range) << up
    if bound * max(terms, 1) < 1 << 62:
        value = (sig << shift) << up
    else:
        value = (sig.astype(object) << shift.astype(object)) << up
    return np.where(finite, value, 0), finite


def _sum_windows(values: np.ndarray, finite: np.ndarray, kernel, stride, padding, dilation) -> tuple:
    wv = _windows(values, kernel, stride, padding, dilation, 0)
    wf = _windows(finite, kernel, stride, padding, dilation, True)
    return wv.sum(axis=(2, 3)), ~wf.all(axis=(2, 3))


# --- accumulating layers -----------------------------------------------------------------------------------

def conv2d(x, weights, attrs: dict, pad_code: int, act_format: Format | str,
           weight_format: Format | str) -> Accumulation:
    """Exact convolution sum (N, Cout, Ho, Wo) of activation codes ``x`` (N, C, H, W) with every weight tensor
    of ``weights`` (each (Cout, C/groups, kh, kw)) summed into the same accumulator.

    ``attrs``: ``kernel``, ``stride``, ``padding`` (top, left, bottom, right), ``dilation``, ``groups`` (missing
    ones take the ONNX defaults: the weights' kernel, 1, none, 1, 1); positions outside the map hold ``pad_code``.
    Codes are decoded once, then im2col per group (channels last, a slice of the batch at a time) and one exact
    product with the sum of the weight tensors (:func:`sw.golden.gemm.product_sum`).
    """
    act, wf = get_format(act_format), get_format(weight_format)
    x = _feature_map(x, "conv")
    weights = [np.asarray(w) for w in weights]
    if not weights:
        raise LayerError("conv needs at least one weight tensor (Cout, C/groups, kh, kw)")
    shape = weights[0].shape
    if any(w.ndim != 4 or w.shape != shape for w in weights):
        raise LayerError(f"conv weight tensors must all be shaped (Cout, C/groups, kh, kw) alike, not "
                         f"{[w.shape for w in weights]}")
    cout, cin_g, kh, kw = shape
    kernel = _pair("kernel", attrs.get("kernel"), (kh, kw), 1)
    if kernel != (kh, kw):
        raise LayerError(f"conv attribute kernel {kernel} differs from the weights' {(kh, kw)}")
    stride = _pair("stride", attrs.get("stride"), (1, 1), 1)
    dilation = _pair("dilation", attrs.get("dilation"), (1, 1), 1)
    padding = _padding(attrs.get("padding"))
    groups = int(attrs.get("groups", 1))
    n, c = x.shape[:2]
    if groups < 1 or c % groups or cout % groups or c // groups != cin_g:
        raise LayerError(f"conv with groups={groups} on {c} input channels needs weights (Cout, {c}/groups, kh, "
                         f"kw) with Cout divisible by groups, not {shape}")
    pad_code = _in_code_range(act, pad_code, "conv pad code")
    dtype = operand_dtype(act, wf, cin_g * kh * kw * len(weights))
    cout_g = cout // groups
    # Products are summed over (kh, kw, C/groups), channels innermost: exact sums do not depend on the order,
    # and channels-last windows copy in runs of channels.
    w, w_ok = _summed_weights([t.transpose(0, 2, 3, 1) for t in weights], wf, dtype)   # (Cout, kh*kw*C/groups)
    w = w.reshape(groups, cout_g, -1).transpose(0, 2, 1)
    w_ok = None if w_ok is None else w_ok.reshape(groups, cout_g, -1).transpose(0, 2, 1)
    values, oks = decode(act, x, dtype)
    pad_value, pad_ok = decode(act, np.array(pad_code), dtype)
    view = _channels_last_windows(values, padding, pad_value, kernel, stride, dilation)
    oks = _channels_last_windows(oks, padding, pad_ok, kernel, stride, dilation) if has_specials(act) else None
    ho, wo = view.shape[1:3]
    step = max(1, _IM2COL_BYTES // max(1, ho * wo * c * kh * kw * np.dtype(dtype).itemsize))
    parts = []
    for at in range(0, n, step):
        cols = _im2col(view[at:at + step], groups)                      # (groups, n*Ho*Wo, kh*kw*C/groups)
        cols_ok = None if oks is None else _im2col(oks[at:at + step], groups)
        r = product_sum(cols, cols_ok, w, w_ok, act, wf, w_terms=len(weights))
        m = min(step, n - at)
        parts.append(tuple(a.reshape(groups, m, ho, wo, cout_g).transpose(1, 0, 4, 2, 3).reshape(m, cout, ho, wo)
                           for a in (r.value, r.nonfinite)))
    value = np.concatenate([p[0] for p in parts]) if len(parts) != 1 else np.ascontiguousarray(parts[0][0])
    nf = np.concatenate([p[1] for p in parts]) if len(parts) != 1 else np.ascontiguousarray(parts[0][1])
    return Accumulation(value, product_of(act, wf).min_exponent, nf)


def _channels_last_windows(x: np.ndarray, padding, fill, kernel, stride, dilation) -> np.ndarray:
    """Every window of ``x`` (N, C, H, W) padded with ``fill``, channels last: a view (N, Ho, Wo, kh, kw, C)."""
    xp = np.ascontiguousarray(_padded(x, padding, fill).transpose(0, 2, 3, 1))          # (N, Hp, Wp, C)
    view = _window_view(xp.transpose(0, 3, 1, 2), kernel, stride, dilation, x.shape[2:])  # (N, C, Ho, Wo, kh, kw)
    return view.transpose(0, 2, 3, 4, 5, 1)


def _im2col(view: np.ndarray, groups: int) -> np.ndarray:
    """Windows (N, Ho, Wo, kh, kw, C) as matrices (groups, N*Ho*Wo, kh*kw*C/groups), one copy."""
    n, ho, wo, kh, kw, c = view.shape
    grouped = view.reshape(n, ho, wo, kh, kw, groups, c // groups).transpose(5, 0, 1, 2, 3, 4, 6)
    return grouped.reshape(groups, n * ho * wo, kh * kw * (c // groups))


def _summed_weights(weights: list[np.ndarray], wf: Format, dtype) -> tuple[np.ndarray, np.ndarray | None]:
    """The exact sum of every weight tensor's values, flattened to (rows, -1), and which rows x columns are
    finite in all of them (None for formats without NaN/Inf). Sums of products with each tensor equal products
    with their sum: all exact integers."""
    total, finite = None, None
    for t in weights:
        v, ok = decode(wf, t, dtype)
        total = v if total is None else total + v
        finite = ok if finite is None else finite & ok
    rows = weights[0].shape[0]
    return total.reshape(rows, -1), finite.reshape(rows, -1) if has_specials(wf) else None


def linear(x, weights, act_format: Format | str, weight_format: Format | str) -> Accumulation:
    """Exact ``sum_t W_t @ x`` (N, Nout) of activation codes ``x`` (N, K) and weight tensors (Nout, K)."""
    x = np.asarray(x)
    weights = [np.asarray(w) for w in weights]
    if x.ndim != 2:
        raise LayerError(f"linear needs activation codes shaped (N, K), not {x.shape} (flatten first)")
    if not weights or any(w.ndim != 2 or w.shape != weights[0].shape or w.shape[1] != x.shape[1]
                          for w in weights):
        raise LayerError(f"linear with K={x.shape[1]} inputs needs weight tensors shaped alike (Nout, "
                         f"{x.shape[1]}), not {[w.shape for w in weights]}")
    act, wf = get_format(act_format), get_format(weight_format)
    dtype = operand_dtype(act, wf, x.shape[1] * len(weights))
    w, w_ok = _summed_weights(weights, wf, dtype)
    a, a_ok = decode(act, x, dtype)
    return product_sum(a, a_ok if has_specials(act) else None, w.T, None if w_ok is None else w_ok.T, act, wf,
                       w_terms=len(weights))


def window_sum(x, kernel, stride, padding, pad_code: int, act_format: Format | str,
               weight_format: Format | str, dilation=(1, 1)) -> Accumulation:
    """Exact sum of ``value(x)`` over each window (avgpool before its division, which the multiplier holds);
    positions outside the map hold ``pad_code``. ``stride``/``padding`` None: 1 and none, as in ONNX."""
    act, wf = get_format(act_format), get_format(weight_format)
    x = _feature_map(x, "avgpool")
    kernel = _pair("kernel", kernel, None, 1)
    stride = _pair("stride", stride, (1, 1), 1)
    dilation = _pair("dilation", dilation, (1, 1), 1)
    padding = _padding(padding)
    pad_code = _in_code_range(act, pad_code, "avgpool pad code")
    xp = np.full(x.shape[:2] + (x.shape[2] + padding[0] + padding[2], x.shape[3] + padding[1] + padding[3]),
                 pad_code, dtype=x.dtype)
    xp[:, :, padding[0]:padding[0] + x.shape[2], padding[1]:padding[1] + x.shape[3]] = x
    values, finite, e = _units(xp, act, wf, kernel[0] * kernel[1])
    value, nf = _sum_windows(values, finite, kernel, stride, (0, 0, 0, 0), dilation)
    return Accumulation(value, e, nf)


def global_sum(x, act_format: Format | str, weight_format: Format | str) -> Accumulation:
    """Exact sum of ``value(x)`` over each channel's whole map: (N, C, 1, 1) (global_avgpool)."""
    x = _feature_map(x, "global_avgpool")
    values, finite, e = _units(x, get_format(act_format), get_format(weight_format), x.shape[2] * x.shape[3])
    return Accumulation(values.sum(axis=(2, 3), keepdims=True), e, ~finite.all(axis=(2, 3), keepdims=True))


def elementwise_sum(xs, act_format: Format | str, weight_format: Format | str) -> Accumulation:
    """Exact ``sum_i value(x_i)`` of inputs of one shape (add)."""
    xs = [np.asarray(x) for x in xs]
    if not xs or any(x.shape != xs[0].shape for x in xs):
        raise LayerError(f"add needs one or more inputs of one shape, not {[x.shape for x in xs]}")
    act, wf = get_format(act_format), get_format(weight_format)
    parts = [_units(x, act, wf, len(xs)) for x in xs]
    value = parts[0][0]
    for p in parts[1:]:
        value = value + p[0]
    finite = np.logical_and.reduce([p[1] for p in parts])
    return Accumulation(value, parts[0][2], ~finite)


def elementwise_product(x, g, x_zero: int, g_zero: int, x_format: Format | str, g_format: Format | str,
                        exponent: int) -> Accumulation:
    """Exact ``(value(x) - x_zero) * (value(g) - g_zero)`` in units of ``2**(2e)``, ``e = exponent`` (mul): ``x``
    in ``x_format``, ``g`` in ``g_format`` (one format, or two in a mixed-format network), each operand in units
    of ``2**e`` (the network's accumulator unit); ``g`` the same shape as ``x`` or broadcast along axes of size 1
    (a per-channel gate (N, C, 1, 1)); the zero points are values of their formats (integers). The result is
    labelled with exponent ``e``, as the engine's post-processing reads its accumulators: the layer's multiplier
    carries the missing ``2**e``. Non-finite where either operand is."""
    x, g = np.asarray(x), np.asarray(g)
    try:
        shape = np.broadcast_shapes(x.shape, g.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise LayerError(f"mul needs a second input of the first's shape or broadcast along size-1 axes, not "
                         f"{x.shape} and {g.shape}")
    e = exponent
    terms, bound = [], 1
    for codes, zero, fmt in ((x, x_zero, get_format(x_format)), (g, g_zero, get_format(g_format))):
        value, finite = _units_at(codes, fmt, e, 2)
        if e > 0 and int(zero) % (1 << e):
            raise LayerError(f"zero point {zero} is no whole number of accumulator units 2**{e}")
        zero_units = int(zero) << -e if e <= 0 else int(zero) >> e
        terms.append((value.astype(object) - zero_units, finite))
        bound *= 2 * (max(abs(v) for v in fmt.fixed_range) << (fmt.lsb_exponent - e))
    (vx, fx), (vg, fg) = terms
    product = vx * vg
    if bound < 1 << 62:
        product = product.astype(np.int64)
    return Accumulation(np.where(fx & fg, product, 0), e, ~(fx & fg))


def concat_values(xs, act_format: Format | str, weight_format: Format | str) -> Accumulation:
    """``value(x) / 2**e`` of the input that holds each channel (concat along axis 1)."""
    xs = [np.asarray(x) for x in xs]
    if not xs or any(x.ndim < 2 or x.shape[0] != xs[0].shape[0] or x.shape[2:] != xs[0].shape[2:] for x in xs):
        raise LayerError(f"concat needs inputs that differ only in their channel count (axis 1), not "
                         f"{[x.shape for x in xs]}")
    values, finite, e = _units(np.concatenate(xs, axis=1), get_format(act_format), get_format(weight_format), 1)
    return Accumulation(values, e, ~finite)


# --- maxpool -----------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _max_order(fmt: Format) -> tuple[np.ndarray, np.ndarray]:
    """Rank of every code in IEEE ``maximum`` order (-0 < +0, NaN above everything), and the code of each rank.

    Codes of one value (only zeros of a flush-to-zero format) share a rank, represented by the lowest code;
    every NaN shares the top rank, represented by the format's canonical NaN code.
    """
    codes = np.arange(1 << fmt.bits)
    values = fmt.decode(codes)
    nan = np.isnan(values)
    key = sorted({(float(v), not np.signbit(v)) for v in values[~nan]})
    index = {k: i for i, k in enumerate(key)}
    rank = np.array([len(key) if m else index[(float(v), not np.signbit(v))] for v, m in zip(values, nan)],
                    dtype=np.int64)
    code_of = np.zeros(len(key) + 1, dtype=np.int64)
    for c in codes[::-1]:
        code_of[rank[c]] = c
    if nan.any():
        code_of[len(key)] = fmt.nan_code
    return rank, code_of


def maxpool(x, kernel, stride, padding, act_format: Format | str, dilation=(1, 1)) -> np.ndarray:
    """The code of the largest value in each window (IEEE ``maximum``: -0 < +0, any NaN gives the format's NaN
    code); padding never wins, and a window made only of padding is an error."""
    fmt = get_format(act_format)
    x = _feature_map(x, "maxpool")
    kernel = _pair("kernel", kernel, None, 1)
    stride = _pair("stride", stride, (1, 1), 1)
    dilation = _pair("dilation", dilation, (1, 1), 1)
    padding = _padding(padding)
    rank, code_of = _max_order(fmt)
    if x.size and (x.min() < 0 or x.max() >= 1 << fmt.bits):
        raise LayerError(f"maxpool input codes must lie in 0..{(1 << fmt.bits) - 1} ({fmt.name}), not "
                         f"{x.min()}..{x.max()}")
    ranks = rank[x.astype(np.int64)]
    best = _windows(ranks, kernel, stride, padding, dilation, -1).max(axis=(2, 3))
    if (best < 0).any():
        raise LayerError(f"maxpool kernel {kernel}, stride {stride}, padding {padding} makes a window that "
                         f"holds only padding; use less padding than the kernel spans")
    return code_of[best].astype(x.dtype)


# --- post-processing ---------------------------------------------------------------------------------------

def _per_channel(layer: QuantLayer, name: str, channels: int, default: int | None) -> np.ndarray:
    v = getattr(layer, name)
    if v is None:
        if default is None:
            raise LayerError(f"Layer {layer.name!r} ({layer.op}) has no {name}: the quantizer must give one "
                             f"integer per output channel ({channels})")
        return np.full(channels, default, dtype=object)
    v = np.asarray(v)
    if not (v.dtype.kind in "iu" or v.dtype == object and all(isinstance(a, (int, np.integer)) for a in v.flat)):
        raise LayerError(f"Layer {layer.name!r}: {name} must be integers, not {v.dtype} (the quantizer "
                         f"gives bias, multiplier and shift as integers)")
    v = np.array([int(a) for a in v.ravel()], dtype=object)
    if v.size == 1:
        v = np.repeat(v, channels)
    if v.size != channels:
        raise LayerError(f"Layer {layer.name!r}: {name} has {v.size} entries for {channels} output channels; "
                         f"give one per channel")
    return v


def postprocess(acc: Accumulation, layer: QuantLayer, act_format: Format | str, acc_bits: int) -> np.ndarray:
    """Output codes of an accumulating layer: :func:`sw.golden.postprocess.rescale` per output channel (axis 1)
    with the layer's bias, multiplier, shift (and negative side: a PRelu per channel), zero point and clamps, then
    its activation table if it has one
    (:func:`sw.golden.postprocess.lookup`); same shape as ``acc.value``."""
    value, nonfinite = np.asarray(acc.value), np.asarray(acc.nonfinite)
    if value.ndim < 2 or nonfinite.shape != value.shape:
        raise LayerError(f"postprocess needs accumulators shaped (N, C, ...) with a non-finite flag each, not "
                         f"{value.shape} and {nonfinite.shape}")
    channels = value.shape[1]
    bias = _per_channel(layer, "bias", channels, 0)
    multiplier = _per_channel(layer, "multiplier", channels, None)
    shift = _per_channel(layer, "shift", channels, None)
    negative = {}
    if layer.multiplier_neg is not None or layer.shift_neg is not None:      # a PRelu per channel
        negative = {"multiplier_neg": _per_channel(layer, "multiplier_neg", channels, None),
                    "shift_neg": _per_channel(layer, "shift_neg", channels, None)}
    moved = np.moveaxis(value, 1, -1)           # rescale broadcasts its parameters along the last axis
    codes = rescale(moved.reshape(-1, channels), np.moveaxis(nonfinite, 1, -1).reshape(-1, channels),
                    acc.exponent, bias, multiplier, shift, act_format, layer.zero_point, layer.clamp_lo,
                    layer.clamp_hi, acc_bits=acc_bits, **negative)
    if layer.table is not None:
        codes = lookup(codes, layer.table)
    return np.ascontiguousarray(np.moveaxis(codes.reshape(moved.shape), -1, 1))


# --- dispatch ----------------------------------------------------------------------------------------------

def run_layer(layer: QuantLayer, inputs: list[np.ndarray], net: QuantizedNetwork) -> np.ndarray:
    """Output codes of one layer of ``net`` from the codes of its inputs (batch first): its operator's meaning
    (:meth:`sw.ops.Operator.golden`), post-processed when the operator accumulates."""
    from sw.ops import OPERATORS
    op = OPERATORS.get(layer.op)
    if op is None:
        raise LayerError(f"Layer {layer.name!r} has unknown op {layer.op!r}; the IR has {', '.join(OPERATORS)}")
    if op.arity is not None and len(inputs) != op.arity:
        raise LayerError(f"Layer {layer.name!r} ({layer.op}) takes {_count(op.arity)}, not {len(inputs)}")
    out = op.golden(layer, [np.asarray(x) for x in inputs], net)
    if not op.accumulating:
        return out
    return postprocess(_in_units(out, net.acc_exponent), layer, net.act_format_of(layer.output), net.acc_bits)


def _in_units(acc: Accumulation, exponent: int) -> Accumulation:
    """``acc`` in units of ``2**exponent`` (at most its own): a mixed-format network's layers all accumulate in
    the finest unit of its format set, and its biases are in that unit. Exact: a left shift."""
    up = acc.exponent - exponent
    if up == 0:
        return acc
    if up < 0:
        raise LayerError(f"an accumulation in units of 2**{acc.exponent} cannot be expressed in the coarser "
                         f"2**{exponent}; the network's format set must hold the layer's formats")
    value = np.asarray(acc.value)
    if value.dtype != object and value.size and int(np.abs(value).max()) >= 1 << (62 - up):
        value = value.astype(object)
    return Accumulation(value << up, exponent, acc.nonfinite)


def _count(n: int) -> str:
    return "one input" if n == 1 else f"{n} inputs"
