"""The number format registry (hw/spec/formats.py) against independent oracles.

ml_dtypes is the oracle for every format it also defines. Integers, custom minifloats and the widths of
products are checked against definitions written here, from the published format definitions alone.

One caveat about the oracle: ml_dtypes converts float64 to its small floats through float32, so a float64
input that lies within half a float32 ulp of a rounding midpoint is rounded twice (0.7499999999999999 becomes
1.0 in float4_e2m1fn, where the nearest value is 0.5). Random inputs compared with ml_dtypes are therefore
float32 numbers; the values next to midpoints are checked against the definition of rounding instead.
"""

import math
import re
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from hw.spec.formats import (FormatError, IntFormat, Minifloat, accumulator_bits, format_names, get_format,
                             Specials, product_of, signed_width)

#: Our minifloats and the ml_dtypes type of the same numbers.
ML_FLOATS = {
    "minifloat4": ml_dtypes.float4_e2m1fn,
    "minifloat6": ml_dtypes.float6_e3m2fn,
    "minifloat6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
}
#: Our integers and the ml_dtypes/numpy type of the same numbers.
ML_INTS = {"int4": ml_dtypes.int4, "uint4": ml_dtypes.uint4, "int8": np.int8, "uint8": np.uint8}

#: Largest finite values and their codes, from the published definitions (OCP MX v1.0, OCP FP8).
PUBLISHED_MAX = {
    "minifloat4": (6.0, 0b0_11_1),
    "minifloat6": (28.0, 0b0_111_11),
    "minifloat6_e2m3": (7.5, 0b0_11_111),
    "fp8_e4m3": (448.0, 0b0_1111_110),
    "fp8_e5m2": (57344.0, 0b0_11110_11),
}

#: Custom minifloats: name -> (exp_bits, man_bits, bias, subnormals, specials) of the reference decoder.
CUSTOM = {
    "e3m2b5": (3, 2, 5, True, "finite"),
    "e2m2ftz": (2, 2, 1, False, "finite"),
    "e3m2ftz": (3, 2, 3, False, "finite"),
    "e2m1b0": (2, 1, 0, True, "finite"),
    "e4m3fnftz": (4, 3, 7, False, "fn"),
    "e5m2ieeeftz": (5, 2, 15, False, "ieee"),
    "e3m3ieee": (3, 3, 3, True, "ieee"),
    "e3m4b2fn": (3, 4, 2, True, "fn"),
}
FTZ = [name for name, p in CUSTOM.items() if not p[3]]

SMALL_INTS = [f"{s}int{n}" for s in ("", "u") for n in range(2, 9)]
#: Every format of 8 bits or fewer that the tests know.
SMALL_FORMATS = [*ML_FLOATS, *CUSTOM, *SMALL_INTS]
#: Every format the tests know, wide integers included.
ALL_FORMATS = [*SMALL_FORMATS, "int12", "uint12", "int16", "uint16"]

N_RANDOM = 200_000


def ref_minifloat(code: int, exp_bits: int, man_bits: int, bias: int, subnormals: bool, specials: str) -> float:
    """The value of a minifloat code, straight from the definition."""
    sign = code >> (exp_bits + man_bits)
    exp = (code >> man_bits) & ((1 << exp_bits) - 1)
    man = code & ((1 << man_bits) - 1)
    top = (1 << exp_bits) - 1
    if specials == "ieee" and exp == top:
        magnitude = math.inf if man == 0 else math.nan
    elif specials == "fn" and exp == top and man == (1 << man_bits) - 1:
        magnitude = math.nan
    elif exp == 0:
        magnitude = float(Fraction(man, 1 << man_bits) * Fraction(2) ** (1 - bias)) if subnormals else 0.0
    else:
        magnitude = float((1 + Fraction(man, 1 << man_bits)) * Fraction(2) ** (exp - bias))
    return -magnitude if sign else magnitude


