"""The instruction decoder: field layouts derived from ``hw/spec/isa.py``, and the static error checks.

The checks, and their precedence, are those of ``sw/emulator/checks.py``: ILLEGAL_OPCODE,
ILLEGAL_DEPENDENCY, BAD_FIELD, SRAM_RANGE, DRAM_RANGE. The checks are pipelined over ``DECODE_LATENCY`` cycles
(``hw/spec/microarchitecture.py``) without a multiplier: products of fields are shifts and additions; a
``decode_serial`` build makes each product a shift-and-add loop over ``SERIAL_DECODE_LATENCY`` cycles.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .spec.config import AcceleratorConfig
from .spec.isa import HEADER, INSTRUCTION_BITS, KINDS, AluOp, Buffer, ErrorCode, Kind, Opcode
from .lanes import packed_pair
from .pipeline import Pipeline, Staged
from .spec.layout import line_bytes, output_line_bytes

__all__ = ["InstructionDecoder", "layout_of"]


def layout_of(kind: Kind) -> data.StructLayout:
    """The instruction word seen as ``kind``: header, then the kind's fields, then unused bits."""
    members = {}
    for f in HEADER + kind.fields:
        members[f.name] = signed(f.bits) if f.signed else unsigned(f.bits)
    members["unused"] = unsigned(INSTRUCTION_BITS - kind.used_bits)
    return data.StructLayout(members)


