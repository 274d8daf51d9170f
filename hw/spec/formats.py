"""Number formats: the one registry that the RTL, the golden model, the compiler and the reports share.

A format is a handful of primary parameters; everything else (largest value, special codes, the exact
integer form of every code, the width of products and sums) is derived from them here and nowhere else.

Every finite code has an exact decomposition

    value = significand * 2 ** (shift + lsb_exponent)

with a signed integer ``significand`` and an unsigned ``shift`` in ``0..max_shift``. Integers have
``max_shift == 0``; a minifloat's shift is its biased exponent minus one (subnormals share shift 0).
A product of two codes is then an integer times a power of two, and a sum of products is exact in a
two's-complement fixed-point accumulator (Kulisch-style): see :func:`accumulator_bits`.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = [
    "FormatError", "Specials", "IntFormat", "Minifloat", "Format", "ExactProduct",
    "get_format", "format_names", "product_of", "accumulator_bits", "signed_width", "LANE_BITS", "PACKED_INT_BITS",
]


#: The supported range of minifloats (enforced on construction, so the parser refuses the rest): at most
#: IEEE half precision. Any two formats then multiply exactly in at most 84 bits (e5m10 x e5m10: 83) and sum
#: in Kulisch accumulators of at most 108 bits at the largest reduction (2**24 terms), inside the 256 bits a
#: configuration allows; wider exponents (e6 and up) would need accumulators of hundreds of bits.
MAX_EXP_BITS = 5
MAX_MAN_BITS = 10

#: Bits of one lane of the processing element's datapath: an integer format of at most :data:`PACKED_INT_BITS` bits
#: packs ``LANE_BITS // PACKED_INT_BITS`` codes into one lane (two int4 per 8-bit lane), and a PE of such a build
#: multiplies every code of its lane by its own weight and adds all the products in the same cycle.
LANE_BITS = 8
PACKED_INT_BITS = 4


class FormatError(ValueError):
    """An unknown, malformed or impossible number format."""


def signed_width(lo: int, hi: int) -> int:
    """Smallest two's-complement width that holds every integer in ``lo..hi``."""
    if lo > hi:
        raise ValueError(f"Empty range {lo}..{hi}")
    width = 1
    while not (-(1 << (width - 1)) <= lo and hi <= (1 << (width - 1)) - 1):
        width += 1
    return width


class Specials(enum.Enum):
    """How a minifloat spends its top exponent codes."""

    #: Every code is a finite number (OCP MX FP4/FP6: ``e2m1``, ``e3m2``, ``e2m3``).
    NONE = "finite"
    #: Finite, with one NaN code per sign: exponent and mantissa all ones (OCP ``e4m3fn``).
    NAN = "fn"
    #: IEEE 754-like: the all-ones exponent holds Inf (mantissa 0) and NaN (mantissa non-zero).
    IEEE = "ieee"


@dataclass(frozen=True)
class ExactProduct:
    """The exact product of two formats: ``significand * 2 ** exponent``.

    ``significand_bits`` is the signed width of the product of two significands; ``exponent`` ranges over
    ``min_exponent..max_exponent``; ``fixed_bits`` is the signed width of the product as a fixed-point
    integer in units of ``2 ** min_exponent`` (what one PE adds to its partial sum).
    """

    significand_bits: int
    min_exponent: int
    max_exponent: int
    fixed_bits: int
    fixed_min: int
    fixed_max: int


