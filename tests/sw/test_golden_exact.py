"""Exact integer products on BLAS (sw/golden/exact.py) against Python-int products, on every path."""

import numpy as np
import pytest

from sw.golden.exact import FLOAT32_EXACT, FLOAT64_EXACT, float32_slice, float_dtype_for, matmul_exact


def reference(a, w) -> np.ndarray:
    return np.matmul(np.asarray(a, dtype=object), np.asarray(w, dtype=object))


def random_ints(rng, shape, bits) -> np.ndarray:
    """int64 values of up to ``bits`` bits, either sign, extremes included."""
    v = rng.integers(-(1 << bits) + 1, 1 << bits, size=shape, dtype=np.int64)
    flat = v.reshape(-1)
    flat[::7] = (1 << bits) - 1
    flat[3::11] = -(1 << bits) + 1
    return v


@pytest.mark.parametrize("bits, k, dtype", [
    (7, 144, np.int64),             # float32
    (11, 4, np.int64),              # float32
    (15, 4096, np.int64),           # float64
    (24, 16, np.int64),             # float64
    (26, 64, np.int64),             # limbs on float64, recombined in int64
    (31, 64, object),               # limbs, recombined in Python ints
    (33, 1152, object),             # limbs (fp8_e5m2-sized operands)
    (50, 16, object),               # Python ints: limbs of 25 bits would overflow float64 sums
    (62, 16, object),               # Python ints
])
def test_every_path_is_exact(bits, k, dtype):
    rng = np.random.default_rng(bits * 1000 + k)
    a, w = random_ints(rng, (9, k), bits), random_ints(rng, (k, 5), bits)
    a[0], w[:, 0] = (1 << bits) - 1, (1 << bits) - 1        # the largest sum the bound allows
    a[1], w[:, 1] = -(1 << bits) + 1, (1 << bits) - 1
    got = matmul_exact(a, w)
    expected = reference(a, w)
    assert got.tolist() == expected.tolist()
    assert got.dtype == dtype


def test_stacks_and_float_operands():
    rng = np.random.default_rng(1)
    a, w = random_ints(rng, (3, 6, 20), 30), random_ints(rng, (3, 20, 4), 30)
    assert matmul_exact(a, w).tolist() == reference(a, w).tolist()
    a, w = random_ints(rng, (4, 6, 20), 8), random_ints(rng, (20, 4), 8)
    assert matmul_exact(a.astype(np.float32), w.astype(np.float32)).tolist() == reference(a, w).tolist()


@pytest.mark.parametrize("k", [1023, 1024, 4608])
def test_long_float32_reductions_in_exact_slices(k):
    """int8-sized float32 operands of a reduction longer than one exact float32 product (16,384 * 1,024 > 2**24):
    slices of 1,023, each exact, summed in int64; all-extreme rows reach the bound of every slice (odd products,
    whose sums need every bit)."""
    assert float32_slice(128, 128) == 1023 and float32_slice(1 << 10, 1 << 10) == 0
    rng = np.random.default_rng(k)
    a, w = random_ints(rng, (2, 7, k), 7) - 1, random_ints(rng, (k, 5), 7) - 1     # -128 .. 126
    a[0, 0], w[:, 0], w[::3, 0] = 127, 127, 125
    a[1, 1], w[:, 1], w[1::5, 1] = -127, 127, 123
    got = matmul_exact(a.astype(np.float32), w.astype(np.float32), 128, 128)
    assert got.dtype == np.int64 and got.tolist() == reference(a, w).tolist()


def test_float_types_at_their_exact_limits():
    assert float_dtype_for(FLOAT32_EXACT - 1) is np.float32
    assert float_dtype_for(FLOAT32_EXACT) is np.float64
    assert float_dtype_for(FLOAT64_EXACT - 1) is np.float64
    assert float_dtype_for(FLOAT64_EXACT) is None
    # 2**23 + 1 + 2**23 = 2**24 + 1 is not a float32: the bound must send this to float64.
    a = np.array([[(1 << 23) + 1, 1 << 23]], dtype=np.int64)
    assert matmul_exact(a, np.ones((2, 1), dtype=np.int64)).tolist() == [[(1 << 24) + 1]]
    # 2**52 + 1 + 2**52 = 2**53 + 1 is not a float64: the limbs must take it.
    a = np.array([[(1 << 52) + 1, 1 << 52]], dtype=np.int64)
    assert matmul_exact(a, np.ones((2, 1), dtype=np.int64)).tolist() == [[(1 << 53) + 1]]


def test_given_bounds_are_used():
    """The bound comes from the caller when given (a format's range): a too-small one would lose bits."""
    a = np.array([[(1 << 30) + 1, (1 << 30) + 1]], dtype=np.int64)
    w = np.array([[1 << 30], [(1 << 30) + 3]], dtype=np.int64)
    assert matmul_exact(a, w, 1 << 31, 1 << 31).tolist() == reference(a, w).tolist()
