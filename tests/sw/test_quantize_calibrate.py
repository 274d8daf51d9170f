"""Clipping methods and weight quantization (sw/quantize/calibrate.py, weights.py) on synthetic arrays.

The oracles here quantize with their own few lines: integers by ``np.round``/``np.clip`` on the format's range,
minifloats by picking the nearest of every finite value the format decodes (the format table is checked
against ml_dtypes in tests/spec/test_formats.py). Optimality is checked by brute force over fine grids.
"""

import numpy as np
import pytest

from hw.spec.formats import get_format
from sw.quantize import Grid, QuantizationError, calibrate_activation, quantize_weight, residual_round
from sw.quantize.weights import quantize_weight_auto


# --- independent quantizers ----------------------------------------------------------------------------------

def int_qdq(x, scale, zero_point, lo, hi):
    return (np.clip(np.round(x / scale) + zero_point, lo, hi) - zero_point) * scale


def minifloat_values(name):
    v = get_format(name).decode(get_format(name).codes)
    return np.unique(v[np.isfinite(v)])


def nearest(y, values):
    """Nearest value (saturating: beyond the ends the end wins); ties may go either way (measure zero)."""
    idx = np.abs(np.asarray(y)[..., None] - values).argmin(axis=-1)
    return values[idx]


def mse(a, b):
    return float(np.mean((a - b) ** 2))


