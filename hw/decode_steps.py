"""The decoder's range checks one step at a time through one adder (``AcceleratorConfig.decode_stepped``).

A small part need not check an instruction a cycle: each kind's SRAM and DRAM range checks are a short program
(hw/spec/decode_programs.py, with the cycles each kind takes) of additions, subtractions and shift-and-add products
into one accumulator, run here from a table (a block RAM on an iCE40) addressed by the opcode and the step. A step
reads its operand into the multiplicand register a bit per cycle (a product reads its narrower operand into the
multiplier register first, in a step of its own), then adds (once, or once per bit of the multiplier register);
``clear`` starts a new sum (``"T"``: keeping the old one in ``T``, the operand a later product of the same kind can
use: LOAD's padded width, COMPUTE's row offset and kernel taps). The result waits for its kind's fixed
``decode_cycles`` (the cycle model's), however short the program runs for the word at hand.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib.memory import Memory

from .spec.config import AcceleratorConfig
from .spec.decode_programs import PROGRAMS, largest_special, stepped_plan
from .spec.isa import Buffer
from .spec.layout import line_bytes

__all__ = ["PROGRAMS", "SteppedRangeChecks"]


def _special(name: str, view, c: AcceleratorConfig, dram_size):
    """(value, largest value) of an operand that is not a field: a limit, a constant of the configuration."""
    depths = {Buffer.ACT: c.act_buffer_depth, Buffer.WEIGHT: c.weight_buffer_depth,
              Buffer.PARAM: c.param_buffer_depth, Buffer.LUT: c.lut_buffer_depth}

    def by_buffer(values: dict):
        v = Const(values[Buffer.LUT])
        for b in (Buffer.PARAM, Buffer.WEIGHT, Buffer.ACT):
            v = Mux(view.buffer == b, values[b], v)
        return v, max(values.values())
    bus = c.dma_bits // 8
    if name == "dram_size":         # in bus words: an end of whole words passes size exactly when it passes size // bus
        return dram_size[bus.bit_length() - 1:], (1 << (len(dram_size) - bus.bit_length() + 1)) - 1
    if name == "load_depth+1":
        return by_buffer({b: d + 1 for b, d in depths.items()})
    if name == "line_bytes":
        return by_buffer({b: line_bytes(b, c) // bus for b in Buffer})
    if name == "tile_rows":
        rows = c.reduction_rows
        if c.packs_per_layer:       # a packed COMPUTE's tiles are twice as many lines (hw/spec/config.py)
            return Mux(view.packed, rows << 1, rows), rows << 1
        return Const(rows), rows
    value = largest_special(name, c)            # a constant of the configuration
    return Const(value), value


def _operands(config: AcceleratorConfig, views, dram_size) -> dict:
    """The values and largest values of the operands of hw/spec/decode_programs.py's plan, ``{key: (value,
    largest)}``: fields from the kinds' ``views``, the rest from :func:`_special`."""
    operands = {}
    for key, (op, name, low) in stepped_plan(config).sources.items():
        if key[0] == "field":
            operands[key] = (views[op][name][low:], (1 << key[2]) - 1)
        else:
            operands[key] = _special(name, views[op], config, dram_size)
    return operands


