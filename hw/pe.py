"""The processing element of the weight-stationary array."""

from amaranth.hdl import Array, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .lanes import act_lane, psum_lane
from .multiplier import ExactMultiplier
from .spec.formats import Format, get_format, product_of
from .spec.microarchitecture import PE_LATENCY

__all__ = ["ProcessingElement", "PE_LATENCY"]


class ProcessingElement(wiring.Component):
    """A multiply-accumulate in three steps, each on a cycle with ``en``: the operands ``a_in`` and
    ``weight[a_in.bank]`` into registers; the product of their significands and the sum of their exponent shifts
    into registers; then ``psum_out <= psum_in + (significands << shift)``; and ``a_out <= a_in``.

    The registers cut the path operand -> bank choice -> decode -> multiply -> shift -> add into pieces that each
    fit a cycle, so ``psum_in`` must arrive two advances after ``a_in`` (:data:`PE_LATENCY` advances from ``a_in``
    to ``psum_out``): in the array it does, because the PE above sees the activation one advance earlier and takes
    as long.

    Two weight registers (banks) make the weights double-buffered: while activations use one bank, the
    next tile's weights shift into the other through ``w_in``/``w_out`` (a chain running up the column)
    whenever ``w_shift`` is high, independent of ``en``. The bank an activation uses travels with it, so
    a tile boundary sweeps across the array in step with the data.
    """

    def __init__(self, weight_format: Format | str, act_format: Format | str, psum_bits: int):
        self._weights, self._acts = get_format(weight_format), get_format(act_format)
        needed = product_of(self._weights, self._acts).fixed_bits
        if not isinstance(psum_bits, int) or isinstance(psum_bits, bool) or psum_bits < needed:
            raise ValueError(f"Partial sum width must be an integer of at least {needed} "
                             f"(one {self._weights.name} x {self._acts.name} product), not {psum_bits!r}")
        self._psum_bits = psum_bits
        super().__init__({
            "en": In(1),
            "a_in": In(act_lane(self._acts)),
            "a_out": Out(act_lane(self._acts)),
            "w_in": In(unsigned(self._weights.bits)),
            "w_out": Out(unsigned(self._weights.bits)),
            "w_shift": In(1),
            "w_bank": In(1),
            "psum_in": In(psum_lane(psum_bits)),
            "psum_out": Out(psum_lane(psum_bits)),
        })

    @property
    def psum_bits(self) -> int:
        return self._psum_bits

    def elaborate(self, platform):
        m = Module()

        banks = Array(Signal(self._weights.bits, name=f"weight_bank{i}") for i in range(2))
        with m.If(self.w_shift):
            m.d.sync += banks[self.w_bank].eq(self.w_in)
        m.d.comb += self.w_out.eq(banks[self.w_bank])

        m.submodules.multiplier = multiplier = ExactMultiplier(self._acts, self._weights)
        a_code = Signal(self._acts.bits)
        w_code = Signal(self._weights.bits)
        m.d.comb += [multiplier.a.eq(a_code), multiplier.b.eq(w_code)]

        significands = Signal.like(multiplier.significands)
        shift = Signal.like(multiplier.shift)
        product_nonfinite = Signal()
        with m.If(self.en):
            m.d.sync += [
                self.a_out.eq(self.a_in),
                a_code.eq(self.a_in.code),
                w_code.eq(banks[self.a_in.bank]),
                significands.eq(multiplier.significands),
                shift.eq(multiplier.shift),
                product_nonfinite.eq(multiplier.nonfinite),
                self.psum_out.value.eq(self.psum_in.value + (significands << shift)),
                self.psum_out.nonfinite.eq(self.psum_in.nonfinite | product_nonfinite),
            ]
        return m
