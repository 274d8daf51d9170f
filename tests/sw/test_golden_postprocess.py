"""Post-processing (sw/golden/postprocess.py) against exact rational arithmetic.

The reference here computes ``v = (acc + B) * M * 2**(acc_exponent - S)`` as a ``fractions.Fraction``, rounds
integers half to even with its own rule, and picks minifloat codes by searching every finite code of
``fmt.decode()`` (checked against ml_dtypes in tests/spec/test_formats.py) for the nearest value. Nothing in
it uses the integer shortcuts under test.
"""

import random
from fractions import Fraction

import numpy as np
import pytest

from hw.spec.formats import get_format
from sw.golden.postprocess import clamp_codes, rescale, round_half_even_shift

#: Integer output formats: (bits, signed), from their names.
INT_FORMATS = {"int8": (8, True), "uint8": (8, False), "int4": (4, True)}
MINIFLOATS = ["minifloat6", "fp8_e4m3", "fp8_e5m2", "minifloat4"]
HALF = Fraction(1, 2)


# --- the reference ---------------------------------------------------------------------------------------

def rne(x: Fraction) -> int:
    """``x`` rounded to the nearest integer, ties to the even one."""
    floor = x.numerator // x.denominator
    rest = x - floor
    if rest > HALF or (rest == HALF and floor % 2 == 1):
        floor += 1
    return floor


def int_range(name: str) -> tuple[int, int]:
    bits, signed = INT_FORMATS[name]
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def int_value(name: str, code: int) -> int:
    bits, signed = INT_FORMATS[name]
    return code - (1 << bits) if signed and code >> (bits - 1) else code


def int_code(name: str, value: int) -> int:
    return value & ((1 << INT_FORMATS[name][0]) - 1)


class MinifloatTable:
    """Every finite code of a minifloat with its exact value."""

    def __init__(self, name: str):
        fmt = get_format(name)
        self.bits = fmt.bits
        values = fmt.decode(np.arange(1 << fmt.bits))
        self.value = {c: (Fraction(float(x)) if np.isfinite(x) else None) for c, x in enumerate(values)}
        self.finite = [(v, c) for c, v in self.value.items() if v is not None]

    def nearest(self, v: Fraction) -> int:
        """The code nearest to ``v``; ties to the code with an even mantissa LSB; zero keeps the sign of ``v``.

        Beyond the largest finite value the nearest finite code is the largest one: saturation.
        """
        negative = v < 0
        return min(self.finite, key=lambda vc: (abs(v - vc[0]), vc[1] & 1,
                                                (vc[1] >> (self.bits - 1)) != negative))[1]


_TABLES: dict[str, MinifloatTable] = {}


def table(name: str) -> MinifloatTable:
    if name not in _TABLES:
        _TABLES[name] = MinifloatTable(name)
    return _TABLES[name]


def code_value(name: str, code: int):
    """Exact value of a code; None for NaN/Inf."""
    return Fraction(int_value(name, code)) if name in INT_FORMATS else table(name).value[code]


def exact(acc: int, bias: int, multiplier: int, acc_exponent: int, shift: int) -> Fraction:
    return Fraction(acc + bias) * multiplier * Fraction(2) ** (acc_exponent - shift)


def saturated(bias: int, acc_bits: int | None) -> int:
    """A bias as the accumulator holds it: within [-2**(acc_bits-1), 2**(acc_bits-1) - 1]."""
    if acc_bits is None:
        return bias
    return min(max(bias, -2 ** (acc_bits - 1)), 2 ** (acc_bits - 1) - 1)


def reference(acc, nonfinite, acc_exponent, bias, multiplier, shift, name, zero_point=0, clamp_lo=None,
              clamp_hi=None, acc_bits=None) -> np.ndarray:
    rows, cols = len(acc), len(acc[0])
    out = np.zeros((rows, cols), dtype=np.int64)
    for i in range(rows):
        for j in range(cols):
            v = exact(int(acc[i][j]), saturated(int(bias[j]), acc_bits), int(multiplier[j]), acc_exponent,
                      int(shift[j]))
            if name in INT_FORMATS:
                lo, hi = int_range(name)
                y = zero_point if nonfinite[i][j] else rne(v) + zero_point
                q = int_code(name, min(max(y, lo), hi))
            elif nonfinite[i][j]:
                fmt = get_format(name)
                q = fmt.nan_code if fmt.has_nan else 0
            else:
                q = table(name).nearest(v)
                if code_value(name, q) == 0:
                    q = 0                                   # a zero result is +0, never -0
            value = code_value(name, q)
            if value is not None:
                if clamp_hi is not None and value >= code_value(name, clamp_hi):
                    q = clamp_hi
                elif clamp_lo is not None and value <= code_value(name, clamp_lo):
                    q = clamp_lo
            out[i, j] = q
    return out


