"""The post-processing unit: one accumulator into one output code per cycle (SETPP + STORE).

The semantics are those of :func:`sw.golden.postprocess.rescale` and :func:`~sw.golden.postprocess.lookup`, bit
for bit. The datapath is a pipeline of twelve stages (each at most one carry chain, one DSP multiply, one tree of
multiplexers or one block RAM read deep, for a 100 MHz clock on an ECP5); every stage advances only when ``en`` is
high::

    input      the inputs, registered (the accumulator comes straight from a block RAM; the bias saturated to the
               accumulator's range on its way in)
    offset     s = acc + bias,  |M|, |M_neg|
    magnitude  |s|; M and S chosen by the sign of s (``negative_param``); sign of s * M
    multiply   partial products of |s| * |M|, 17 x 17 bits each (one DSP each)
    sum        m = |s| * |M|, their sum                 (exact: no bit of t = s * M is ever lost)
    locate     leading and trailing one of m
    exponent   how far to shift m right, and the result's exponent
    align      shift m right: the kept bits, a guard bit and a sticky bit
    round      round half to even, carry into the exponent
    saturate   saturate to the format; integers add the zero point
    clamp      clamp by value to [clamp_lo, clamp_hi]
    lookup     the activation table read at the clamped code (a block RAM's read register); with ``lut`` the code
               becomes the table's entry, else it passes  ->  code

Working on the magnitude of ``t`` makes one datapath serve both rounding directions: round-half-even is
symmetric about zero, so ``rne(t * 2**e) == sign(t) * rne(|t| * 2**e)``, and a minifloat is sign-magnitude
anyway. The sticky bit comes from the position of the lowest set bit of ``m`` (a second priority encoder)
instead of from a masked OR-reduction behind the shifter: the bits shifted out below the guard are not
all zero exactly when that position lies below the guard's.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from .buffer_ports import NO_COLLISIONS, address_bits
from .spec.config import AcceleratorConfig
from .spec.formats import IntFormat, Minifloat, Specials
from .spec.isa import Buffer
from .spec.layout import line_bits
from .spec.microarchitecture import POSTPROCESS_STAGES

__all__ = ["PostProcessor", "round_half_even", "saturate_signed", "table_entry"]

#: The pipeline, in order; ``PostProcessor.latency`` is its length (less the stages left without a register).
STAGES = POSTPROCESS_STAGES

#: Width of the pieces the multiplier is cut into: an unsigned 17 x 17-bit product fits one 18 x 18 signed DSP.
DSP_OPERAND_BITS = 17

#: Widths of the parameter ports: those of the PARAM entry and of the SETPP fields (hw/spec/isa.py).
BIAS_BITS, MULTIPLIER_BITS, SHIFT_BITS, ZERO_POINT_BITS = 64, 32, 8, 16
#: The ports sampled by the first stage under their own names (and ``i_valid`` as ``valid``).
_INPUTS = ("acc", "nonfinite", "bias", "multiplier", "shift", "multiplier_neg", "shift_neg", "negative_param",
           "zero_point", "clamp_lo", "clamp_hi", "lut")


# --- building blocks --------------------------------------------------------------------------------

def round_half_even(guard: Value, sticky: Value, lsb: Value) -> Value:
    """Whether to add one to a truncated result: above half way, or exactly half way from an odd one."""
    return guard & (sticky | lsb)


def table_entry(line: Value, select: Value, bits: int) -> Value:
    """Code ``select`` of a LUT line of ``bits``-bit codes: the entry the lookup stage passes on."""
    return line.word_select(select, bits)


def _register(m: Module, en: Value, stage: str, **values) -> SimpleNamespace:
    """A pipeline register: every value is sampled when ``en`` is high; the register is named ``stage_name``."""
    registers = {}
    for name, value in values.items():
        value = Value.cast(value)
        registers[name] = register = Signal(value.shape(), name=f"{stage}_{name}")
        with m.If(en):
            m.d.sync += register.eq(value)
    return SimpleNamespace(**registers)


def _find_one(value: Value, *, highest: bool) -> tuple[Value, Value]:
    """(position of the highest or lowest set bit of ``value``, whether any bit is set).

    A balanced tree of two-way choices, so the depth grows with the logarithm of the width (a chain of
    ``If`` would be as deep as the value is wide). The position is meaningless when no bit is set.
    """
    nodes = [(bit, Const(0, 0)) for bit in value]
    while len(nodes) > 1:
        if len(nodes) % 2:
            nodes.append((Const(0, 1), Const(0, len(nodes[0][1]))))
        pairs = zip(nodes[0::2], nodes[1::2])
        nodes = []
        for (found_lo, pos_lo), (found_hi, pos_hi) in pairs:
            use_hi = found_hi if highest else ~found_lo
            nodes.append((found_lo | found_hi, Cat(Mux(use_hi, pos_hi, pos_lo), use_hi)))
    found, pos = nodes[0]
    return pos, found


def _pieces(value: Value) -> list[Value]:
    """``value`` cut into pieces of :data:`DSP_OPERAND_BITS` bits, least significant first."""
    return [value[at:at + DSP_OPERAND_BITS] for at in range(0, len(value), DSP_OPERAND_BITS)]


def saturate_signed(value: Value, bits: int) -> Value:
    """``value`` (signed) limited to the range of ``signed(bits)``: the bias to the accumulator's (the lane, and a
    ``slow_clock`` store engine as it takes a PARAM line)."""
    if len(value) <= bits:
        return value
    top = value[bits - 1:]
    fits = (top == 0) | (top == (1 << len(top)) - 1)
    return Mux(fits, value[:bits].as_signed(),
               Mux(value[-1], Const(-(1 << (bits - 1)), signed(bits)), Const((1 << (bits - 1)) - 1, signed(bits))))


def _shift_right(value: Value, amount: Value, amount_min: int, keep: int) -> tuple[Value, Value]:
    """``value >> (amount + amount_min)`` cut to ``keep`` bits, and the guard bit just below it.

    ``amount`` is unsigned; ``amount_min`` is the smallest shift as a constant, negative for a left shift.
    The constant part costs no logic: the value is sliced (or padded) before the barrel shifter.
    """
    if amount_min >= 1:
        window = value[amount_min - 1:]
    else:
        window = Cat(Const(0, 1 - amount_min), value)
    shifted = window >> amount
    if len(shifted) < keep + 1:
        shifted = Cat(shifted, Const(0, keep + 1 - len(shifted)))
    return shifted[1:keep + 1], shifted[0]


def _is_nan(fmt: Minifloat, code: Value) -> Value:
    exp, man = code[fmt.man_bits:fmt.man_bits + fmt.exp_bits], code[:fmt.man_bits]
    if fmt.specials is Specials.IEEE:
        return (exp == (1 << fmt.exp_bits) - 1) & (man != 0)
    if fmt.specials is Specials.NAN:
        return code[:-1] == fmt.nan_code
    return Const(0, 1)


def _order_key(fmt: IntFormat | Minifloat, code: Value) -> Value:
    """A signed integer that orders codes by the value they stand for (NaN aside).

    Minifloats are sign-magnitude: the magnitude code orders magnitudes (Inf above every finite code),
    -0 and +0 both map to 0, and in a format without subnormals every code with a zero exponent is zero.
    """
    if isinstance(fmt, IntFormat):
        return code.as_signed() if fmt.signed else code
    magnitude = code[:-1]
    if not fmt.subnormals:
        magnitude = Mux(code[fmt.man_bits:-1] == 0, 0, magnitude)
    return Mux(code[-1], -magnitude, magnitude)


# --- the unit ---------------------------------------------------------------------------------------

class PostProcessor(wiring.Component):
    """One element per cycle: ``acc`` and its column's parameters in, the output code ``latency`` advances later.

    All inputs are sampled together with ``i_valid``; nothing moves while ``en`` is low. The output format
    is the configuration's activation format (an integer or a minifloat). ``acc`` is in units of
    ``2 ** acc_exponent``, the least significant bit of a product of an activation and a weight.

    ``bias`` is saturated to the accumulator's range (it is a value the accumulator could hold), as in
    ``rescale(..., acc_bits=config.acc_bits)`` of the golden model, which every output matches exactly:
    ``multiplier = -2**31``, any ``shift`` in 0..255, ties, subnormals, saturation and negative zero included.

    The lane holds its own copy of the activation table (``config.lut_buffer_depth`` LUT lines, written through
    ``lut_write`` by the load engine, every lane at once); with ``lut`` high the clamped code ``q`` becomes entry
    ``q`` of the table (:func:`sw.golden.postprocess.lookup`). An engine without a table (activation formats above
    8 bits) keeps the lookup stage as a register, so the latency is the same.
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")
        self._config = config
        self._format = fmt = config.acts
        self._acc_exponent = config.acc_exponent
        ports = {}
        if config.postprocess_serial and config.postprocess_lanes == config.cols:
            # A lane whose M and S the store engine holds (:attr:`_params_held`): high in the advance an element
            # chooses the negative side, whose M and S the stages after it take from the ports the next advance.
            ports["side"] = Out(1)
        if config.multi_format:
            # The output format (SETPP.format) selects one of the format tails; codes are slots.
            fmt = SimpleNamespace(bits=config.act_slot_bits)
            ports["format"] = In(range(max(len(config.formats), 2)))
        super().__init__({
            "en": In(1),
            "i_valid": In(1),
            "acc": In(signed(config.acc_bits)),
            "nonfinite": In(1),
            "bias": In(signed(BIAS_BITS)),
            "multiplier": In(signed(MULTIPLIER_BITS)),
            "shift": In(unsigned(SHIFT_BITS)),
            # The negative side (STORE.negative_param): an element whose acc + bias is negative takes these.
            "multiplier_neg": In(signed(MULTIPLIER_BITS)),
            "shift_neg": In(unsigned(SHIFT_BITS)),
            "negative_param": In(1),
            "zero_point": In(signed(ZERO_POINT_BITS)),
            "clamp_lo": In(unsigned(fmt.bits)),
            "clamp_hi": In(unsigned(fmt.bits)),
            "lut": In(1),
            "lut_write": Out(WritePort.Signature(addr_width=address_bits(max(config.lut_buffer_depth, 1)),
                                                 shape=unsigned(line_bits(Buffer.LUT, config)))),
            "o_valid": Out(1),
            "code": Out(unsigned(fmt.bits)),
            **ports,
        })

    @property
    def config(self) -> AcceleratorConfig:
        return self._config

    @property
    def acc_exponent(self) -> int:
        """Power of two of the accumulator's least significant bit."""
        return self._acc_exponent

    @property
    def latency(self) -> int:
        """Cycles with ``en`` high from an input's sampling to its code on ``code`` (with ``o_valid``): one per stage
        (``config.postprocess_latency``: fewer in a ``postprocess_merged`` or ``slow_clock`` unit)."""
        return self._config.postprocess_latency

    @property
    def product_bits(self) -> int:
        """Width of ``|t| = |acc + bias| * |multiplier|``: at most ``2**acc_bits * 2**31``."""
        return self._config.acc_bits + MULTIPLIER_BITS

    def elaborate(self, platform):
        m = Module()
        # The bias is saturated to the accumulator's range as it is sampled (it comes from a register that holds for
        # the whole STORE): the offset stage is then its one addition (the saturation's wide compare in front of that
        # carry chain was the int8 4x4 engine's critical path on the ECP5).
        inputs = {name: getattr(self, name) for name in _INPUTS}
        inputs["bias"] = saturate_signed(self.bias, self._config.acc_bits)
        sampled = self._stage(m, "input", valid=self.i_valid, **inputs)
        offset = self._offset(m, sampled)
        magnitude = self._magnitude(m, offset)
        if self._config.postprocess_serial:
            # Integers only (the configuration checks): t = s * M signed, the serial shift in place of locate,
            # exponent and align.
            result = self._serial_round_and_saturate(m, self._serial_align(m, self._serial_product(m, magnitude)))
            self._lookup(m, self._clamp(m, result))
            return m
        product = self._sum(m, self._multiply(m, magnitude))
        locate = self._locate(m, product)
        if not self._config.multi_format:
            self._lookup(m, self._tail(m, locate))
            return m
        # A multi-format unit: the stages up to ``locate`` (the multiplier among them) are shared; every format of
        # the set has its own tail (exponent .. clamp, sized for it), and the output format chosen by SETPP picks
        # one tail's code (zero-extended to a slot) for the lookup stage. The choice travels beside the pipeline.
        tails = []
        for fmt in self._config.act_formats:
            self._format = fmt
            narrow = SimpleNamespace(**{**vars(locate), "clamp_lo": locate.clamp_lo[:fmt.bits],
                                        "clamp_hi": locate.clamp_hi[:fmt.bits]})
            tails.append(self._tail(m, narrow))
        self._format = self._config.acts
        select = self._stage(m, "input_format", format=self.format).format
        for stage in STAGES[1:-1]:          # to the clamp stage's register, beside the data
            select = self._stage(m, f"{stage}_format", format=select).format
        code = Signal(self._config.act_slot_bits, name="clamp_chosen")
        with m.Switch(select):
            for i in range(1, len(tails)):
                with m.Case(i):
                    m.d.comb += code.eq(tails[i].code)
            with m.Default():
                m.d.comb += code.eq(tails[0].code)
        self._lookup(m, SimpleNamespace(valid=tails[0].valid, lut=tails[0].lut, code=code))
        return m

    def _tail(self, m, locate):
        """The stages of the output format (:attr:`_format`): exponent, align, round, saturate and clamp."""
        if isinstance(self._format, IntFormat):
            exponent = self._exponent_integer(m, locate)
            align = self._align(m, exponent, keep=self._integer_keep_bits)
            result = self._round_and_saturate_integer(m, align)
        else:
            exponent = self._exponent_minifloat(m, locate)
            align = self._align(m, exponent, keep=self._format.man_bits + 1)
            result = self._saturate_minifloat(m, self._round_minifloat(m, align))
        return self._clamp(m, result)

    # --- stages common to every format ---------------------------------------------------------
    #: What every stage hands on unchanged until it is used.
    _PASSED = ("valid", "nonfinite", "shift", "zero_point", "clamp_lo", "clamp_hi", "lut")

    def _offset(self, m, p):
        """``s = acc + bias`` exactly (``acc_bits + 1`` bits), and the magnitude and sign of ``M``."""
        s = Signal(signed(self._config.acc_bits + 1), name="offset_sum")
        m.d.comb += s.eq(p.acc + p.bias)                # the bias saturated as it was sampled
        if self._config.postprocess_serial:
            # Both multipliers on, signed: the magnitude stage takes one absolute value, of the side s chooses.
            sides = self._carry(p, "multiplier", "multiplier_neg")
        else:
            sides = dict(m_magnitude=abs(p.multiplier), m_negative=p.multiplier[-1],
                         n_magnitude=abs(p.multiplier_neg), n_negative=p.multiplier_neg[-1])
        return self._stage(m, "offset", **self._carry(p, *self._PASSED, "shift_neg", "negative_param"), s=s, **sides)

    def _magnitude(self, m, p):
        """``|s|`` and the sign of ``t = s * M``. From here on the datapath is unsigned, so the multiplier is the
        narrowest exact one and ``M = -2**31`` needs no special case.

        With ``negative_param`` a negative ``s`` takes the negative side's ``M`` and ``S`` (a PRelu per channel):
        the choice is one multiplexer driven by the registered sign of ``s``, beside the carry chain of ``|s|``."""
        use_neg = p.negative_param & p.s[-1]
        passed = {**self._carry(p, *self._PASSED), "shift": Mux(use_neg, p.shift_neg, p.shift)}
        if self._params_held:
            # A serial lane stays signed (:meth:`_serial_product`). The ports hold the column's M and S (those of
            # the side chosen, at least, from the advance after the choice, which ``side`` tells): the register keeps
            # s and which side it chose.
            del passed["shift"]
            m.d.comb += self.side.eq(self.en & p.valid & use_neg)
            stage = self._stage(m, "magnitude", **passed, use_neg=use_neg, s=p.s)
            return SimpleNamespace(**vars(stage), mult=Mux(stage.use_neg, self.multiplier_neg, self.multiplier),
                                   shift=Mux(stage.use_neg, self.shift_neg, self.shift))
        if self._config.postprocess_serial:
            return self._stage(m, "magnitude", **passed, s=p.s, mult=Mux(use_neg, p.multiplier_neg, p.multiplier))
        return self._stage(m, "magnitude", **passed,
                         m_magnitude=Mux(use_neg, p.n_magnitude, p.m_magnitude),
                         s_magnitude=abs(p.s), negative=p.s[-1] ^ Mux(use_neg, p.n_negative, p.m_negative))

    def _multiply(self, m, p):
        """The partial products of ``|s| * |M|``: every 17-bit piece of one times every 17-bit piece of the
        other, each registered (one DSP without its own pipeline registers, which yosys leaves unused)."""
        pieces, places = {}, {}
        for i, a in enumerate(_pieces(p.s_magnitude)):
            for j, b in enumerate(_pieces(p.m_magnitude)):
                pieces[f"product{i}_{j}"] = a * b
                places[f"product{i}_{j}"] = DSP_OPERAND_BITS * (i + j)
        stage = self._stage(m, "multiply", **self._carry(p, *self._PASSED, "negative"), **pieces)
        stage.places = places       # where each partial product goes (not a register)
        return stage

    def _sum(self, m, p):
        """``|t| = |s| * |M|``: the partial products in their places, added."""
        terms = [getattr(p, name) << place for name, place in p.places.items()]
        magnitude = sum(terms[1:], terms[0])
        return self._stage(m, "sum", **self._carry(p, *self._PASSED, "negative"),
                         magnitude=magnitude[:self.product_bits])

    def _locate(self, m, p):
        """Positions of the highest and lowest set bits of ``|t|``, and whether there is one."""
        highest, nonzero = _find_one(p.magnitude, highest=True)
        lowest, _ = _find_one(p.magnitude, highest=False)
        return self._stage(m, "locate", **self._carry(p, *self._PASSED, "negative", "magnitude"),
                         highest=highest, lowest=lowest, nonzero=nonzero)

    def _align(self, m, p, *, keep):
        """Shift right by ``amount + amount_min``: the kept bits, the guard bit, and the sticky bit below it.

        Sticky: some bit below the guard is set, i.e. the lowest set bit sits below the guard's position.
        """
        amount_min = self._shift_range[0]
        kept, guard = _shift_right(p.magnitude, p.amount, amount_min, keep)
        sticky = p.nonzero & (p.lowest + 1 < p.amount + amount_min)
        rest = {k: v for k, v in vars(p).items() if k not in ("magnitude", "amount", "lowest")}
        return self._stage(m, "align", **rest, kept=kept, guard=guard, sticky=sticky)

    def _serial_product(self, m, p):
        """``t = s * M``, signed (a ``postprocess_serial`` lane): no absolute values, since the serial shift
        floors a two's-complement ``t`` and round-half-even from the floor is exact for either sign."""
        stage = self._stage(m, "multiply", **self._carry(p, *self._PASSED), product=p.s * p.mult)
        return self._stage(m, "sum", **self._carry(stage, *self._PASSED, "product"))

    def _serial_round_and_saturate(self, m, p):
        """``y = zero_point + floor(t * 2**e) + r``, ``r`` the rounding's one as a carry in, saturated by the bits of
        ``y`` above the code's; a ``big`` floor (past every bound whatever the zero point) saturates by its sign,
        and a NaN or Inf operand adds nothing (``y = zero_point``)."""
        fmt = self._format
        lo, hi = int(fmt.min), int(fmt.max)
        r = round_half_even(p.guard, p.sticky, p.kept[0])
        p = self._stage(m, "round", **self._carry(p, "valid", "lut", "clamp_lo", "clamp_hi", "nonfinite",
                                                  "zero_point", "kept", "big", "negative"), r=r)
        operand = Mux(p.nonfinite, 0, p.kept)
        carry = ~p.nonfinite & p.r
        # The carry as a low bit of both operands (1 + carry carries exactly carry): one carry chain.
        total = Cat(Const(1, 1), p.zero_point).as_signed() + Cat(carry, operand).as_signed()
        y = total[1:].as_signed()
        high = y[fmt.bits - 1:] if fmt.signed else y[fmt.bits:]
        fits = ((high == 0) | (high == (1 << len(high)) - 1)) if fmt.signed else (high == 0)
        big = p.big & ~p.nonfinite
        above = Mux(big, ~p.negative, ~fits & ~y[-1])
        below = Mux(big, p.negative, ~fits & y[-1])
        return self._stage(m, "saturate", **self._carry(p, "valid", "lut", "clamp_lo", "clamp_hi"),
                           code=Mux(above, hi, Mux(below, lo, y))[:fmt.bits])

    def _serial_align(self, m, p):
        """What :meth:`_align` hands on, one bit a cycle (``postprocess_serial``): the element's window (``t`` over
        a guard bit) is loaded into a register that shifts right ``shift`` times (arithmetically), at most one a
        cycle, each bit falling out below the guard joining the sticky bit: then ``kept`` is ``floor(t * 2**e)``
        (the bits above the guard, signed), and ``big`` says it lies outside ``[-2**keep, 2**keep)``: its bits from
        ``keep`` up are not all its sign. The result is handed on ``postprocess_serial_steps`` cycles after the
        load, when any shift that changes it is done (a shift by the window's width leaves only copies of the
        sign: floor -1 or 0, guard the sign, sticky set for any nonzero ``t``), so the latency is fixed and an
        element may enter every ``postprocess_interval`` cycles."""
        c = self._config
        keep = self._integer_keep_bits
        amount_min = self._shift_range[0]
        t = p.product
        window = t[amount_min - 1:] if amount_min >= 1 else Cat(Const(0, 1 - amount_min), t)
        steps = c.postprocess_serial_steps
        assert len(window) == steps, "update AcceleratorConfig.postprocess_serial_steps (the cycle model uses it)"
        work = Signal(signed(steps), name="serial_work")
        remaining = Signal.like(p.shift, name="serial_remaining")      # shifts still to make
        timer = Signal(range(steps + 2), name="serial_timer")          # cycles until the result is handed on
        sticky = Signal(name="serial_sticky")
        carried = [n for n in ("nonfinite", "zero_point", "clamp_lo", "clamp_hi", "lut")
                   if not (c.postprocess_held and n in self._HELD)]
        loaded = _register(m, self.en & p.valid, "serial", **self._carry(p, *carried))
        with m.If(self.en):
            with m.If(p.valid):
                m.d.sync += [work.eq(window), remaining.eq(p.shift), timer.eq(steps + 1), sticky.eq(0)]
            with m.Else():
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.If(remaining != 0):
                    m.d.sync += [work.eq(work >> 1), sticky.eq(sticky | work[0]), remaining.eq(remaining - 1)]
        held = {n: getattr(p, n) for n in ("zero_point", "clamp_lo", "clamp_hi", "lut") if n not in carried}
        fields = {**vars(loaded), **held}
        top = work[keep + 1:]
        return SimpleNamespace(**fields, valid=timer == 1, kept=work[1:keep + 2].as_signed(), guard=work[0],
                               sticky=sticky, big=~((top == 0) | (top == (1 << len(top)) - 1)), negative=work[-1])

    def _clamp(self, m, p):
        """``hi`` at or above ``hi``, else ``lo`` at or below ``lo``, by value (so a ReLU never leaves -0, and
        clamped outputs are monotone in the accumulator); NaN is never clamped, nor clamps."""
        fmt = self._format
        key, lo, hi = (_order_key(fmt, c) for c in (p.code, p.clamp_lo, p.clamp_hi))
        above, below = key >= hi, key <= lo
        if isinstance(fmt, Minifloat) and fmt.has_nan:
            above &= ~_is_nan(fmt, p.clamp_hi)
            below &= ~_is_nan(fmt, p.clamp_lo)
            above &= ~_is_nan(fmt, p.code)
            below &= ~_is_nan(fmt, p.code)
        code = Mux(above, p.clamp_hi, Mux(below, p.clamp_lo, p.code))
        return self._stage(m, "clamp", valid=p.valid, lut=p.lut, code=code)

    def _lookup(self, m, p):
        """Entry ``q`` of the table: LUT line ``q >> k`` read into the memory's register (the stage's register),
        then code ``q & (2**k - 1)`` of it chosen, with ``2**k = lut_entries_per_line``. The choice and the final
        multiplexer follow the read register, into the store engine's line FIFO."""
        c = self._config
        bits = c.act_slot_bits
        out = self._stage(m, "lookup", valid=p.valid, lut=p.lut, code=p.code)
        if not c.lut_buffer_depth:
            m.d.comb += [self.o_valid.eq(out.valid), self.code.eq(out.code)]
            return
        k = c.lut_entries_per_line.bit_length() - 1
        style = {"ram_style": "block"} if c.table_bram else {}
        m.submodules.table = table = Memory(shape=unsigned(line_bits(Buffer.LUT, c)), depth=c.lut_buffer_depth,
                                            init=[], attrs={**NO_COLLISIONS, **style})
        write = table.write_port()
        m.d.comb += [write.en.eq(self.lut_write.en), write.addr.eq(self.lut_write.addr),
                     write.data.eq(self.lut_write.data)]
        read = table.read_port()
        m.d.comb += [read.en.eq(self.en), read.addr.eq(p.code[k:] if k < bits else 0)]
        select = self._stage(m, "lookup_select", select=p.code[:k] if k else Const(0, 1))
        entry = table_entry(read.data, select.select, bits) if k else read.data[:bits]
        m.d.comb += [self.o_valid.eq(out.valid), self.code.eq(Mux(out.lut, entry, out.code))]

    #: What a ``postprocess_held`` unit takes straight from its ports at the stage that uses it: SETPP's values and
    #: STORE's ``negative_param``, which the store engine holds while a STORE's elements are in flight.
    _HELD = ("zero_point", "clamp_lo", "clamp_hi", "lut", "negative_param", "format")

    def _stage(self, m: Module, stage: str, **values) -> SimpleNamespace:
        """A pipeline register (:func:`_register`) of ``values``; in a ``postprocess_held`` unit the values of
        :data:`_HELD` pass it unregistered (they hold while the element is in the pipeline), and a
        ``postprocess_merged`` (``slow_clock``) unit has no register after the stages of ``POSTPROCESS_MERGED_STAGES``
        (``POSTPROCESS_SLOW_STAGES``): ``config.postprocess_unregistered``."""
        if stage.removesuffix("_format") in self._config.postprocess_unregistered:
            return SimpleNamespace(**values)        # no register: the stage shares its cycle with the next
        held = {n: v for n, v in values.items() if n in self._HELD} if self._config.postprocess_held else {}
        registers = _register(m, self.en, stage, **{n: v for n, v in values.items() if n not in held})
        return SimpleNamespace(**vars(registers), **held)

    @property
    def _params_held(self) -> bool:
        """A ``postprocess_serial`` lane of its own columns' (one per column, not taking several in turn): the store
        engine holds the column's PARAM entries on the ports for the whole STORE, so the stages after the first take
        ``multiplier`` and ``shift`` (or their negative side) from the ports, not from registers of their own."""
        c = self._config
        return c.postprocess_serial and c.postprocess_lanes == c.cols

    @staticmethod
    def _carry(p, *names):
        return {name: getattr(p, name) for name in names}

    @property
    def _shift_range(self) -> tuple[int, int]:
        """Smallest and largest right shift of ``|t|`` (negative: left) over every leading one and ``shift``."""
        top = self.product_bits - 1
        shift_max = (1 << SHIFT_BITS) - 1
        if isinstance(self._format, IntFormat):
            return -self._acc_exponent, shift_max - self._acc_exponent
        below = 1 - self._format.bias - self._acc_exponent
        man = self._format.man_bits
        return max(0, below) - man, max(top, below + shift_max) - man

    # --- integers -------------------------------------------------------------------------------
    @property
    def _integer_keep_bits(self) -> int:
        """Bits of ``rne(|t| * 2**e)`` worth keeping: any larger result saturates whatever the zero point."""
        fmt = self._format
        zp_lo, zp_hi = -(1 << (ZERO_POINT_BITS - 1)), (1 << (ZERO_POINT_BITS - 1)) - 1
        bits = 1
        while not ((1 << bits) + zp_lo > int(fmt.max) and -(1 << bits) + zp_hi < int(fmt.min)):
            bits += 1
        return bits

    def _exponent_integer(self, m, p):
        """``|t| * 2**e`` with ``e = acc_exponent - shift``: a right shift by ``shift - acc_exponent``."""
        # floor(|t| * 2**e) >= 2**keep exactly when the leading one lands at or above bit `keep`.
        big = p.nonzero & (p.highest + self._acc_exponent - p.shift >= self._integer_keep_bits)
        return self._stage(
            m, "exponent", **self._carry(p, "valid", "lut", "nonfinite", "zero_point", "negative", "clamp_lo",
                                                  "clamp_hi", "magnitude", "lowest", "nonzero"),
            amount=p.shift, big=big)

    def _round_and_saturate_integer(self, m, p):
        """The round and saturate stages, or in a ``slow_clock`` unit (neither registered) one addition for both:
        ``y = zero_point +- (kept + r)`` as ``zero_point + (kept or ~kept) + (r xor negative)``, the rounding's one
        a carry in (``-kept - r == ~kept + 1 - r``); ``big`` (past every bound whatever the zero point) saturates
        by its sign, and a NaN or Inf operand adds nothing. ``y`` fits the format when its bits above the code's are
        copies of the code's sign (signed) or zeros (unsigned): no comparison's carry chain."""
        if not self._config.slow_clock:
            return self._saturate_integer(m, self._round_integer(m, p))
        fmt = self._format
        lo, hi = int(fmt.min), int(fmt.max)
        r = round_half_even(p.guard, p.sticky, p.kept[0])
        operand = Signal(signed(len(p.kept) + 1), name="round_operand")
        carry = Signal(name="round_carry")
        kept = Cat(p.kept, Const(0, 1)).as_signed()
        m.d.comb += [operand.eq(Mux(p.nonfinite, 0, Mux(p.negative, ~kept, kept))),
                     carry.eq(~p.nonfinite & (r ^ p.negative))]
        # The carry as a low bit of both operands (1 + carry carries exactly carry): one carry chain.
        total = Cat(Const(1, 1), p.zero_point).as_signed() + Cat(carry, operand).as_signed()
        y = total[1:].as_signed()
        high = y[fmt.bits - 1:] if fmt.signed else y[fmt.bits:]
        fits = ((high == 0) | (high == (1 << len(high)) - 1)) if fmt.signed else (high == 0)
        above = Mux(p.big & ~p.nonfinite, ~p.negative, ~fits & ~y[-1])
        below = Mux(p.big & ~p.nonfinite, p.negative, ~fits & y[-1])
        return self._stage(m, "saturate", **self._carry(p, "valid", "lut", "clamp_lo", "clamp_hi"),
                           code=Mux(above, hi, Mux(below, lo, y))[:fmt.bits])

    def _round_integer(self, m, p):
        """Round the magnitude (a NaN or Inf operand gives 0); meanwhile, how far the zero point lies from either end
        of the format, so the next stage compares the magnitude with those distances instead of the sum."""
        fmt = self._format
        keep = self._integer_keep_bits
        rounded = p.kept + round_half_even(p.guard, p.sticky, p.kept[0])
        lo, hi = int(fmt.min), int(fmt.max)
        zp = p.zero_point
        bounds = {} if self._config.slow_clock else dict(up=hi - zp, down=lo - zp, up_negated=zp - hi,
                                                         down_negated=zp - lo)
        return self._stage(m, "round", **self._carry(p, "valid", "lut", "clamp_lo", "clamp_hi", "negative"),
                         zero_point=zp, magnitude=Mux(p.nonfinite, 0, Mux(p.big, 1 << keep, rounded)), **bounds)

    def _saturate_integer(self, m, p):
        """``y = zero_point +- magnitude``, saturated to the format: y > hi exactly when +-magnitude > hi -
        zero_point, so the bounds are compared beside the addition, not after it (after it, with constants, in a
        ``slow_clock`` unit)."""
        fmt = self._format
        lo, hi = int(fmt.min), int(fmt.max)
        y = Mux(p.negative, p.zero_point - p.magnitude, p.zero_point + p.magnitude)
        if self._config.slow_clock:
            # A slow clock has time for the compares after the addition: two with constants instead of four.
            above, below = y > hi, y < lo
            return self._stage(m, "saturate", **self._carry(p, "valid", "lut", "clamp_lo", "clamp_hi"),
                             code=Mux(above, hi, Mux(below, lo, y))[:fmt.bits])
        above = Mux(p.negative, p.magnitude < p.up_negated, p.magnitude > p.up)
        below = Mux(p.negative, p.magnitude > p.down_negated, p.magnitude < p.down)
        return self._stage(m, "saturate", **self._carry(p, "valid", "lut", "clamp_lo", "clamp_hi"),
                         code=Mux(above, hi, Mux(below, lo, y))[:fmt.bits])

    # --- minifloats ------------------------------------------------------------------------------
    def _exponent_minifloat(self, m, p):
        """The exponent of ``|t| * 2**e`` from its leading one, and where its last kept bit sits.

        With the leading one at bit ``h``, the value lies in ``[2**E, 2**(E+1))``, ``E = h + acc_exponent -
        shift``. Normal results keep ``man_bits`` bits below the leading one; subnormal ones (``E < emin``)
        keep the bits down to the subnormal quantum ``2**(emin - man_bits)``. So ``m`` shifts right by
        ``max(h, emin - acc_exponent + shift) - man_bits``.
        """
        fmt = self._format
        highest, lowest, nonzero = p.highest, p.lowest, p.nonzero
        emin = 1 - fmt.bias
        emax = fmt.max_exp_field - fmt.bias
        man = fmt.man_bits
        below = emin - self._acc_exponent           # emin - e, less the shift
        exponent = Signal(range(self._acc_exponent - (1 << SHIFT_BITS), self.product_bits + self._acc_exponent),
                          name="exponent_exponent")
        m.d.comb += exponent.eq(highest + self._acc_exponent - p.shift)
        normal = exponent >= emin
        amount_min, amount_max = self._shift_range
        amount = Signal(range(amount_max - amount_min + 1), name="exponent_amount")
        m.d.comb += amount.eq(Mux(normal, highest, below + p.shift) - man - amount_min)
        # The biased exponent less one: what the code adds to a significand that carries its leading one.
        base = Mux(normal, exponent, emin) + (fmt.bias - 1)
        fields = dict(
            amount=amount, lowest=lowest, nonzero=nonzero,
            huge=nonzero & (exponent > emax), base=base[:fmt.exp_bits])
        if not fmt.subnormals:
            # Only 0 and 2**emin lie below the normals: above half of 2**emin rounds up, half or less to 0.
            fields.update(flush=~normal, flush_up=(exponent == emin - 1) & (lowest != highest))
        return self._stage(
            m, "exponent", **self._carry(p, "valid", "lut", "nonfinite", "negative", "clamp_lo", "clamp_hi",
                                                  "magnitude"), **fields)

    def _round_minifloat(self, m, p):
        """Code of the nearest value: round the significand, let a carry ripple into the exponent, saturate.

        ``(base << man_bits) + significand`` is the magnitude code, since the significand's leading one adds
        one to the exponent field; a carry out of the mantissa lands in the exponent by the same addition,
        and subnormals (``base == 0``) come out right too. Ties go to the even *code*, which for formats
        without mantissa bits is not the parity of the significand.
        """
        fmt = self._format
        man = fmt.man_bits
        # The last bit of the truncated code, without waiting for the addition that forms the code.
        lsb = p.kept[0] if man else p.kept[0] ^ p.base[0]
        rounded = (p.base << man) + p.kept + round_half_even(p.guard, p.sticky, lsb)
        return self._stage(m, "round", **self._carry(p, "valid", "lut", "clamp_lo", "clamp_hi", "negative",
                                                            "nonfinite", "huge", "nonzero",
                                                            *(() if fmt.subnormals else ("flush", "flush_up"))),
                         rounded=rounded)

    def _saturate_minifloat(self, m, p):
        """Saturate to the largest finite code, flush (formats without subnormals), sign, NaN for NaN operands."""
        fmt = self._format
        man = fmt.man_bits
        max_code = int(fmt.quantize(fmt.max))
        rounded = p.rounded
        magnitude = Mux(p.huge | (rounded > max_code), max_code, rounded)
        if not fmt.subnormals:
            magnitude = Mux(p.flush, Mux(p.flush_up, 1 << man, 0), magnitude)
        magnitude = Mux(p.nonzero, magnitude, 0)
        # A result that rounds to zero is +0: -0 never leaves the unit (the IR's tensors never hold it).
        code = Cat(magnitude[:fmt.bits - 1], p.negative & (magnitude[:fmt.bits - 1] != 0))
        special = fmt.nan_code if fmt.has_nan else 0
        return self._stage(m, "saturate", **self._carry(p, "valid", "lut", "clamp_lo", "clamp_hi"),
                         code=Mux(p.nonfinite, special, code))
