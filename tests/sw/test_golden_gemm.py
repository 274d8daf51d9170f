"""The exact golden GEMM (sw/golden/gemm.py) against exact rational arithmetic on decoded values.

The reference here multiplies and adds ``fractions.Fraction`` of ``fmt.decode()`` (itself checked against
ml_dtypes in tests/spec/test_formats.py); nothing in it uses the integer decomposition under test.
"""

import itertools
from fractions import Fraction

import numpy as np
import pytest

from hw.spec.formats import format_names, get_format
from sw.golden import Accumulation, gemm, matvec, multiply

NAMED = format_names()
PAIRS = [*itertools.product(NAMED, NAMED),
         ("uint4", "int4"), ("int16", "int8"), ("e3m2b5", "minifloat4"), ("e2m2ftz", "fp8_e5m2"),
         ("fp8_e4m3", "e5m2ieeeftz"), ("uint16", "fp8_e5m2")]

#: Non-finite codes by format: (NaN codes, Inf codes).
NONFINITE = {
    "fp8_e4m3": ([0x7F, 0xFF], []),
    "fp8_e5m2": ([0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF], [0x7C, 0xFC]),
}


def finite_codes(fmt) -> np.ndarray:
    codes = np.arange(1 << fmt.bits)
    return codes[np.isfinite(fmt.decode(codes))]


def random_codes(fmt, shape, rng) -> np.ndarray:
    return rng.choice(finite_codes(fmt), size=shape)


def fractions(fmt, codes) -> np.ndarray:
    """Exact values of codes, as an object array of Fraction (None where not finite)."""
    values = fmt.decode(codes)
    return np.vectorize(lambda v: Fraction(float(v)) if np.isfinite(v) else None, otypes=[object])(values)


def ref_gemm(fa, a_codes, fw, w_codes) -> list[list[Fraction]]:
    """Sum over k of A[i, k] * W[k, j], skipping terms with a non-finite operand."""
    a, w = fractions(fa, a_codes), fractions(fw, w_codes)
    m, k = a.shape
    n = w.shape[1]
    return [[sum((a[i, t] * w[t, j] for t in range(k) if a[i, t] is not None and w[t, j] is not None),
                 Fraction(0)) for j in range(n)] for i in range(m)]


def exact(result: Accumulation) -> np.ndarray:
    """The result as an object array of Fraction: value * 2 ** exponent."""
    scale = Fraction(2) ** result.exponent
    return np.vectorize(lambda v: Fraction(int(v)) * scale, otypes=[object])(result.value)


def assert_exact(result: Accumulation, reference) -> None:
    got = exact(result)
    reference = np.array(reference, dtype=object).reshape(got.shape)
    bad = [idx for idx in np.ndindex(got.shape) if got[idx] != reference[idx]]
    assert not bad, [(idx, got[idx], reference[idx]) for idx in bad[:5]]


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng([len(k) for k in key] + [ord(c) for k in key for c in k])


# --- gemm -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a_name,w_name", PAIRS, ids=[f"{a}*{w}" for a, w in PAIRS])
def test_gemm_is_exact(a_name, w_name):
    fa, fw = get_format(a_name), get_format(w_name)
    rng = _rng(a_name, w_name)
    for m, k, n in ((3, 5, 4), (1, 1, 1), (2, 17, 3)):
        a, w = random_codes(fa, (m, k), rng), random_codes(fw, (k, n), rng)
        result = gemm(a, w, a_name, w_name)
        assert result.value.shape == result.nonfinite.shape == (m, n)
        assert not result.nonfinite.any()
        assert_exact(result, ref_gemm(fa, a, fw, w))