class SteppedRangeChecks:
    """Builds the stepped checks inside the decoder's module: ``start`` pulses with a word that then holds;
    ``sram`` and ``dram`` (sticky flags, cleared by ``start``) are final the word's kind's program cycles + 1
    later (+ 2 with ``mid_clock``; hw/spec/decode_programs.py).

    The operands reach the multiplier registers a bit per cycle, most significant first, from one bit multiplexer
    over the word and the few values that are not fields (``dram_size``, T, the limits): a wide multiplexer per
    operand bit would cost more than all the rest."""

    def __init__(self, m: Module, config: AcceleratorConfig, views: dict, opcode, word, dram_size, start):
        self.sram = Signal(name="decode_sram_range")
        self.dram = Signal(name="decode_dram_range")
        plan = stepped_plan(config)
        steps, t_bits, width = plan.steps, plan.t_bits, plan.acc_bits
        operands = _operands(config, views, dram_size)
        m_width = max(s[2].bit_length() for s in steps.values())
        d_width = max(s[4].bit_length() + (s[2].bit_length() - 1) for s in steps.values())
        t = Signal(max(t_bits, 1), name="decode_t")
        # The bits the operands are read from: the word's bits from the first field read to the last (fields at
        # their offsets less the first's), then the other values.
        fields = [key for key in operands if key[0] == "field"]
        low, high = min(k[1] for k in fields), max(k[1] + k[2] for k in fields)
        where, extra, at = {}, [], high - low
        for key, (value, largest) in sorted(operands.items(), key=lambda item: str(item[0])):
            if key[0] == "field":
                where[key] = key[1] - low
            else:
                where[key] = at
                extra.append(Value.cast(value)[:largest.bit_length()] if largest else Const(0, 1))
                at += len(extra[-1])
        where[("T",)] = at
        pairs = config.decode_pairs
        # Two bits a cycle: an odd operand's top pair reaches one bit above it (masked; past T: a zero).
        source = Cat(word[low:high], *extra, t, *([Const(0, 1)] if pairs else []))
        reader = _BitReader(source, pairs)
        count_bits = max(d_width, m_width).bit_length()
        init, step_bits = _table(steps, where, reader, count_bits)
        m.submodules.decode_table = rom = Memory(shape=2 + reader.position_bits + count_bits + 6 + pairs,
                                                 depth=len(init), init=init, attrs={"ram_style": "block"})
        read = rom.read_port()
        if d_width > width:
            raise AssertionError(f"the stepped checks' operands ({d_width} bits) are wider than the sums ({width})")
        step = Signal(step_bits, name="decode_step")
        self._run(m, read.data, reader, t,
                  Signal(width, name="decode_acc"), Signal(m_width, name="decode_m"), Signal(d_width, name="decode_d"),
                  Signal(count_bits, name="decode_count"), step, start, late=config.mid_clock)
        m.d.comb += read.addr.eq(Cat(self._next_step, opcode[:3]))

    def _run(self, m: Module, ctl, reader: _BitReader, t, acc, mul, d, count, step, start, *,
             late: bool = False) -> None:
        """The sequencing of one table entry ``ctl`` (read for ``step``): set up, read the operand bit by bit
        (``reader``; two bits a cycle with ``decode_pairs``), add; then ask for the next entry. ``late``: a flag is
        set the cycle after the addition, from the sum's register (its sign), not from the adder's carry chain,
        and the operand's bit is registered out of its multiplexer (a cycle more before each operand)."""
        bit, position_bits = reader.value, reader.position_bits
        count_bits, width, n = len(count), len(acc), len(reader.value)
        what, last_bit = ctl[:2], ctl[2:2 + position_bits]
        bits = ctl[2 + position_bits:2 + position_bits + count_bits]
        clear, sub, carry, to_sram, to_dram, keep = (ctl[2 + position_bits + count_bits + i] for i in range(6))
        if n == 2:
            # An odd operand's first pair: its upper bit is above the operand, read as 0.
            odd, first = ctl[2 + position_bits + count_bits + 6], Signal(name="decode_first")
        phase = Signal(2, name="decode_phase")          # 0: set up the step, 1: read its operand, 2: add
        if late:
            # The operand's bit registered out of its wide multiplexer: a cycle (phase 3) between the set-up and the
            # first bit, the index a step ahead of the bit from then on.
            bit_late = Signal(n, name="decode_bit")
            m.d.sync += bit_late.eq(bit)
            bit = bit_late
        if n == 2:
            bit = Cat(bit[0], bit[1] & ~(odd & first))
        wide_d = Cat(d, Const(0, width - len(d)))
        addend = Mux(sub, ~wide_d, Mux(mul[0], wide_d, 0))      # a subtraction: ~d and a carry in of 1 (or 0)
        total = (acc + addend + carry)[:width]
        multiplied = mul[1:] == 0           # no more bits to add (an addition's multiplier is 1)
        done = ((phase == 2) & multiplied) | ((phase == 1) & (what == _SETM) & (count == 1))
        next_step = self._next_step = Signal(len(step), name="decode_next_step")   # the table's read is registered
        m.d.comb += next_step.eq(Mux(start, 0, Mux(done, step + 1, step)))
        m.d.sync += step.eq(next_step)
        if late:
            # The addition's flags, kept for the next cycle, when the sum is in acc (assigned before start's clear,
            # which wins).
            to_sram_late, to_dram_late = Signal(name="decode_to_sram"), Signal(name="decode_to_dram")
            adding = (phase == 2) & ~start
            m.d.sync += [to_sram_late.eq(adding & to_sram), to_dram_late.eq(adding & to_dram)]
            with m.If(~acc[-1] & to_sram_late):
                m.d.sync += self.sram.eq(1)
            with m.If(~acc[-1] & to_dram_late):
                m.d.sync += self.dram.eq(1)
        with m.If(start):
            m.d.sync += [phase.eq(0), self.sram.eq(0), self.dram.eq(0)]
        with m.Elif((phase == 0) & (what != _IDLE)):
            m.d.sync += [*reader.start(last_bit), count.eq(bits), phase.eq(3 if late else 1)]
            if n == 2:
                m.d.sync += first.eq(1)
            with m.If(what == _SETM):
                m.d.sync += mul.eq(0)
            with m.Else():
                m.d.sync += d.eq(0)
            with m.If(what == _ADD):
                m.d.sync += mul.eq(1)
            with m.If(clear):
                m.d.sync += acc.eq(0)
            with m.If(keep):
                m.d.sync += t.eq(acc)
        with m.Elif(phase == 3):
            m.d.sync += [*reader.advance(), phase.eq(1)]
        with m.Elif(phase == 1):
            m.d.sync += [*reader.advance(), count.eq(count - 1)]
            if n == 2:
                m.d.sync += first.eq(0)
            with m.If(what == _SETM):
                m.d.sync += mul.eq(Cat(bit, mul[:-n]))
            with m.Else():
                m.d.sync += d.eq(Cat(bit, d[:-n]))
            with m.If(count == 1):
                m.d.sync += phase.eq(Mux(what == _SETM, 0, 2))
        with m.Elif(phase == 2):
            m.d.sync += [acc.eq(total), mul.eq(mul >> 1), d.eq(d << 1)]
            with m.If(multiplied):
                m.d.sync += phase.eq(0)
            if not late:
                with m.If(~total[-1] & to_sram):
                    m.d.sync += self.sram.eq(1)
                with m.If(~total[-1] & to_dram):
                    m.d.sync += self.dram.eq(1)


