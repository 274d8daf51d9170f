"""Operand decoders: a code of any registered format into its exact ``significand << shift`` form.

One decoder per format family, with the same ports, so that everything downstream (multiplier, PE,
array) is written once for every format.
"""

from amaranth.hdl import Cat, Module, Mux, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .spec.formats import Format, IntFormat, Minifloat, Specials, get_format, signed_width

__all__ = ["IntegerDecoder", "MinifloatDecoder", "MultiFormatDecoder", "operand_decoder", "decoder_signature"]


def decoder_signature(fmt: Format) -> wiring.Signature:
    """``code`` in; ``significand``, ``shift`` and ``nonfinite`` out. ``shift`` is at least one bit wide."""
    return wiring.Signature({
        "code": In(unsigned(fmt.bits)),
        "significand": Out(signed(fmt.significand_bits)),
        "shift": Out(unsigned(max(fmt.shift_bits, 1))),
        "nonfinite": Out(1),
    })


class IntegerDecoder(wiring.Component):
    """An integer is its own significand; its shift is always zero."""

    def __init__(self, fmt: IntFormat):
        if not isinstance(fmt, IntFormat):
            raise TypeError(f"Format must be an IntFormat, not {fmt!r}")
        self._format = fmt
        super().__init__(decoder_signature(fmt))

    @property
    def format(self) -> IntFormat:
        return self._format

    def elaborate(self, platform):
        m = Module()
        value = self.code.as_signed() if self._format.signed else self.code
        m.d.comb += [self.significand.eq(value), self.shift.eq(0), self.nonfinite.eq(0)]
        return m


class MinifloatDecoder(wiring.Component):
    """Sign, exponent and mantissa fields into a signed significand (implicit bit restored) and a shift."""

    def __init__(self, fmt: Minifloat):
        if not isinstance(fmt, Minifloat):
            raise TypeError(f"Format must be a Minifloat, not {fmt!r}")
        self._format = fmt
        super().__init__(decoder_signature(fmt))

    @property
    def format(self) -> Minifloat:
        return self._format

    def elaborate(self, platform):
        m = Module()
        f = self._format
        man = self.code[:f.man_bits]
        exp = self.code[f.man_bits:f.man_bits + f.exp_bits]
        sign = self.code[-1]

        normal = exp != 0
        if f.subnormals:
            magnitude = Cat(man, normal)
        else:
            magnitude = Mux(normal, Cat(man, 1), 0)

        top = (1 << f.exp_bits) - 1
        if f.specials is Specials.IEEE:
            nonfinite = exp == top
        elif f.specials is Specials.NAN:
            nonfinite = (exp == top) & (man == (1 << f.man_bits) - 1)
        else:
            nonfinite = 0

        m.d.comb += [
            self.nonfinite.eq(nonfinite),
            self.significand.eq(Mux(self.nonfinite, 0, Mux(sign, -magnitude, magnitude))),
            self.shift.eq(Mux(normal & ~self.nonfinite, exp - 1, 0)),
        ]
        return m


def operand_decoder(fmt: Format | str) -> IntegerDecoder | MinifloatDecoder:
    """The decoder of the family ``fmt`` belongs to."""
    fmt = get_format(fmt)
    return IntegerDecoder(fmt) if isinstance(fmt, IntFormat) else MinifloatDecoder(fmt)


class MultiFormatDecoder(wiring.Component):
    """A code of the format ``select`` picks from ``formats`` into one aligned form: ``significand`` and
    ``shift`` in units of the finest least significant bit of the set (a coarser format's shift is offset by the
    difference, a constant), so one multiplier serves every format. The code sits in the low bits of a slot as
    wide as the widest format; the bits above the selected format are ignored. A ``select`` outside the set
    decodes as format 0 (the instruction decoder refuses such an index before it gets here).
    """

    def __init__(self, formats):
        self._formats = tuple(get_format(f) for f in formats)
        if not self._formats:
            raise ValueError("A multi-format decoder needs at least one format")
        lsb = min(f.lsb_exponent for f in self._formats)
        self._offsets = tuple(f.lsb_exponent - lsb for f in self._formats)
        sig_lo = min(f.significand_min for f in self._formats)
        sig_hi = max(f.significand_max for f in self._formats)
        shift_max = max(f.max_shift + o for f, o in zip(self._formats, self._offsets))
        super().__init__({
            "code": In(unsigned(max(f.bits for f in self._formats))),
            "select": In(range(max(len(self._formats), 2))),
            "significand": Out(signed(signed_width(sig_lo, sig_hi))),
            "shift": Out(unsigned(max(shift_max.bit_length(), 1))),
            "nonfinite": Out(1),
        })

    @property
    def formats(self) -> tuple:
        return self._formats

    @property
    def lsb_exponent(self) -> int:
        """Power of two of a unit of ``significand << shift``."""
        return min(f.lsb_exponent for f in self._formats)

    def elaborate(self, platform):
        m = Module()
        outputs = []
        for i, (fmt, offset) in enumerate(zip(self._formats, self._offsets)):
            m.submodules[f"decode_{i}"] = decoder = operand_decoder(fmt)
            m.d.comb += decoder.code.eq(self.code[:fmt.bits])
            outputs.append([self.significand.eq(decoder.significand), self.shift.eq(decoder.shift + offset),
                            self.nonfinite.eq(decoder.nonfinite)])
        with m.Switch(self.select):
            for i in range(1, len(outputs)):
                with m.Case(i):
                    m.d.comb += outputs[i]
            with m.Default():
                m.d.comb += outputs[0]
        return m