def check(acc, nonfinite, acc_exponent, bias, multiplier, shift, name, zero_point=0, clamp_lo=None, clamp_hi=None,
          acc_bits=None):
    """rescale() equals the reference; returns the codes."""
    got = rescale(np.array(acc, dtype=object), np.array(nonfinite, dtype=bool), acc_exponent,
                  np.array(bias, dtype=object), np.array(multiplier, dtype=object), np.array(shift, dtype=object),
                  name, zero_point=zero_point, clamp_lo=clamp_lo, clamp_hi=clamp_hi, acc_bits=acc_bits)
    want = reference(acc, nonfinite, acc_exponent, bias, multiplier, shift, name, zero_point, clamp_lo, clamp_hi,
                     acc_bits)
    assert got.shape == want.shape
    assert got.dtype == (np.uint8 if get_format(name).bits <= 8 else np.uint16)
    bad = np.argwhere(got.astype(np.int64) != want)
    if bad.size:
        i, j = bad[0]
        raise AssertionError(
            f"{name}: acc={acc[i][j]} nonfinite={nonfinite[i][j]} bias={bias[j]} (acc_bits={acc_bits}) "
            f"multiplier={multiplier[j]} "
            f"shift={shift[j]} acc_exponent={acc_exponent} zero_point={zero_point} clamp={clamp_lo}..{clamp_hi}: "
            f"got code {int(got[i, j]):#x}, expected {int(want[i, j]):#x} ({len(bad)} mismatches)")
    return got.astype(np.int64)


# --- random cases ----------------------------------------------------------------------------------------

def signed_random(rng: random.Random, max_bits: int, min_bits: int = 0) -> int:
    """A random integer of ``min_bits..max_bits`` bits (at most), either sign."""
    v = rng.getrandbits(rng.randint(min_bits, max_bits))
    return -v if rng.random() < 0.5 else v


def random_case(rng: random.Random, name: str, acc_exponent: int, rows: int = 32, cols: int = 8):
    """Accumulators up to 2**60, int32 multipliers, shifts 0..63: half the columns aim at the output range."""
    out_bits = 9 if name in INT_FORMATS else 18
    acc, bias, multiplier, shift = [[0] * cols for _ in range(rows)], [], [], []
    for j in range(cols):
        m = signed_random(rng, 31)
        m = max(min(m, (1 << 31) - 1), -(1 << 31))
        acc_bits = rng.randint(0, 60)
        for i in range(rows):
            acc[i][j] = signed_random(rng, acc_bits, max(acc_bits - 4, 0)) if rng.random() < 0.9 else \
                rng.choice([0, 1 << 60, -(1 << 60)])
        if rng.random() < 0.5:      # aim at the interesting range: v has about out_bits bits or fewer
            s = acc_bits + abs(m).bit_length() + acc_exponent - rng.randint(-4, out_bits)
            s = min(max(s, 0), 63)
        else:
            s = rng.randint(0, 63)
        bias.append(signed_random(rng, rng.choice([0, acc_bits, acc_bits, 62])))
        multiplier.append(m)
        shift.append(s)
    nonfinite = [[rng.random() < 0.05 for _ in range(cols)] for _ in range(rows)]
    return acc, nonfinite, bias, multiplier, shift


def random_clamp(rng: random.Random, name: str):
    if rng.random() < 0.4:
        return None, None
    if name in INT_FORMATS:
        lo, hi = sorted(rng.randint(*int_range(name)) for _ in range(2))
        return int_code(name, lo), int_code(name, hi)
    finite = table(name).finite
    (_, lo), (_, hi) = sorted(rng.sample(finite, 2))
    return lo, hi


@pytest.mark.parametrize("acc_exponent", [0, -6, -18])
@pytest.mark.parametrize("name", list(INT_FORMATS))
def test_random_integer_outputs(name, acc_exponent):
    rng = random.Random(f"{name}{acc_exponent}")
    lo, hi = int_range(name)
    for _ in range(3):
        acc, nonfinite, bias, multiplier, shift = random_case(rng, name, acc_exponent)
        zero_point = rng.choice([0, rng.randint(lo, hi), rng.randint(-40000, 40000) >> 8])
        check(acc, nonfinite, acc_exponent, bias, multiplier, shift, name, zero_point, *random_clamp(rng, name))


