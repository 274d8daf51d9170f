"""The load engine: LOAD instructions, from external memory (AXI4 reads) into the on-chip buffers."""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .axi import axi4_read_signature
from .buffer_ports import write_port
from .decoder import layout_of
from .dma import BurstAddressGenerator, held_address
from .pipeline import times
from .sequencer import Sequencer, engine_control_signature
from .spec.config import AcceleratorConfig
from .spec.isa import KINDS, Buffer, Opcode
from .spec.layout import line_bits, line_bytes

__all__ = ["LoadEngine", "beat_granularity"]

# _walk_padding's regions: rows above the data, beside it, below it, and past the block (the walk is over); lines
# left of the data, the data's columns, right of it.
_TOP, _MIDDLE, _BOTTOM, _BELOW = range(4)
_LEFT, _RIGHT = 0, 2


def beat_granularity(buffer: Buffer, config: AcceleratorConfig) -> int | None:
    """Bits of ``buffer``'s line one enable of its write port writes, or None (the whole line). A load_direct_write
    build writes a line of several bus beats (whole words of the line) beat by beat as they arrive, so no beat is
    kept in flip-flops; not the activation table (the store engine's copies, not a buffer memory)."""
    beats = line_bytes(buffer, config) * 8 // config.dma_bits
    if (config.load_direct_write and buffer is not Buffer.LUT and beats > 1
            and line_bits(buffer, config) % config.dma_bits == 0):
        return config.dma_bits
    return None


