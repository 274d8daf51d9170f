"""The exact product of two codes, as a fixed-point integer in units of ``2 ** product.min_exponent``."""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .operand import MultiFormatDecoder, operand_decoder
from .pipeline import shift_add
from .spec.formats import Format, IntFormat, get_format, product_of, signed_width

__all__ = ["ExactMultiplier", "MultiFormatMultiplier", "PairMultiplier", "NARROW_SIGNIFICAND_BITS"]

#: Signed significands this wide or narrower are multiplied by shifts and additions instead of a DSP.
NARROW_SIGNIFICAND_BITS = 5


class ExactMultiplier(wiring.Component):
    """``product = (sig_a * sig_b) << (shift_a + shift_b)``: no rounding, ever.

    The two halves are outputs too, ``significands = sig_a * sig_b`` and ``shift = shift_a + shift_b``, so that a
    pipeline can register them and shift a cycle later (the processing element does). ``nonfinite`` is set when
    either operand is NaN or Inf; the product is then zero.
    """

    def __init__(self, a_format: Format | str, b_format: Format | str):
        self._a, self._b = get_format(a_format), get_format(b_format)
        self._product = product_of(self._a, self._b)
        shift_bits = max(self._a.shift_bits, 1) + 1
        super().__init__({
            "a": In(unsigned(self._a.bits)),
            "b": In(unsigned(self._b.bits)),
            "product": Out(signed(self._product.fixed_bits)),
            "significands": Out(signed(self._product.significand_bits)),
            "shift": Out(unsigned(max(shift_bits, max(self._b.shift_bits, 1) + 1))),
            "nonfinite": Out(1),
        })

    @property
    def product_spec(self):
        return self._product

    def elaborate(self, platform):
        m = Module()
        m.submodules.decode_a = decode_a = operand_decoder(self._a)
        m.submodules.decode_b = decode_b = operand_decoder(self._b)
        m.d.comb += [decode_a.code.eq(self.a), decode_b.code.eq(self.b)]

        a, b = decode_a.significand, decode_b.significand
        # Narrow significands (minifloats, int4) multiply in a few LUTs; yosys would give each a DSP and its routing.
        significands = shift_add(a, b) if min(len(a), len(b)) <= NARROW_SIGNIFICAND_BITS else a * b
        m.d.comb += [
            self.significands.eq(significands),
            self.shift.eq(decode_a.shift + decode_b.shift),
            self.product.eq(self.significands << self.shift),
            self.nonfinite.eq(decode_a.nonfinite | decode_b.nonfinite),
        ]
        return m


class MultiFormatMultiplier(wiring.Component):
    """The exact product of a code of ``a_formats[a_select]`` and one of ``b_formats[b_select]``, in units of
    ``2 ** (finest a lsb + finest b lsb)``: one :class:`~hw.operand.MultiFormatDecoder` per operand (a decoder per
    format behind a multiplexer) and one significand multiplier shared by every pair. Ports as
    :class:`ExactMultiplier`, plus the two selects."""

    def __init__(self, a_formats, b_formats):
        self._a = MultiFormatDecoder(a_formats)
        self._b = MultiFormatDecoder(b_formats)
        a_sig, b_sig = self._a.significand.shape(), self._b.significand.shape()
        a_lo, a_hi = -(1 << (a_sig.width - 1)), (1 << (a_sig.width - 1)) - 1
        b_lo, b_hi = -(1 << (b_sig.width - 1)), (1 << (b_sig.width - 1)) - 1
        corners = [x * y for x in (a_lo, a_hi) for y in (b_lo, b_hi)]
        super().__init__({
            "a": In(self._a.code.shape()),
            "a_select": In(self._a.select.shape()),
            "b": In(self._b.code.shape()),
            "b_select": In(self._b.select.shape()),
            "significands": Out(signed(signed_width(min(corners), max(corners)))),
            "shift": Out(unsigned(max(len(self._a.shift), len(self._b.shift)) + 1)),
            "nonfinite": Out(1),
        })

    @property
    def min_exponent(self) -> int:
        """Power of two of a unit of ``significands << shift``."""
        return self._a.lsb_exponent + self._b.lsb_exponent

    def elaborate(self, platform):
        m = Module()
        m.submodules.decode_a = decode_a = self._a
        m.submodules.decode_b = decode_b = self._b
        m.d.comb += [decode_a.code.eq(self.a), decode_a.select.eq(self.a_select),
                     decode_b.code.eq(self.b), decode_b.select.eq(self.b_select)]
        a, b = decode_a.significand, decode_b.significand
        significands = shift_add(a, b) if min(len(a), len(b)) <= NARROW_SIGNIFICAND_BITS else a * b
        m.d.comb += [
            self.significands.eq(significands),
            self.shift.eq(decode_a.shift + decode_b.shift),
            self.nonfinite.eq(decode_a.nonfinite | decode_b.nonfinite),
        ]
        return m