@pytest.mark.parametrize("acc_exponent", [0, -6, -18, -30])
@pytest.mark.parametrize("name", MINIFLOATS)
def test_random_minifloat_outputs(name, acc_exponent):
    rng = random.Random(f"{name}{acc_exponent}")
    acc, nonfinite, bias, multiplier, shift = random_case(rng, name, acc_exponent)
    check(acc, nonfinite, acc_exponent, bias, multiplier, shift, name, 0, *random_clamp(rng, name))


@pytest.mark.parametrize("name", ["int8", "minifloat6", "fp8_e5m2"])
def test_random_outputs_with_bias_saturation(name):
    """Biases beyond the accumulator saturate to it; random widths, biases drawn around the bounds."""
    rng = random.Random(f"saturation-{name}")
    for _ in range(4):
        acc_bits = rng.randint(8, 70)
        acc, nonfinite, bias, multiplier, shift = random_case(rng, name, -6)
        half = 1 << (acc_bits - 1)
        bias = [rng.choice([-half - 1, -half, -half + 1, half - 2, half - 1, half, half + 1, b, b]) for b in bias]
        acc = [[max(min(a, half - 1), -half) for a in row] for row in acc]
        check(acc, nonfinite, -6, bias, multiplier, shift, name, 0, acc_bits=acc_bits)


@pytest.mark.parametrize("acc_bits", [10, 28, 64, 69])
def test_bias_saturates_exactly_at_the_accumulator_bounds(acc_bits):
    """One unit inside, at and beyond each bound: a bound off by one changes the output."""
    half = 1 << (acc_bits - 1)
    for bias, acc, want in ((half - 2, 7 - half, 5), (half - 1, 7 - half, 6), (half, 7 - half, 6),
                            (half + 1, 7 - half, 6), (-half + 1, half - 8, -7), (-half, half - 8, -8),
                            (-half - 1, half - 8, -8)):
        # A bias beyond the bound saturates first: (acc + saturated bias) * 1 * 2**0, int8 output.
        got = check([[acc]], [[False]], 0, [bias], [1], [0], "int8", acc_bits=acc_bits)
        assert int_value("int8", int(got[0, 0])) == want, (bias, acc, got)


def test_random_cases_are_not_all_saturated():
    """The random cases above reach more than the two ends of every format."""
    rng = random.Random("spread")
    for name in [*INT_FORMATS, *MINIFLOATS]:
        acc, nonfinite, bias, multiplier, shift = random_case(rng, name, -6)
        codes = rescale(np.array(acc, dtype=object), np.zeros((len(acc), len(acc[0])), dtype=bool), -6,
                        np.array(bias, dtype=object), np.array(multiplier, dtype=object),
                        np.array(shift, dtype=object), name)
        assert len(np.unique(codes)) >= (8 if get_format(name).bits > 4 else 6), name


# --- edge cases by hand ----------------------------------------------------------------------------------

def simple(acc, s, name, **kw):
    """Codes of one row of accumulators with bias 0, multiplier 1, shift ``s``, acc_exponent 0: v = acc / 2**s."""
    n = len(acc)
    return check([acc], [[False] * n], 0, [0] * n, [1] * n, [s] * n, name, **kw)[0].tolist()


def test_integer_ties_to_even():
    # acc / 2: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, -3.5 -> -4, 0.5 -> 0, -0.5 -> 0, 1.5 -> 2, -1.5 -> -2.
    assert simple([5, 7, -5, -7, 1, -1, 3, -3], 1, "int8") == [2, 4, 0xFE, 0xFC, 0, 0, 2, 0xFE]
    # acc / 4: 0.5 -> 0, 1.5 -> 2, -0.5 -> 0, -1.5 -> -2, 2.5 -> 2, 0.75 -> 1, -0.75 -> -1, -0.25 -> 0.
    assert simple([2, 6, -2, -6, 10, 3, -3, -1], 2, "int8") == [0, 2, 0, 0xFE, 2, 1, 0xFF, 0]
    # Zero point is added after rounding: rne(2.5) + 3 = 5, rne(-2.5) - 3 = -5.
    assert simple([5], 1, "int8", zero_point=3) == [5]
    assert simple([-5], 1, "int8", zero_point=-3) == [0xFB]
    # Many bits below the binary point: (2**41 + 2**40) / 2**41 = 1.5 -> 2 (and 5 * 2**59 / 2**41 saturates);
    # 5 * 2**59 / 2**61 = 1.25 -> 1; (2**62 + 2**60 + 2**59) / 2**60 = 5.5 -> 6, one unit more -> 6, one less -> 5.
    assert simple([(1 << 41) + (1 << 40), 5 << 59], 41, "int8") == [2, 0x7F]
    assert simple([5 << 59], 61, "int8") == [1]
    assert simple([(1 << 62) + (1 << 60) + (1 << 59) + d for d in (0, 1, -1)], 60, "int8") == [6, 6, 5]
    assert simple([-(1 << 62) - (1 << 60) - (1 << 59) + d for d in (0, 1, -1)], 60, "int8") == [0xFA, 0xFB, 0xFA]