def ref_decode(name: str) -> np.ndarray:
    """Values of every code of a format, from the oracle (ml_dtypes, numpy, or the definition)."""
    if name in ML_FLOATS:
        return np.arange(1 << get_format(name).bits, dtype=np.uint8).view(ML_FLOATS[name]).astype(np.float64)
    if name in CUSTOM:
        p = CUSTOM[name]
        return np.array([ref_minifloat(c, *p) for c in range(1 << (1 + p[0] + p[1]))])
    m = re.fullmatch(r"(u?)int(\d+)", name)
    bits = int(m[2])
    codes = np.arange(1 << bits, dtype=np.int64)
    return (codes if m[1] else np.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes)).astype(np.float64)


def float_fields(name: str) -> tuple[int, int]:
    """(exp_bits, man_bits) of a named or custom minifloat, from the oracle's tables."""
    if name in CUSTOM:
        return CUSTOM[name][:2]
    return {"minifloat4": (2, 1), "minifloat6": (3, 2), "minifloat6_e2m3": (2, 3),
            "fp8_e4m3": (4, 3), "fp8_e5m2": (5, 2)}[name]


def ladder(name: str) -> np.ndarray:
    """Distinct non-negative finite values of a format, increasing."""
    v = ref_decode(name)
    return np.unique(np.abs(v[np.isfinite(v)]))


def oracle_codes(name: str, x32: np.ndarray) -> np.ndarray:
    """ml_dtypes' codes for float32 inputs (converted without double rounding)."""
    assert x32.dtype == np.float32
    return x32.astype(ML_FLOATS[name]).view(np.uint8)


def assert_codes_equal(fmt, x: np.ndarray, got: np.ndarray, expected: np.ndarray) -> None:
    bad = np.flatnonzero(np.asarray(got) != np.asarray(expected))
    if bad.size:
        i = bad[:8]
        raise AssertionError(f"{fmt}: {bad.size} of {x.size} inputs quantized wrongly; "
                             f"x={x.ravel()[i].tolist()} got={np.asarray(got).ravel()[i].tolist()} "
                             f"expected={np.asarray(expected).ravel()[i].tolist()}")


# --- decode -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [*ML_FLOATS, *ML_INTS])
def test_decode_matches_ml_dtypes(name):
    fmt = get_format(name)
    codes = np.arange(1 << fmt.bits, dtype=np.uint8)
    dtype = ML_FLOATS.get(name) or ML_INTS[name]
    expected = codes.view(dtype).astype(np.float64)
    got = fmt.decode(codes)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)          # NaN where NaN, Inf where Inf
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))   # -0.0 and -NaN too


@pytest.mark.parametrize("name", [*CUSTOM, "int2", "uint2", "int12", "uint12", "int16", "uint16"])
def test_decode_matches_definition(name):
    fmt = get_format(name)
    expected = ref_decode(name)
    got = fmt.decode(fmt.codes)
    assert np.array_equal(got, expected, equal_nan=True)
    np.testing.assert_array_equal(np.signbit(got[~np.isnan(got)]), np.signbit(expected[~np.isnan(expected)]))


def test_decode_rejects_bad_codes():
    fmt = get_format("minifloat4")
    with pytest.raises(ValueError, match=r"0\.\.15"):
        fmt.decode([16])
    with pytest.raises(ValueError):
        fmt.decode([-1])
    with pytest.raises(TypeError):
        fmt.decode([1.0])


@pytest.mark.parametrize("name,value", [
    ("minifloat4", 6.0), ("minifloat6", 28.0), ("minifloat6_e2m3", 7.5), ("fp8_e4m3", 448.0),
    ("fp8_e5m2", 57344.0), ("int4", 7), ("int8", 127), ("uint4", 15), ("uint8", 255),
])
def test_published_max(name, value):
    fmt = get_format(name)
    assert fmt.max == value
    if isinstance(fmt, Minifloat):
        assert fmt.min == -value
    elif name.startswith("int"):
        assert fmt.min == -value - 1
    else:
        assert fmt.min == 0