class PairMultiplier(wiring.Component):
    """``dot = a[0] * b[0] + a[1] * b[1]`` of two integer codes and two weights from one multiply, which synthesis
    maps to one DSP (an ECP5 MULT18X18D: 14 x 14 bits for int4), instead of two shift-and-add products in LUTs.

    With ``K`` the signed width of ``dot``: ``(a0 + a1 * 2**K) * (b1 + b0 * 2**K) = a0 b1 + dot * 2**K + a1 b0 *
    2**2K``. The low term fits ``K`` signed bits (it is one product), so bits ``K .. 2K-1`` of the product are
    ``dot`` minus one where the low term is negative, which its sign bit (bit ``K - 1``) adds back. Exact for every
    code: no rounding, no overlap (the exhaustive test enumerates them). ``middle`` and ``borrow`` are those two
    (``dot = middle + borrow``), so that a pipeline can register the multiply's bits and add the borrow later as a
    carry in (the processing element does).
    """

    def __init__(self, a_format: Format | str, b_format: Format | str):
        self._a, self._b = get_format(a_format), get_format(b_format)
        if not (isinstance(self._a, IntFormat) and isinstance(self._b, IntFormat)):
            raise ValueError(f"A pair multiplier takes integer formats, not {self._a.name} x {self._b.name}")
        p = product_of(self._a, self._b)
        self._dot_bits = signed_width(2 * p.fixed_min, 2 * p.fixed_max)
        super().__init__({
            "a": In(unsigned(2 * self._a.bits)),
            "b": In(unsigned(2 * self._b.bits)),
            "dot": Out(signed(self._dot_bits)),
            "middle": Out(signed(self._dot_bits)),
            "borrow": Out(1),
        })

    @property
    def operand_bits(self) -> tuple[int, int]:
        """Signed widths of the multiply's two operands (each must fit the target's DSP port: 18 on an ECP5)."""
        return (self._dot_bits + self._a.significand_bits + 1, self._dot_bits + self._b.significand_bits + 1)

    def elaborate(self, platform):
        m = Module()
        k = self._dot_bits
        a, b = [], []
        for fmt, port, out in ((self._a, self.a, a), (self._b, self.b, b)):
            for i in range(2):
                m.submodules[f"decode_{'ab'[port is self.b]}{i}"] = decode = operand_decoder(fmt)
                m.d.comb += decode.code.eq(port[i * fmt.bits:(i + 1) * fmt.bits])
                out.append(decode.significand)
        wide_a = Signal(signed(self.operand_bits[0]))
        wide_b = Signal(signed(self.operand_bits[1]))
        product = Signal(signed(sum(self.operand_bits)))
        m.d.comb += [wide_a.eq(a[0] + (a[1] << k)), wide_b.eq(b[1] + (b[0] << k)), product.eq(wide_a * wide_b),
                     self.middle.eq(product[k:2 * k]), self.borrow.eq(product[k - 1]),
                     self.dot.eq((self.middle + self.borrow)[:k])]
        return m