def test_integer_saturation():
    assert simple([1000, -1000, 255, -257, 254, -256], 1, "int8") == [0x7F, 0x80, 0x7F, 0x80, 0x7F, 0x80]
    assert simple([120], 0, "int8", zero_point=10) == [0x7F]
    assert simple([-3, 511, 509, 1 << 60], 1, "uint8") == [0, 255, 254, 255]
    # uint8 with zero point 128: -128.5 rounds to -128, + 128 = 0; -129 + 128 = -1 saturates to 0.
    assert simple([-257, -258, 255], 1, "uint8", zero_point=128) == [0, 0, 255]
    # int4: 7.5 -> 8 saturates to 7; -8.5 -> -8; -9 -> -8; 50 -> 7.
    assert simple([15, -17, -18, 100], 1, "int4") == [0x7, 0x8, 0x8, 0x7]


def test_integer_nonfinite_gives_the_zero_point():
    acc = [[123, -5, 7]]
    nonfinite = [[True, True, False]]
    got = check(acc, nonfinite, 0, [0] * 3, [1] * 3, [0] * 3, "int8", zero_point=-3)
    assert got.tolist() == [[0xFD, 0xFD, 4]]
    assert check(acc, nonfinite, 0, [0] * 3, [1] * 3, [0] * 3, "uint8", zero_point=128).tolist() == [[128, 128, 135]]
    assert check(acc, nonfinite, 0, [0] * 3, [1] * 3, [0] * 3, "int4", zero_point=200).tolist() == [[7, 7, 7]]


def test_minifloat_zero_is_always_positive():
    # minifloat4: -0.25 rounds to zero, which leaves as +0 (not the -0 code 0x8), with or without a ReLU.
    assert simple([-1], 2, "minifloat4", clamp_lo=0) == [0]
    assert simple([-1], 2, "minifloat4") == [0]
    # A clamp bound of -0 still gives its own code for values at or below it.
    assert simple([-8], 0, "minifloat4", clamp_lo=0x8) == [0x8]


def test_integer_relu():
    # ReLU: clamp_lo = code of the zero point.
    assert simple([-3, 0, 5, -128], 0, "int8", clamp_lo=0) == [0, 0, 5, 0]
    assert simple([-20, 4, 100], 0, "int8", zero_point=-5, clamp_lo=0xFB) == [0xFB, 0xFF, 95]
    # ReLU6 in units of 1: clamp_hi = 6.
    assert simple([-3, 5, 9, 1000], 0, "int8", clamp_lo=0, clamp_hi=6) == [0, 5, 6, 6]


@pytest.mark.parametrize("name, values, expected", [
    # minifloat4 (E2M1): 0, 0.5, 1, 1.5, 2, 3, 4, 6 are codes 0..7.
    # 2.5 -> 2 (code 4), 3.5 -> 4 (6), 5 -> 4 (6, even), 0.25 -> 0, 0.75 -> 1 (2), 1.25 -> 1 (2), 1.75 -> 2 (4),
    # 7 -> 6 (saturate), -5 -> -4 (0xE), -0.25 -> +0 (0, never -0).
    ("minifloat4", [Fraction(5, 2), Fraction(7, 2), 5, Fraction(1, 4), Fraction(3, 4), Fraction(5, 4),
                    Fraction(7, 4), 7, -5, Fraction(-1, 4)], [4, 6, 6, 0, 2, 2, 4, 7, 0xE, 0]),
    # fp8_e4m3: 1 = 0x38, 1.125 = 0x39, 1.25 = 0x3A, 448 = 0x7E (max).
    ("fp8_e4m3", [Fraction(17, 16), Fraction(19, 16), Fraction(-17, 16), 464, 480, 10 ** 6, -(10 ** 6)],
     [0x38, 0x3A, 0xB8, 0x7E, 0x7E, 0x7E, 0xFE]),
    # fp8_e5m2: 57344 = 0x7B (max); 61440 is half way to 65536 (which would be Inf): saturates.
    # 1 = 0x3C, 1.25 = 0x3D, 1.5 = 0x3E: 1.125 -> 0x3C, 1.375 -> 0x3E.
    ("fp8_e5m2", [61440, 10 ** 9, -61440, Fraction(9, 8), Fraction(11, 8)], [0x7B, 0x7B, 0xFB, 0x3C, 0x3E]),
    # minifloat6 (E3M2, bias 3): 28 = 0x1F (max); 1 = 0x0C; 1.125 -> 1 (tie, even); 1.375 -> 1.5 (0x0E).
    ("minifloat6", [28, 30, 1000, Fraction(9, 8), Fraction(11, 8), -30], [0x1F, 0x1F, 0x1F, 0x0C, 0x0E, 0x3F]),
])
def test_minifloat_edges(name, values, expected):
    # v = acc * 2**(acc_exponent - S) with acc_exponent = -8, S = 0: acc = v * 256.
    acc = [[int(Fraction(v) * 256) for v in values]]
    n = len(values)
    got = check(acc, [[False] * n], -8, [0] * n, [1] * n, [0] * n, name)
    assert got[0].tolist() == expected