class _BitReader:
    """Where a stepped check's operand bits come from: one bit multiplexer over ``source``, its index the bit's
    position, counting down a bit a cycle; or with ``pairs`` two bits a cycle from two multiplexers of half the
    width, one over the even bits and one over the odd ones, each with its own index (a pair whose lower bit is odd
    takes its upper bit from the even half): no more multiplexer inputs than one bit a cycle."""

    def __init__(self, source: Value, pairs: bool):
        self.pairs = pairs
        if not pairs:
            self._index = Signal((len(source) - 1).bit_length(), name="decode_index")
            self.value = source.bit_select(self._index, 1)
            self.position_bits = len(self._index)
            return
        even, odd = source[0::2], source[1::2]
        self._half = max((len(even) - 1).bit_length(), 1)
        self._even = Signal(self._half, name="decode_index_even")
        self._odd = Signal(self._half, name="decode_index_odd")
        self._parity = Signal(name="decode_parity")
        e, o = even.bit_select(self._even, 1), odd.bit_select(self._odd, 1)
        self.value = Mux(self._parity, Cat(o, e), Cat(e, o))
        self.position_bits = 2 * self._half + 1

    def position(self, lowest: int) -> int:
        """The table's position field of an operand read from bit ``lowest`` (its top bit; with pairs, the lower bit
        of its top pair)."""
        if not self.pairs:
            return lowest
        return (lowest >> 1) | ((lowest + 1) >> 1) << self._half | (lowest & 1) << 2 * self._half

    def start(self, position: Value) -> list:
        """Statements that point the reader at the operand of the table's ``position`` field."""
        if not self.pairs:
            return [self._index.eq(position)]
        h = self._half
        return [self._odd.eq(position[:h]), self._even.eq(position[h:2 * h]), self._parity.eq(position[2 * h])]

    def advance(self) -> list:
        """Statements that move to the next bit (pair) down."""
        if not self.pairs:
            return [self._index.eq(self._index - 1)]
        return [self._even.eq(self._even - 1), self._odd.eq(self._odd - 1)]


def _table(steps: dict, where: dict, reader: _BitReader, count_bits: int) -> tuple[list[int], int]:
    """The stepped checks' table, (entries, step bits): per (opcode's low three bits, step) what the step does
    (2 bits), where its operand's top bit is (``reader.position``), the operand's bits, and the flags clear, sub,
    carry in, sram, dram, keep (T takes the sum). Reading pairs: where the top pair is, the pairs, and a last flag,
    odd (the top pair's upper bit is not the operand's)."""
    pairs = reader.pairs
    table, longest = {}, 0
    for op, program in PROGRAMS.items():
        entries = []
        for i in range(len(program)):
            kind_op, m_key, m_max, d_key, d_max, clear, flag = steps[(op, i)]
            flags = [int(bool(clear)), int(kind_op in ("sub", "sub1")), int(kind_op == "sub"),
                     int(flag == "sram"), int(flag == "dram"), int(clear == "T")]
            if kind_op == "mul":
                entries.append((_SETM, where[m_key], max(m_max.bit_length(), 1), [0] * 6))
            entries.append((_MUL if kind_op == "mul" else _ADD, where[d_key], max(d_max.bit_length(), 1), flags))
        if pairs:
            entries = [(what, position + bits - 2 + (bits & 1), (bits + 1) // 2, flags + [bits & 1])
                       for what, position, bits, flags in entries]
        table[int(op) & 7] = entries
        longest = max(longest, len(entries))
    if len(table) != len(PROGRAMS):
        raise AssertionError("the stepped checks' table needs distinct low three opcode bits per kind")
    step_bits = longest.bit_length()           # at least one idle step after the longest program

    def entry_word(entry) -> int:
        what, position, bits, flags = entry
        top = position if pairs else position + bits - 1
        fields = [(what, 2), (reader.position(top), reader.position_bits), (bits, count_bits)] + [(f, 1) for f in flags]
        value, shift = 0, 0
        for v, n in fields:
            value |= v << shift
            shift += n
        return value
    init = [entry_word(table[hi][lo]) if hi in table and lo < len(table[hi]) else 0
            for hi in range(8) for lo in range(1 << step_bits)]
    return init, step_bits


_IDLE, _SETM, _MUL, _ADD = range(4)     # what a table entry does (2 bits)
