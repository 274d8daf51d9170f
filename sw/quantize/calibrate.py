"""Scales and zero points of one array: min-max, percentile and minimum-mean-squared-error (MMSE) clipping.

A *grid* is the set of numbers a quantized tensor may take before scaling: the integers ``lo..hi`` of an
integer format (possibly a narrower range inside it), or every finite value of a minifloat. A tensor ``x`` is
encoded as ``q = round(x / scale + zero_point)`` on the grid and stands for ``scale * (q - zero_point)``.

Integer activations are asymmetric (any zero point inside the grid, so a ReLU output spends no code on negative
numbers); minifloats and all weights are symmetric (zero point 0). MMSE follows Choukroun et al. 2019: the
clipping range that minimises the mean squared error between ``x`` and its quantized-dequantized version,
found by a search over shrinking factors of the min-max range (for minifloats this chooses the per-tensor scale,
i.e. the exponent bias, by MSE).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hw.spec.formats import Format, IntFormat, get_format

from .errors import QuantizationError

__all__ = ["METHODS", "Grid", "qdq", "mse", "sqnr_db", "observed_range", "asymmetric_params",
           "calibrate_activation", "search_factor", "search_factors", "lift_scale", "lift_scales"]

#: Clipping methods.
METHODS = ("minmax", "percentile", "mmse")
#: MMSE works on at most this many values (a fixed random subset of larger tensors).
MMSE_MAX_VALUES = 1 << 16
#: Coarse search: factors 2**(-k/16), k = 0 .. COARSE_STEPS - 1 (down to 1/256); then a fine search between
#: the neighbours of the best coarse factor.
COARSE_STEPS = 128
FINE_STEPS = 33
#: Scale of a tensor that is zero everywhere (any positive number would do).
FALLBACK_SCALE = 1.0


@dataclass(frozen=True)
class Grid:
    """The numbers codes may stand for before scaling: integers ``lo..hi`` or the finite values of a minifloat."""

    format: Format
    lo: float
    hi: float
    #: What to call the grid in reports (default: the format's name).
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.format.name

    @classmethod
    def of(cls, fmt: Format | str, lo: float | None = None, hi: float | None = None) -> "Grid":
        fmt = get_format(fmt)
        return cls(fmt, fmt.min if lo is None else lo, fmt.max if hi is None else hi)

    @property
    def is_int(self) -> bool:
        return isinstance(self.format, IntFormat)

    def round(self, y: np.ndarray) -> np.ndarray:
        """The grid value nearest to each ``y`` (ties to even, saturating); never -0."""
        y = np.asarray(y, dtype=np.float64)
        if self.is_int:
            return np.clip(np.rint(y), self.lo, self.hi)
        return np.clip(self.format.round_values(y), self.lo, self.hi) + 0.0


def qdq(x: np.ndarray, grid: Grid, scale: float, zero_point: int = 0) -> np.ndarray:
    """``x`` quantized onto ``grid`` with this scale and zero point, then dequantized."""
    x = np.asarray(x, dtype=np.float64)
    return (grid.round(x / scale + zero_point) - zero_point) * scale


def mse(x: np.ndarray, approx: np.ndarray) -> float:
    return float(np.mean((np.asarray(x, np.float64) - np.asarray(approx, np.float64)) ** 2))


def sqnr_db(x: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when exact, -inf for a zero signal with noise)."""
    x = np.asarray(x, np.float64)
    noise = float(np.sum((x - np.asarray(approx, np.float64)) ** 2))
    signal = float(np.sum(x ** 2))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return 10 * np.log10(signal / noise)


def _check_method(method: str, percentile: float) -> None:
    if method not in METHODS:
        raise QuantizationError(f"Unknown calibration method {method!r}: use one of {', '.join(METHODS)}")
    if not 50 < percentile <= 100:
        raise QuantizationError(f"percentile must lie in (50, 100], not {percentile!r} (e.g. 99.99)")


def observed_range(x: np.ndarray, method: str = "minmax", percentile: float = 99.99) -> tuple[float, float]:
    """The range to encode before any MMSE search: min and max, or both-tail percentiles; always holds 0."""
    _check_method(method, percentile)
    x = np.asarray(x, np.float64).ravel()
    if x.size == 0:
        raise QuantizationError("Cannot calibrate an empty tensor")
    if not np.isfinite(x).all():
        raise QuantizationError("Calibration values contain NaN or Inf: check the samples and the float model")
    if method == "percentile":
        lo, hi = np.percentile(x, [100 - percentile, percentile])
    else:
        lo, hi = x.min(), x.max()
    return min(float(lo), 0.0), max(float(hi), 0.0)