# --- quantize against ml_dtypes -----------------------------------------------------------------

def _rng(name: str, salt: int) -> np.random.Generator:
    return np.random.default_rng([salt, *name.encode()])


@pytest.mark.parametrize("name", ML_FLOATS)
def test_quantize_uniform(name):
    fmt = get_format(name)
    x = _rng(name, 1).uniform(-fmt.max, fmt.max, N_RANDOM).astype(np.float32)
    x = np.clip(x, -fmt.max, fmt.max)                      # float32 rounding must not leave the range
    assert_codes_equal(fmt, x, fmt.quantize(x.astype(np.float64)), oracle_codes(name, x))


@pytest.mark.parametrize("name", ML_FLOATS)
def test_quantize_log_uniform(name):
    fmt = get_format(name)
    values = ladder(name)
    rng = _rng(name, 2)
    lo, hi = math.log2(values[1]) - 3, math.log2(values[-1])
    x = (np.exp2(rng.uniform(lo, hi, N_RANDOM)) * rng.choice([-1.0, 1.0], N_RANDOM)).astype(np.float32)
    x = np.clip(x, -fmt.max, fmt.max)
    assert_codes_equal(fmt, x, fmt.quantize(x.astype(np.float64)), oracle_codes(name, x))


@pytest.mark.parametrize("name", ML_FLOATS)
def test_quantize_ties_to_even(name):
    fmt = get_format(name)
    values = ladder(name)
    mid = (values[:-1] + values[1:]) / 2                      # exact in float32: at most 4 significant bits
    x = np.concatenate([mid, -mid]).astype(np.float32)
    assert np.array_equal(x.astype(np.float64), np.concatenate([mid, -mid]))
    assert_codes_equal(fmt, x, fmt.quantize(x.astype(np.float64)), oracle_codes(name, x))


@pytest.mark.parametrize("name", [*ML_FLOATS, *CUSTOM])
def test_quantize_next_to_ties_rounds_to_nearest(name):
    """One float64 ulp either side of every midpoint goes to the nearer neighbour (no double rounding)."""
    fmt = get_format(name)
    values = ladder(name)                                     # flushed codes are zeros: not candidates
    mid = (values[:-1] + values[1:]) / 2
    above, below = np.nextafter(mid, np.inf), np.nextafter(mid, 0)
    for x, nearest in ((above, values[1:]), (below, values[:-1])):
        for sign in (1.0, -1.0):
            got = fmt.decode(fmt.quantize(sign * x))
            assert_codes_equal(fmt, sign * x, got, sign * nearest)


def _min_normal(name: str) -> float:
    return 2.0 ** (1 - CUSTOM[name][2])


@pytest.mark.parametrize("name", ML_FLOATS)
def test_quantize_subnormals(name):
    fmt = get_format(name)
    exp_bits, man_bits = float_fields(name)
    values = ladder(name)
    smallest = values[1]
    min_normal = smallest * (1 << man_bits)
    rng = _rng(name, 3)
    n = N_RANDOM // 4
    sub = rng.uniform(0, min_normal, n)
    tiny = rng.uniform(0, smallest / 2, n)
    x = np.concatenate([sub, tiny, -sub, -tiny]).astype(np.float32)
    assert_codes_equal(fmt, x, fmt.quantize(x.astype(np.float64)), oracle_codes(name, x))
    # Below half the smallest subnormal is a zero of the input's sign; half of it is a tie to (even) zero.
    sign_bit = 1 << (fmt.bits - 1)
    edge = np.array([smallest / 2, np.nextafter(smallest / 2, 0), 1e-300, 5e-324, 0.0])
    np.testing.assert_array_equal(fmt.quantize(edge), 0)
    np.testing.assert_array_equal(fmt.quantize(-edge), sign_bit)
    np.testing.assert_array_equal(fmt.quantize(np.nextafter(smallest / 2, 1)), 1)