class _Format:
    """What every format provides; subclasses define the primary parameters and the code table."""

    bits: int
    name: str

    # --- derived from the code table -------------------------------------------------------
    @cached_property
    def codes(self) -> np.ndarray:
        """Every code of the format, ``0 .. 2**bits - 1``."""
        return np.arange(1 << self.bits, dtype=np.uint32)

    @cached_property
    def _table(self) -> np.ndarray:
        table = self._decode_table()
        table.setflags(write=False)
        return table

    @cached_property
    def _exact_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sig, shift, finite = self._exact_tables()
        for a in (sig, shift, finite):
            a.setflags(write=False)
        return sig, shift, finite

    @property
    def max(self) -> float:
        """Largest finite value."""
        return float(np.nanmax(np.where(np.isfinite(self._table), self._table, np.nan)))

    @property
    def min(self) -> float:
        """Most negative finite value."""
        return float(np.nanmin(np.where(np.isfinite(self._table), self._table, np.nan)))

    @cached_property
    def significand_min(self) -> int:
        return int(self._exact_table[0].min())

    @cached_property
    def significand_max(self) -> int:
        return int(self._exact_table[0].max())

    @cached_property
    def fixed_range(self) -> tuple[int, int]:
        """Smallest and largest finite value in units of ``2 ** lsb_exponent`` (``significand << shift``)."""
        sig, shift, _ = self._exact_table
        fixed = [int(v) << int(s) for v, s in zip(sig, shift)]
        return min(fixed), max(fixed)

    @property
    def significand_bits(self) -> int:
        """Signed width of the significand of any finite code."""
        return signed_width(self.significand_min, self.significand_max)

    @property
    def shift_bits(self) -> int:
        """Unsigned width of the shift (0 for integers)."""
        return self.max_shift.bit_length()

    def _check_codes(self, codes) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.dtype.kind not in "iu":
            raise TypeError(f"Codes must be an integer array, not {codes.dtype}")
        if codes.size and (codes.min() < 0 or codes.max() >= (1 << self.bits)):
            raise ValueError(f"Codes of {self.name} must lie in 0..{(1 << self.bits) - 1}")
        return codes.astype(np.int64)

    def decode(self, codes) -> np.ndarray:
        """Values of ``codes`` as float64 (NaN and Inf where the format has them)."""
        return self._table[self._check_codes(codes)]

    def exact(self, codes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(significand, shift, finite)`` int64/bool arrays: ``value = significand * 2**(shift + lsb_exponent)``.

        Non-finite codes (NaN, Inf) have significand 0 and ``finite`` False.
        """
        c = self._check_codes(codes)
        sig, shift, finite = self._exact_table
        return sig[c], shift[c], finite[c]

    @property
    def values_per_lane(self) -> int:
        """Codes of this format one PE lane carries and multiplies per cycle: ``LANE_BITS // PACKED_INT_BITS`` for
        an integer of at most :data:`PACKED_INT_BITS` bits (its products are narrow, so two cost about one int8
        product), else 1."""
        if isinstance(self, IntFormat) and self.bits <= PACKED_INT_BITS:
            return LANE_BITS // PACKED_INT_BITS
        return 1

    @property
    def product(self) -> ExactProduct:
        """The exact product of this format with itself."""
        return product_of(self, self)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=True)
class IntFormat(_Format):
    """Two's-complement (``signed``) or plain binary integer of ``bits`` bits, 2..16."""

    bits: int
    signed: bool = True

    def __post_init__(self):
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 2 <= self.bits <= 16:
            raise FormatError(f"Integer width must be an integer in 2..16, not {self.bits!r}")

    @property
    def name(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.bits}"

    @property
    def lsb_exponent(self) -> int:
        return 0

    @property
    def max_shift(self) -> int:
        return 0

    @property
    def has_nan(self) -> bool:
        return False

    @property
    def has_inf(self) -> bool:
        return False

    def _values(self) -> np.ndarray:
        v = self.codes.astype(np.int64)
        if self.signed:
            v = np.where(v >= (1 << (self.bits - 1)), v - (1 << self.bits), v)
        return v

    def _decode_table(self) -> np.ndarray:
        return self._values().astype(np.float64)

    def _exact_tables(self):
        v = self._values()
        return v, np.zeros_like(v), np.ones(v.shape, dtype=bool)

    def quantize(self, x) -> np.ndarray:
        """Codes nearest to ``x`` (ties to even), saturating at the range limits."""
        x = np.asarray(x, dtype=np.float64)
        if np.isnan(x).any():
            raise ValueError(f"{self.name} has no NaN: cannot quantize NaN input")
        lo, hi = (-(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1) if self.signed else (0, (1 << self.bits) - 1)
        v = np.clip(np.rint(x), lo, hi).astype(np.int64)
        return (v & ((1 << self.bits) - 1)).astype(_code_dtype(self.bits))


@dataclass(frozen=True, eq=True)
class Minifloat(_Format):
    """A short float: sign, ``exp_bits`` of biased exponent, ``man_bits`` of mantissa.

    ``bias`` defaults to ``2**(exp_bits-1) - 1``. With ``subnormals`` off, codes with a zero exponent
    field are zero (flush to zero) and quantization never produces a subnormal.
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    subnormals: bool = True
    specials: Specials = Specials.NONE
    alias: str | None = None

    def __post_init__(self):
        for field, lo, hi in (("exp_bits", 1, MAX_EXP_BITS), ("man_bits", 0, MAX_MAN_BITS)):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise FormatError(f"Minifloat {field} must be an integer in {lo}..{hi}, not {value!r} (the "
                                  f"supported range: at most IEEE half precision, e5m10)")
        if self.bias is None:
            object.__setattr__(self, "bias", (1 << (self.exp_bits - 1)) - 1)
        if not isinstance(self.bias, int) or isinstance(self.bias, bool):
            raise FormatError(f"Minifloat bias must be an integer, not {self.bias!r}")
        if not isinstance(self.specials, Specials):
            raise FormatError(f"Minifloat specials must be a Specials member, not {self.specials!r}")
        if self.specials is Specials.IEEE and self.exp_bits < 2:
            raise FormatError("An IEEE-like minifloat needs at least 2 exponent bits")
        if self.specials is Specials.NAN and self.exp_bits + self.man_bits < 2:
            raise FormatError("A minifloat with a NaN code needs at least 2 exponent+mantissa bits")
        lo, hi = self.bias_range
        if not lo <= self.bias <= hi:
            raise FormatError(f"Minifloat bias must lie in {lo}..{hi} for e{self.exp_bits}m{self.man_bits}, not "
                              f"{self.bias}: the format's range must contain 1.0 (tensor scales carry the "
                              f"magnitude)")

    @property
    def bias_range(self) -> tuple[int, int]:
        """Biases for which the smallest positive value is at most 1 and the largest finite one at least 1.

        Scales carry a tensor's magnitude, so a bias outside this window adds nothing but float64 under- or
        overflow in calibration and a rescale shift beyond its 8-bit PARAM field.
        """
        sig, shift, finite = self._exact_table
        fixed = [int(s) << int(e) for s, e, f in zip(sig, shift, finite) if f and s > 0]
        smallest, largest = min(fixed), max(fixed)          # in units of 2 ** lsb_exponent, bias-free
        return 1 - self.man_bits + smallest.bit_length() - 1, largest.bit_length() - self.man_bits

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def name(self) -> str:
        if self.alias is not None:
            return self.alias
        default_bias = (1 << (self.exp_bits - 1)) - 1
        name = f"e{self.exp_bits}m{self.man_bits}"
        if self.bias != default_bias:
            name += f"b{self.bias}"
        name += {Specials.NONE: "", Specials.NAN: "fn", Specials.IEEE: "ieee"}[self.specials]
        if not self.subnormals:
            name += "ftz"
        return name

    @property
    def lsb_exponent(self) -> int:
        """Power of two of a significand's least significant bit at shift 0."""
        return 1 - self.bias - self.man_bits

    @property
    def max_exp_field(self) -> int:
        """Largest biased exponent field of a finite code."""
        top = (1 << self.exp_bits) - 1
        return top - 1 if self.specials is Specials.IEEE else top

    @property
    def max_shift(self) -> int:
        return max(self.max_exp_field - 1, 0)

    @property
    def has_nan(self) -> bool:
        return self.specials is not Specials.NONE

    @property
    def has_inf(self) -> bool:
        return self.specials is Specials.IEEE

    def _fields(self):
        c = self.codes.astype(np.int64)
        sign = c >> (self.exp_bits + self.man_bits)
        exp = (c >> self.man_bits) & ((1 << self.exp_bits) - 1)
        man = c & ((1 << self.man_bits) - 1)
        return sign, exp, man

    def _special_masks(self):
        sign, exp, man = self._fields()
        top = (1 << self.exp_bits) - 1
        if self.specials is Specials.IEEE:
            return (exp == top) & (man != 0), (exp == top) & (man == 0)
        if self.specials is Specials.NAN:
            return (exp == top) & (man == (1 << self.man_bits) - 1), np.zeros_like(exp, dtype=bool)
        none = np.zeros_like(exp, dtype=bool)
        return none, none

    def _exact_tables(self):
        sign, exp, man = self._fields()
        nan, inf = self._special_masks()
        finite = ~(nan | inf)
        if self.subnormals:
            magnitude = np.where(exp > 0, (1 << self.man_bits) | man, man)
        else:
            magnitude = np.where(exp > 0, (1 << self.man_bits) | man, 0)
        sig = np.where(finite, np.where(sign == 1, -magnitude, magnitude), 0)
        shift = np.where(finite, np.maximum(exp, 1) - 1, 0)
        return sig, shift, finite

    def _decode_table(self) -> np.ndarray:
        sig, shift, finite = self._exact_tables()
        sign, _, _ = self._fields()
        values = np.ldexp(sig.astype(np.float64), (shift + self.lsb_exponent).astype(np.int32))
        values = np.where((sig == 0) & (sign == 1), -0.0, values)
        nan, inf = self._special_masks()
        values = np.where(nan, np.where(sign == 1, -np.nan, np.nan), values)
        return np.where(inf, np.where(sign == 1, -np.inf, np.inf), values)

    @cached_property
    def _ladder(self) -> tuple[np.ndarray, np.ndarray]:
        """Non-negative finite values in increasing order and their codes (the rounding candidates)."""
        positive = self.codes[: 1 << (self.bits - 1)].astype(np.int64)
        values = self._table[positive]
        _, exp, man = (f[: 1 << (self.bits - 1)] for f in self._fields())
        keep = np.isfinite(values)
        if not self.subnormals:
            keep &= (exp > 0) | (man == 0)
        return values[keep], positive[keep]

    def quantize(self, x) -> np.ndarray:
        """Codes nearest to ``x``: round to nearest, ties to the even mantissa, saturating at ``±max``.

        Infinities saturate too; NaN maps to the NaN code where the format has one.
        """
        x = np.asarray(x, dtype=np.float64)
        values, codes = self._ladder
        mag = np.abs(x)
        nan = np.isnan(x)
        if nan.any() and not self.has_nan:
            raise ValueError(f"{self.name} has no NaN: cannot quantize NaN input")
        mag = np.where(nan, 0.0, np.minimum(mag, values[-1]))
        hi = np.clip(np.searchsorted(values, mag, side="left"), 0, len(values) - 1)
        lo = np.maximum(hi - 1, 0)
        d_lo, d_hi = mag - values[lo], values[hi] - mag
        even_hi = (codes[hi] & 1) == 0
        pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & even_hi & (codes[lo] & 1 == 1))
        out = np.where(pick_hi, codes[hi], codes[lo])
        out = out | (np.signbit(x).astype(np.int64) << (self.bits - 1))
        if nan.any():
            out = np.where(nan, self.nan_code, out)
        return out.astype(_code_dtype(self.bits))

    def round_values(self, x) -> np.ndarray:
        """``decode(quantize(x))`` without the codes, by arithmetic instead of a search of the value ladder (the
        inner loop of calibration): the quantum of ``|x|``'s binade (at least the subnormal one), round half to
        even on it (an even multiple of the quantum is an even mantissa), saturating at ``max``. Without mantissa
        bits the tie goes to the even exponent instead: those formats (and NaN inputs) take the ladder."""
        x = np.asarray(x, dtype=np.float64)
        if self.man_bits == 0 or np.isnan(x).any():
            return self.decode(self.quantize(x))
        top = self.max
        mag = np.minimum(np.abs(x), top)
        min_normal = 2.0 ** (1 - self.bias)
        _, e = np.frexp(mag)                                  # mag = f * 2**e, f in [0.5, 1): binade e - 1
        quantum = np.ldexp(1.0, np.maximum(e - 1, 1 - self.bias) - self.man_bits)
        v = np.minimum(np.rint(mag / quantum) * quantum, top)
        if not self.subnormals:                               # below the smallest normal: 0 or it, ties to 0
            v = np.where(mag < min_normal, np.where(mag > min_normal / 2, min_normal, 0.0), v)
        return np.copysign(v, x)

    @property
    def nan_code(self) -> int:
        """The positive NaN code (exponent and mantissa all ones); only meaningful when ``has_nan``."""
        return (((1 << self.exp_bits) - 1) << self.man_bits) | ((1 << self.man_bits) - 1)

    @cached_property
    def _fixed_ladder(self) -> tuple[list[int], np.ndarray]:
        """The rounding candidates as integers in units of ``2 ** lsb_exponent``, and their codes."""
        values, codes = self._ladder
        sig, shift, _ = self._exact_table
        return [int(sig[c]) << int(shift[c]) for c in codes], codes

    def quantize_scaled(self, t, exponent: int) -> np.ndarray:
        """Codes nearest to ``t * 2**exponent`` for integers ``t`` of any size, exactly (no float rounding).

        Same rounding as :meth:`quantize`: to nearest, ties to the even code, saturating at ``±max``.
        Integer arrays (int64 and narrower) take a vectorised path; Python ints (dtype object) a loop.
        """
        t = np.asarray(t)
        if t.dtype.kind in "iu" and t.dtype.itemsize <= 8 and t.dtype != np.uint64:
            return self._quantize_scaled_int64(t.astype(np.int64), exponent)
        ladder, codes = self._fixed_ladder
        # Compare 2|x| with the sums of neighbouring candidates, scaled to a common integer unit.
        up = exponent - self.lsb_exponent
        sums = [a + b for a, b in zip(ladder, ladder[1:])]
        if up < 0:
            sums = [v << -up for v in sums]
        flat = [int(v) for v in np.asarray(t, dtype=object).ravel()]
        out = np.empty(len(flat), dtype=np.int64)
        for i, v in enumerate(flat):
            x = abs(v) << 1
            if up > 0:
                x <<= up
            k = _bisect_left(sums, x)
            if k < len(sums) and sums[k] == x and codes[k] & 1:
                k += 1
            out[i] = codes[k] | ((v < 0) << (self.bits - 1))
        return out.reshape(np.shape(t)).astype(_code_dtype(self.bits))

    @functools.lru_cache(maxsize=1024)
    def _thresholds(self, up: int) -> tuple[np.ndarray, np.ndarray]:
        """For magnitudes ``m`` in units of ``2 ** (lsb_exponent - up)``: ``m`` lies above the midpoint of
        candidates j and j+1 when ``m > floors[j]``, and on it when also ``exact[j]`` and ``m == floors[j]``
        (uint64, clipped where no int64 magnitude reaches)."""
        ladder, _ = self._fixed_ladder
        d = up + 1                      # compare |t| * 2**d with the sums of neighbouring candidates
        sums = [a + b for a, b in zip(ladder, ladder[1:])]
        if d >= 0:
            floors = [v >> d for v in sums]
            exact = [v & ((1 << d) - 1) == 0 for v in sums]
        else:
            floors = [v << -d for v in sums]
            exact = [True] * len(sums)
        top = (1 << 64) - 1
        floors = np.array([min(v, top) for v in floors], dtype=np.uint64)
        return floors, np.array(exact, dtype=bool)

    def _quantize_scaled_int64(self, t: np.ndarray, exponent: int) -> np.ndarray:
        """:meth:`quantize_scaled` for int64 ``t``: the same comparisons, made on uint64 magnitudes."""
        _, codes = self._fixed_ladder
        floors, exact = self._thresholds(exponent - self.lsb_exponent)
        negative = t < 0
        mag = np.where(negative, (-(t + 1)).astype(np.uint64) + np.uint64(1), t.astype(np.uint64))
        k = np.searchsorted(floors, mag, side="left")
        if len(floors):
            at = np.minimum(k, len(floors) - 1)
            k = k + ((k < len(floors)) & exact[at] & (floors[at] == mag) & (codes[at] & 1 == 1))
        out = codes[k] | (negative.astype(np.int64) << (self.bits - 1))
        return out.astype(_code_dtype(self.bits))


Format = IntFormat | Minifloat


def _bisect_left(a: list, x) -> int:
    import bisect
    return bisect.bisect_left(a, x)


def _code_dtype(bits: int):
    return np.uint8 if bits <= 8 else np.uint16


def product_of(a: Format, b: Format) -> ExactProduct:
    """The exact product of a code of ``a`` and a code of ``b``."""
    corners = [x * y for x in (a.significand_min, a.significand_max) for y in (b.significand_min, b.significand_max)]
    shift = a.max_shift + b.max_shift
    # The extremes of a fixed-point product lie at the extremes of each operand's fixed-point values
    # (not at largest significand times largest shift: in fp8_e4m3 that code is NaN).
    fixed = [x * y for x in a.fixed_range for y in b.fixed_range]
    lo, hi = min(fixed), max(fixed)
    return ExactProduct(
        significand_bits=signed_width(min(corners), max(corners)),
        min_exponent=a.lsb_exponent + b.lsb_exponent,
        max_exponent=a.lsb_exponent + b.lsb_exponent + shift,
        fixed_bits=signed_width(lo, hi),
        fixed_min=lo,
        fixed_max=hi,
    )


def accumulator_bits(a: Format, b: Format, terms: int) -> int:
    """Width of a two's-complement accumulator that holds the exact sum of ``terms`` products of ``a`` and ``b``.

    Its least significant bit weighs ``2 ** product_of(a, b).min_exponent``.
    """
    if not isinstance(terms, int) or isinstance(terms, bool) or terms < 1:
        raise ValueError(f"Number of terms must be a positive integer, not {terms!r}")
    p = product_of(a, b)
    return signed_width(terms * p.fixed_min, terms * p.fixed_max)


# --- the registry ----------------------------------------------------------------------------

_NAMED: dict[str, Format] = {
    "minifloat4": Minifloat(2, 1, alias="minifloat4"),
    "minifloat6": Minifloat(3, 2, alias="minifloat6"),
    "minifloat6_e2m3": Minifloat(2, 3, alias="minifloat6_e2m3"),
    "fp8_e4m3": Minifloat(4, 3, specials=Specials.NAN, alias="fp8_e4m3"),
    "fp8_e5m2": Minifloat(5, 2, specials=Specials.IEEE, alias="fp8_e5m2"),
}

_INT_RE = re.compile(r"(u?)int([0-9]{1,4})", re.ASCII)
_FLOAT_RE = re.compile(r"e([0-9]{1,4})m([0-9]{1,4})(?:b(-?[0-9]{1,6}))?(fn|ieee)?(ftz)?", re.ASCII)

_FORMS = ("int2..int16, uint2..uint16, " + ", ".join(_NAMED)
          + ", or a custom minifloat eXmY[bZ][fn|ieee][ftz] (X exponent bits, Y mantissa bits, Z bias; "
          "fn: one NaN code, ieee: Inf and NaN, default: all codes finite; ftz: no subnormals), e.g. e3m2b5")


def format_names() -> list[str]:
    """The named formats (integers of the common widths and every named minifloat)."""
    return ["int4", "int8", "uint8", *_NAMED]


def get_format(name: str | Format) -> Format:
    """The format called ``name``; a format object is returned as it is."""
    if isinstance(name, (IntFormat, Minifloat)):
        return name
    if not isinstance(name, str):
        raise FormatError(f"Format name must be a string, not {_shown(name)}. Valid forms: {_FORMS}")
    key = name.strip().lower()
    if key in _NAMED:
        return _NAMED[key]
    if m := _INT_RE.fullmatch(key):
        bits = int(m[2])
        if not 2 <= bits <= 16:
            raise FormatError(f"Unknown format {_shown(name)}: integer width must be 2..16. Valid forms: {_FORMS}")
        return IntFormat(bits, signed=not m[1])
    if m := _FLOAT_RE.fullmatch(key):
        specials = {None: Specials.NONE, "fn": Specials.NAN, "ieee": Specials.IEEE}[m[4]]
        try:
            fmt = Minifloat(int(m[1]), int(m[2]), None if m[3] is None else int(m[3]),
                            subnormals=m[5] is None, specials=specials)
        except FormatError as e:
            raise FormatError(f"Unknown format {_shown(name)}: {e}. Valid forms: {_FORMS}") from None
        for named in _NAMED.values():
            if _same_numbers(named, fmt):
                return named
        return fmt
    raise FormatError(f"Unknown format {_shown(name)}. Valid forms: {_FORMS}")


def _shown(name) -> str:
    text = repr(name)
    return text if len(text) <= 32 else text[:28] + "...'"


def _same_numbers(a: Minifloat, b: Minifloat) -> bool:
    return (a.exp_bits, a.man_bits, a.bias, a.subnormals, a.specials) == \
           (b.exp_bits, b.man_bits, b.bias, b.subnormals, b.specials)