@pytest.mark.parametrize("name, nan_code", [("fp8_e4m3", 0x7F), ("fp8_e5m2", 0x7F), ("minifloat6", 0),
                                            ("minifloat4", 0)])
def test_minifloat_nonfinite(name, nan_code):
    fmt = get_format(name)
    six = int(fmt.quantize(6.0))
    acc = [[5, -5, 1 << 40]]
    nonfinite = [[True, True, True]]
    assert check(acc, nonfinite, 0, [0] * 3, [1] * 3, [0] * 3, name).tolist() == [[nan_code] * 3]
    # A NaN is not clamped; a format without NaN gives zero, which the clamp then applies to.
    one = int(fmt.quantize(1.0))
    got = check(acc, nonfinite, 0, [0] * 3, [1] * 3, [0] * 3, name, clamp_lo=one, clamp_hi=six)
    assert got.tolist() == [[nan_code if fmt.has_nan else one] * 3]


@pytest.mark.parametrize("name", MINIFLOATS)
def test_minifloat_relu_and_relu6(name):
    fmt = get_format(name)
    six = int(fmt.quantize(6.0))
    assert fmt.decode(np.array([six]))[0] == 6.0
    values = [-100, -3, -1, 0, 1, 5, 6, 7, 100]
    acc = [[v * 4 for v in values]]
    n = len(values)
    rounded = [float(fmt.decode(fmt.quantize(float(v)))) for v in values]
    got = check(acc, [[False] * n], -2, [0] * n, [1] * n, [0] * n, name, clamp_lo=0)
    assert fmt.decode(got[0]).tolist() == [0, 0, 0, 0, *rounded[4:]]
    assert got[0][:4].tolist() == [0, 0, 0, 0]
    got = check(acc, [[False] * n], -2, [0] * n, [1] * n, [0] * n, name, clamp_lo=0, clamp_hi=six)
    assert fmt.decode(got[0]).tolist() == [0, 0, 0, 0, rounded[4], rounded[5], 6, 6, 6]


def test_all_midpoints_tie_to_even():
    """Every midpoint between neighbouring finite values of every minifloat goes to the even code."""
    for name in MINIFLOATS:
        ladder = sorted(v for v, c in table(name).finite if v >= 0)
        ladder = sorted(set(ladder))
        mids = [(a + b) / 2 for a, b in zip(ladder, ladder[1:])]
        mids += [-m for m in mids]
        scale = max(m.denominator for m in mids)
        exponent = -(scale.bit_length() - 1)
        acc = [[int(m * scale) for m in mids]]
        n = len(mids)
        got = check(acc, [[False] * n], exponent, [0] * n, [1] * n, [0] * n, name)
        assert all(code & 1 == 0 for code in got[0]), name


def test_bias_multiplier_shift_per_column():
    # Column j: (acc + B_j) * M_j / 2**S_j.
    acc = [[10, 10, 10], [-10, -10, -10]]
    got = check(acc, [[False] * 3] * 2, 0, [0, 5, -20], [1, 3, -1], [0, 1, 2], "int8")
    assert [[int_value("int8", c) for c in row] for row in got] == [[10, 22, 2], [-10, -8, 8]]