def asymmetric_params(lo: float, hi: float, grid: Grid) -> tuple[float, int]:
    """Scale and zero point mapping ``[lo, hi]`` (which holds 0) onto the integer grid; zero point inside it."""
    if not grid.is_int:
        raise QuantizationError(f"Asymmetric encodings need an integer format, not {grid.format.name}")
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        return FALLBACK_SCALE, int(np.clip(0, grid.lo, grid.hi))
    scale = (hi - lo) / (grid.hi - grid.lo)
    zero_point = int(np.clip(np.rint(grid.lo - lo / scale), grid.lo, grid.hi))
    return float(scale), zero_point


def search_factor(loss: Callable[[float], float]) -> float:
    """The factor in (0, 1] (a shrinking of the min-max range) with the smallest ``loss``: coarse then fine."""
    return float(search_factors(lambda factors: np.array([[loss(float(a))] for a in factors[:, 0]]), 1)[0])


def search_factors(loss: Callable[[np.ndarray], np.ndarray], count: int) -> np.ndarray:
    """:func:`search_factor` for ``count`` independent searches at once: ``loss`` maps factors shaped
    (F, count) (column j for search j) to losses of that shape."""
    coarse = np.repeat((2.0 ** (-np.arange(COARSE_STEPS) / 16))[:, None], count, axis=1)
    losses = loss(coarse)
    k = np.argmin(losses, axis=0)
    columns = np.arange(count)
    hi = coarse[np.maximum(k - 1, 0), columns]
    lo = coarse[np.minimum(k + 1, COARSE_STEPS - 1), columns]
    fine = np.geomspace(hi, lo, FINE_STEPS).reshape(FINE_STEPS, count)
    fine_losses = loss(fine)
    j = np.argmin(fine_losses, axis=0)
    better = fine_losses[j, columns] < losses[k, columns]
    return np.where(better, fine[j, columns], coarse[k, columns])


#: How much a minifloat scale may raise the squared error when it is lifted by powers of two (see lift_scale).
LIFT_TOLERANCE = 1e-3


def lift_scale(scale: float, loss: Callable[[float], float], limit: int = 40) -> float:
    """The largest ``scale * 2**k`` (k >= 0) whose ``loss`` stays within LIFT_TOLERANCE of ``loss(scale)``.

    A minifloat's precision is relative, so a wide format (fp8_e5m2) has many scales of equal error; the
    largest keeps values, and thus accumulator units and biases, small (a bias must fit its 64-bit PARAM entry).
    This is the exponent-bias half of minifloat scaling.
    """
    base = loss(scale)
    best = scale
    for k in range(1, limit + 1):
        if loss(scale * 2.0 ** k) > base * (1 + LIFT_TOLERANCE) + 1e-30:
            break
        best = scale * 2.0 ** k
    return best


def lift_scales(scales: np.ndarray, loss: Callable[[np.ndarray], np.ndarray], limit: int = 40) -> np.ndarray:
    """:func:`lift_scale` for several scales at once: ``loss`` maps scales shaped (K, count) to losses."""
    lifted = scales[None] * 2.0 ** np.arange(limit + 1)[:, None]
    losses = loss(lifted)
    worse = losses[1:] > losses[0] * (1 + LIFT_TOLERANCE) + 1e-30
    steps = np.where(worse.any(axis=0), worse.argmax(axis=0), limit)     # the first k that is worse, less one
    return lifted[steps, np.arange(scales.size)]


def subsample(x: np.ndarray, limit: int = MMSE_MAX_VALUES) -> np.ndarray:
    """At most ``limit`` values of ``x`` (a fixed pseudo-random subset: MMSE needs the distribution only)."""
    x = np.asarray(x, np.float64).ravel()
    if x.size <= limit:
        return x
    return np.random.default_rng(0).choice(x, size=limit, replace=False)


def calibrate_activation(x: np.ndarray, grid: Grid, method: str = "minmax",
                         percentile: float = 99.99) -> tuple[float, int]:
    """Scale and zero point of an activation tensor: asymmetric on integer grids, symmetric on minifloats."""
    lo, hi = observed_range(x, method, percentile)
    if grid.is_int:
        def params(a: float) -> tuple[float, int]:
            return asymmetric_params(a * lo, a * hi, grid)
    else:
        amax = max(-lo, hi)

        def params(a: float) -> tuple[float, int]:
            return (a * amax / grid.hi if amax > 0 else FALLBACK_SCALE), 0
    if hi - lo == 0:
        return params(1.0)
    xs = subsample(x)
    best = search_factor(lambda a: mse(xs, qdq(xs, grid, *params(a)))) if method == "mmse" else 1.0
    if grid.is_int or method == "percentile":     # a lifted scale would no longer clip at the percentile
        return params(best)
    scale, _ = params(best)
    return lift_scale(scale, lambda s: mse(xs, qdq(xs, grid, s, 0))), 0
