"""mmse_scales (sw/quantize/weights.py): the exact minimum-squared-error scale of each channel on an integer grid.

Oracles: for a tiny channel, every code vector ``q`` of the grid with its least-squares scale
``max(0, w.q / q.q)`` (the minimum over scales and codes is the minimum over scales of rounding, since for a
fixed scale the nearest codes are the best ones); for larger channels, a dense brute-force grid of scales.
"""

import itertools

import numpy as np
import pytest

from sw.quantize.calibrate import Grid
from sw.quantize.errors import QuantizationError
from sw.quantize.weights import _channel_scales, _sorted_breakpoints, mmse_scales, quantize_weight


def errors(w, scales, grid):
    """Squared error of each row of ``w`` rounded at its scale (a scale of 0 codes everything as 0)."""
    s = np.asarray(scales, np.float64).reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s > 0, np.clip(np.rint(w / np.where(s > 0, s, 1)), grid.lo, grid.hi), 0)
    return np.sum((w - s * q) ** 2, axis=1)


def enumerated_minimum(row, grid):
    best = float(np.sum(row ** 2))
    codes = np.arange(grid.lo, grid.hi + 1)
    for q in itertools.product(codes, repeat=row.size):
        q = np.array(q, np.float64)
        qq = q @ q
        if qq:
            s = max(0.0, float(row @ q) / qq)
            best = min(best, float(np.sum((row - s * q) ** 2)))
    return best


@pytest.mark.parametrize("fmt,n", [("int2", 5), ("int3", 4), ("int4", 3)])
def test_exact_scale_reaches_the_enumerated_minimum(fmt, n):
    grid = Grid.of(fmt)
    rng = np.random.default_rng(3)
    w = np.concatenate([rng.standard_t(3, size=(6, n)), [[1.0, -1.0] + [0.5] * (n - 2)]])   # ties included
    scales = mmse_scales(w, grid)
    got = errors(w, scales, grid)
    want = np.array([enumerated_minimum(row, grid) for row in w])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("fmt", ["int3", "int4", "int8"])
def test_exact_scale_is_no_worse_than_a_dense_grid_or_the_search(fmt):
    grid = Grid.of(fmt)
    rng = np.random.default_rng(4)
    w = np.concatenate([rng.laplace(size=(5, 27)), rng.standard_t(2, size=(5, 27))])
    scales = mmse_scales(w, grid)
    got = errors(w, scales, grid)
    amax = np.abs(w).max(axis=1)
    dense = np.linspace(0.02, 1.2, 20001)
    brute = np.min([errors(w, f * amax / grid.hi, grid) for f in dense], axis=0)
    assert np.all(got <= brute * (1 + 1e-12))
    assert np.all(got >= brute * (1 - 1e-3))           # the grid is dense: it comes close to the minimum
    searched = errors(w, _channel_scales(w, grid, "mmse", 1), grid)
    assert np.all(got <= searched * (1 + 1e-12))


def test_zero_rows_and_single_weights():
    grid = Grid.of("int3")
    w = np.array([[0.0, 0.0, 0.0], [0.0, 0.9, 0.0], [0.0, -0.8, 0.0]])
    s = mmse_scales(w, grid)
    assert s[0] == 0
    assert errors(w[1:], s[1:], grid) == pytest.approx([0, 0], abs=1e-24)      # a lone weight lands on the grid


def test_quantize_weight_uses_the_exact_scale_on_integer_grids():
    rng = np.random.default_rng(5)
    w = rng.normal(size=(4, 3, 3, 3))
    grid = Grid.of("int4")
    q = quantize_weight(w, grid, "mmse", per_channel=True)
    np.testing.assert_array_equal(q.scale, mmse_scales(w.reshape(4, -1), grid))
    tensor = quantize_weight(w, grid, "mmse", per_channel=False)
    np.testing.assert_array_equal(tensor.scale, np.full(4, mmse_scales(w.reshape(1, -1), grid)[0]))


def test_minifloat_grid_refused():
    with pytest.raises(QuantizationError, match="integer grid"):
        mmse_scales(np.ones((1, 2)), Grid.of("minifloat6"))


@pytest.mark.parametrize("fmt", ["int4", "int8"])
def test_wide_channels_keep_the_minimum_the_scale_window_could_cut(fmt):
    """Wide channels of uniform, Gaussian and heavy-tailed weights: the window of scales that the exact search
    sorts (bounded by clipping and by rounding) must still hold the minimum a dense grid of scales finds."""
    grid = Grid.of(fmt)
    rng = np.random.default_rng(6)
    w = np.concatenate([rng.uniform(-1, 1, size=(3, 700)), rng.normal(size=(3, 700)),
                        rng.standard_t(2, size=(3, 700))])
    scales = mmse_scales(w, grid)
    got = errors(w, scales, grid)
    amax = np.abs(w).max(axis=1)
    brute = np.min([errors(w, f * amax / grid.hi, grid) for f in np.linspace(0.05, 1.05, 20001)], axis=0)
    assert np.all(got <= brute * (1 + 1e-12))



def test_equal_breakpoints_are_in_a_defined_order():
    """Weights in ratios (2j+1)/(2k+1) (37/11, 5/3, ...) share breakpoints at different levels, whose order changes
    the rounding of the running sums: they come start first, then by level, then by weight, as a lexicographic
    sort of the breakpoints listed one by one gives."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.01, 0.02, size=(3, 20)).astype(np.float32).astype(np.float64)
    a = np.concatenate([(base[:, :, None] * np.array([1, 37 / 11, 5 / 3, 7 / 5, 3])).reshape(3, -1),
                        rng.uniform(0, 0.06, size=(3, 50))], axis=1)
    first = rng.integers(0, 30, size=a.shape)
    last = np.minimum(first + rng.integers(-1, 90, size=a.shape), 126)
    t_lo, a0, b0 = np.full(3, 1.0), np.full(3, 2.0), np.full(3, 3.0)
    t, d_a, d_b = _sorted_breakpoints(a, first, last, t_lo, a0, b0)
    for r in range(3):
        listed = [(t_lo[r], -1, a0[r], b0[r])]
        listed += [((k + 0.5) / a[r, i], k * a.shape[1] + i, a[r, i], 2.0 * k + 1)
                   for i in range(a.shape[1]) for k in range(first[r, i], last[r, i] + 1)]
        want = np.array(sorted(listed))
        n = len(want)
        assert (want[1:, 0] == want[:-1, 0]).any() and np.isinf(t[r, n:]).all()
        assert np.array_equal(np.stack([t[r, :n], d_a[r, :n], d_b[r, :n]], 1), want[:, [0, 2, 3]])