def test_clamp_codes_by_value():
    fmt = get_format("int8")
    codes = np.array([0x80, 0xFF, 0, 1, 0x7F], dtype=np.uint8)
    # -128, -1, 0, 1, 127 clamped to [-1, 1]: by value, not by code.
    assert clamp_codes(codes, fmt, 0xFF, 1).tolist() == [0xFF, 0xFF, 0, 1, 1]


# --- round_half_even_shift -------------------------------------------------------------------------------

@pytest.mark.parametrize("t, s, expected", [
    (3, 0, 3), (-3, 5, -96), (0, 100, 0), (1 << 70, 1, 1 << 71), (-(1 << 90), 30, -(1 << 120)),
    (5, -1, 2), (7, -1, 4), (-5, -1, -2), (-7, -1, -4), (1, -1, 0), (-1, -1, 0), (3, -1, 2), (-3, -1, -2),
    (6, -2, 2), (10, -2, 2), (-10, -2, -2), (-6, -2, -2), (-3, -2, -1), (-1, -2, 0), (3, -2, 1), (5, -2, 1),
    ((1 << 100) + (1 << 35), -36, 1 << 64),
    ((1 << 100) + 3 * (1 << 35), -36, (1 << 64) + 2),
    (-(1 << 100) - (1 << 35), -36, -(1 << 64)),
    ((1 << 100) + (1 << 35) + 1, -36, (1 << 64) + 1),
    ((1 << 200) - 1, -1, 1 << 199),
    (123, -200, 0), (-123, -200, 0), (1 << 199, -200, 0), (3 << 199, -200, 2), (-(1 << 199), -200, 0),
    (-(3 << 199), -200, -2), ((1 << 199) + 1, -200, 1),
])
def test_round_half_even_shift_by_hand(t, s, expected):
    got = round_half_even_shift(np.array([t], dtype=object), np.array([s], dtype=object))
    assert got.tolist() == [expected]
    assert type(got[0]) is int


def test_round_half_even_shift_random():
    rng = random.Random(3)
    t = [signed_random(rng, 100) for _ in range(2000)]
    s = [rng.randint(-120, 20) for _ in range(2000)]
    got = round_half_even_shift(np.array(t, dtype=object), np.array(s, dtype=object))
    assert got.tolist() == [rne(Fraction(v) * Fraction(2) ** k) for v, k in zip(t, s)]


def test_round_half_even_shift_shapes():
    t = np.array([[5, 7], [-5, 1 << 80]], dtype=object)
    assert round_half_even_shift(t, -1).tolist() == [[2, 4], [-2, 1 << 79]]
    assert round_half_even_shift(np.array([[9, 9]]), np.array([-1, -3])).tolist() == [[4, 1]]


# --- Minifloat.quantize_scaled ---------------------------------------------------------------------------

def scaled_cases(rng: random.Random, name: str, max_bits: int, n: int):
    """Integers ``t`` and exponents ``e`` with ``t * 2**e`` from below the smallest subnormal to beyond max."""
    fmt = get_format(name)
    top = int(np.log2(fmt.max)) + 3
    bottom = fmt.lsb_exponent - 3
    cases = []
    for _ in range(n):
        t = signed_random(rng, max_bits)
        e = rng.randint(bottom, top) - max(abs(t).bit_length(), 1) + 1
        cases.append((t, e))
    return cases


@pytest.mark.parametrize("name", MINIFLOATS)
def test_quantize_scaled_matches_quantize(name):
    fmt = get_format(name)
    rng = random.Random(name)
    cases = scaled_cases(rng, name, 53, 3000)
    for e in sorted({e for _, e in cases}):
        ts = [t for t, k in cases if k == e]
        floats = np.array([float(t) * 2.0 ** e for t in ts])
        assert all(Fraction(f) == Fraction(t) * Fraction(2) ** e for f, t in zip(floats, ts))  # exact in float64
        np.testing.assert_array_equal(fmt.quantize_scaled(np.array(ts, dtype=object), e), fmt.quantize(floats))


@pytest.mark.parametrize("name", MINIFLOATS)
def test_quantize_scaled_matches_reference(name):
    fmt = get_format(name)
    rng = random.Random(name + "wide")
    for t, e in scaled_cases(rng, name, 100, 400) + [(0, 0), (-1, -200), (1, -200), (1 << 100, 0), (-(1 << 100), -90)]:
        got = int(fmt.quantize_scaled(np.array([t], dtype=object), e)[0])
        assert got == table(name).nearest(Fraction(t) * Fraction(2) ** e), (t, e)


