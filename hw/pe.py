"""The processing element of the weight-stationary array."""

from amaranth.hdl import Array, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .lanes import act_lane, psum_lane
from .multiplier import ExactMultiplier, MultiFormatMultiplier
from .spec.formats import Format, get_format, product_of, signed_width
from .spec.microarchitecture import PE_LATENCY

__all__ = ["ProcessingElement", "PE_LATENCY"]


def _scaled_product_bits(w: Format, a: Format, min_exponent: int) -> int:
    """Signed width of a ``w`` x ``a`` product in units of ``2 ** min_exponent``."""
    p = product_of(w, a)
    shift = p.min_exponent - min_exponent
    return signed_width(p.fixed_min << shift, p.fixed_max << shift)


def _as_tuple(formats) -> tuple:
    return tuple(formats) if isinstance(formats, (tuple, list)) else (formats,)


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

    def __init__(self, weight_format, act_format, psum_bits: int):
        multi = isinstance(weight_format, (tuple, list)) or isinstance(act_format, (tuple, list))
        if multi:
            # A multi-format PE: tuples of formats, selected per activation by the indices its lane carries.
            self._weight_set = tuple(get_format(f) for f in _as_tuple(weight_format))
            self._act_set = tuple(get_format(f) for f in _as_tuple(act_format))
            self._weights, self._acts = self._weight_set[0], self._act_set[0]
            unit = min(f.lsb_exponent for f in self._weight_set) + min(f.lsb_exponent for f in self._act_set)
            needed = max(_scaled_product_bits(w, a, unit) for w in self._weight_set for a in self._act_set)
            select_bits = (max(len(self._act_set), len(self._weight_set), 2) - 1).bit_length()
            w_bits, a_lane = max(f.bits for f in self._weight_set), act_lane(
                max(f.bits for f in self._act_set), select_bits)
        else:
            self._weight_set = self._act_set = None
            self._weights, self._acts = get_format(weight_format), get_format(act_format)
            needed = product_of(self._weights, self._acts).fixed_bits
            w_bits, a_lane = self._weights.bits, act_lane(self._acts)
        if not isinstance(psum_bits, int) or isinstance(psum_bits, bool) or psum_bits < needed:
            raise ValueError(f"Partial sum width must be an integer of at least {needed} "
                             f"(one {self._weights.name} x {self._acts.name} product), not {psum_bits!r}")
        self._psum_bits = psum_bits
        super().__init__({
            "en": In(1),
            "a_in": In(a_lane),
            "a_out": Out(a_lane),
            "w_in": In(unsigned(w_bits)),
            "w_out": Out(unsigned(w_bits)),
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

        banks = Array(Signal(len(self.w_in), name=f"weight_bank{i}") for i in range(2))
        with m.If(self.w_shift):
            m.d.sync += banks[self.w_bank].eq(self.w_in)
        m.d.comb += self.w_out.eq(banks[self.w_bank])

        a_code = Signal(len(self.a_in.code))
        w_code = Signal(len(self.w_in))
        if self._act_set is None:
            m.submodules.multiplier = multiplier = ExactMultiplier(self._acts, self._weights)
        else:
            m.submodules.multiplier = multiplier = MultiFormatMultiplier(self._act_set, self._weight_set)
            a_select = Signal.like(multiplier.a_select)
            w_select = Signal.like(multiplier.b_select)
            with m.If(self.en):
                m.d.sync += [a_select.eq(self.a_in.act_format), w_select.eq(self.a_in.weight_format)]
            m.d.comb += [multiplier.a_select.eq(a_select), multiplier.b_select.eq(w_select)]
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