class InstructionDecoder(wiring.Component):
    """``word`` in with ``en``; its ``opcode`` and the ``error`` it raises out with ``valid``, :attr:`latency`
    cycles later. The outputs hold until the result of the next ``en`` arrives; a word may follow every cycle.

    The address arithmetic is pipelined (:class:`hw.pipeline.Pipeline`): no multiplier, at most the
    configuration's ``decode_chains`` carry chains per stage (two by default), so that checking an instruction never
    limits the clock; a slow small part's build takes more per stage and saves the registers. Every kind's checks run
    side by side; the opcode picks one kind's error at the end. With ``decode_shared`` the kinds' products of fields
    share multipliers (:meth:`_shared_products`). With ``decode_serial`` each product is a loop taking a bit of its
    narrower operand per cycle (:class:`hw.pipeline.Pipeline` with ``start``): then ``word`` and ``dram_size`` must
    hold from ``en`` until ``valid`` (the engine's fetch does: it decodes one word at a time).
    """

    def __init__(self, config: AcceleratorConfig):
        self._config = config
        super().__init__({
            "en": In(1),
            "word": In(unsigned(INSTRUCTION_BITS)),
            "dram_size": In(unsigned(32)),
            "valid": Out(1),
            "opcode": Out(unsigned(HEADER[0].bits)),
            "error": Out(range(max(ErrorCode) + 1)),
        })

    @property
    def latency(self) -> int:
        """Cycles from ``en`` to the result on ``opcode``/``error``: the configuration's ``decode_latency`` (for a
        stepped decoder the longest kind's; a word of a shorter kind's program is ready its ``decode_latency_of``
        cycles after ``en``)."""
        return self._config.decode_latency

    def _view(self, kind: Kind):
        return data.View(layout_of(kind), self.word)

    def _flags_error(self, kind: Kind):
        v = self._view(kind)
        bad = Const(0)
        for flag, allowed in (("pop_prev", kind.may_pop_prev), ("pop_next", kind.may_pop_next),
                              ("push_prev", kind.may_push_prev), ("push_next", kind.may_push_next)):
            if not allowed:
                bad = bad | v[flag]
        return bad

    def _bad_field(self, m: Module, kind: Kind):
        """Whether the word, seen as ``kind``, raises BAD_FIELD: unused bits set, a zero where a field must not be
        zero, a field outside its values (plain logic, no arithmetic)."""
        c = self._config
        v = self._view(kind)
        align = (c.dma_bits // 8).bit_length() - 1

        def misaligned(value):
            return value[:align] != 0 if align else Const(0)
        bad = v.unused != 0
        if kind.opcode in (Opcode.COMPUTE, Opcode.STORE) and not c.packs_per_layer:
            bad = v.as_value()[kind.used_bits - 1:] != 0       # packed (the last field) as the unused bits were
        for f in kind.fields:
            if f.nonzero:
                bad = bad | (v[f.name] == 0)
        op = kind.opcode
        if op is Opcode.LOAD:
            padded = (v.pad_top | v.pad_bottom | v.pad_left | v.pad_right) != 0
            bad = bad | (v.buffer > max(Buffer)) | ((v.buffer != Buffer.ACT) & padded) | \
                misaligned(v.dram_addr) | misaligned(v.dram_stride) | \
                ((v.buffer == Buffer.ACT) & ((v.pad_value >> c.act_slot_bits) != 0))
        elif op is Opcode.COMPUTE:
            bad = bad | (v.weight_format >= len(c.weight_formats)) | (v.act_format >= len(c.act_formats))
            if c.packs_per_layer:       # packed only on a pair the build packs
                bad = bad | (v.packed & ~packed_pair(c, v.weight_format, v.act_format))
        elif op is Opcode.ALU:
            bad = bad | (v.op > max(AluOp))
        elif op is Opcode.SETPP:
            lo, hi = v.clamp_lo, v.clamp_hi
            # The clamps are codes of the output format SETPP.format selects (index 0 alone in a single-format
            # build): each format's check, the index picks one; an index outside the set is a bad field.
            clamps_bad = Const(1)           # an index outside the set
            for i, fmt in enumerate(c.act_formats):
                fmt_bad = ((lo >> fmt.bits) != 0) | ((hi >> fmt.bits) != 0) | \
                    ~_ordered(m, fmt, lo[:fmt.bits], hi[:fmt.bits])
                clamps_bad = Mux(v.format == i, fmt_bad, clamps_bad)
            bad = bad | clamps_bad
            if not c.lut_buffer_depth:
                bad = bad | v.lut
        elif op is Opcode.STORE:
            bad = bad | misaligned(v.dram_addr) | misaligned(v.dram_stride)
        return bad

    def _checks(self, m: Module, p: Pipeline, kind: Kind, product=None, dram_terms=None) -> tuple[Staged, Staged,
                                                                                                   Staged]:
        """(bad_field, sram_range, dram_range) of ``kind``, each a staged truth value. ``product``: how the products
        of fields are made (``p.product`` unless the kinds share multipliers, see :meth:`_shared_products`).
        ``dram_terms``: a dict that, given, takes the kind's DRAM end's terms (address, product, span) for a check
        the kinds share (:meth:`_shared_dram`); the returned dram_range is then a placeholder."""
        product = product or p.product
        c = self._config
        v = self._view(kind)
        no = p.input(Const(0, 1))

        def field(name):
            return p.input(v[name])

        def minus_one(name):
            """``field - 1``; wraps for a zero field, which BAD_FIELD refuses before any range check counts."""
            return p.apply(lambda x: (x - 1)[:len(x)], field(name))

        def plus(a, b, name, *rest):
            """``a * b + field(name)`` plus the terms the functions ``rest`` make (after the product, as the sums
            always made them): in a serial build the product's loop starts at a buffer address field (one adder
            less). Not at dram_addr: its 32 bits would widen the loop's adder and running sum to 33 (on the 1x1
            iCEBreaker board 133 logic cells more, where the buffer addresses save 23)."""
            if p.serial and name != "dram_addr":
                folded = product(a, b, field(name))
                return p.sum([folded, *[f() for f in rest]]) if rest else folded
            return p.sum([field(name), product(a, b), *[f() for f in rest]])

        def dram_range(a, b, span):
            """``dram_addr + a * b + span() > dram_size``: the kind's own adders, or terms for the shared check."""
            if dram_terms is None:
                end = plus(a, b, "dram_addr", span)
                return p.apply(lambda end, size: end > size, end, p.input(self.dram_size))
            dram_terms[kind.opcode] = (field("dram_addr"), product(a, b), span())
            return no

        # A serial (small part's) decoder compares with the buffer depths, powers of two, by testing bits: a few
        # LUTs instead of a carry chain each. The other builds keep the comparisons.
        bits = c.decode_serial
        gt = _greater if bits else (lambda x, limit: x > limit)
        ge = _at_least if bits else (lambda x, limit: x >= limit)

        bad = self._bad_field(m, kind)
        sram, dram = no, no
        op = kind.opcode
        if op is Opcode.LOAD:
            height = p.sum([field("pad_top"), field("y_size"), field("pad_bottom")])
            width = p.sum([field("pad_left"), field("x_size"), field("pad_right")])
            lines_end = plus(height, width, "sram_addr")
            depth = p.input(Mux(v.buffer == Buffer.ACT, c.act_buffer_depth,
                                Mux(v.buffer == Buffer.WEIGHT, c.weight_buffer_depth,
                                    Mux(v.buffer == Buffer.PARAM, c.param_buffer_depth, c.lut_buffer_depth))))
            if bits:
                sram = p.apply(lambda end, b: Mux(b == Buffer.ACT, gt(end, c.act_buffer_depth),
                                                  Mux(b == Buffer.WEIGHT, gt(end, c.weight_buffer_depth),
                                                      Mux(b == Buffer.PARAM, gt(end, c.param_buffer_depth),
                                                          gt(end, c.lut_buffer_depth)))),
                               lines_end, field("buffer"))
            else:
                sram = p.apply(lambda end, d: end > d, lines_end, depth)
            # x_size * line_bytes of the buffer: a constant per buffer, so shifts and additions, then a choice.
            spans = [p.times(field("x_size"), line_bytes(b, c)) for b in Buffer]
            def choose(buffer, a, w, q, t):
                return Mux(buffer == Buffer.ACT, a, Mux(buffer == Buffer.WEIGHT, w, Mux(buffer == Buffer.PARAM, q, t)))
            span = p.apply(choose, field("buffer"), *spans, chains=0)
            dram = dram_range(minus_one("y_size"), field("dram_stride"), lambda: span)
        elif op is Opcode.COMPUTE:
            pitch_step = product(field("stride"), field("act_pitch"))
            dil_step = product(field("dilation"), field("act_pitch"))
            if p.serial:        # act_addr starts the last product's loop
                act_last = p.sum([p.product(minus_one("out_h"), pitch_step), p.product(minus_one("kh"), dil_step),
                                  product(minus_one("out_w"), field("stride")),
                                  product(minus_one("kw"), field("dilation"), field("act_addr"))])
            else:
                act_last = p.sum([field("act_addr"), p.product(minus_one("out_h"), pitch_step),
                                  p.product(minus_one("kh"), dil_step), product(minus_one("out_w"), field("stride")),
                                  product(minus_one("kw"), field("dilation"))])
            tile_lines = p.times(product(field("kh"), field("kw")), c.reduction_rows)
            if c.packs_per_layer:       # a packed COMPUTE's tiles are twice as many lines (hw/spec/config.py)
                tile_lines = p.apply(lambda t, k: Mux(k, t << 1, t), tile_lines, field("packed"), chains=0)
            weight_end = p.sum([field("weight_addr"), tile_lines])
            acc_end = plus(field("out_h"), field("out_w"), "acc_addr")
            sram = p.apply(lambda a, w, r: ge(a, c.act_buffer_depth) | gt(w, c.weight_buffer_depth)
                           | gt(r, c.acc_buffer_depth), act_last, weight_end, acc_end)
        elif op is Opcode.ALU:
            dst_last = plus(minus_one("y_size"), field("dst_stride"), "dst_addr", lambda: minus_one("x_size"))
            src_last = plus(minus_one("y_size"), field("src_stride"), "src_addr",
                            lambda: product(minus_one("x_size"), field("src_step")))
            sram = p.apply(lambda d, s: ge(d, c.acc_buffer_depth) | ge(s, c.acc_buffer_depth), dst_last, src_last)
        elif op is Opcode.STORE:
            acc_last = plus(minus_one("y_size"), field("acc_stride"), "acc_addr", lambda: minus_one("x_size"))
            # The last PARAM line read: param_addr, or param_addr + 1 with negative_param.
            param_last = p.sum([field("param_addr"), field("negative_param")])
            sram = p.apply(lambda a, q: ge(a, c.acc_buffer_depth) | ge(q, c.param_buffer_depth),
                           acc_last, param_last)
            dram = dram_range(minus_one("y_size"), field("dram_stride"),
                              lambda: p.times(field("x_size"), output_line_bytes(c)))
        # The field checks: a few levels of LUTs (and, for SETPP, a short comparison): one chain's worth.
        return p.input(bad, depth=1), sram, dram

    def _shared_products(self, m: Module, p: Pipeline, opcode: Staged) -> dict:
        """Per opcode, a ``product`` for :meth:`_checks` whose products come from multipliers shared by the kinds: only
        the opcode's kind's result is used, so the ``i``-th widest product of every kind can share one multiplier, its
        operands chosen by the opcode. A first pass through :meth:`_checks` records each kind's operands (the logic
        it builds around them has no output and is left out by synthesis)."""
        requests, addends = {}, {}
        for op, kind in KINDS.items():
            asked = requests[op] = []
            added = addends[op] = []

            def record(a, b, addend=None, asked=asked, added=added):
                if a.value.shape().signed or b.value.shape().signed:
                    raise AssertionError("the decoder's shared products take unsigned operands")
                asked.append((a, b) if len(a.value) <= len(b.value) else (b, a))
                added.append(addend)
                return p.input(Const(0, 1))
            self._checks(m, p, kind, record, {})
        order = {op: sorted(range(len(asked)), key=lambda i: (-len(asked[i][0].value), -len(asked[i][1].value)))
                 for op, asked in requests.items()}
        slots = []
        for slot in range(max(len(o) for o in order.values())):
            users = [(op, requests[op][order[op][slot]]) for op in order if slot < len(order[op])]

            def choose(code, *values, users=users):
                chosen = values[0]
                for (op, _), value in zip(users[1:], values[1:]):
                    chosen = Mux(code == op, value, chosen)
                return chosen
            narrow = p.apply(choose, opcode, *[a for _, (a, _) in users], chains=0)
            wide = p.apply(choose, opcode, *[b for _, (_, b) in users], chains=0)
            # A serial build's products may start at an addend (hw/pipeline.py): the opcode's, or 0.
            added = [addends[op][order[op][slot]] for op, _ in users]
            if any(x is not None for x in added):
                zero = p.input(Const(0, 1))
                addend = p.apply(choose, opcode, *[zero if x is None else x for x in added], chains=0)
                slots.append(p.product(narrow, wide, addend))
            else:
                slots.append(p.product(narrow, wide))

        def product_of(op):
            results = iter([slots[order[op].index(i)] for i in range(len(order[op]))])
            return lambda a, b, addend=None: next(results)
        return {op: product_of(op) for op in KINDS}

    def _shared_dram(self, p: Pipeline, opcode: Staged, terms: dict) -> Staged:
        """The DRAM range check of the kinds in ``terms`` (LOAD and STORE) with one adder tree and one comparison:
        only the opcode's kind's result is used, so the opcode chooses the terms (a multiplexer instead of a
        33-bit sum and comparison per kind)."""
        ops = list(terms)

        def choose(code, *values):
            chosen = values[0]
            for op, value in zip(ops[1:], values[1:]):
                chosen = Mux(code == op, value, chosen)
            return chosen
        chosen = [p.apply(choose, opcode, *[terms[op][i] for op in ops], chains=0) for i in range(3)]
        return p.apply(lambda end, size: end > size, p.sum(chosen), p.input(self.dram_size))

    def _elaborate_stepped(self, m: Module) -> Module:
        """``decode_stepped``: the field checks as plain logic on the held word, the range checks as programs
        through one adder (:class:`hw.decode_steps.SteppedRangeChecks`); the result registered its kind's
        ``decode_latency_of`` cycles after ``en``."""
        from .decode_steps import SteppedRangeChecks

        opcode = self.word[:HEADER[0].bits]
        views = {op: self._view(kind) for op, kind in KINDS.items()}
        ranges = SteppedRangeChecks(m, self._config, views, opcode, self.word, self.dram_size, self.en)
        error = Signal(self.error.shape(), init=ErrorCode.ILLEGAL_OPCODE, name="decode_error")
        m.d.comb += error.eq(ErrorCode.ILLEGAL_OPCODE)
        for op, kind in KINDS.items():
            with m.If(opcode == op):
                m.d.comb += error.eq(Mux(self._flags_error(kind), ErrorCode.ILLEGAL_DEPENDENCY,
                                         Mux(self._bad_field(m, kind), ErrorCode.BAD_FIELD,
                                             Mux(ranges.sram, ErrorCode.SRAM_RANGE,
                                                 Mux(ranges.dram, ErrorCode.DRAM_RANGE, ErrorCode.NONE)))))
        # A countdown from en: the result register loads in its last cycle, the word's kind's latency (its
        # program's cycles, the cycle model's) after en; an unknown opcode waits for the longest.
        latency = Const(self.latency)
        for op in KINDS:
            latency = Mux(opcode == op, self._config.decode_latency_of(int(op)), latency)
        left = Signal(range(self.latency), name="decode_left")
        with m.If(self.en):
            m.d.sync += [left.eq(latency - 1), self.valid.eq(0)]
        with m.Elif(left != 0):
            m.d.sync += left.eq(left - 1)
            with m.If(left == 1):
                m.d.sync += [self.valid.eq(1), self.opcode.eq(opcode), self.error.eq(error)]
        return m

    def elaborate(self, platform):
        m = Module()
        if self._config.decode_stepped:
            return self._elaborate_stepped(m)
        p = Pipeline(m, "decode", levels=self._config.decode_chains,
                     start=self.en if self._config.decode_serial else None)
        opcode = p.input(self.word[:HEADER[0].bits])
        shared = self._config.decode_shared
        products = self._shared_products(m, p, opcode) if shared else {}
        dram_terms = {} if shared else None
        results = []
        for op, kind in KINDS.items():
            results.append((op, p.input(self._flags_error(kind)),
                            *self._checks(m, p, kind, products.get(op), dram_terms)))
        if shared:
            dram = self._shared_dram(p, opcode, dram_terms)
            results = [(op, flags, bad, sram, dram if op in dram_terms else no_dram)
                       for op, flags, bad, sram, no_dram in results]

        def choose(opcode, *flat):
            error = Const(ErrorCode.ILLEGAL_OPCODE, self.error.shape())
            for i, (op, *_) in enumerate(results):
                flags, bad, sram, dram = flat[4 * i:4 * i + 4]
                code = Mux(flags, ErrorCode.ILLEGAL_DEPENDENCY, Mux(bad, ErrorCode.BAD_FIELD,
                           Mux(sram, ErrorCode.SRAM_RANGE, Mux(dram, ErrorCode.DRAM_RANGE, ErrorCode.NONE))))
                error = Mux(opcode == op, code, error)
            return error

        error = p.apply(choose, opcode, *[x for _, *checks in results for x in checks], chains=0)
        # The result register is the last stage: everything before it takes latency - 1 stages.
        if error.stage > self.latency - 1:
            raise AssertionError(f"the decoder needs {error.stage + 1} stages; raise DECODE_LATENCY (or, for a "
                                 f"decode_serial build, SERIAL_DECODE_LATENCY) in hw/spec/microarchitecture.py "
                                 f"(the cycle model uses it)")
        error = p.at(error, self.latency - 1)
        opcode = p.at(opcode, self.latency - 1)
        # en, delayed to the cycle the result of its word reaches the output register.
        arriving = self.en
        for stage in range(self.latency - 1):
            delayed = Signal(name=f"decode_en_s{stage + 1}")
            m.d.sync += delayed.eq(arriving)
            arriving = delayed
        with m.If(arriving):
            m.d.sync += [self.valid.eq(1), self.opcode.eq(opcode.value), self.error.eq(error.value)]
        with m.Elif(self.en):
            m.d.sync += self.valid.eq(0)
        return m


def _greater(x, limit: int):
    """``x > limit`` (``x`` unsigned) for a ``limit`` of 0 or a power of two, by testing bits (no carry chain)."""
    if x.shape().signed or limit & (limit - 1):
        raise AssertionError(f"a bit test compares an unsigned value with 0 or a power of two, not {limit}")
    if limit == 0:
        return x != 0
    k = limit.bit_length() - 1
    if len(x) <= k:
        return Const(0)
    return (x[k + 1:] != 0) | (x[k] & (x[:k] != 0))


def _at_least(x, limit: int):
    """``x >= limit`` (``x`` unsigned) for a ``limit`` a power of two, by testing bits (no carry chain)."""
    if x.shape().signed or limit < 1 or limit & (limit - 1):
        raise AssertionError(f"a bit test compares an unsigned value with a power of two, not {limit}")
    k = limit.bit_length() - 1
    return x[k:] != 0 if len(x) > k else Const(0)


def _ordered(m: Module, fmt, lo, hi):
    """``value(lo) <= value(hi)`` for codes of ``fmt``; false if either is NaN."""
    from .spec.formats import IntFormat

    if isinstance(fmt, IntFormat):
        if fmt.signed:
            return lo.as_signed() <= hi.as_signed()
        return lo <= hi
    sign_bit = fmt.bits - 1
    nan_lo, nan_hi = Signal(), Signal()
    codes = fmt.codes
    nan_codes = [int(x) for x in codes[fmt.decode(codes) != fmt.decode(codes)]]
    m.d.comb += [nan_lo.eq(0), nan_hi.eq(0)]
    for code in nan_codes:
        with m.If(lo == code):
            m.d.comb += nan_lo.eq(1)
        with m.If(hi == code):
            m.d.comb += nan_hi.eq(1)

    def key(code):
        """Sign-magnitude to a monotone signed key: both zeros map to 0."""
        magnitude = code[:sign_bit]
        return Mux(code[sign_bit], -magnitude, magnitude)

    return ~nan_lo & ~nan_hi & (key(lo) <= key(hi))
