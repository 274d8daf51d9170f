"""The processing element of the weight-stationary array."""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .lanes import act_lane, psum_lane
from .multiplier import ExactMultiplier, MultiFormatMultiplier, PairMultiplier
from .spec.formats import LANE_BITS, PACKED_INT_BITS, Format, IntFormat, get_format, product_of, signed_width
from .spec.microarchitecture import PE_LATENCY

__all__ = ["ProcessingElement", "PE_LATENCY"]

#: Codes a packed lane of a multi-format PE carries.
PACKED_LANE_CODES = LANE_BITS // PACKED_INT_BITS


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

    With ``values`` > 1 (a packed lane, :attr:`~hw.spec.config.AcceleratorConfig.values_per_lane`) ``a_in.code``
    holds ``values`` codes, code ``k`` at bits ``k*bits``; each bank holds ``values`` weights, a chain of its own
    (``w_in`` enters at weight ``values - 1``, weight 0 leaves on ``w_out``); and the PE adds all ``values``
    products ``code[k] * weight[k]`` to ``psum_in`` in the same cycle: one PE row is ``values`` reduction rows.
    With ``dsp`` both products come from one wide multiply (:class:`~hw.multiplier.PairMultiplier`, a DSP on an
    FPGA) instead of shift-and-add multipliers in LUTs: the same sums in the same cycles.
    """

    def __init__(self, weight_format, act_format, psum_bits: int, values: int = 1, packed_pairs=(), *,
                 dsp: bool = False):
        if not isinstance(values, int) or isinstance(values, bool) or values < 1:
            raise ValueError(f"Codes per lane must be a positive integer, not {values!r}")
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
                max(f.bits for f in self._act_set), select_bits, packed=bool(packed_pairs))
            needed = max([needed] + [self._packed_bits(i, j, unit) for i, j in packed_pairs])
        else:
            self._weight_set = self._act_set = None
            self._weights, self._acts = get_format(weight_format), get_format(act_format)
            needed = product_of(self._weights, self._acts).fixed_bits
            w_bits, a_lane = self._weights.bits, act_lane(self._acts.bits * values)
        if values > 1 and (multi or not isinstance(self._weights, IntFormat) or not isinstance(self._acts, IntFormat)):
            raise ValueError(f"Only a single-format PE of two integer formats packs codes: values must be 1, not "
                             f"{values!r}")
        if dsp and values != 2:
            raise ValueError(f"A DSP PE multiplies a packed pair: values must be 2, not {values!r}")
        self._values = values
        self._dsp = bool(dsp)
        self._packed_pairs = tuple(packed_pairs)
        if packed_pairs and not multi:
            raise ValueError("Packed format pairs are for a multi-format PE (a single-format one packs by values)")
        if values > 1:
            p = product_of(self._weights, self._acts)
            needed = signed_width(values * p.fixed_min, values * p.fixed_max)
        if not isinstance(psum_bits, int) or isinstance(psum_bits, bool) or psum_bits < needed:
            raise ValueError(f"Partial sum width must be an integer of at least {needed} "
                             f"({'one' if values == 1 else values} {self._weights.name} x {self._acts.name} "
                             f"product{'s' if values > 1 else ''}), not {psum_bits!r}")
        self._psum_bits = psum_bits
        super().__init__({
            "en": In(1),
            "a_in": In(a_lane),
            "a_out": Out(a_lane),
            "w_in": In(unsigned(w_bits)),
            "w_out": Out(unsigned(w_bits)),
            "w_shift": In(1),
            "w_bank": In(1),
            **({"w_packed": In(1)} if packed_pairs else {}),
            "psum_in": In(psum_lane(psum_bits)),
            "psum_out": Out(psum_lane(psum_bits)),
        })

    @property
    def psum_bits(self) -> int:
        return self._psum_bits

    def _packed_bits(self, i: int, j: int, unit: int) -> int:
        """Signed width of two ``weight_set[i]`` x ``act_set[j]`` products (a packed lane), in units of
        ``2 ** unit``."""
        w, a = self._weight_set[i], self._act_set[j]
        if PACKED_LANE_CODES * PACKED_INT_BITS > max(f.bits for f in self._act_set) or \
                min(w.values_per_lane, a.values_per_lane) < PACKED_LANE_CODES:
            raise ValueError(f"The pair {w.name} x {a.name} does not pack {PACKED_LANE_CODES} codes a lane")
        p = product_of(w, a)
        shift = p.min_exponent - unit
        return signed_width(PACKED_LANE_CODES * (p.fixed_min << shift), PACKED_LANE_CODES * (p.fixed_max << shift))

    def elaborate(self, platform):
        m = Module()

        if self._values > 1:
            return self._elaborate_packed(m)
        if self._packed_pairs:
            return self._elaborate_per_layer(m)
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

    def _elaborate_packed(self, m: Module) -> Module:
        """The same three steps for ``values`` integer codes per lane: one multiplier per code, and the products'
        sum (integers: no shift) registered in the second step, so the third is the one addition it always was."""
        n, bits = self._values, self._acts.bits
        banks = [[Signal(len(self.w_in), name=f"weight_bank{b}_{k}") for k in range(n)] for b in range(2)]
        for b, bank in enumerate(banks):
            with m.If(self.w_shift & (self.w_bank == b)):
                m.d.sync += [bank[k].eq(bank[k + 1]) for k in range(n - 1)]
                m.d.sync += bank[n - 1].eq(self.w_in)
        m.d.comb += self.w_out.eq(Mux(self.w_bank, banks[1][0], banks[0][0]))

        total, a_codes, w_codes = 0, [], []
        for k in range(n):
            if not self._dsp:
                m.submodules[f"multiplier{k}"] = multiplier = ExactMultiplier(self._acts, self._weights)
            a_code, w_code = Signal(bits, name=f"a_code{k}"), Signal(len(self.w_in), name=f"w_code{k}")
            if not self._dsp:
                m.d.comb += [multiplier.a.eq(a_code), multiplier.b.eq(w_code)]
                total = total + multiplier.significands
            with m.If(self.en):
                m.d.sync += [a_code.eq(self.a_in.code[k * bits:(k + 1) * bits]),
                             w_code.eq(Mux(self.a_in.bank, banks[1][k], banks[0][k]))]
            a_codes.append(a_code)
            w_codes.append(w_code)
        if self._dsp:
            # The multiply's middle bits registered, its borrow added as the partial sum's carry in: nothing after
            # the DSP in its cycle, no more carry chains in the third.
            m.submodules.multiplier = multiplier = PairMultiplier(self._acts, self._weights)
            m.d.comb += [multiplier.a.eq(Cat(*a_codes)), multiplier.b.eq(Cat(*w_codes))]
            middle, borrow = Signal.like(multiplier.middle), Signal()
            with m.If(self.en):
                m.d.sync += [self.a_out.eq(self.a_in), middle.eq(multiplier.middle), borrow.eq(multiplier.borrow),
                             self.psum_out.value.eq(self.psum_in.value + middle + borrow),
                             self.psum_out.nonfinite.eq(self.psum_in.nonfinite)]
            return m
        p = product_of(self._weights, self._acts)
        products = Signal(signed(signed_width(n * p.fixed_min, n * p.fixed_max)))
        with m.If(self.en):
            m.d.sync += [
                self.a_out.eq(self.a_in),
                products.eq(total),
                self.psum_out.value.eq(self.psum_in.value + products),
                self.psum_out.nonfinite.eq(self.psum_in.nonfinite),       # integers have no NaN or Inf
            ]
        return m

    def _elaborate_per_layer(self, m: Module) -> Module:
        """A multi-format PE whose packing pairs (``packed_pairs``, e.g. int4 x int4) take two codes a lane: code
        ``k`` at bits ``k * PACKED_INT_BITS`` of the slot, with weight ``k`` of the bank. Weight 0 goes through the
        shared multi-format multiplier as an unpacked layer's only weight does; weight 1 through a small multiplier
        of the packing formats, whose product is zero in an unpacked layer. The weight chain is two registers a
        bank deep while a packed tile shifts in (``w_packed``), one otherwise, so an unpacked tile still loads in
        ``rows`` cycles."""
        banks = [[Signal(len(self.w_in), name=f"weight_bank{b}_{k}") for k in range(2)] for b in range(2)]
        for b, bank in enumerate(banks):
            with m.If(self.w_shift & (self.w_bank == b)):
                with m.If(self.w_packed):
                    m.d.sync += [bank[1].eq(self.w_in), bank[0].eq(bank[1])]
                with m.Else():
                    m.d.sync += bank[0].eq(self.w_in)
        m.d.comb += self.w_out.eq(Mux(self.w_bank, banks[1][0], banks[0][0]))

        m.submodules.multiplier = multiplier = MultiFormatMultiplier(self._act_set, self._weight_set)
        w_packing = sorted({i for i, _ in self._packed_pairs})
        a_packing = sorted({j for _, j in self._packed_pairs})
        m.submodules.second = second = MultiFormatMultiplier([self._act_set[j] for j in a_packing],
                                                             [self._weight_set[i] for i in w_packing])
        a_select, w_select = Signal.like(multiplier.a_select), Signal.like(multiplier.b_select)
        a_code, w_code = Signal(len(self.a_in.code)), Signal(len(self.w_in))
        w_code1 = Signal(len(self.w_in))
        packed = Signal()
        with m.If(self.en):
            m.d.sync += [a_select.eq(self.a_in.act_format), w_select.eq(self.a_in.weight_format),
                         a_code.eq(self.a_in.code), packed.eq(self.a_in.packed),
                         w_code.eq(Mux(self.a_in.bank, banks[1][0], banks[0][0])),
                         w_code1.eq(Mux(self.a_in.bank, banks[1][1], banks[0][1]))]
        m.d.comb += [multiplier.a.eq(a_code), multiplier.b.eq(w_code),
                     multiplier.a_select.eq(a_select), multiplier.b_select.eq(w_select),
                     second.a.eq(a_code[PACKED_INT_BITS:2 * PACKED_INT_BITS]), second.b.eq(w_code1)]
        # The packing subsets' own indices: a packed lane's selects are always among them.
        for port, select, members in ((second.a_select, a_select, a_packing), (second.b_select, w_select, w_packing)):
            with m.Switch(select):
                for index, member in enumerate(members):
                    with m.Case(member):
                        m.d.comb += port.eq(index)

        significands = Signal.like(multiplier.significands)
        shift = Signal.like(multiplier.shift)
        product_nonfinite = Signal()
        unit_shift = second.min_exponent - multiplier.min_exponent
        packed_product = Signal(signed(self._psum_bits))         # the partial sum's width holds two products
        with m.If(self.en):
            m.d.sync += [
                self.a_out.eq(self.a_in),
                significands.eq(multiplier.significands),
                shift.eq(multiplier.shift),
                product_nonfinite.eq(multiplier.nonfinite),
                packed_product.eq(Mux(packed, (second.significands << second.shift) << unit_shift, 0)),
                self.psum_out.value.eq(self.psum_in.value + (significands << shift) + packed_product),
                self.psum_out.nonfinite.eq(self.psum_in.nonfinite | product_nonfinite),
            ]
        return m