def test_quantize_scaled_shape_and_dtype():
    fmt = get_format("fp8_e4m3")
    got = fmt.quantize_scaled(np.array([[1, -1], [448, 10 ** 30]], dtype=object), 0)
    assert got.dtype == np.uint8 and got.shape == (2, 2)
    assert got.tolist() == [[0x38, 0xB8], [0x7E, 0x7E]]


# --- the int64 paths -------------------------------------------------------------------------------------

@pytest.fixture
def int64_only(monkeypatch):
    """Fail if rescale() leaves its int64 paths (for inputs that fit them)."""
    import importlib
    pp = importlib.import_module("sw.golden.postprocess")     # (sw.golden.postprocess is also a function)

    def refuse(*args, **kwargs):
        raise AssertionError("rescale() took the Python-int path")
    monkeypatch.setattr(pp, "rescale_exact", refuse)


def near(acc: int, *deltas: int) -> list[int]:
    return [acc + d for d in deltas]


def test_integer_ties_in_both_int64_regimes(int64_only):
    # Small products: (a * M) / 2**S with M = 3 * 2**29, a = m * 2**(S - 30): v = 3m / 2, a tie for odd m.
    # S = 40 keeps a * M below 2**62 (exact int64); S = 61 takes it above (rounded to odd at 2**31).
    for s in (40, 61):
        m3 = 3 << 29
        accs = [near(m << (s - 30), 0, 1, -1) for m in (5, 7, -5, -7, 1, -1)]
        acc = [[v for group in accs for v in group]]
        n = len(acc[0])
        got = check(acc, [[False] * n], 0, [0] * n, [m3] * n, [s] * n, "int8")
        values = [int_value("int8", c) for c in got[0]]
        # 7.5 -> 8 (8, 7 for one unit more/less), 10.5 -> 10, -7.5 -> -8, -10.5 -> -10, 1.5 -> 2, -1.5 -> -2
        assert values == [8, 8, 7, 10, 11, 10, -8, -7, -8, -10, -10, -11, 2, 2, 1, -2, -1, -2], s


@pytest.mark.parametrize("name", ["fp8_e4m3", "minifloat6", "minifloat4", "fp8_e5m2"])
def test_minifloat_midpoints_in_both_int64_regimes(int64_only, name):
    """Midpoints between neighbouring finite values reached as (a * M) * 2**(e - S) with products below and
    above 2**62, and one accumulator unit either side of each."""
    fmt = get_format(name)
    ladder = sorted(set(v for v, _ in table(name).finite if v >= 0))
    mids = [(a + b) / 2 for a, b in zip(ladder, ladder[1:])][::3]
    for big in (False, True):
        acc, mult, shift = [], [], []
        for mid in mids:
            # mid = p / 2**q; M = p * 2**z (below 2**31), a = 2**w: v = p * 2**(z + w + e - S)
            p, q = mid.numerator, mid.denominator.bit_length() - 1
            z = 30 - p.bit_length()
            w = 33 if big else 8
            s = z + w + q - 8                    # e = -8
            if not 0 <= s <= 255:
                continue
            for sign in (1, -1):
                acc.append(near(sign << w, 0, 1, -1))
                mult.append(p << z)
                shift.append(s)
        rows = [[a[i] for a in acc] for i in range(3)]
        n = len(acc)
        check(rows, [[False] * n] * 3, -8, [0] * n, mult, shift, name)


def test_random_cases_in_int64_range(int64_only):
    rng = random.Random("int64")
    for name in [*INT_FORMATS, *MINIFLOATS]:
        for _ in range(2):
            acc, nonfinite, bias, multiplier, shift = random_case(rng, name, -6)
            acc = [[max(min(v, (1 << 60)), -(1 << 60)) for v in row] for row in acc]
            bias = [max(min(b, (1 << 60)), -(1 << 60)) for b in bias]
            zero_point = rng.randint(-100, 100) if name in INT_FORMATS else 0
            check(acc, nonfinite, -6, bias, multiplier, shift, name, zero_point, *random_clamp(rng, name))


@pytest.mark.parametrize("name", MINIFLOATS + ["e5m10", "e5m10ieee"])
def test_quantize_scaled_int64_path_matches_python_ints(name):
    fmt = get_format(name)
    rng = random.Random(name + "int64")
    for t, e in scaled_cases(rng, name, 62, 200):
        ts = np.array([t, -t, t + 1, t - 1], dtype=np.int64)
        np.testing.assert_array_equal(fmt.quantize_scaled(ts, e), fmt.quantize_scaled(ts.astype(object), e))
    extremes = np.array([0, 1, -1, (1 << 63) - 1, -(1 << 63)], dtype=np.int64)
    for e in (-300, -60, 0, 60, 300):
        np.testing.assert_array_equal(fmt.quantize_scaled(extremes, e),
                                      fmt.quantize_scaled(extremes.astype(object), e))


