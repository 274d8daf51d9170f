"""Symmetric weight quantization: per tensor or per output channel, optionally as a sum of several tensors.

Multiple low-precision tensors (Choukroun et al. 2019): ``W ~ s * (W_1 + ... + W_T)`` with
``W_1 = Q(W / s)``, ``W_2 = Q(W / s - W_1)``, ... (each a residual). All tensors share the scale ``s`` of
their output channel, so their products land in the same accumulator with no shift (the engine has no shifter
there). On an integer grid the sum spans ``T`` times the range (two int4 tensors: -16..14), so ``s`` is chosen
for that wider grid; on a minifloat grid the residual tensors add mantissa precision.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
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
#: Trial scales (fractions of the scale at which nothing clips) that bound the least error of the exact MMSE.
_TRIAL_FACTORS = np.geomspace(1 / 16, 1.0, 25)
#: Bisection steps of the exact MMSE's scale window (each halves its bracket).
_BISECTIONS = 40
#: Buckets of the exact MMSE's rounding bound above the scale at which nothing clips.
_BUCKETS = 48


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
    interval. Sorting the breakpoints of a channel and accumulating ``A`` and ``B`` visits every interval, so
    the smallest of these minima is the global one (all channels at once, in chunks). Only the breakpoints inside a
    window of scales that provably holds the minimum are sorted (:func:`_scale_window`): ResNet-18's weights take
    a third of the time, with the same scales.
    """
    if not grid.is_int:
        raise QuantizationError(f"Exact MMSE scales need an integer grid, not {grid.name}")
    w = np.asarray(w, np.float64)
    levels = np.array([grid.hi, -grid.lo])            # magnitudes a positive / negative weight may reach
    top = int(levels.max())
    rows = max(1, _EXACT_VALUES // max(w.shape[1] * top, 1))
    chunks = [w[at:at + rows] for at in range(0, w.shape[0], rows)]
    if len(chunks) < 2:
        return np.concatenate([_exact_rows(c, levels) for c in chunks] or [np.zeros(0)])
    # numpy's sorts, gathers and sums release the GIL: chunks on every core at once
    with ThreadPoolExecutor(min(len(chunks), os.cpu_count() or 1)) as pool:
        return np.concatenate(list(pool.map(lambda c: _exact_rows(c, levels), chunks)))


def _exact_rows(w: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """:func:`mmse_scales` of the rows of one chunk: the quadratic minima of the intervals inside each row's
    :func:`_scale_window`, the codes at the window's start counted directly and the breakpoints inside it sorted."""
    a = np.abs(w)
    reach = np.where(w < 0, levels[1], levels[0]).astype(np.float64)
    out = np.zeros(len(w))
    live = a.max(axis=1) > 0
    if not live.any():
        return out
    a, reach = a[live], reach[live]
    s_lo, s_hi = _scale_window(a, reach)
    t_lo = 1.0 / s_hi
    with np.errstate(divide="ignore"):
        t_hi = 1.0 / s_lo
    q0 = np.minimum(reach, np.floor(t_lo[:, None] * a + 0.5))              # codes at the window's start
    with np.errstate(invalid="ignore"):
        last = np.where(a > 0, np.floor(t_hi[:, None] * a - 0.5), -1.0)    # the last breakpoint inside it
    last = np.minimum(reach - 1, last)
    t, d_a, d_b = _sorted_breakpoints(a, q0, last.astype(np.int64), t_lo, np.sum(a * q0, axis=1),
                                      np.sum(q0 * q0, axis=1))
    big_a, big_b = np.cumsum(d_a, axis=1), np.cumsum(d_b, axis=1)     # codes just after each breakpoint
    with np.errstate(divide="ignore", invalid="ignore"):
        s_top = 1.0 / t                                               # interval j: s in [1/t[j+1], 1/t[j]]
        s_bottom = np.maximum(np.concatenate([s_top[:, 1:], np.zeros((len(t), 1))], axis=1), s_lo[:, None])
        s = np.clip(big_a / big_b, s_bottom, s_top)
        s = np.where(big_b > 0, s, 0.0)
        err = -2.0 * s * big_a + s * s * big_b                        # the error less sum(w^2)
    err = np.where(np.isfinite(t) & (big_b > 0), err, np.inf)
    j = np.argmin(err, axis=1)
    rows = np.arange(len(t))
    out[live] = np.where(np.isfinite(err[rows, j]) & (err[rows, j] < 0), s[rows, j], 0.0)
    return out


def _scale_window(a: np.ndarray, reach: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, scales ``[s_lo, s_hi]`` that hold every minimiser of the squared error.

    Why: sorting every breakpoint of every weight dominated the quantization of a big network, and most of them lie
    where the error cannot be minimal. ``U``, the least error over a few trial scales, bounds the minimum. Two lower
    bounds of the error rule out the rest: below ``s_lo`` the clipped weights alone (``|w| > s * reach``) cost
    more than ``U``; above ``s_hi`` the weights rounded to 0 (``|w| < s / 2``) do. Both bounds are monotone in ``s``,
    so bisection finds them; each keeps the side of its bracket that makes the window wider.
    """
    s_clip = np.max(a / reach, axis=1)                       # nothing clips from here up
    bound = np.full(len(a), np.inf)
    for f in _TRIAL_FACTORS:
        s = (f * s_clip)[:, None]
        err = a - s * np.minimum(reach, np.floor(a / s + 0.5))
        bound = np.minimum(bound, np.sum(err * err, axis=1))
    bound = bound * (1 + 1e-9) + 1e-300
    clipped = lambda s: np.sum(np.square(np.maximum(a - s[:, None] * reach, 0.0)), axis=1)   # noqa: E731
    zeroed = lambda s: np.sum(np.where(a < s[:, None] / 2, a * a, 0.0), axis=1)             # noqa: E731
    s_lo = _bisect(clipped, np.zeros(len(a)), s_clip, bound, rising=False)
    s_hi = _bisect(zeroed, np.zeros(len(a)), 2 * np.max(a, axis=1) * (1 + 1e-9), bound, rising=True)
    return s_lo, np.minimum(s_hi, _rounding_cut(a, s_clip, np.maximum(s_hi, s_clip), bound))


def _rounding_cut(a: np.ndarray, s_clip: np.ndarray, s_hi: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """``s_hi`` lowered to the top of the last of :data:`_BUCKETS` geometric buckets of ``[s_clip, s_hi]`` whose
    rounding error may stay within ``bound``.

    Nothing clips there, so a weight's error is ``(s * d(|w| / s))^2`` with ``d`` the distance to the nearest
    integer: over a bucket ``[s1, s2]`` it is at least ``s1^2`` times the least ``d^2`` on ``[|w| / s2, |w| / s1]``,
    which is 0 when that range holds an integer and the smaller end's distance otherwise.
    """
    edges = np.geomspace(s_clip, s_hi, _BUCKETS + 1, axis=1)
    top = s_clip.copy()
    for b in range(_BUCKETS):
        s1, s2 = edges[:, b:b + 1], edges[:, b + 1:b + 2]
        x1, x2 = a / s2, a / s1
        near = np.minimum(np.abs(x1 - np.rint(x1)), np.abs(x2 - np.rint(x2)))
        least = np.where(np.floor(x2) >= np.ceil(x1), 0.0, near)
        may = s1[:, 0] ** 2 * np.sum(least * least, axis=1) <= bound
        top = np.where(may, s2[:, 0], top)
    return top


def _bisect(cost, lo: np.ndarray, hi: np.ndarray, bound: np.ndarray, rising: bool) -> np.ndarray:
    """The end of ``[lo, hi]`` past which the monotone ``cost`` exceeds ``bound`` (``hi`` rising, ``lo`` falling)."""
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        over = cost(mid) > bound
        if rising:
            hi, lo = np.where(over, mid, hi), np.where(over, lo, mid)
        else:
            lo, hi = np.where(over, mid, lo), np.where(over, hi, mid)
    return hi if rising else lo


def _sorted_breakpoints(a: np.ndarray, first: np.ndarray, last: np.ndarray, t_lo: np.ndarray, a0: np.ndarray,
                       b0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, ascending and padded with ``inf``: the window's start (carrying the codes there) then the breakpoints
    ``t = (k + 1/2) / |w|`` of each weight for ``first <= k <= last``, with what each adds to ``A`` and ``B``.

    Equal breakpoints are common (weights in ratios like 37/11 tie at two levels) and their order changes the
    running sums' rounding, so it is defined: the start first, then by level, then by weight. A fast unstable sort
    orders the rest and only the runs of equal values are reordered.
    """
    t, d_a, d_b, key = _breakpoints(a, first, last, t_lo, a0, b0)
    order = np.argsort(t, axis=1)
    order += (np.arange(len(t)) * t.shape[1])[:, None]                  # flat indices: gathers in one dimension
    t = t.ravel()[order]
    same = (t[:, 1:] == t[:, :-1]) & np.isfinite(t[:, 1:])
    if same.any():
        tied = np.zeros(t.shape, bool)
        tied[:, 1:] |= same
        tied[:, :-1] |= same
        row, col = np.nonzero(tied)                                   # runs of equal values, row by row
        opens = np.ones(row.size, bool)
        opens[1:] = ~same[row[1:], col[1:] - 1] | (row[1:] != row[:-1])
        moved = order[row, col]
        order[row, col] = moved[np.lexsort((key.ravel()[moved], np.cumsum(opens)))]
    return t, d_a.ravel()[order], d_b.ravel()[order]


def _breakpoints(a: np.ndarray, first: np.ndarray, last: np.ndarray, t_lo: np.ndarray, a0: np.ndarray,
                 b0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The window's start then every weight's breakpoints inside it, weight by weight (unsorted, padded with inf),
    and each one's place among equal ones: ``level * weights + weight``, -1 for the start."""
    first = first.astype(np.int64)
    count = np.maximum(last - first + 1, 0)
    per_row = count.sum(axis=1)
    t = np.full((len(a), 1 + int(per_row.max())), np.inf)
    d_a, d_b = np.zeros_like(t), np.zeros_like(t)
    key = np.full(t.shape, -1, np.int64)
    t[:, 0], d_a[:, 0], d_b[:, 0] = t_lo, a0, b0
    flat = count.ravel()
    weight = np.repeat(np.arange(flat.size), flat)                       # row-major: row by row, weight by weight
    level = first.ravel()[weight] + np.arange(weight.size) - (np.cumsum(flat) - flat)[weight]
    row, within = np.divmod(weight, a.shape[1])
    column = 1 + np.arange(weight.size) - (np.cumsum(per_row) - per_row)[row]
    mag = a.ravel()[weight]
    at = row * t.shape[1] + column
    t.ravel()[at], d_a.ravel()[at], d_b.ravel()[at] = (level + 0.5) / mag, mag, 2.0 * level + 1
    key.ravel()[at] = level * a.shape[1] + within
    return t, d_a, d_b, key


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
