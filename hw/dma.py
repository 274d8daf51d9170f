"""DMA address generation shared by the load (AR) and store (AW) engines."""

from amaranth.hdl import Cat, Module, Mux, Signal, Value, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR
from .spec.microarchitecture import BURST_BOUNDARY, MAX_BURST_BEATS

__all__ = ["BurstAddressGenerator", "MAX_BURST_BEATS", "max_bursts", "held_address"]


def max_bursts(rows: int, beats: int, bus_bytes: int) -> int:
    """Most bursts ``rows`` rows of ``beats`` beats can take: each row is cut every 256 beats and at every 4 KiB
    boundary it crosses."""
    return rows * (beats // MAX_BURST_BEATS + beats * bus_bytes // BURST_BOUNDARY + 2)


def held_address(m: Module, start: Value, incoming: Value, held: Value, addr_bits: int) -> Value:
    """An instruction's address field for a generator of ``addr_bits`` (``held``: the running instruction's copy of
    ``incoming``, the field as the instruction starts): its low bits, and above them one flip-flop set from
    ``start`` when any higher bit was, so that the instruction register's higher bits have no reader left."""
    if addr_bits >= len(held):
        return held
    high = Signal(name="address_high")
    with m.If(start):
        m.d.sync += high.eq(incoming[addr_bits:].any())
    return Cat(held[:addr_bits], high)


class BurstAddressGenerator(wiring.Component):
    """Rows of beats into AXI4 INCR bursts: at most 256 beats, never across a 4 KiB boundary (AXI's rule).

    Row ``y`` starts at ``base + y * stride``. Each burst's length is also offered on ``lengths`` (the
    store engine needs it to place WLAST); a burst is issued only when both the address channel and
    ``lengths`` take it. ``max_rows`` and ``max_beats`` (per row) size the counters: the largest an instruction's
    fields can ask for. ``addr_bits`` below 32: the memory holds ``2**addr_bits`` bytes (a small part's), see
    :meth:`_elaborate_narrow`.
    """

    def __init__(self, bus_bytes: int, *, max_rows: int, max_beats: int, addr_bits: int = 32,
                 held_end: bool = False):
        page_bits = BURST_BOUNDARY.bit_length() - 1
        if not page_bits < addr_bits <= 32:
            raise ValueError(f"addr_bits must be in {page_bits + 1}..32 (two 4 KiB pages at least), not {addr_bits}")
        self._bus_bytes = bus_bytes
        self._addr_bits = addr_bits
        #: With addr_bits below 32 (a ``mid_clock`` engine's): whether a burst ends its row, a register set as the
        #: cursor moves (the same bursts in the same cycles).
        self._held_end = held_end
        super().__init__({
            "start": In(1),
            "base": In(32), "rows": In(range(max_rows + 1)), "stride": In(32), "beats": In(range(max_beats + 1)),
            "addr": Out(wiring.Signature({"valid": Out(1), "ready": In(1), "addr": Out(32), "len": Out(8),
                                          "size": Out(3), "burst": Out(2)})),
            "lengths": Out(stream.Signature(range(MAX_BURST_BEATS + 1))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        if self._addr_bits < 32:
            return self._elaborate_narrow()
        m = Module()
        shift = self._bus_bytes.bit_length() - 1
        page_bits = BURST_BOUNDARY.bit_length() - 1
        page_beats = BURST_BOUNDARY >> shift
        # Every register's next value is one carry chain from registers, chosen by compares of registers (one burst a
        # cycle): a burst's length and the cursor's step from it were three chains in a row (14.4 ns on the ECP5).
        rows_left = Signal.like(self.rows)                  # rows still to come, this one included
        cursor = Signal(32)
        remaining = Signal.like(self.beats)                 # beats of this row from the cursor on
        next_base = Signal(32)                              # where the next row starts
        to_4k = Signal(range(page_beats + 1))               # beats from the cursor to its 4 KiB boundary

        def beats_to_boundary(addr):                        # addresses are aligned to the bus (the decoder checks)
            return page_beats - addr[shift:page_bits]

        # The burst ends at the row's end, else at the boundary, else after MAX_BURST_BEATS (ties: the same length).
        row_end = (remaining <= to_4k) & (remaining <= MAX_BURST_BEATS)
        at_boundary = to_4k <= MAX_BURST_BEATS
        count = Signal(range(MAX_BURST_BEATS + 1))
        m.d.comb += count.eq(Mux(row_end, remaining, Mux(at_boundary, to_4k, MAX_BURST_BEATS)))

        m.d.comb += [
            self.addr.addr.eq(cursor), self.addr.len.eq(count - 1), self.addr.size.eq(shift),
            self.addr.burst.eq(BURST_INCR), self.lengths.payload.eq(count),
        ]
        issue = self.busy & self.addr.ready & self.lengths.ready
        m.d.comb += [self.addr.valid.eq(self.busy & self.lengths.ready),
                     self.lengths.valid.eq(self.busy & self.addr.ready)]

        with m.If(self.start):
            m.d.sync += [rows_left.eq(self.rows), cursor.eq(self.base), next_base.eq(self.base + self.stride),
                         remaining.eq(self.beats), to_4k.eq(beats_to_boundary(self.base)),
                         self.busy.eq((self.rows != 0) & (self.beats != 0))]
        with m.Elif(issue):
            with m.If(row_end):
                with m.If(rows_left == 1):
                    m.d.sync += self.busy.eq(0)
                m.d.sync += [rows_left.eq(rows_left - 1), cursor.eq(next_base), next_base.eq(next_base + self.stride),
                             remaining.eq(self.beats), to_4k.eq(beats_to_boundary(next_base))]
            with m.Elif(at_boundary):
                m.d.sync += [cursor.eq(cursor + (to_4k << shift)), remaining.eq(remaining - to_4k),
                             to_4k.eq(page_beats)]
            with m.Else():
                m.d.sync += [cursor.eq(cursor + (MAX_BURST_BEATS << shift)),
                             remaining.eq(remaining - MAX_BURST_BEATS), to_4k.eq(to_4k - MAX_BURST_BEATS)]
        return m

    def _elaborate_narrow(self) -> Module:
        """The generator for a small memory of ``2**addr_bits`` bytes: the same bursts in the same cycles, its
        addresses counted in beats of ``addr_bits`` bits through one adder (a row's next start and a burst's next
        address are never needed in the same cycle: a burst that is not a row's last moves the cursor to its page's
        end or by 256 beats), the burst's length less one and the beats left taken from bits of the address's offset
        in its page and of its sum with the row's remaining beats. An address at or beyond ``2**addr_bits`` (a
        ``base`` or ``stride`` with higher bits set, or a sum that carries out) sets the sticky bit ``addr_bits`` of
        the addresses from then on, so the memory's range check still answers it with an error: nothing wraps into
        the memory."""
        m = Module()
        shift = self._bus_bytes.bit_length() - 1
        width = self._addr_bits - shift                     # beat-address bits
        page = BURST_BOUNDARY.bit_length() - 1 - shift      # beat-address bits within a 4 KiB page
        page_beats = 1 << page
        rows_left = Signal.like(self.rows)                  # rows still to come, this one included
        remaining = Signal.like(self.beats)                 # beats of this row from the cursor on
        cursor = Signal(width + 1)                          # the next burst's beat address; top bit: beyond
        row_start = Signal(width + 1)                       # where this row starts; top bit: beyond

        def narrow(value):                                  # a byte address in beats, with its beyond bit
            return Cat(value[shift:self._addr_bits], value[self._addr_bits:].any())

        # The burst ends at the row's end, else at the boundary, else after MAX_BURST_BEATS (ties: the same length):
        # the row ends in this page when its remaining beats reach no further than the page's end.
        offset = cursor[:page]                              # beats from the page's start to the cursor
        reach = Signal(len(self.beats) + 1)
        m.d.comb += reach.eq(remaining + offset)
        row_end = (reach <= page_beats) & (remaining <= MAX_BURST_BEATS)
        if self._held_end:
            # Its next value from registers, off the path through the one adder: a row's next burst starts where
            # the next row does (next_offset: its offset in its page, kept), any other's beats and page end stay
            # (reach), or it starts a page (its beats are then all there is, rest).
            row_end = Signal(name="row_end")
            next_offset = Signal(page, name="next_offset")
        at_boundary = offset >= page_beats - MAX_BURST_BEATS
        # The length less one, from bits: beats to the boundary less one is the offset's complement.
        length = Signal(range(MAX_BURST_BEATS))
        m.d.comb += length.eq(Mux(row_end, remaining - 1, Mux(at_boundary, ~offset, MAX_BURST_BEATS - 1)))

        # One adder: a row's end moves both to the next row (row_start + stride), else the cursor moves on to the
        # page's end (the page's start plus a page) or by MAX_BURST_BEATS.
        stride = narrow(self.stride)
        a = Mux(row_end, row_start, Cat(Mux(at_boundary, 0, offset), cursor[page:]))
        b = Mux(row_end, stride, Mux(at_boundary, page_beats, MAX_BURST_BEATS))
        total = Signal(width + 1)
        m.d.comb += total.eq(a[:width] + b[:width])
        step = Cat(total[:width], total[width] | a[width] | (row_end & stride[width]))
        # The beats left after a burst that is not the row's last: the beats past the page's end, or 256 fewer.
        most = MAX_BURST_BEATS.bit_length() - 1             # AXI's 256 beats: a power of two
        rest = Mux(at_boundary, Cat(reach[:page], reach[page:] - 1), Cat(remaining[:most], remaining[most:] - 1))
        count = length + 1

        m.d.comb += [
            self.addr.addr.eq(cursor << shift), self.addr.len.eq(length), self.addr.size.eq(shift),
            self.addr.burst.eq(BURST_INCR), self.lengths.payload.eq(count),
        ]
        issue = self.busy & self.addr.ready & self.lengths.ready
        m.d.comb += [self.addr.valid.eq(self.busy & self.lengths.ready),
                     self.lengths.valid.eq(self.busy & self.addr.ready)]
        with m.If(self.start):
            m.d.sync += [rows_left.eq(self.rows), cursor.eq(narrow(self.base)), row_start.eq(narrow(self.base)),
                         remaining.eq(self.beats), self.busy.eq((self.rows != 0) & (self.beats != 0))]
            if self._held_end:
                first = narrow(self.base)[:page]
                m.d.sync += [row_end.eq((self.beats + first <= page_beats) & (self.beats <= MAX_BURST_BEATS)),
                             next_offset.eq(first + stride[:page])]
        with m.Elif(issue):
            m.d.sync += cursor.eq(step)
            if self._held_end:
                with m.If(row_end):
                    m.d.sync += [row_end.eq((self.beats + next_offset <= page_beats)
                                            & (self.beats <= MAX_BURST_BEATS)),
                                 next_offset.eq(next_offset + stride[:page])]
                with m.Else():
                    m.d.sync += row_end.eq((Mux(at_boundary, rest, reach) <= page_beats) & (rest <= MAX_BURST_BEATS))
            with m.If(row_end):
                with m.If(rows_left == 1):
                    m.d.sync += self.busy.eq(0)
                m.d.sync += [rows_left.eq(rows_left - 1), row_start.eq(step), remaining.eq(self.beats)]
            with m.Else():
                m.d.sync += remaining.eq(rest)
        return m