@pytest.mark.parametrize("name", [*ML_FLOATS, *CUSTOM])
def test_quantize_saturates(name):
    fmt = get_format(name)
    if name in PUBLISHED_MAX:
        top, max_code = PUBLISHED_MAX[name]
    else:
        reference = ref_decode(name)
        finite = np.flatnonzero(np.isfinite(reference))
        max_code = int(finite[np.argmax(reference[finite])])
        top = reference[max_code]
    assert fmt.decode(max_code) == top
    ulp = top - ladder(name)[-2]
    x = np.array([top, np.nextafter(top, np.inf), top + ulp / 2, top + ulp, top * 1.5, top * 2, 1e30,
                  1e300, np.finfo(np.float64).max, np.inf])
    sign_bit = 1 << (fmt.bits - 1)
    np.testing.assert_array_equal(fmt.quantize(x), max_code)
    np.testing.assert_array_equal(fmt.quantize(-x), max_code | sign_bit)


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_quantize_of_finite_input_is_finite(name):
    fmt = get_format(name)
    rng = _rng(name, 4)
    magnitude = np.exp2(rng.uniform(-1074, 1024, 20_000))
    x = np.concatenate([magnitude, -magnitude, [np.finfo(np.float64).max, -np.finfo(np.float64).max, 0.0, -0.0]])
    assert np.isfinite(x).all()
    decoded = fmt.decode(fmt.quantize(x))
    assert np.isfinite(decoded).all(), x[~np.isfinite(decoded)][:8]


