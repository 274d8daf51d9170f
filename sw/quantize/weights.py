"""Symmetric weight quantization: per tensor or per output channel, optionally as a sum of several tensors.

Multiple low-precision tensors (Choukroun et al. 2019): ``W ~ s * (W_1 + ... + W_T)`` with
``W_1 = Q(W / s)``, ``W_2 = Q(W / s - W_1)``, ... (each a residual). All tensors share the scale ``s`` of
their output channel, so their products land in the same accumulator with no shift (the engine has no shifter
there). On an integer grid the sum spans ``T`` times the range (two int4 tensors: -16..14), so ``s`` is chosen
for that wider grid; on a minifloat grid the residual tensors add mantissa precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibrate import (FALLBACK_SCALE, METHODS, MMSE_MAX_VALUES, Grid, lift_scale, lift_scales, mse, search_factor,
                        search_factors, sqnr_db, subsample)
from .errors import QuantizationError

__all__ = ["QuantizedWeight", "residual_round", "quantize_weight", "quantize_weight_auto", "mmse_scales"]

#: Values (factors x channels x weights) one step of the batched scale search holds at once.
_SEARCH_VALUES = 1 << 18
#: Breakpoints (channels x weights x levels) one step of the exact integer MMSE holds at once.
_EXACT_VALUES = 1 << 22


@dataclass
class QuantizedWeight:
    """Grid values of each tensor of the sum (shaped as the weight) and the scale of each output channel."""

    values: list[np.ndarray]
    scale: np.ndarray

    def dequantize(self) -> np.ndarray:
        total = np.sum(self.values, axis=0)
        return total * self.scale.reshape((-1,) + (1,) * (total.ndim - 1))


def residual_round(y: np.ndarray, grid: Grid, tensors: int) -> list[np.ndarray]:
    """``tensors`` grid-valued arrays whose sum approximates ``y``: each rounds what the previous ones missed."""
    out, rest = [], np.asarray(y, np.float64)
    for _ in range(tensors):
        v = grid.round(rest)
        out.append(v)
        rest = rest - v
    return out


def _top(grid: Grid, tensors: int) -> float:
    """Largest magnitude the sum reaches symmetrically: ``T * max`` on integers, ``max`` on minifloats."""
    return tensors * grid.hi if grid.is_int else grid.hi


def _channel_scale(w: np.ndarray, grid: Grid, method: str, tensors: int) -> float:
    amax = float(np.max(np.abs(w))) if w.size else 0.0
    if amax == 0:
        return 0.0
    top = _top(grid, tensors)
    ws = subsample(w)

    def error(s: float) -> float:
        return mse(ws, s * np.sum(residual_round(ws / s, grid, tensors), axis=0))
    # "percentile" falls back to min-max for weights
    scale = search_factor(lambda a: error(a * amax / top)) * amax / top if method == "mmse" else amax / top
    return scale if grid.is_int else lift_scale(scale, error)


def _channel_scales(w: np.ndarray, grid: Grid, method: str, tensors: int) -> np.ndarray:
    """:func:`_channel_scale` of every row of ``w`` (channels, values), the searches of all channels at once (the
    same arithmetic, element by element, as one channel at a time)."""
    if w.shape[1] > MMSE_MAX_VALUES or method != "mmse" and grid.is_int or w.shape[0] == 0:
        return np.array([_channel_scale(row, grid, method, tensors) for row in w])
    amax = np.max(np.abs(w), axis=1)
    top = _top(grid, tensors)
    live = amax > 0
    ws, amax = w[live], amax[live]

    def error(scales: np.ndarray) -> np.ndarray:        # scales (K, channels) -> mean squared errors
        out = np.empty(scales.shape)
        step = max(1, _SEARCH_VALUES // max(ws.size, 1))
        for at in range(0, scales.shape[0], step):
            s = scales[at:at + step, :, None]
            parts = residual_round(ws / s, grid, tensors)
            approx = parts[0] if tensors == 1 else np.sum(parts, axis=0)
            approx *= s
            np.subtract(ws, approx, out=approx)
            np.square(approx, out=approx)
            out[at:at + step] = np.mean(approx, axis=-1)
        return out
    scale = amax / top
    if method == "mmse":
        scale = search_factors(lambda a: error(a * amax / top), amax.size) * amax / top
    if not grid.is_int:
        scale = lift_scales(scale, error)
    full = np.zeros(w.shape[0])
    full[live] = scale
    return full


def mmse_scales(w: np.ndarray, grid: Grid) -> np.ndarray:
    """Per row of ``w`` (channels, values): the scale ``s > 0`` minimising ``||w - s * clip(rint(w / s))||^2``
    on an integer grid, exactly (0 for a row of zeros).

    Why exact rather than searched: as ``t = 1/s`` grows, a weight's code magnitude steps from ``k`` to ``k + 1``
    at ``t = (k + 1/2) / |w|`` and never moves otherwise, and the error is continuous there (both codes miss by
    ``s/2``). Between consecutive breakpoints the codes are fixed, so the error ``sum w^2 - 2 s A + s^2 B``
    (``A = sum |w| |q|``, ``B = sum q^2``) is a convex quadratic with minimum at ``A / B`` clamped to the
    interval. Sorting every breakpoint of a channel and accumulating ``A`` and ``B`` visits every interval, so
    the smallest of these minima is the global one (all channels at once, in chunks).
    """
    if not grid.is_int:
        raise QuantizationError(f"Exact MMSE scales need an integer grid, not {grid.name}")
    w = np.asarray(w, np.float64)
    levels = np.array([grid.hi, -grid.lo])            # magnitudes a positive / negative weight may reach
    top = int(levels.max())
    out = np.zeros(w.shape[0])
    rows = max(1, _EXACT_VALUES // max(w.shape[1] * top, 1))
    for at in range(0, w.shape[0], rows):
        out[at:at + rows] = _exact_rows(w[at:at + rows], levels, top)
    return out


def _exact_rows(w: np.ndarray, levels: np.ndarray, top: int) -> np.ndarray:
    a = np.abs(w)
    reach = np.where(w < 0, levels[1], levels[0])[..., None]          # each weight's largest code magnitude
    k = np.arange(top)
    real = (k < reach) & (a[..., None] > 0)
    with np.errstate(divide="ignore"):
        t = np.where(real, (k + 0.5) / a[..., None], np.inf).reshape(len(w), -1)
    d_a = np.where(real, a[..., None], 0.0).reshape(len(w), -1)
    d_b = np.where(real, 2.0 * k + 1, 0.0).reshape(len(w), -1)
    order = np.argsort(t, axis=1, kind="stable")
    t, d_a, d_b = (np.take_along_axis(v, order, axis=1) for v in (t, d_a, d_b))
    big_a, big_b = np.cumsum(d_a, axis=1), np.cumsum(d_b, axis=1)     # codes just after each breakpoint
    with np.errstate(divide="ignore", invalid="ignore"):
        s_hi = 1.0 / t                                                # interval j: s in [1/t[j+1], 1/t[j]]
        s_lo = np.concatenate([s_hi[:, 1:], np.zeros((len(w), 1))], axis=1)
        s = np.clip(big_a / big_b, s_lo, s_hi)
        s = np.where(big_b > 0, s, 0.0)
        err = -2.0 * s * big_a + s * s * big_b                        # the error less sum(w^2)
    err = np.where(np.isfinite(t) & (big_b > 0), err, np.inf)
    j = np.argmin(err, axis=1)
    best = s[np.arange(len(w)), j]
    return np.where(np.isfinite(err[np.arange(len(w)), j]) & (err[np.arange(len(w)), j] < 0), best, 0.0)


def quantize_weight(w: np.ndarray, grid: Grid, method: str = "minmax", per_channel: bool = False,
                    tensors: int = 1) -> QuantizedWeight:
    """Symmetric quantization of a weight (output channels first) as a sum of ``tensors`` tensors.

    ``method``: "minmax" (scale from the largest magnitude), "mmse" (scale by minimum squared error: exact on
    integer grids with one tensor (:func:`mmse_scales`), searched otherwise);
    "percentile" falls back to min-max for weights (every weight is used, a clipped outlier is an error in
    every output). A channel of zeros gets the largest scale of the others (its bias stays representable).
    """
    if method not in METHODS:
        raise QuantizationError(f"Unknown calibration method {method!r}: use one of {', '.join(METHODS)}")
    if grid.lo >= 0:
        raise QuantizationError(f"Weights are symmetric: the weight format {grid.format.name} must be signed "
                                "(intN or a minifloat)")
    w = np.asarray(w, np.float64)
    if not np.isfinite(w).all():
        raise QuantizationError("The float weights contain NaN or Inf")
    if not isinstance(tensors, int) or tensors < 1:
        raise QuantizationError(f"The number of weight tensors must be a positive integer, not {tensors!r}")
    cout = w.shape[0]
    if method == "mmse" and grid.is_int and tensors == 1:
        rows = w.reshape(cout, -1) if per_channel else w.reshape(1, -1)
        scale = np.broadcast_to(mmse_scales(rows, grid), (cout,)).copy()
    elif per_channel:
        scale = _channel_scales(w.reshape(cout, -1), grid, method, tensors)
    else:
        scale = np.full(cout, _channel_scale(w, grid, method, tensors))
    if (scale == 0).any():
        scale[scale == 0] = scale.max() if scale.max() > 0 else FALLBACK_SCALE
    y = w / scale.reshape((-1,) + (1,) * (w.ndim - 1))
    return QuantizedWeight(residual_round(y, grid, tensors), scale)


def quantize_weight_auto(w: np.ndarray, grid: Grid, method: str, per_channel: bool, multi_tensor: bool,
                         min_sqnr_db: float, max_tensors: int) -> QuantizedWeight:
    """One tensor, or (``multi_tensor``) the fewest tensors up to ``max_tensors`` that reach ``min_sqnr_db``.

    Adding tensors stops early when the SQNR reaches the target; the result with the best SQNR is kept.
    """
    best = quantize_weight(w, grid, method, per_channel, 1)
    if not multi_tensor:
        return best
    best_db = sqnr_db(w, best.dequantize())
    for t in range(2, max_tensors + 1):
        if best_db >= min_sqnr_db:
            break
        q = quantize_weight(w, grid, method, per_channel, t)
        db = sqnr_db(w, q.dequantize())
        if db > best_db:
            best, best_db = q, db
    return best
