"""The store engine: SETPP, and STORE (accumulator lines, post-processed, to external memory by AXI4 writes)."""

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from .axi import axi4_write_signature
from .buffer_ports import address_bits, read_port
from .compute_engine import acc_line_layout
from .decoder import layout_of
from .dma import BurstAddressGenerator, held_address, max_bursts
from .pipeline import times
from .postprocess import PostProcessor, saturate_signed
from .sequencer import Sequencer, engine_control_signature
from .spec.config import AcceleratorConfig
from .spec.isa import KINDS, Buffer, Opcode
from .spec.layout import PARAM_ENTRY_BYTES, line_bits, output_line_bytes
from .spec.microarchitecture import POSTPROCESS_LATENCY, SERIAL_LINE_FIFO_DEPTH

__all__ = ["StoreEngine"]


class StoreEngine(wiring.Component):
    """One post-processing lane per array column turns an accumulator line into an output line per cycle; a
    FIFO of output lines feeds the write channel beat by beat. Accumulator reads are issued only against free
    FIFO space (credits), so the pipeline never needs to stall."""

    #: Output lines buffered between the post-processing lanes and the write channel: deeper than the
    #: read-and-post-process pipeline, so that reads are never throttled while the write channel keeps up.
    LINE_FIFO_DEPTH = POSTPROCESS_LATENCY + 6

    def __init__(self, config: AcceleratorConfig):
        self._config = c = config
        super().__init__({
            "control": In(engine_control_signature()),
            "axi": Out(axi4_write_signature(32, c.dma_bits)),
            "acc": read_port(c.acc_buffer_depth, acc_line_layout(c)),
            "param": read_port(c.param_buffer_depth, unsigned(line_bits(Buffer.PARAM, c))),
            # LUT lines from the load engine, into every lane's copy of the activation table.
            "lut": Out(WritePort.Signature(addr_width=address_bits(max(c.lut_buffer_depth, 1)),
                                           shape=unsigned(line_bits(Buffer.LUT, c)))),
            "bus_error": Out(1),
            "nonfinite": Out(1),       # sticky: a stored element met a NaN or Inf operand
            "clear": In(1),            # clears nonfinite (at start)
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        cols = c.cols
        bus_bytes = c.dma_bits // 8
        out_beats = output_line_bytes(c) // bus_bytes
        seq = Sequencer(m, self.control)
        store = data.View(layout_of(KINDS[Opcode.STORE]), seq.word)

        zero_point = Signal(signed(16))
        clamp_lo = Signal(c.act_slot_bits)
        clamp_hi = Signal(c.act_slot_bits)
        use_lut = Signal()
        incoming = data.View(layout_of(KINDS[Opcode.SETPP]), self.control.cmd.payload)
        with m.If(seq.start & (incoming.opcode == Opcode.SETPP)):
            m.d.sync += [zero_point.eq(incoming.zero_point), clamp_lo.eq(incoming.clamp_lo),
                         clamp_hi.eq(incoming.clamp_hi), use_lut.eq(incoming.lut)]
        out_format = None
        if c.multi_format:
            out_format = Signal(range(max(len(c.formats), 2)))       # SETPP.format: the lanes' output format
            with m.If(seq.start & (incoming.opcode == Opcode.SETPP)):
                m.d.sync += out_format.eq(incoming.format)

        # --- per-column parameters ------------------------------------------------------------------------
        entry = data.StructLayout({"bias": signed(64), "multiplier": signed(32), "shift": unsigned(8),
                                   "pad": unsigned(PARAM_ENTRY_BYTES * 8 - 104)})
        # A slow_clock engine holds each bias saturated to the accumulator's range, as the lanes use it (the lanes'
        # own saturation then passes it unchanged), not its 64 bits: a register that splits no path at 12 MHz.
        held = data.StructLayout({"bias": signed(c.acc_bits), "multiplier": signed(32), "shift": unsigned(8)}) \
            if c.slow_clock else entry
        params = Signal(data.ArrayLayout(held, cols))
        # STORE.negative_param: the multipliers and shifts of PARAM line param_addr + 1, for negative acc + bias.
        params_neg = Signal(data.ArrayLayout(held, cols))
        line_entries = data.View(data.ArrayLayout(entry, cols), self.param.data)

        def take(register):
            """The PARAM line arriving now into ``register`` (params or params_neg)."""
            if not c.slow_clock:
                return register.eq(self.param.data)
            return [field for i in range(cols) for field in (
                register[i].bias.eq(saturate_signed(line_entries[i].bias, c.acc_bits)),
                register[i].multiplier.eq(line_entries[i].multiplier), register[i].shift.eq(line_entries[i].shift))]
        negative_param = Signal()
        # The PARAM port's address, a register: line param_addr from the cycle after the STORE starts (taken from the
        # incoming instruction), line param_addr + 1 the cycle after that when negative_param reads a second line.
        # A register rather than logic of the FSM state: the address fans out to every block RAM of the wide PARAM
        # buffer (on a large engine the longest route of the design), so nothing is in front of that route.
        param_addr = Signal.like(self.param.addr, name="param_read_addr")
        second_line = Signal()         # the FSM reads line param_addr + 1 next (the cycle after param_addr)
        incoming_store = data.View(layout_of(KINDS[Opcode.STORE]), seq.incoming)
        # Serial lanes of their own columns read line param_addr straight from the PARAM port for the whole STORE
        # (it holds while the address does, and their elements are far apart): no register of the line. After
        # negative_param's second line, the address goes back to the first. A one-column engine's lane reads line
        # param_addr + 1 only for an element that takes the negative side, the advance after it chose (its ``side``):
        # no register of that line either.
        direct = c.postprocess_serial and c.postprocess_lanes == cols
        side_read = direct and cols == 1
        with m.If(seq.start):
            m.d.sync += param_addr.eq(incoming_store.param_addr)
        if not side_read:
            with m.Elif(second_line):
                m.d.sync += param_addr.eq(param_addr + 1)
        if direct and not side_read:
            first_line = Signal()
            with m.Elif(first_line):
                m.d.sync += param_addr.eq(param_addr - 1)
        if not side_read:
            m.d.comb += [self.param.addr.eq(param_addr), self.param.en.eq(1)]

        # --- addresses -------------------------------------------------------------------------------------
        max_rows, max_beats = (1 << len(store.y_size)) - 1, ((1 << len(store.x_size)) - 1) * out_beats
        m.submodules.addresses = addresses = BurstAddressGenerator(bus_bytes, max_rows=max_rows, max_beats=max_beats,
                                                                   addr_bits=c.dram_addr_bits, held_end=c.mid_clock)
        # Burst lengths the address generator runs ahead by: behind serial lanes a line is out every
        # postprocess_interval cycles at best, so two bursts ahead keep the write channel as busy as sixteen.
        m.submodules.lengths = lengths = SyncFIFOBuffered(width=len(addresses.lengths.payload),
                                                          depth=SERIAL_LINE_FIFO_DEPTH if c.postprocess_serial else 16)
        m.d.comb += [
            addresses.base.eq(held_address(m, seq.start, incoming_store.dram_addr, store.dram_addr, c.dram_addr_bits)),
            addresses.rows.eq(store.y_size),
            addresses.stride.eq(held_address(m, seq.start, incoming_store.dram_stride, store.dram_stride,
                                             c.dram_addr_bits)),
            addresses.beats.eq(times(store.x_size, out_beats)),
            self.axi.aw.valid.eq(addresses.addr.valid), self.axi.aw.addr.eq(addresses.addr.addr),
            self.axi.aw.len.eq(addresses.addr.len), self.axi.aw.size.eq(addresses.addr.size),
            self.axi.aw.burst.eq(addresses.addr.burst), addresses.addr.ready.eq(self.axi.aw.ready),
            lengths.w_en.eq(addresses.lengths.valid & addresses.lengths.ready),
            lengths.w_data.eq(addresses.lengths.payload), addresses.lengths.ready.eq(lengths.w_rdy),
        ]
        bursts_out = Signal(range(max_bursts(max_rows, max_beats, bus_bytes) + 1))
        # Behind serial lanes (postprocess_serial) one counter of the bursts not yet answered stands for the two
        # counts of bursts and responses: fewer flip-flops, and the STORE's pace hides the up/down counter's logic.
        paced = c.postprocess_serial
        if paced:
            aw_done, b_done = self.axi.aw.valid & self.axi.aw.ready, self.axi.b.valid
            with m.If(aw_done & ~b_done):
                m.d.sync += bursts_out.eq(bursts_out + 1)
            with m.Elif(b_done & ~aw_done):
                m.d.sync += bursts_out.eq(bursts_out - 1)
        else:
            with m.If(self.axi.aw.valid & self.axi.aw.ready):
                m.d.sync += bursts_out.eq(bursts_out + 1)

        # --- accumulator lines through the post-processing lanes ---------------------------------------------
        shared = c.postprocess_lanes < cols          # each lane takes its columns in turn (postprocess_shared)
        lanes = [PostProcessor(c) for _ in range(c.postprocess_lanes)]
        for i, lane in enumerate(lanes):
            m.submodules[f"lane{i}"] = lane
        latency = lanes[0].latency
        assert latency == c.postprocess_latency, "update hw/spec/microarchitecture.py (the cycle model uses it)"
        # A narrow_line_fifo engine's FIFO holds the line's codes alone (the rest of its beats are zeros), so fewer
        # block RAMs: 1 instead of 4 for the iCEBreaker's 8 bits of a 64-bit beat.
        line_width = out_beats * c.dma_bits if not c.narrow_line_fifo else c.cols * c.act_slot_bits
        depth = SERIAL_LINE_FIFO_DEPTH if c.postprocess_serial else self.LINE_FIFO_DEPTH
        m.submodules.lines = lines = SyncFIFOBuffered(width=line_width, depth=depth)

        y, x = Signal.like(store.y_size, name="y"), Signal.like(store.x_size, name="x")
        # Accumulator lines (past the last one they may wrap: unused then).
        row_line = Signal(range(c.acc_buffer_depth))
        line = Signal(range(c.acc_buffer_depth))
        # Lines issued and not yet in the FIFO (behind serial lanes, ``occupied`` alone tells the FSM the same).
        in_flight = None if paced else Signal(range(depth + latency + 3))
        reading = Signal()
        issue = Signal()
        # Lines in the FIFO or on their way to it (``lines.level + in_flight``), kept as a register of its own: the
        # sum of the two counters in front of the read address was the engine's critical path on the ECP5.
        occupied = Signal(range(depth + 1))
        m.d.sync += occupied.eq(occupied + issue - (lines.r_en & lines.r_rdy))
        rows_read = None
        if c.mid_clock:     # y == y_size, a register set as y moves: off the path into the engine's done and tokens
            rows_read = Signal(name="rows_read")
        can_issue = reading & (~rows_read if c.mid_clock else y != store.y_size) & (occupied < depth)
        # Each lane takes its columns of a line in turn, each ``postprocess_interval`` cycles after the last: a line
        # read every ``spacing`` cycles at most.
        spacing = c.postprocess_lane_columns * c.postprocess_interval
        if spacing > 1:
            gap = Signal(range(spacing), name="gap")
            m.d.sync += gap.eq(Mux(issue, spacing - 1, Mux(gap != 0, gap - 1, 0)))
            can_issue = can_issue & (gap == 0)
        m.d.comb += issue.eq(can_issue)
        m.d.comb += [self.acc.addr.eq(line), self.acc.en.eq(1)]
        with m.If(issue):
            # mid_clock: x counts a row's lines from 1 (x == x_size: no adder before the comparison)
            with m.If((x == store.x_size) if c.mid_clock else (x + 1 == store.x_size)):
                m.d.sync += [x.eq(int(c.mid_clock)), y.eq(y + 1), row_line.eq(row_line + store.acc_stride),
                             line.eq(row_line + store.acc_stride)]
                if c.mid_clock:
                    m.d.sync += rows_read.eq(y + 1 == store.y_size)
            with m.Else():
                m.d.sync += [x.eq(x + 1), line.eq(line + 1)]
        read_valid = Signal()
        m.d.sync += read_valid.eq(issue)
        acc_line = self.acc.data
        for i, lane in enumerate(lanes if not shared else ()):
            p = line_entries[i] if direct else params[i]
            q = p if side_read else params_neg[i]       # side_read: the port holds the line of the side chosen
            m.d.comb += [lane.en.eq(1), lane.i_valid.eq(read_valid), lane.acc.eq(acc_line[i].value),
                         lane.nonfinite.eq(acc_line[i].nonfinite), lane.bias.eq(p.bias),
                         lane.multiplier.eq(p.multiplier), lane.shift.eq(p.shift),
                         lane.multiplier_neg.eq(q.multiplier), lane.shift_neg.eq(q.shift),
                         lane.negative_param.eq(negative_param), lane.zero_point.eq(zero_point),
                         lane.clamp_lo.eq(clamp_lo), lane.clamp_hi.eq(clamp_hi), lane.lut.eq(use_lut),
                         lane.lut_write.en.eq(self.lut.en), lane.lut_write.addr.eq(self.lut.addr),
                         lane.lut_write.data.eq(self.lut.data)]
            if out_format is not None:
                m.d.comb += lane.format.eq(out_format)
        if side_read:
            m.d.comb += [self.param.addr.eq(param_addr + lanes[0].side), self.param.en.eq(1)]
        with m.If(read_valid & self.control.running):
            with m.If(Cat(acc_line[i].nonfinite for i in range(cols)).any()):
                m.d.sync += self.nonfinite.eq(1)
        with m.If(self.clear):
            m.d.sync += self.nonfinite.eq(0)
        for lane in lanes if shared else ():
            m.d.comb += [lane.negative_param.eq(negative_param), lane.zero_point.eq(zero_point),
                         lane.clamp_lo.eq(clamp_lo), lane.clamp_hi.eq(clamp_hi), lane.lut.eq(use_lut),
                         lane.lut_write.en.eq(self.lut.en), lane.lut_write.addr.eq(self.lut.addr),
                         lane.lut_write.data.eq(self.lut.data)]
            if out_format is not None:
                m.d.comb += lane.format.eq(out_format)
        if shared:
            line_valid, line_codes = _time_multiplexed(m, c, lanes, acc_line, read_valid, params, params_neg)
            width = len(lanes[0].code)
            codes = [line_codes[k * width:(k + 1) * width] for k in range(cols)]
        else:
            line_valid, line_codes = lanes[0].o_valid, Cat(lane.code for lane in lanes)
            codes = [lane.code for lane in lanes]
        if c.packs_per_layer:
            # STORE.packed: slot r holds the low four bits of codes 2r and 2r+1, the other slots zero.
            slot = c.act_slot_bits
            packed = Cat(*(Cat(codes[2 * r][:4], codes[2 * r + 1][:4], C(0, slot - 8)) for r in range(cols // 2)))
            line_codes = Mux(store.packed, packed, line_codes)
        m.d.comb += [lines.w_en.eq(line_valid), lines.w_data.eq(line_codes)]
        if in_flight is not None:
            with m.If(issue & ~lines.w_en):
                m.d.sync += in_flight.eq(in_flight + 1)
            with m.Elif(~issue & lines.w_en):
                m.d.sync += in_flight.eq(in_flight - 1)

        # --- output lines into write beats -----------------------------------------------------------------
        beat = Signal(range(out_beats + 1))
        burst_beat = Signal.like(addresses.lengths.payload)
        burst_len = Signal.like(addresses.lengths.payload)
        in_burst = Signal()
        out_line = Cat(lines.r_data, C(0, out_beats * c.dma_bits - line_width)) if c.narrow_line_fifo else lines.r_data
        # Behind serial lanes burst_beat counts the burst's beats down from its length to 1 (the last), and burst_len
        # is not needed: a register and an equality of two counts less.
        with m.If(~in_burst & lengths.r_rdy):
            m.d.comb += lengths.r_en.eq(1)
            if paced:
                m.d.sync += [burst_beat.eq(lengths.r_data), in_burst.eq(1)]
            else:
                m.d.sync += [burst_len.eq(lengths.r_data), burst_beat.eq(0), in_burst.eq(1)]
        m.d.comb += [
            self.axi.w.valid.eq(in_burst & lines.r_rdy),
            self.axi.w.data.eq(out_line.word_select(beat, c.dma_bits)),
            self.axi.w.strb.eq(-1),
            self.axi.w.last.eq((burst_beat == 1) if paced else (burst_beat + 1 == burst_len)),
        ]
        with m.If(self.axi.w.valid & self.axi.w.ready):
            with m.If(beat + 1 == out_beats):
                m.d.comb += lines.r_en.eq(1)
                m.d.sync += beat.eq(0)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
            with m.If(self.axi.w.last):
                m.d.sync += in_burst.eq(0)
            with m.Else():
                m.d.sync += burst_beat.eq(burst_beat - 1 if paced else burst_beat + 1)

        # --- write responses --------------------------------------------------------------------------------
        responses = Signal.like(bursts_out)
        m.d.comb += self.axi.b.ready.eq(1)
        with m.If(self.axi.b.valid):
            if not paced:
                m.d.sync += responses.eq(responses + 1)
            with m.If(self.axi.b.resp != 0):
                m.d.sync += self.bus_error.eq(1)

        # --- sequencing -------------------------------------------------------------------------------------
        with m.FSM():
            with m.State("IDLE"):
                with m.If(seq.start):
                    m.d.sync += self.bus_error.eq(0)
                    with m.If(incoming.opcode == Opcode.STORE):
                        m.next = "PARAM_ADDR"
                    with m.Else():
                        m.next = "SETPP"
            with m.State("SETPP"):
                m.d.comb += seq.done.eq(1)
                m.next = "IDLE"
            with m.State("PARAM_ADDR"):
                # The parameter memory sees the STORE's param_addr now; its line arrives next cycle.
                m.d.comb += second_line.eq(store.negative_param)
                m.next = "PARAMS"
            def begin():
                return [x.eq(int(c.mid_clock)), y.eq(0), row_line.eq(store.acc_addr), line.eq(store.acc_addr),
                        reading.eq(1),
                        bursts_out.eq(0), *([] if paced else [responses.eq(0)]),
                        *([rows_read.eq(store.y_size == 0)] if c.mid_clock else [])]
            with m.State("PARAMS"):
                m.d.sync += [*([] if direct else [take(params)]), negative_param.eq(store.negative_param)]
                with m.If(store.negative_param):
                    # Line param_addr + 1 is addressed now and arrives next cycle: one cycle more.
                    m.next = "PARAMS_NEG"
                with m.Else():
                    m.d.sync += begin()
                    m.d.comb += addresses.start.eq(1)
                    m.next = "RUN"
            with m.State("PARAMS_NEG"):
                m.d.sync += [*([] if side_read else [take(params_neg)]), *begin()]
                if direct and not side_read:
                    m.d.comb += first_line.eq(1)
                m.d.comb += addresses.start.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                rows_done = rows_read if c.mid_clock else y == store.y_size
                if paced:
                    finished = (rows_done & (occupied == 0) & ~addresses.busy & ~lengths.r_rdy & ~in_burst
                                & (bursts_out == 0))
                else:
                    finished = (rows_done & (in_flight == 0) & ~lines.r_rdy & ~addresses.busy
                                & ~lengths.r_rdy & ~in_burst & (responses == bursts_out))
                with m.If(finished):
                    m.d.sync += reading.eq(0)
                    m.d.comb += seq.done.eq(1)
                    m.next = "IDLE"
        return m


def _time_multiplexed(m: Module, c: AcceleratorConfig, lanes: list[PostProcessor], acc_line, read_valid, params,
                      params_neg):
    """Lanes sharing the ``c.cols`` columns (``postprocess_shared``), lane g taking the ``share`` columns from
    ``g * share``: the line read arrives with ``read_valid`` and each lane's first column enters it at once, the others
    (held) in the next ``share - 1`` cycles; each lane's codes come out in the same order into a shift register.
    Every lane input comes from a fixed place (no ``share``:1 multiplexers, which on a wide engine fanned the whole
    held line and both PARAM lines into one lane and did not route): the held columns shift one a cycle toward the
    lane, and each lane's PARAM entries rotate one a cycle while it takes a column, back in place once it has
    taken all ``share`` (before a STORE's PARAMS state loads new lines). Returns (a whole output line is ready, its
    codes), column 0 lowest."""
    share = c.postprocess_lane_columns
    column = Signal(range(share), name="feed_column")       # the column entering a lane (0: none, or the new line)
    feeding = read_valid | (column != 0)
    if c.postprocess_interval > 1:
        # Serial lanes take a column every postprocess_interval cycles: the next one when the phase comes round.
        phase = Signal(range(c.postprocess_interval), name="feed_phase")
        feeding = read_valid | ((column != 0) & (phase == 0))
        m.d.sync += phase.eq(Mux(feeding, c.postprocess_interval - 1, Mux(phase != 0, phase - 1, 0)))
        m.d.sync += column.eq(Mux(feeding, Mux(column == share - 1, 0, column + 1), column))
    else:
        m.d.sync += column.eq(Mux(read_valid | (column != 0), Mux(column == share - 1, 0, column + 1), 0))
    bits = len(lanes[0].code)
    out_column = Signal(range(share), name="out_column")
    line_codes = []
    for g, lane in enumerate(lanes):
        first = g * share
        # held[j]: column first + 1 + j of the line at read_valid, then column first + 1 + j + k k cycles later.
        held = [Signal(acc_line[first].shape(), name=f"held{g}_{j}") for j in range(share - 1)]
        for j, h in enumerate(held):
            shifted = Mux(read_valid, acc_line[first + 1 + j], held[j + 1] if j + 2 < share else h)
            if c.postprocess_interval > 1:
                with m.If(feeding):         # a column taken: the next one moves up
                    m.d.sync += h.eq(shifted)
            else:
                m.d.sync += h.eq(shifted)
        element = acc_line[first]
        kept = held[0]
        # Rotating the used fields only (pad and params_neg's bias stay unused, and synthesis drops them). The
        # FSM's PARAMS loads are assigned later in elaborate(): they take precedence (they never coincide).
        with m.If(feeding):
            for k in range(share):
                p, p_next = params[first + k], params[first + (k + 1) % share]
                q, q_next = params_neg[first + k], params_neg[first + (k + 1) % share]
                m.d.sync += [p.bias.eq(p_next.bias), p.multiplier.eq(p_next.multiplier), p.shift.eq(p_next.shift),
                             q.multiplier.eq(q_next.multiplier), q.shift.eq(q_next.shift)]
        p, q = params[first], params_neg[first]
        m.d.comb += [lane.en.eq(1), lane.i_valid.eq(feeding),
                     lane.acc.eq(Mux(read_valid, element.value, kept.value)),
                     lane.nonfinite.eq(Mux(read_valid, element.nonfinite, kept.nonfinite)),
                     lane.bias.eq(p.bias), lane.multiplier.eq(p.multiplier), lane.shift.eq(p.shift),
                     lane.multiplier_neg.eq(q.multiplier), lane.shift_neg.eq(q.shift)]
        codes = Signal(bits * share, name=f"out_codes{g}")  # the lane's codes so far, the latest on top
        shifted = Cat(codes[bits:], lane.code)
        with m.If(lane.o_valid):
            m.d.sync += codes.eq(shifted)
        line_codes.append(shifted)
    with m.If(lanes[0].o_valid):
        m.d.sync += out_column.eq(Mux(out_column == share - 1, 0, out_column + 1))
    return lanes[0].o_valid & (out_column == share - 1), Cat(*line_codes)