@pytest.mark.parametrize("name", ["int8", "uint8", "minifloat6", "fp8_e4m3"])
def test_wrapped_accumulators_give_the_same_codes(name):
    """``wrapped=True`` (the emulator's promise that accumulators hold acc_bits-wide values) only skips measuring
    them: the codes are the reference's."""
    rng = random.Random(f"wrapped{name}")
    acc_bits = 28
    for _ in range(3):
        acc, nonfinite, bias, multiplier, shift = random_case(rng, name, -6)
        lim = 1 << (acc_bits - 1)
        acc = [[max(min(v, lim - 1), -lim) for v in row] for row in acc]
        want = check(acc, nonfinite, -6, [max(min(b, lim - 1), -lim) for b in bias], multiplier, shift, name)
        got = rescale(np.array(acc, dtype=np.int64), np.array(nonfinite), -6, np.array(bias, dtype=object),
                      np.array(multiplier, dtype=object), np.array(shift, dtype=object), name, acc_bits=acc_bits,
                      wrapped=True)
        np.testing.assert_array_equal(got.astype(np.int64), want)


# --- the float64 path ------------------------------------------------------------------------------------

@pytest.fixture
def float64_path(monkeypatch):
    """Count the rescales the float64 path computed (it returns None where it is not exact)."""
    import importlib
    pp = importlib.import_module("sw.golden.postprocess")
    taken = []
    original = pp._int_codes_float64

    def spy(*args, **kwargs):
        codes = original(*args, **kwargs)
        taken.append(codes is not None)
        return codes
    monkeypatch.setattr(pp, "_int_codes_float64", spy)
    return taken


@pytest.mark.parametrize("name", list(INT_FORMATS))
def test_float64_path_ties_either_side_of_its_bound(float64_path, name):
    """Ties v = 3m/2 (a = m * 2**(S - 30), M = 3 * 2**29) and one accumulator unit either side, with |a * M| just
    below 2**53 (S = 49: the float64 path) and just above (S = 51: the int64 path): both round half to even, as
    the reference does."""
    for s in (49, 51):
        acc = [v for m in (5, 7, -5, -7, 1, -1) for v in near(m << (s - 30), 0, 1, -1)]
        n = len(acc)
        check([acc], [[False] * n], 0, [0] * n, [3 << 29] * n, [s] * n, name, zero_point=1 if name != "uint8" else 9)
    assert float64_path == [True, False]


def test_float64_path_random_cases(float64_path):
    """Random cases whose products fit 53 bits, every integer format: the float64 path equals the reference."""
    rng = random.Random("float64")
    for name in INT_FORMATS:
        lo, hi = int_range(name)
        for _ in range(4):
            acc, nonfinite, bias, multiplier, shift = random_case(rng, name, -6)
            acc = [[v >> 40 for v in row] for row in acc]
            bias = [b >> 50 for b in bias]
            multiplier = [m >> 8 for m in multiplier]
            shift = [rng.randint(28, 40) for _ in shift]      # aimed at the output range, one aligned exponent
            zero_point = rng.choice([0, rng.randint(lo, hi)])
            check(acc, nonfinite, -6, bias, multiplier, shift, name, zero_point, *random_clamp(rng, name))
    assert sum(float64_path) >= len(INT_FORMATS) * 3


def test_float64_path_declines_what_it_cannot_scale():
    """Exponents beyond float64's range (a shift of -1100: every output saturates or is 0) and multipliers that
    broadcast wider than the accumulators: the same codes as the reference, no exception."""
    acc = [[0, 0, 0, 0], [0, 0, 0, 0]]
    check(acc, [[False] * 4] * 2, 0, [0] * 4, [1] * 4, [-1100] * 4, "int8")
    got = rescale(np.arange(12, dtype=np.int64).reshape(3, 1, 4), np.zeros((1, 1, 1), bool), 0,
                  np.zeros(4, np.int64), np.full((2, 4), 3 << 20, np.int64), np.full((2, 4), 21, np.int64), "int8")
    assert got.shape == (3, 2, 4)
    want = reference(np.arange(12).reshape(3, 4).tolist(), [[False] * 4] * 3, 0, [0] * 4, [3 << 20] * 4, [21] * 4,
                     "int8")
    assert np.array_equal(got[:, 0], want) and np.array_equal(got[:, 1], want)