def laplace_with_outliers(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.laplace(0, 1, n)
    x[:20] = rng.choice([-1, 1], 20) * rng.uniform(15, 30, 20)
    return x


def act_mse(x, grid, scale, zp):
    if grid.is_int:
        return mse(x, int_qdq(x, scale, zp, grid.lo, grid.hi))
    return mse(x, nearest(x / scale, minifloat_values(grid.format.name)) * scale)


# --- activations ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["int4", "uint4", "minifloat4", "minifloat6"])
def test_mmse_beats_minmax_on_heavy_tails(fmt):
    x = laplace_with_outliers()
    grid = Grid.of(fmt)
    if grid.lo >= 0:
        x = np.abs(x)                    # unsigned: a ReLU-like distribution
    minmax = act_mse(x, grid, *calibrate_activation(x, grid, "minmax"))
    mmse = act_mse(x, grid, *calibrate_activation(x, grid, "mmse"))
    # Integers and e2m1 have too few levels for the outliers; e3m2's exponents absorb them better.
    assert mmse < (0.7 if fmt != "minifloat6" else 1.0) * minmax, (mmse, minmax)


def test_minmax_covers_the_range_and_relu_gets_the_minimum_zero_point():
    rng = np.random.default_rng(1)
    x = np.maximum(rng.normal(size=5000), 0)
    scale, zp = calibrate_activation(x, Grid.of("int8"), "minmax")
    assert zp == -128
    assert scale * (127 - zp) == pytest.approx(x.max(), rel=1e-12)
    x = rng.normal(size=5000)
    scale, zp = calibrate_activation(x, Grid.of("int8"), "minmax")
    assert -128 <= zp <= 127
    assert scale * (-128 - zp) <= x.min() + scale / 2 and scale * (127 - zp) >= x.max() - scale / 2


@pytest.mark.parametrize("p", [99.0, 99.9])
def test_percentile_clips_at_the_percentile(p):
    x = laplace_with_outliers(seed=2)
    s = np.sort(x)
    # Independent percentile of a sorted sample, linear interpolation between order statistics.
    def pct(q):
        pos = q / 100 * (len(s) - 1)
        i = int(np.floor(pos))
        return s[i] + (pos - i) * (s[min(i + 1, len(s) - 1)] - s[i])
    lo, hi = pct(100 - p), pct(p)
    scale, zp = calibrate_activation(x, Grid.of("int8"), "percentile", p)
    assert abs(scale * (127 - zp) - hi) <= scale and abs(scale * (-128 - zp) - lo) <= scale
    assert hi < 0.5 * x.max()            # the outliers were clipped
    scale, zp = calibrate_activation(x, Grid.of("fp8_e4m3"), "percentile", p)
    assert zp == 0 and scale * get_format("fp8_e4m3").max == pytest.approx(max(hi, -lo), rel=1e-12)


@pytest.mark.parametrize("fmt", ["int4", "minifloat4", "minifloat6", "fp8_e5m2"])
def test_mmse_is_optimal_against_brute_force(fmt):
    """Over the same family (the min-max range shrunk by a factor), a 3000-point grid finds nothing better."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(size=300), [6.0, -4.5]])
    grid = Grid.of(fmt)
    got = act_mse(x, grid, *calibrate_activation(x, grid, "mmse"))
    lo, hi = x.min(), x.max()
    best = np.inf
    for a in np.linspace(0.02, 1.0, 3000):
        if grid.is_int:
            scale = a * (hi - lo) / (grid.hi - grid.lo)
            zp = np.clip(np.round(grid.lo - a * lo / scale), grid.lo, grid.hi)
        else:
            scale, zp = a * max(-lo, hi) / grid.hi, 0
        best = min(best, act_mse(x, grid, scale, zp))
    assert got <= best * 1.01, (got, best)


def test_constant_zero_tensor_and_bad_input():
    scale, zp = calibrate_activation(np.zeros(10), Grid.of("int8"), "mmse")
    assert scale > 0 and -128 <= zp <= 127
    with pytest.raises(QuantizationError, match="method"):
        calibrate_activation(np.ones(3), Grid.of("int8"), "median")
    with pytest.raises(QuantizationError, match="NaN"):
        calibrate_activation(np.array([1.0, np.nan]), Grid.of("int8"))


# --- weights -------------------------------------------------------------------------------------------------

def channel_weights(seed=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(4, 3, 3, 3)) * np.array([1.0, 0.01, 30.0, 0.2])[:, None, None, None]


def test_weights_are_symmetric_on_the_grid_with_minmax_scale():
    w = channel_weights()
    q = quantize_weight(w, Grid.of("int4"), "minmax")
    assert len(q.values) == 1 and q.scale.shape == (4,) and np.all(q.scale == q.scale[0])
    assert q.scale[0] == pytest.approx(np.abs(w).max() / 7)
    v = q.values[0]
    assert np.all(v == np.round(v)) and v.min() >= -8 and v.max() <= 7
    assert np.array_equal(v, np.clip(np.round(w / q.scale[0]), -8, 7))
    # percentile falls back to min-max for weights
    assert np.array_equal(quantize_weight(w, Grid.of("int4"), "percentile").scale, q.scale)


@pytest.mark.parametrize("fmt", ["int4", "int8", "minifloat4", "minifloat6"])
def test_per_channel_beats_per_tensor(fmt):
    """Channel ranges 0.01..30: per-tensor integers waste the small channels; narrow minifloats flush them.
    (Minifloats with a wide exponent range, such as fp8_e4m3, barely care: their precision is relative.)"""
    w = channel_weights()
    grid = Grid.of(fmt)

    def channel_errors(q):
        d = q.values[0] * q.scale[:, None, None, None]
        return np.array([mse(w[c], d[c]) / np.mean(w[c] ** 2) for c in range(4)])
    per_tensor = channel_errors(quantize_weight(w, grid, "minmax", per_channel=False))
    per_channel = channel_errors(quantize_weight(w, grid, "minmax", per_channel=True))
    if grid.is_int:
        assert np.all(per_channel <= per_tensor * 1.0001)
    assert per_channel.sum() < 0.5 * per_tensor.sum()
    if grid.is_int:   # per-channel min-max: each channel's largest weight lands on the grid's maximum
        q = quantize_weight(w, grid, "minmax", per_channel=True)
        assert np.allclose(q.scale, np.abs(w).reshape(4, -1).max(axis=1) / grid.hi)


def test_mmse_weights_beat_minmax_and_are_brute_force_optimal():
    rng = np.random.default_rng(5)
    w = np.concatenate([rng.laplace(size=400), [9.0]]).reshape(1, -1)
    grid = Grid.of("int4")
    q = quantize_weight(w, grid, "mmse")
    got = mse(w, q.values[0] * q.scale[0])
    assert got < 0.7 * mse(w, quantize_weight(w, grid, "minmax").dequantize())
    amax = np.abs(w).max()
    best = min(mse(w, int_qdq(w, a * amax / 7, 0, -8, 7)) for a in np.linspace(0.02, 1, 3000))
    assert got <= best * 1.01


def test_residual_round_reaches_every_integer_of_the_wider_grid():
    grid = Grid.of("int4")
    target = np.arange(-16, 15, dtype=np.float64)
    parts = residual_round(target, grid, 2)
    assert all(p.min() >= -8 and p.max() <= 7 and np.all(p == np.round(p)) for p in parts)
    assert np.array_equal(parts[0] + parts[1], target)
    assert (residual_round(np.array([15.0]), grid, 2)[0] + residual_round(np.array([15.0]), grid, 2)[1]) == 14


@pytest.mark.parametrize("fmt", ["int4", "minifloat4", "minifloat6"])
@pytest.mark.parametrize("method", ["minmax", "mmse"])
def test_multi_tensor_lowers_weight_error_and_stays_in_format(fmt, method):
    w = channel_weights(6)
    grid = Grid.of(fmt)
    one = quantize_weight(w, grid, method, per_channel=True, tensors=1)
    two = quantize_weight(w, grid, method, per_channel=True, tensors=2)
    three = quantize_weight(w, grid, method, per_channel=True, tensors=3)
    allowed = np.arange(grid.lo, grid.hi + 1) if grid.is_int else minifloat_values(fmt)
    for q in (two, three):
        assert all(np.isin(v, allowed).all() for v in q.values)
        shared = np.sum(q.values, axis=0) * q.scale[:, None, None, None]
        assert np.allclose(q.dequantize(), shared)          # one scale per channel for every tensor
    e1, e2, e3 = (mse(w, q.dequantize()) for q in (one, two, three))
    # A third minifloat tensor may add nothing: residuals below half the smallest step round to zero.
    assert e2 < 0.6 * e1 and e3 <= e2
    if grid.is_int and method == "minmax":                  # the scale is for the wider grid -16..14
        assert np.allclose(two.scale, np.abs(w).reshape(4, -1).max(axis=1) / 14)


def test_auto_adds_tensors_only_below_the_target():
    w = channel_weights(7)
    assert len(quantize_weight_auto(w, Grid.of("int8"), "minmax", True, True, 28.0, 3).values) == 1
    assert len(quantize_weight_auto(w, Grid.of("int4"), "minmax", True, True, 28.0, 3).values) >= 2
    assert len(quantize_weight_auto(w, Grid.of("int4"), "minmax", True, False, 28.0, 3).values) == 1


def test_weight_errors():
    with pytest.raises(QuantizationError, match="signed"):
        quantize_weight(np.ones((2, 2)), Grid.of("uint8"))
    with pytest.raises(QuantizationError, match="NaN"):
        quantize_weight(np.array([[np.nan]]), Grid.of("int8"))


def test_zero_channel_gets_a_usable_scale():
    w = np.zeros((3, 4))
    w[0] = [1, -2, 3, 0.5]
    q = quantize_weight(w, Grid.of("int8"), "mmse", per_channel=True)
    assert np.all(q.scale > 0) and np.all(q.values[0][1:] == 0)