class LoadEngine(wiring.Component):
    """Padding lines first (one per cycle), then the data: read addresses run ahead (bursts of up to 256 beats
    per row, many outstanding) while arriving beats are assembled into lines and written, one line per
    ``line_beats`` beats (through a register stage: a line reaches its buffer the cycle after its last beat). A bus
    error response ends the instruction with ``bus_error`` set."""

    def __init__(self, config: AcceleratorConfig):
        self._config = c = config

        def port(buffer, depth):
            return write_port(depth, unsigned(line_bits(buffer, c)), beat_granularity(buffer, c))

        super().__init__({
            "control": In(engine_control_signature()),
            "axi": Out(axi4_read_signature(32, c.dma_bits)),
            "act": port(Buffer.ACT, c.act_buffer_depth),
            "weight": port(Buffer.WEIGHT, c.weight_buffer_depth),
            "param": port(Buffer.PARAM, c.param_buffer_depth),
            "lut": port(Buffer.LUT, max(c.lut_buffer_depth, 1)),
            "bus_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        seq = Sequencer(m, self.control)
        load = data.View(layout_of(KINDS[Opcode.LOAD]), seq.word)
        bus_bytes = c.dma_bits // 8

        # Lines of each buffer, in beats (a PARAM line is the longest).
        beats_of = {b: line_bytes(b, c) // bus_bytes for b in Buffer}
        line_beats = Signal(range(max(beats_of.values()) + 1))
        with m.Switch(load.buffer):
            for b in Buffer:
                with m.Case(b):
                    m.d.comb += line_beats.eq(beats_of[b])

        # The padded block's shape, registered as the instruction starts (so the walk below compares registers). A
        # load_direct_write build's walk (_walk_padding) needs none of it: it counts each region against its field.
        incoming = data.View(layout_of(KINDS[Opcode.LOAD]), self.control.cmd.payload)
        if not c.load_direct_write:
            width = Signal.like(incoming.pad_left + incoming.x_size + incoming.pad_right, name="width")
            height = Signal.like(incoming.pad_top + incoming.y_size + incoming.pad_bottom, name="height")
            data_bottom = Signal.like(incoming.pad_top + incoming.y_size, name="data_bottom")    # first row below
            data_right = Signal.like(incoming.pad_left + incoming.x_size, name="data_right")    # first column right
            row_gap = Signal.like(incoming.pad_left + incoming.pad_right + 1, name="row_gap")    # last line to next row
            with m.If(seq.start):
                m.d.sync += [width.eq(incoming.pad_left + incoming.x_size + incoming.pad_right),
                             height.eq(incoming.pad_top + incoming.y_size + incoming.pad_bottom),
                             data_bottom.eq(incoming.pad_top + incoming.y_size),
                             data_right.eq(incoming.pad_left + incoming.x_size),
                             row_gap.eq(incoming.pad_left + incoming.pad_right + 1)]

        # x_size * the line's beats: a constant per buffer, so shifts and additions.
        max_beats = ((1 << len(load.x_size)) - 1) * max(beats_of.values())
        row_beats = Signal(range(max_beats + 1))
        with m.Switch(load.buffer):
            for b in Buffer:
                with m.Case(b):
                    m.d.comb += row_beats.eq(times(load.x_size, beats_of[b]))
        m.submodules.addresses = addresses = BurstAddressGenerator(bus_bytes, max_rows=(1 << len(load.y_size)) - 1,
                                                                   max_beats=max_beats, addr_bits=c.dram_addr_bits,
                                                                   held_end=c.mid_clock)
        m.d.comb += [
            addresses.base.eq(held_address(m, seq.start, incoming.dram_addr, load.dram_addr, c.dram_addr_bits)),
            addresses.rows.eq(load.y_size),
            addresses.stride.eq(held_address(m, seq.start, incoming.dram_stride, load.dram_stride, c.dram_addr_bits)),
            addresses.beats.eq(row_beats),
            addresses.lengths.ready.eq(1),
        ]
        if c.load_direct_write:     # a slow small part: the generator's addresses straight onto the bus
            m.d.comb += [addresses.addr.ready.eq(self.axi.ar.ready), self.axi.ar.valid.eq(addresses.addr.valid),
                         self.axi.ar.addr.eq(addresses.addr.addr), self.axi.ar.len.eq(addresses.addr.len),
                         self.axi.ar.size.eq(addresses.addr.size), self.axi.ar.burst.eq(addresses.addr.burst)]
        else:
            self._address_skid(m, addresses.addr, self.axi.ar)

        # Where lines go: one write address for all three buffers, one line of data assembled from beats. The
        # padded block is walked in row-major order, so the address only ever moves on: by one line, or past the
        # data part of a row (padding), or past the padding between rows (data).
        depth = max(c.act_buffer_depth, c.weight_buffer_depth, c.param_buffer_depth, c.lut_buffer_depth)
        dest = Signal(range(depth))
        pad_dest = Signal(range(depth))         # padding walk: sram_addr + row * width + col
        data_dest = Signal(range(depth))        # data walk: sram_addr + (pad_top + row) * width + pad_left + col
        line_width = max(beats_of.values()) * c.dma_bits                # the longest line's
        write = Signal()
        pad_line = Cat(load.pad_value[:c.act_slot_bits] for _ in range(c.reduction_rows))
        ports = {Buffer.ACT: self.act, Buffer.WEIGHT: self.weight, Buffer.PARAM: self.param, Buffer.LUT: self.lut}
        # Lines leave through registers: the walk's decision (state, comparisons, beat count) is a cycle away from
        # the write ports, which fan out to many block RAMs. A line lands a cycle later; nothing reads it before the
        # instruction's tokens are pushed (``done`` comes at the earliest the cycle after the last write is decided).
        # With load_direct_write (a slow small part) the lines go straight in, a cycle sooner.
        write_addr, write_data = Signal.like(dest, name="write_addr"), Signal(line_width, name="write_data")
        domain = m.d.comb if c.load_direct_write else m.d.sync
        domain += write_addr.eq(dest)
        for buffer, port in ports.items():
            write_en = Signal(name=f"write_{buffer.name.lower()}")
            domain += write_en.eq(write & (load.buffer == buffer))
            if c.load_direct_write:     # each buffer's own line (below)
                if not beat_granularity(buffer, c):
                    m.d.comb += [port.addr.eq(write_addr), port.en.eq(write_en)]
            else:
                m.d.comb += [port.addr.eq(write_addr), port.data.eq(write_data), port.en.eq(write_en)]

        row = Signal.like(load.y_size, name="row") if c.load_direct_write else Signal.like(height)
        col = Signal.like(load.x_size, name="col") if c.load_direct_write else Signal.like(width)
        if c.load_direct_write:                             # _walk_padding's regions
            row_region, col_region = Signal(2, name="row_region"), Signal(2, name="col_region")
        # A load_direct_write build counts a row's lines from 1 (col + 1 == n becomes col == n: no adder before the
        # comparison); a legal LOAD's fields keep col within x_size's width.
        col_first = int(c.load_direct_write)
        padded = Signal(name="padded") if c.load_direct_write else None    # any padding: registered as it starts
        beat = Signal.like(line_beats)
        # With load_direct_write only the beats of a line before its last are kept: the last goes straight from the
        # bus into the written line (the longest line's last word needs no register).
        if c.load_direct_write:     # a line written beat by beat needs none of its beats kept
            assembled = Signal(max([(beats_of[b] - 1) * c.dma_bits for b in ports if not beat_granularity(b, c)]
                                   + [0]), name="assembled")
        else:
            assembled = Signal(line_width)
        seq_done = Signal()
        m.d.comb += seq.done.eq(seq_done)

        # The line as it would be written now: the padding value, or the assembled beats with the arriving one in its
        # place. write_data takes it every cycle (only a write's is used), chosen by the state alone: the bus's valid
        # and the beat count choose the write enables, not a multiplexer across the line.
        if not c.load_direct_write:
            full = Signal(line_width)
            m.d.comb += [full.eq(assembled), full.word_select(beat, c.dma_bits).eq(self.axi.r.data)]
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(seq.start):
                    m.d.sync += [row.eq(0), col.eq(col_first), self.bus_error.eq(0),
                                 pad_dest.eq(incoming.sram_addr), data_dest.eq(incoming.sram_addr)]
                    if c.load_direct_write:
                        m.d.sync += [row_region.eq(Mux(incoming.pad_top != 0, _TOP, _MIDDLE)),
                                     col_region.eq(Mux(incoming.pad_left != 0, _LEFT, _MIDDLE)),
                                     padded.eq((incoming.pad_top | incoming.pad_bottom | incoming.pad_left
                                                | incoming.pad_right) != 0)]
                    m.next = "PAD"
            with m.State("PAD"):
                if not c.load_direct_write:
                    padded = (load.pad_top | load.pad_bottom | load.pad_left | load.pad_right) != 0
                if c.load_direct_write:
                    finished = row_region == _BELOW
                else:
                    in_data = ((row >= load.pad_top) & (row < data_bottom) & (col >= load.pad_left)
                               & (col < data_right))
                    finished = row == height
                with m.If(~padded | finished):
                    m.d.comb += addresses.start.eq(1)
                    m.d.sync += [row.eq(0), col.eq(col_first), beat.eq(0)]
                    m.next = "DATA"
                if c.load_direct_write:
                    with m.Else():
                        self._walk_padding(m, load, row, col, row_region, col_region, pad_dest, data_dest, write,
                                           dest)
                else:
                    with m.Elif(in_data):
                        # Skip the data part of the row: its lines come from memory. The first one is where data
                        # starts.
                        with m.If(row == load.pad_top):
                            m.d.sync += data_dest.eq(pad_dest)
                        m.d.sync += [col.eq(data_right), pad_dest.eq(pad_dest + load.x_size)]
                        with m.If(data_right == width):
                            m.d.sync += [col.eq(0), row.eq(row + 1)]
                    with m.Else():
                        m.d.comb += [write.eq(1), dest.eq(pad_dest)]
                        m.d.sync += pad_dest.eq(pad_dest + 1)
                        with m.If(col + 1 == width):
                            m.d.sync += [col.eq(0), row.eq(row + 1)]
                        with m.Else():
                            m.d.sync += col.eq(col + 1)
            with m.State("DATA"):
                m.d.comb += self.axi.r.ready.eq(1)
                with m.If(self.axi.r.valid):
                    with m.If(self.axi.r.resp != 0):
                        m.d.sync += self.bus_error.eq(1)
                    # Only the arriving beat's word is written: its enable fans out to one word, not the line.
                    if len(assembled):
                        m.d.sync += assembled.word_select(beat, c.dma_bits).eq(self.axi.r.data)
                    with m.If(beat + 1 == line_beats):
                        m.d.sync += beat.eq(0)
                        m.d.comb += [write.eq(1), dest.eq(data_dest)]
                        row_done = (col == load.x_size) if c.load_direct_write else (col + 1 == load.x_size)
                        if c.load_direct_write:     # one adder for both moves
                            m.d.sync += data_dest.eq(data_dest + 1 + Mux(row_done, load.pad_left + load.pad_right, 0))
                        with m.If(row_done):
                            m.d.sync += [col.eq(col_first), row.eq(row + 1)]
                            if not c.load_direct_write:
                                m.d.sync += data_dest.eq(data_dest + row_gap)
                        with m.Else():
                            m.d.sync += col.eq(col + 1)
                            if not c.load_direct_write:
                                m.d.sync += data_dest.eq(data_dest + 1)
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
                # Every line is written once the last row is complete.
                with m.If((row == load.y_size) & ~addresses.busy):
                    m.d.comb += seq_done.eq(1)
                    m.next = "IDLE"
        if c.load_direct_write:
            # Each buffer its own line, no multiplexer across lines: a line of n beats is written as its last beat
            # arrives, so it is the n - 1 assembled beats and the arriving one; padding lines are ACT lines (the
            # decoder refuses any other).
            arriving = fsm.ongoing("DATA") & self.axi.r.valid
            for buffer, port in ports.items():
                granularity = beat_granularity(buffer, c)
                if granularity:     # each beat into its word of the line as it arrives (never a padding line)
                    words = len(port.data) // granularity
                    m.d.comb += [port.addr.eq(data_dest), port.data.eq(Cat(self.axi.r.data for _ in range(words))),
                                 port.en.eq(Cat(arriving & (load.buffer == buffer) & (beat == i)
                                                for i in range(words)))]
                    continue
                line = Cat(assembled[:(beats_of[buffer] - 1) * c.dma_bits], self.axi.r.data)
                m.d.comb += port.data.eq(Mux(fsm.ongoing("PAD"), pad_line, line) if buffer == Buffer.ACT else line)
        else:
            domain += write_data.eq(Mux(fsm.ongoing("PAD"), pad_line, full))
        return m

    @staticmethod
    def _walk_padding(m: Module, load, row, col, row_region, col_region, pad_dest, data_dest, write, dest) -> None:
        """One cycle of the padding walk of a load_direct_write build (a small part's): the same lines in the same
        cycles as the walk that compares the position with the block's registered bounds, but each region of rows
        (above, beside, below the data) and of lines (left, data, right; these from 1) is counted to its own field,
        so the walk tests equalities with the instruction's fields: no sums, no magnitude comparisons. A row beside the
        data skips its data part in one cycle (where data starts, the first time); any other line is a padding
        line, written."""
        def next_row():
            m.d.sync += [col.eq(1), col_region.eq(Mux(load.pad_left != 0, _LEFT, _MIDDLE))]
            rows = Mux(row_region == _TOP, load.pad_top, Mux(row_region == _MIDDLE, load.y_size, load.pad_bottom))
            with m.If(row + 1 == rows):
                m.d.sync += [row.eq(0), row_region.eq(Mux(row_region == _TOP, _MIDDLE,
                                                          Mux((row_region == _MIDDLE) & (load.pad_bottom != 0),
                                                              _BOTTOM, _BELOW)))]
            with m.Else():
                m.d.sync += row.eq(row + 1)

        data_line = (row_region == _MIDDLE) & (col_region == _MIDDLE)
        m.d.sync += pad_dest.eq(pad_dest + Mux(data_line, load.x_size, 1))     # one adder for both moves
        with m.If(data_line):
            with m.If(row == 0):
                m.d.sync += data_dest.eq(pad_dest)
            with m.If(load.pad_right != 0):
                m.d.sync += col_region.eq(_RIGHT)
            with m.Else():
                next_row()
        with m.Else():
            m.d.comb += [write.eq(1), dest.eq(pad_dest)]
            lines = Mux(col_region == _LEFT, load.pad_left, Mux(col_region == _MIDDLE, load.x_size, load.pad_right))
            with m.If(col == lines):
                with m.If(col_region == _LEFT):
                    m.d.sync += [col.eq(1), col_region.eq(_MIDDLE)]
                with m.Elif((col_region == _MIDDLE) & (load.pad_right != 0)):
                    m.d.sync += [col.eq(1), col_region.eq(_RIGHT)]
                with m.Else():
                    next_row()
            with m.Else():
                m.d.sync += col.eq(col + 1)

    @staticmethod
    def _address_skid(m: Module, source, ar) -> None:
        """``source``'s addresses onto the read address channel ``ar`` through a skid register: the generator's
        ``ready`` is a register (the skid is empty), so the bus's ``ready`` never reaches its counters. An address
        the bus does not take waits in the skid; while the bus takes every address this adds no cycle."""
        full = Signal(name="ar_skid_full")
        addr, length = Signal.like(ar.addr, name="ar_skid_addr"), Signal.like(ar.len, name="ar_skid_len")
        m.d.comb += [source.ready.eq(~full), ar.valid.eq(full | source.valid),
                     ar.addr.eq(Mux(full, addr, source.addr)), ar.len.eq(Mux(full, length, source.len)),
                     ar.size.eq(source.size), ar.burst.eq(source.burst)]
        with m.If(full):
            with m.If(ar.ready):
                m.d.sync += full.eq(0)
        with m.Elif(source.valid & ~ar.ready):
            m.d.sync += [full.eq(1), addr.eq(source.addr), length.eq(source.len)]