@pytest.mark.parametrize("name", [*ML_INTS, "int2", "uint2", "int12", "uint16"])
def test_quantize_integers(name):
    fmt = get_format(name)
    m = re.fullmatch(r"(u?)int(\d+)", name)
    bits = int(m[2])
    lo, hi = (0, (1 << bits) - 1) if m[1] else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    rng = _rng(name, 5)
    x = np.concatenate([
        rng.uniform(lo - 4, hi + 4, N_RANDOM // 2),
        np.arange(lo - 4, hi + 4) + 0.5,                     # every tie
        [np.inf, -np.inf, 1e300, -1e300, -0.0, 0.49999999999999994, -0.5, 0.5, 1.5, 2.5],
    ])
    expected = np.clip(np.rint(x), lo, hi).astype(np.int64) % (1 << bits)
    assert_codes_equal(fmt, x, fmt.quantize(x), expected)


@pytest.mark.parametrize("name,code", [("fp8_e4m3", 0x7F), ("fp8_e5m2", None), ("e3m2fn", 0b0_111_11)])
def test_quantize_nan(name, code):
    fmt = get_format(name)
    got = fmt.quantize(np.array([np.nan, -np.nan, 1.0]))
    assert np.isnan(fmt.decode(got[:2])).all()
    if code is not None:
        np.testing.assert_array_equal(got[:2], code)


@pytest.mark.parametrize("name", ["minifloat6", "minifloat4", "int8", "uint4"])
def test_quantize_nan_without_nan_code(name):
    with pytest.raises(ValueError, match="NaN"):
        get_format(name).quantize(np.array([1.0, np.nan]))


# --- round trip -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", dict.fromkeys([*format_names(), *SMALL_FORMATS]))
def test_round_trip(name):
    fmt = get_format(name)
    codes = np.arange(1 << fmt.bits)
    values = fmt.decode(codes)
    finite = np.isfinite(ref_decode(name) if name in SMALL_FORMATS else values)
    expected = codes.copy()
    sign_bit = 1 << (fmt.bits - 1)
    if isinstance(fmt, Minifloat):
        exp_bits, man_bits = float_fields(name)
        # -0.0 keeps its sign, as in ml_dtypes: the code of negative zero round-trips too.
        assert fmt.quantize(-0.0) == sign_bit
        assert fmt.quantize(0.0) == 0
        if name in FTZ:
            # Exponent field 0 with a non-zero mantissa decodes to a zero of its sign and comes back as that zero.
            flushed = ((codes >> man_bits) & ((1 << exp_bits) - 1) == 0) & (codes & ((1 << man_bits) - 1) != 0)
            assert flushed.sum() == 2 * ((1 << man_bits) - 1)
            expected = np.where(flushed, codes & sign_bit, codes)
    got = fmt.quantize(values[finite])
    assert_codes_equal(fmt, values[finite], got, expected[finite])


# --- exact decomposition ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", dict.fromkeys([*format_names(), *ALL_FORMATS]))
def test_exact_decomposition(name):
    fmt = get_format(name)
    codes = np.arange(1 << fmt.bits)
    sig, shift, finite = fmt.exact(codes)
    values = fmt.decode(codes)
    assert sig.dtype == np.int64 and shift.dtype == np.int64 and finite.dtype == bool
    np.testing.assert_array_equal(finite, np.isfinite(values))
    assert (shift >= 0).all() and (shift <= fmt.max_shift).all()
    assert (sig[~finite] == 0).all()
    for c in np.flatnonzero(finite):
        exact = Fraction(int(sig[c])) * Fraction(2) ** (int(shift[c]) + fmt.lsb_exponent)
        assert exact == Fraction(float(values[c])), (name, int(c), int(sig[c]), int(shift[c]), values[c])


# --- products and accumulators --------------------------------------------------------------------

PRODUCT_PAIRS = [("int4", "int4"), ("uint4", "uint4"), ("minifloat4", "minifloat4"), ("minifloat6", "minifloat6"),
                 ("minifloat6_e2m3", "minifloat6_e2m3"), ("int4", "int8"), ("int8", "uint8"),
                 ("fp8_e4m3", "minifloat6"), ("fp8_e4m3", "fp8_e4m3"), ("e2m2ftz", "uint4")]
TERMS = [1, 3, 5, 16, 20, 1000, 4096]


def _two_adic(x: Fraction) -> int:
    """Exponent of the largest power of two dividing ``x`` (x non-zero)."""
    n, d = x.numerator, x.denominator
    return ((n & -n).bit_length() - 1) - ((d & -d).bit_length() - 1)


def brute_force_product(a: str, b: str) -> tuple[int, int, int]:
    """(min_exponent, lo, hi): the exact product range of two formats in units of ``2 ** min_exponent``,
    by enumeration of every pair of finite values."""
    va = {Fraction(float(v)) for v in ref_decode(a) if np.isfinite(v)}
    vb = {Fraction(float(v)) for v in ref_decode(b) if np.isfinite(v)}
    # The weight of the least significant bit: the coarsest power of two that divides every value.
    unit = Fraction(2) ** (min(_two_adic(v) for v in va if v) + min(_two_adic(v) for v in vb if v))
    products = [x * y / unit for x in va for y in vb]
    assert all(p.denominator == 1 for p in products)
    return _two_adic(unit), int(min(products)), int(max(products))


def holds(width: int, lo: int, hi: int) -> bool:
    return -(1 << (width - 1)) <= lo and hi < (1 << (width - 1))


@pytest.mark.parametrize("a,b", PRODUCT_PAIRS, ids=[f"{a}*{b}" for a, b in PRODUCT_PAIRS])
def test_product_of(a, b):
    exponent, lo, hi = brute_force_product(a, b)
    p = product_of(get_format(a), get_format(b))
    assert p.min_exponent == exponent
    assert (p.fixed_min, p.fixed_max) == (lo, hi)
    assert holds(p.fixed_bits, lo, hi) and not holds(p.fixed_bits - 1, lo, hi)


@pytest.mark.parametrize("a,b", PRODUCT_PAIRS, ids=[f"{a}*{b}" for a, b in PRODUCT_PAIRS])
def test_accumulator_bits_is_minimal(a, b):
    _, lo, hi = brute_force_product(a, b)
    fa, fb = get_format(a), get_format(b)
    for k in TERMS:
        width = accumulator_bits(fa, fb, k)
        assert holds(width, k * lo, k * hi), (k, width)
        assert not holds(width - 1, k * lo, k * hi), f"{a} x {b}, {k} terms: {width - 1} bits are enough"


@pytest.mark.parametrize("terms", [0, -1, True, 1.5, "3"])
def test_accumulator_bits_rejects_bad_terms(terms):
    with pytest.raises(ValueError, match="terms"):
        accumulator_bits(get_format("int8"), get_format("int8"), terms)


@pytest.mark.parametrize("lo,hi,width", [(0, 0, 1), (-1, 0, 1), (0, 1, 2), (-2, 1, 2), (-128, 127, 8),
                                         (-129, 0, 9), (0, 128, 9), (-(1 << 70), 0, 71), (0, 1 << 70, 72)])
def test_signed_width(lo, hi, width):
    assert signed_width(lo, hi) == width


def test_signed_width_rejects_empty_range():
    with pytest.raises(ValueError, match="3..2"):
        signed_width(3, 2)


# --- the registry ---------------------------------------------------------------------------------

def test_named_formats():
    names = format_names()
    assert set(ML_FLOATS) <= set(names) and {"int4", "int8", "uint8"} <= set(names)
    for name in names:
        fmt = get_format(name)
        assert fmt.name == name == str(fmt)
        assert get_format(fmt) is fmt
        assert get_format(name.upper()) == fmt
        assert get_format(f"  {name} ") == fmt
        if isinstance(fmt, Minifloat):
            assert get_format(name.upper()) is fmt


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", range(2, 17))
def test_integer_names(bits, signed):
    name = f"{'' if signed else 'u'}int{bits}"
    fmt = get_format(name)
    assert isinstance(fmt, IntFormat)
    assert fmt == IntFormat(bits, signed=signed)
    assert (fmt.name, fmt.bits, fmt.signed) == (name, bits, signed)
    assert get_format(name.upper()) == fmt
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    assert (fmt.min, fmt.max) == (lo, hi)


@pytest.mark.parametrize("name,named", [
    ("e3m2", "minifloat6"), ("E3M2", "minifloat6"), ("e3m2b3", "minifloat6"), ("e2m1", "minifloat4"),
    ("e2m3", "minifloat6_e2m3"), ("e4m3fn", "fp8_e4m3"), ("E4M3FN", "fp8_e4m3"), ("e5m2ieee", "fp8_e5m2"),
    ("FP8_E5M2", "fp8_e5m2"), ("Minifloat6", "minifloat6"),
])
def test_custom_names_of_named_formats(name, named):
    assert get_format(name) is get_format(named)


def test_e3m2b5():
    fmt = get_format("e3m2b5")
    assert (fmt.exp_bits, fmt.man_bits, fmt.bias, fmt.subnormals, fmt.name) == (3, 2, 5, True, "e3m2b5")
    # Largest code 0_111_11: (1 + 3/4) * 2 ** (7 - 5) = 7; smallest subnormal 0_000_01: 1/4 * 2 ** (1 - 5).
    assert fmt.max == 7.0 and fmt.min == -7.0
    assert fmt.decode(0b0_000_01) == 2.0 ** -6
    assert get_format("e3m2b5") == Minifloat(3, 2, 5)


def test_e2m2ftz():
    fmt = get_format("e2m2ftz")
    assert (fmt.exp_bits, fmt.man_bits, fmt.bias, fmt.subnormals, fmt.name) == (2, 2, 1, False, "e2m2ftz")
    # Largest code 0_11_11: (1 + 3/4) * 2 ** (3 - 1) = 7; smallest positive 0_01_00: 2 ** (1 - 1) = 1.
    assert fmt.max == 7.0
    assert fmt.decode(0b0_00_11) == 0.0 and fmt.decode(0b0_01_00) == 1.0


@pytest.mark.parametrize("name", ["int1", "int17", "uint0", "e9m1", "e0m2", "e3m11", "e8m10", "float8", "",
                                  "int", "e3m2xyz", "fp8", 123, None])
def test_bad_names(name):
    with pytest.raises(FormatError) as caught:
        get_format(name)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert repr(name) in message, message
    assert "int2..int16" in message, message
    assert "eXmY" in message, message


# --- flush to zero ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FTZ)
def test_ftz_decode(name):
    fmt = get_format(name)
    exp_bits, man_bits = float_fields(name)
    assert fmt.subnormals is False
    codes = np.arange(1 << fmt.bits)
    zero_exp = ((codes >> man_bits) & ((1 << exp_bits) - 1)) == 0
    values = fmt.decode(codes[zero_exp])
    np.testing.assert_array_equal(values, 0.0)
    np.testing.assert_array_equal(np.signbit(values), codes[zero_exp] >> (fmt.bits - 1) == 1)


@pytest.mark.parametrize("name", FTZ)
def test_ftz_quantize_never_subnormal(name):
    fmt = get_format(name)
    exp_bits, man_bits = float_fields(name)
    min_normal = _min_normal(name)
    rng = _rng(name, 6)
    x = np.concatenate([rng.uniform(-min_normal, min_normal, 50_000),
                        np.exp2(rng.uniform(-60, 20, 50_000)) * rng.choice([-1.0, 1.0], 50_000),
                        np.arange(1, 1 << man_bits) * min_normal / (1 << man_bits)])
    got = fmt.quantize(x).astype(np.int64)
    exp = (got >> man_bits) & ((1 << exp_bits) - 1)
    man = got & ((1 << man_bits) - 1)
    assert not ((exp == 0) & (man != 0)).any()
    # Below the smallest normal, the nearest of zero and the smallest normal.
    sub = np.abs(x) < min_normal
    nearest = np.where(np.abs(x[sub]) < min_normal / 2, 0.0, min_normal)
    off_tie = np.abs(x[sub]) != min_normal / 2
    np.testing.assert_array_equal(np.abs(fmt.decode(got[sub]))[off_tie], nearest[off_tie])


def _every_minifloat():
    """Every exponent and mantissa width, subnormals on and off, each kind of specials, at the default bias and
    both ends of its supported range."""
    for e in range(1, 6):
        for m in range(0, 11):
            for subnormals in (True, False):
                for specials in Specials:
                    try:
                        lo, hi = Minifloat(e, m, subnormals=subnormals, specials=specials).bias_range
                    except FormatError:
                        continue
                    for bias in sorted({lo, hi, (1 << (e - 1)) - 1}):
                        try:
                            yield Minifloat(e, m, bias, subnormals, specials)
                        except FormatError:
                            pass


def test_round_values_is_decode_of_quantize_for_every_minifloat():
    """The arithmetic rounding of calibration against the ladder of codes: on every value, midpoint between
    neighbours, the floats beside each midpoint, beyond the maximum and random values; sign bits included."""
    rng = np.random.default_rng(0)
    count = 0
    for fmt in _every_minifloat():
        values = fmt._ladder[0]
        mids = (values[1:] + values[:-1]) / 2
        x = np.concatenate([values, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf),
                            [values[-1] * 1.01, np.inf, 1e300, 1e-300, 0.0]])
        x = np.concatenate([x, -x, rng.standard_normal(500) * values[-1] / 3])
        expected, got = fmt.decode(fmt.quantize(x)), fmt.round_values(x)
        np.testing.assert_array_equal(got, expected, err_msg=fmt.name)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(expected), err_msg=fmt.name)
        count += 1
    assert count > 500