@pytest.mark.parametrize("a_name,w_name,k", [
    ("fp8_e5m2", "fp8_e5m2", 64), ("fp8_e5m2", "fp8_e4m3", 4096), ("fp8_e4m3", "fp8_e4m3", 4096),
    ("int16", "int16", 1000), ("uint16", "fp8_e5m2", 300), ("int8", "int8", 4096),
])
def test_gemm_extremes(a_name, w_name, k):
    """Largest magnitudes of both signs: sums beyond int64 must stay exact (Python ints)."""
    fa, fw = get_format(a_name), get_format(w_name)
    def extremes(fmt):
        codes = finite_codes(fmt)
        values = fmt.decode(codes)
        return codes[np.argmin(values)], codes[np.argmax(values)]
    a_lo, a_hi = extremes(fa)
    w_lo, w_hi = extremes(fw)
    a = np.array([[a_hi] * k, [a_lo] * k, [a_hi, a_lo] * (k // 2) + [a_hi] * (k % 2)])
    w = np.array([[w_hi, w_lo]] * k)
    result = gemm(a, w, a_name, w_name)
    assert_exact(result, ref_gemm(fa, a, fw, w))
    ref_top = Fraction(float(fa.decode(a_hi))) * Fraction(float(fw.decode(w_hi))) * k
    assert exact(result)[0, 0] == ref_top
    if ref_top / Fraction(2) ** result.exponent >= 1 << 63:
        # The documented representation of sums beyond 63 bits: Python ints in an object array.
        assert result.value.dtype == object


def test_fp8_e5m2_needs_more_than_int64():
    """57344 = 7 * 2**13 and the lsb of fp8_e5m2 weighs 2**(1 - 15 - 2): one product 57344 * 57344 is
    49 * 2**58 in units of 2**-32, two of them 49 * 2**59: more than int64 holds."""
    result = gemm([[0x7B, 0x7B]], [[0x7B], [0x7B]], "fp8_e5m2", "fp8_e5m2")
    assert result.exponent == -32
    assert int(result.value[0, 0]) == 49 << 59
    assert result.to_float()[0, 0] == 2.0 * 57344 ** 2


@pytest.mark.parametrize("split", [1, 4, 9])
def test_gemm_does_not_depend_on_tiling(split):
    rng = np.random.default_rng(split)
    fa, fw = get_format("fp8_e5m2"), get_format("minifloat6")
    a, w = random_codes(fa, (3, 10), rng), random_codes(fw, (10, 2), rng)
    whole = exact(gemm(a, w, fa, fw))
    parts = exact(gemm(a[:, :split], w[:split], fa, fw)) + exact(gemm(a[:, split:], w[split:], fa, fw))
    assert (whole == parts).all()
    perm = rng.permutation(10)
    assert (exact(gemm(a[:, perm], w[perm], fa, fw)) == whole).all()


@pytest.mark.parametrize("a_name,w_name", [("fp8_e4m3", "int8"), ("int8", "fp8_e5m2"), ("fp8_e5m2", "fp8_e4m3"),
                                           ("fp8_e4m3", "fp8_e4m3"), ("fp8_e5m2", "fp8_e5m2")])
def test_gemm_nonfinite(a_name, w_name):
    fa, fw = get_format(a_name), get_format(w_name)
    rng = _rng(a_name, w_name, "nonfinite")
    m, k, n = 4, 6, 5
    a, w = random_codes(fa, (m, k), rng), random_codes(fw, (k, n), rng)
    rows, cols = set(), set()
    if a_name in NONFINITE:
        nan, inf = NONFINITE[a_name]
        a[1, 2] = nan[0]
        a[3, 5] = (inf or nan)[-1]
        rows = {1, 3}
    if w_name in NONFINITE:
        nan, inf = NONFINITE[w_name]
        w[0, 4] = nan[-1]
        w[5, 0] = (inf or nan)[0]
        cols = {0, 4}
    expected = np.array([[i in rows or j in cols for j in range(n)] for i in range(m)])
    result = gemm(a, w, a_name, w_name)
    np.testing.assert_array_equal(result.nonfinite, expected)
    # Non-finite operands contribute nothing to the sum; the flag tells.
    assert_exact(result, ref_gemm(fa, a, fw, w))
    floats = result.to_float()
    np.testing.assert_array_equal(np.isnan(floats), expected)


@pytest.mark.parametrize("a_shape,w_shape", [((3,), (3, 2)), ((2, 3), (4, 2)), ((2, 3, 1), (3, 2)),
                                             ((2, 3), (3,)), ((2, 3), (3, 2, 1)), ((), (1, 1))])
def test_gemm_shape_errors(a_shape, w_shape):
    with pytest.raises(ValueError):
        gemm(np.zeros(a_shape, dtype=np.int64), np.zeros(w_shape, dtype=np.int64), "int8", "int8")


def test_gemm_accepts_names_and_formats():
    a, w = [[1, 2]], [[3], [0xFF]]                      # int8: 1*3 + 2*(-1) = 1
    for fa, fw in (("int8", "int8"), (get_format("int8"), get_format("INT8"))):
        result = gemm(a, w, fa, fw)
        assert exact(result)[0, 0] == 1


# --- matvec and multiply ------------------------------------------------------------------------------

@pytest.mark.parametrize("w_name,a_name", [("int8", "int8"), ("int4", "uint8"), ("fp8_e4m3", "minifloat6"),
                                           ("fp8_e5m2", "fp8_e5m2"), ("minifloat6_e2m3", "fp8_e4m3")])
def test_matvec(w_name, a_name):
    fw, fa = get_format(w_name), get_format(a_name)
    rng = _rng(w_name, a_name, "matvec")
    w, a = random_codes(fw, (5, 7), rng), random_codes(fa, (7,), rng)
    result = matvec(w, a, w_name, a_name)
    assert result.value.shape == result.nonfinite.shape == (5,)
    wf, af = fractions(fw, w), fractions(fa, a)
    assert_exact(result, [sum((wf[i, t] * af[t] for t in range(7)), Fraction(0)) for i in range(5)])
    by_gemm = gemm(a[None, :], w.T, a_name, w_name)
    assert result.exponent == by_gemm.exponent
    assert (exact(result) == exact(by_gemm)[0]).all()
    np.testing.assert_array_equal(result.nonfinite, by_gemm.nonfinite[0])


def test_matvec_nonfinite():
    w = np.array([[0x38, 0x38], [0x38, 0x7F], [0x38, 0x38]])      # fp8_e4m3: 1.0 and one NaN
    a = np.array([0x40, 0x38])                                   # 2.0, 1.0
    result = matvec(w, a, "fp8_e4m3", "fp8_e4m3")
    np.testing.assert_array_equal(result.nonfinite, [False, True, False])
    assert exact(result)[0] == 3 and exact(result)[2] == 3
    result = matvec(w[:, :1], [0xFF], "fp8_e4m3", "fp8_e4m3")
    np.testing.assert_array_equal(result.nonfinite, [True, True, True])


@pytest.mark.parametrize("w_shape,a_shape", [((3, 4), (3,)), ((3, 4), (4, 1)), ((4,), (4,)), ((3, 4), ())])
def test_matvec_shape_errors(w_shape, a_shape):
    with pytest.raises(ValueError):
        matvec(np.zeros(w_shape, dtype=np.int64), np.zeros(a_shape, dtype=np.int64), "int8", "int8")


@pytest.mark.parametrize("a_name,b_name", [("int8", "int8"), ("uint4", "int4"), ("fp8_e5m2", "fp8_e5m2"),
                                           ("minifloat4", "fp8_e4m3"), ("fp8_e4m3", "minifloat6_e2m3")])
def test_multiply_broadcasts(a_name, b_name):
    fa, fb = get_format(a_name), get_format(b_name)
    a = np.arange(1 << fa.bits)[:, None]                         # every code of a ...
    b = random_codes(fb, (1, 6), _rng(a_name, b_name, "multiply"))   # ... times a few codes of b
    result = multiply(a, b, a_name, b_name)
    assert result.value.shape == result.nonfinite.shape == (1 << fa.bits, 6)
    af, bf = fractions(fa, a), fractions(fb, b)
    finite = np.isfinite(fa.decode(a)) & np.isfinite(fb.decode(b))
    np.testing.assert_array_equal(result.nonfinite, ~finite)
    got = exact(result)
    for i, j in np.ndindex(got.shape):
        if finite[i, j]:
            assert got[i, j] == af[i, 0] * bf[0, j], (i, j)
    scalar = multiply(a, b[0, 3], a_name, b_name)
    assert scalar.value.shape == (1 << fa.bits, 1)
    assert (exact(scalar)[finite[:, 3]] == got[:, 3:4][finite[:, 3]]).all()


def test_multiply_extremes():
    # 57344 * 57344 = 7 * 2**13 * 7 * 2**13: 49 * 2**58 in units of 2**-32, more than int64 holds.
    result = multiply([0x7B, 0xFB], [0x7B], "fp8_e5m2", "fp8_e5m2")
    assert [Fraction(int(v)) * Fraction(2) ** result.exponent for v in result.value] == [57344 ** 2, -57344 ** 2]
    result = multiply([0x80], [0x7F], "int8", "uint8")          # -128 * 127
    assert int(result.value[0]) * 2 ** result.exponent == -128 * 127


# --- Accumulation.to_float ----------------------------------------------------------------------------

def test_to_float_int8():
    rng = np.random.default_rng(8)
    fmt = get_format("int8")
    a, w = rng.integers(0, 256, (6, 40)), rng.integers(0, 256, (40, 5))
    result = gemm(a, w, fmt, fmt)
    assert result.exponent == 0
    expected = fmt.decode(a) @ fmt.decode(w)                     # exact: sums well below 2**53
    floats = result.to_float()
    assert floats.dtype == np.float64
    np.testing.assert_array_equal(floats, expected)


@pytest.mark.parametrize("a_name,w_name", [("fp8_e5m2", "fp8_e5m2"), ("fp8_e4m3", "minifloat6")])
def test_to_float_minifloat(a_name, w_name):
    fa, fw = get_format(a_name), get_format(w_name)
    rng = _rng(a_name, w_name, "float")
    a, w = random_codes(fa, (4, 9), rng), random_codes(fw, (9, 3), rng)
    reference = ref_gemm(fa, a, fw, w)
    expected = np.array([[float(x) for x in row] for row in reference])     # correctly rounded
    np.testing.assert_array_equal(gemm(a, w, fa, fw).to_float(), expected)
