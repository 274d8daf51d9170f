"""The compute engine: COMPUTE (the systolic array fed from the buffers) and ALU (on accumulator lines)."""

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .array import SystolicArray
from .buffer_ports import read_port, write_port
from .decoder import layout_of
from .lanes import psum_lane
from .multiplier import NARROW_SIGNIFICAND_BITS
from .pipeline import shift_add
from .sequencer import Sequencer, engine_control_signature
from .spec.config import AcceleratorConfig
from .spec.isa import HEADER, KINDS, AluOp, Opcode
from .spec.microarchitecture import ACCUMULATE_LATENCY, ALU_LATENCY, SLOW_ACCUMULATE_LATENCY, feeder_depth

__all__ = ["ComputeEngine", "acc_line_layout"]


def acc_line_layout(config: AcceleratorConfig) -> data.ArrayLayout:
    """An accumulator line: one exact sum and its non-finite flag per array column."""
    return data.ArrayLayout(psum_lane(config.acc_bits), config.cols)


class _BlockRamFIFO(SyncFIFOBuffered):
    """A SyncFIFOBuffered whose storage is a block RAM (``ram_style = "block"``), which synthesis would otherwise
    build of flip-flops and multiplexers for so small a memory: same interface, same cycles."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.submodules.storage.attrs["ram_style"] = "block"
        return m


class _Feeder:
    """Reads buffer lines in order and offers them as a stream, hiding the one-cycle read latency.

    ``issue`` requests the line at ``addr``; a FIFO holds what arrived until the consumer takes it. Reads
    are issued only while the FIFO has room for them and everything already in flight.
    """

    def __init__(self, m: Module, name: str, port, width: int, depth: int, tag_bits: int = 1,
                 block_ram: bool = False, split: bool = False):
        self.fifo = fifo = (_BlockRamFIFO if block_ram else SyncFIFOBuffered)(width=width + tag_bits, depth=depth)
        m.submodules[name] = fifo
        self.port = port
        self.addr = Signal.like(port.addr, name=f"{name}_addr")
        self.tag = Signal(tag_bits, name=f"{name}_tag")
        self.want = Signal(name=f"{name}_want")
        in_flight = Signal(name=f"{name}_in_flight")
        tag_in_flight = Signal(tag_bits, name=f"{name}_tag_in_flight")
        self.issue = Signal(name=f"{name}_issue")
        # split (mid_clock): the same room as two comparisons of the level with constants, no adder before them.
        room = Mux(in_flight, fifo.level < depth - 2, fifo.level < depth - 1) if split \
            else fifo.level + in_flight < depth - 1
        m.d.comb += [
            self.issue.eq(self.want & room),
            port.addr.eq(self.addr), port.en.eq(self.issue),
            fifo.w_en.eq(in_flight), fifo.w_data.eq(Cat(port.data, tag_in_flight)),
        ]
        m.d.sync += [in_flight.eq(self.issue), tag_in_flight.eq(self.tag)]
        self.data = fifo.r_data[:width]
        self.last = fifo.r_data[width]
        #: The tag's bits above ``last`` (a multi-format engine's format indices), as they leave the FIFO.
        self.extra = fifo.r_data[width + 1:]


def _stages(m: Module, name: str, fields: dict, latency: int) -> tuple[Signal, ...]:
    """The pipeline records of ``fields`` behind an accumulator read, one per cycle: ``reading`` (registered as the
    read address goes out, it lives while the block RAM reads), ``settling`` (the line leaves the block RAM into a
    register) and ``writing`` (the line is there to update): ``latency`` records (``ACCUMULATE_LATENCY``), or only
    ``reading`` (``SLOW_ACCUMULATE_LATENCY``: the line is updated as it leaves the block RAM)."""
    layout = data.StructLayout(fields)
    names = {ACCUMULATE_LATENCY: ("reading", "settling", "writing"), SLOW_ACCUMULATE_LATENCY: ("reading",)}[latency]
    records = [Signal(layout, name=f"{name}_{n}") for n in names]
    for earlier, later in zip(records, records[1:]):
        m.d.sync += later.eq(earlier)
    return tuple(records)


def _forwarded(m: Module, name: str, data_out, acc_w, written, line_reading, line_settling):
    """The accumulator line read for ``line_reading``, as it is when its update runs ``ACCUMULATE_LATENCY`` cycles
    after the read: the block RAM's ``data_out`` registered, then each later write to the same line in its place
    (``written`` holds the line written in the cycle before). Also the settled line and whether ``written`` replaces
    it, for an update that computes from both and chooses after (no multiplexer before its carry chain)."""
    read, settled = Signal.like(written, name=f"read_{name}"), Signal.like(written, name=f"settled_{name}")
    hit_reading, hit_settling = Signal(name=f"hit_{name}_reading"), Signal(name=f"hit_{name}_settling")
    m.d.sync += [read.eq(data_out),
                 hit_reading.eq(acc_w.en & (acc_w.addr == line_reading)),
                 settled.eq(Mux(hit_reading, written, read)),
                 hit_settling.eq(acc_w.en & (acc_w.addr == line_settling))]
    line = Signal.like(written, name=f"line_{name}")
    m.d.comb += line.eq(Mux(hit_settling, written, settled))
    return line, settled, hit_settling


def _alu_operations(m: Module, c: AcceleratorConfig, op, old, src, stage, line_shape):
    """An ALU element's results from its (forwarded) lines ``old`` (dst) and ``src``, there in the ``stage`` record's
    cycle (``c.accumulate_latency`` after the issue): (valid, line, values, nonfinite flags, busy) of its write,
    ``c.alu_latency`` cycles after the issue; ``busy``: the records still in flight after ``stage``."""
    if c.alu_latency == c.accumulate_latency:
        return _alu_direct(m, c, op, old, src, stage)
    return _alu_registered(m, c, op, old, src, stage, line_shape)


def _alu_multiply(c: AcceleratorConfig):
    """(k, multiply) of ALU MUL: one k x k multiplier per lane (k = alu_mul_bits, each operand's low bits), low
    acc_bits kept. A narrow one (int4: 5 x 5) is shifts and additions in a few LUTs, as in the PE: yosys would give
    every lane a DSP, which a wide int4 array's post-processing lanes need."""
    k = min(c.alu_mul_bits, c.acc_bits)
    return k, shift_add if k <= NARROW_SIGNIFICAND_BITS else (lambda x, y: x * y)


def _alu_direct(m: Module, c: AcceleratorConfig, op, old, src, stage):
    """A ``slow_clock`` engine's ALU: the operation on the lines in the cycle they leave the block RAM, written then
    (no registers: ``accumulate_latency`` cycles, as COMPUTE's updates, so every write is seen in time)."""
    k, multiply = _alu_multiply(c)
    values, nonfinite = [], []
    for col in range(c.cols):
        a, b = old[col].value, src[col].value
        result = Signal.like(a, name=f"alu_result_{col}")
        with m.Switch(op):
            with m.Case(AluOp.MAX):
                m.d.comb += result.eq(Mux(b > a, b, a))
            with m.Case(AluOp.ADD):
                m.d.comb += result.eq(a + b)
            with m.Case(AluOp.MUL):
                m.d.comb += result.eq(multiply(a[:k].as_signed(), b[:k].as_signed()))
            with m.Default():                       # COPY
                m.d.comb += result.eq(b)
        values.append(result)
        nonfinite.append(Mux(op == AluOp.COPY, src[col].nonfinite, old[col].nonfinite | src[col].nonfinite))
    return stage.valid, stage.line, values, nonfinite, []


def _alu_registered(m: Module, c: AcceleratorConfig, op, old, src, stage, line_shape):
    """The ALU's operands (the forwarded lines) and its result registered (ALU_LATENCY), so the forwarding
    multiplexers, the operation (MAX's compare, ADD's carry chain, MUL's multiplier) and the write are in different
    cycles."""
    cols = c.cols
    k, multiply = _alu_multiply(c)
    alu_record = data.StructLayout({"valid": 1, "line": line_shape, "nonfinite": cols, "mul": 1})
    alu_operands, alu_result = (Signal(alu_record, name=f"alu_{n}") for n in ("operands", "result"))
    m.d.sync += [alu_operands.valid.eq(stage.valid), alu_operands.line.eq(stage.line),
                 alu_operands.mul.eq(op == AluOp.MUL), alu_result.eq(alu_operands)]
    # MUL's factors and product have registers of their own (near the DSP), apart from the other operations'.
    results = []
    for col in range(cols):
        a, b = Signal.like(old[col].value, name=f"alu_a_{col}"), Signal.like(src[col].value, name=f"alu_b_{col}")
        fa, fb = Signal(signed(k), name=f"mul_a_{col}"), Signal(signed(k), name=f"mul_b_{col}")
        result = Signal.like(old[col].value, name=f"alu_result_{col}")
        product = Signal(signed(2 * k), name=f"mul_product_{col}")
        results.append(Mux(alu_result.mul, product, result))
        m.d.sync += [a.eq(old[col].value), b.eq(src[col].value), fa.eq(old[col].value[:k]),
                     fb.eq(src[col].value[:k]), product.eq(multiply(fa, fb)),
                     alu_operands.nonfinite[col].eq(Mux(op == AluOp.COPY, src[col].nonfinite,
                                                        old[col].nonfinite | src[col].nonfinite))]
        with m.Switch(op):
            with m.Case(AluOp.MAX):
                m.d.sync += result.eq(Mux(b > a, b, a))
            with m.Case(AluOp.ADD):
                m.d.sync += result.eq(a + b)
            with m.Default():                       # COPY (MUL: the product's register)
                m.d.sync += result.eq(b)
    return (alu_result.valid, alu_result.line, results, [alu_result.nonfinite[col] for col in range(cols)],
            [alu_operands.valid, alu_result.valid])


def _delayed(m: Module, value) -> Signal:
    """``value`` one cycle later."""
    later = Signal()
    m.d.sync += later.eq(value)
    return later


def _retire_tagged(m: Module, c: AcceleratorConfig, push, comp_in, arrive, tile_end, instr_end):
    """A ``compute_compact`` engine's retire side: the lines of a kernel position are consecutive from ``acc_addr``,
    and the partial sums of its last output and of the COMPUTE's last come tagged (``tile_end``, ``instr_end``), so a
    queued COMPUTE is its first line and two flags (``push`` queues ``comp_in``'s). Returns (queue, current,
    retiring, line, later_tile, last_of_current) as the counting retire side has them."""
    descriptor = data.StructLayout({"acc_addr": unsigned((c.acc_buffer_depth - 1).bit_length()),
                                    "accumulate": unsigned(1), "push_next": unsigned(1)})
    m.submodules.retire_queue = retire_queue = SyncFIFOBuffered(width=descriptor.size, depth=c.retire_queue_depth)
    m.d.comb += [retire_queue.w_en.eq(push),
                 retire_queue.w_data.eq(Cat(comp_in.acc_addr[:descriptor.size - 2], comp_in.accumulate,
                                            comp_in.push_next))]
    head = data.View(descriptor, retire_queue.r_data)
    current = Signal(descriptor)
    retiring = Signal()
    p_line = Signal(range(c.acc_buffer_depth))
    later_tile = Signal()               # past the instruction's first kernel position: always accumulate
    take_next = retire_queue.r_rdy & (~retiring | (arrive & instr_end))
    with m.If(take_next):
        m.d.comb += retire_queue.r_en.eq(1)
        m.d.sync += [current.eq(head), retiring.eq(1), p_line.eq(head.acc_addr), later_tile.eq(0)]
    with m.Elif(arrive & instr_end):
        m.d.sync += retiring.eq(0)
    with m.Elif(arrive & tile_end):
        m.d.sync += [later_tile.eq(1), p_line.eq(current.acc_addr)]
    with m.Elif(arrive):
        m.d.sync += p_line.eq(p_line + 1)
    return retire_queue, current, retiring, p_line, later_tile, instr_end


def _shared_update(m: Module, c: AcceleratorConfig, op, old, src, stage, new) -> None:
    """A ``compute_compact`` ``slow_clock`` engine's accumulator update into ``new``: COMPUTE's (the ``stage``
    record: ``old`` plus the partial sums) and ALU's (``old`` with ``src``) through one adder per column, which
    subtracts for MAX (``src > old`` is the sign of ``old - src``); MUL a DSP's product (a small part has DSPs to
    spare: shifts and additions cost the iCEBreaker's 5 x 5 product 89 LUT4); COPY as in :func:`_alu_direct`."""
    k, _ = _alu_multiply(c)
    for col in range(c.cols):
        x, psum = old[col].value, stage.psums[col]
        y = Signal.like(x, name=f"update_y_{col}")
        subtract = Signal(name=f"update_subtract_{col}")
        total = Signal(signed(len(x) + 1), name=f"update_total_{col}")
        m.d.comb += [y.eq(Mux(stage.valid, psum.value, src[col].value)),
                     subtract.eq(~stage.valid & (op == AluOp.MAX)),
                     total.eq(x + Mux(subtract, ~y, y) + subtract)]
        # MUL's factors sign-extended by a bit that is the sign only for MUL, so that synthesis cannot narrow the
        # product below a DSP's minimum width (11 bits) and builds it of LUTs.
        xa, ya = (Cat(v[:k], Mux(op == AluOp.MUL, v[k - 1], 0)).as_signed() for v in (x, y))
        # Every result is one of four values, chosen by a two-bit code shared by the column's bits (a 4:1
        # multiplexer a bit): y is the partial sum written over a line, src copied or MAX's larger.
        take_x, take_y, take_total = (Signal(name=f"update_{n}_{col}") for n in ("x", "y", "total"))
        m.d.comb += [take_total.eq(Mux(stage.valid, stage.accumulate, op == AluOp.ADD)),
                     take_y.eq(Mux(stage.valid, ~stage.accumulate,
                                   (op == AluOp.COPY) | ((op == AluOp.MAX) & total[-1]))),
                     take_x.eq(~stage.valid & (op == AluOp.MAX) & ~total[-1])]
        choice = Signal(2, name=f"update_choice_{col}")
        m.d.comb += choice.eq(Mux(take_total, 0, Mux(take_y, 1, Mux(take_x, 2, 3))))
        with m.Switch(choice):
            with m.Case(0):
                m.d.comb += new[col].value.eq(total)
            with m.Case(1):
                m.d.comb += new[col].value.eq(y)
            with m.Case(2):
                m.d.comb += new[col].value.eq(x)
            with m.Default():
                m.d.comb += new[col].value.eq(xa * ya)
        m.d.comb += new[col].nonfinite.eq(Mux(stage.valid, Mux(stage.accumulate, old[col].nonfinite | psum.nonfinite,
                                                               psum.nonfinite),
                                              Mux(op == AluOp.COPY, src[col].nonfinite,
                                                  old[col].nonfinite | src[col].nonfinite)))

class ComputeEngine(wiring.Component):
    """COMPUTE streams weight tiles and activation lines into the array and adds what comes out into the
    accumulator buffer (read, then add and write: ``ACCUMULATE_LATENCY`` cycles; reads are transparent to the write
    of their own cycle and the line written in between is forwarded, so consecutive updates of one line see each
    other). ALU reads two accumulator lines per cycle and writes the results in element order; it registers its
    operands and its result (``ALU_LATENCY`` cycles), and an element that uses a line an element issued in the two
    cycles before writes waits until that write can be forwarded. A ``slow_clock`` engine updates a line, by COMPUTE
    or ALU, as it leaves the block RAM (``SLOW_ACCUMULATE_LATENCY``): nothing registered, forwarded or waited for."""

    def __init__(self, config: AcceleratorConfig):
        self._config = c = config
        acc_shape = acc_line_layout(c)
        packing = {"mac_packed": Out(1)} if c.packs_per_layer else {}     # with mac_vectors: 2 * rows deep
        super().__init__({
            **packing,
            "control": In(engine_control_signature()),
            "act": read_port(c.act_buffer_depth, unsigned(c.reduction_rows * c.act_slot_bits)),
            "weight": read_port(c.weight_buffer_depth, unsigned(c.cols * c.weight_slot_bits)),
            "acc_a": read_port(c.acc_buffer_depth, acc_shape),
            "acc_b": read_port(c.acc_buffer_depth, acc_shape),
            "acc_w": write_port(c.acc_buffer_depth, acc_shape),
            "mac_vectors": Out(1),     # pulses once per activation vector entering the array
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        rows, cols = c.reduction_rows, c.cols          # lines of a weight tile, codes of an activation line
        seq = Sequencer(m, self.control, defer_push_next=True)
        opcode = seq.word[:HEADER[0].bits]
        comp = data.View(layout_of(KINDS[Opcode.COMPUTE]), seq.word)
        alu = data.View(layout_of(KINDS[Opcode.ALU]), seq.word)
        # Counters start from the instruction as it is accepted (``word`` holds it one cycle later).
        comp_in = data.View(layout_of(KINDS[Opcode.COMPUTE]), seq.incoming)
        alu_in = data.View(layout_of(KINDS[Opcode.ALU]), seq.incoming)
        opcode_in = seq.incoming[:HEADER[0].bits]

        m.submodules.array = array = SystolicArray(c, stalls=False)     # the retire side takes every result
        is_compute = Signal()
        # A compact slow_clock engine's ALU walks its destination lines with the activation walker's registers and
        # adders (the two never run at once: an ALU starts once every COMPUTE is retired).
        shared = (c.compute_compact and c.alu_latency == c.accumulate_latency
                  and c.act_buffer_depth == c.acc_buffer_depth)
        if shared:
            is_alu = Signal()
            m.d.comb += is_alu.eq(self.control.running & (opcode == Opcode.ALU))
        m.d.comb += is_compute.eq(self.control.running & (opcode == Opcode.COMPUTE))
        m.d.comb += self.mac_vectors.eq(array.acts.valid & array.acts.ready)
        if c.packs_per_layer:
            m.d.comb += self.mac_packed.eq(array.acts.payload.packed)

        # --- weights: kernel position (ky, kx), tile row r: consecutive lines ------------------------------------
        weights = _Feeder(m, "weight_feed", self.weight, cols * c.weight_slot_bits, feeder_depth(rows),
                          block_ram=c.compute_compact, split=c.mid_clock)
        w_line = Signal(range(c.weight_buffer_depth))
        w_row = Signal(range(c.packed_reduction_rows))
        # A build that packs per layer: a packed COMPUTE's tile is 2 * rows lines, and each line carries the fact
        # to the array (the feeder's tag) so that it shifts two weights a PE.
        packs = comp.packed if c.packs_per_layer else C(0, 1)
        tile_last = Mux(packs, c.packed_reduction_rows - 1, rows - 1) if c.packs_per_layer else rows - 1
        w_ky, w_kx = Signal.like(comp.kh, name="w_ky"), Signal.like(comp.kw, name="w_kx")
        w_active = Signal()
        with m.If(seq.start & (opcode_in == Opcode.COMPUTE)):
            m.d.sync += [w_line.eq(comp_in.weight_addr), w_row.eq(0), w_ky.eq(0), w_kx.eq(0), w_active.eq(1)]
        m.d.comb += [weights.want.eq(is_compute & w_active), weights.addr.eq(w_line)]
        with m.If(weights.issue):
            m.d.sync += [w_line.eq(w_line + 1), w_row.eq(w_row + 1)]
            with m.If(w_row == tile_last):
                m.d.sync += [w_row.eq(0), w_kx.eq(w_kx + 1)]
                with m.If(w_kx + 1 == comp.kw):
                    m.d.sync += [w_kx.eq(0), w_ky.eq(w_ky + 1)]
                    with m.If(w_ky + 1 == comp.kh):
                        m.d.sync += w_active.eq(0)
        m.d.comb += [array.weights.valid.eq(weights.fifo.r_rdy), array.weights.payload.eq(weights.data),
                     weights.fifo.r_en.eq(array.weights.ready)]
        if c.packs_per_layer:
            m.d.comb += [weights.tag.eq(packs), array.weight_packed.eq(weights.last)]

        # --- activations: kernel position (ky, kx), then output (oy, ox) ---------------------------------
        # A multi-format engine's activation lines carry the COMPUTE's format indices through the FIFO (the next
        # COMPUTE may start while this one's lines still wait in it).
        selects = (len(array.acts.payload.weight_format), len(array.acts.payload.act_format)) \
            if c.multi_format else (0, 0)
        packing = int(c.packs_per_layer)            # and the COMPUTE's packed bit, in a build that packs per layer
        ends = int(c.compute_compact)               # and a compact engine's end-of-COMPUTE tag
        acts = _Feeder(m, "act_feed", self.act, rows * c.act_slot_bits, feeder_depth(rows),
                       1 + sum(selects) + packing + ends, block_ram=c.compute_compact, split=c.mid_clock)
        ky, kx = Signal.like(comp.kh, name="ky"), Signal.like(comp.kw, name="kx")
        oy, ox = Signal.like(comp.out_h, name="oy"), Signal.like(comp.out_w, name="ox")
        if c.compute_compact:       # a legal COMPUTE's out_h * out_w accumulator lines lie in the buffer
            oy, ox = Signal(range(c.acc_buffer_depth), name="oy"), Signal(range(c.acc_buffer_depth), name="ox")
            if shared:              # as the ALU's rows, y_size of them
                oy = Signal.like(alu.y_size, name="oy")
        # Activation line addresses: every line a legal COMPUTE reads lies inside the buffer (the decoder checks it).
        tile_base = Signal(range(c.act_buffer_depth))       # act_addr + ky*dilation*pitch + kx*dilation
        row_base = Signal(range(c.act_buffer_depth))        # tile_base + oy*stride*pitch
        a_addr = Signal(range(c.act_buffer_depth))          # row_base + ox*stride
        a_active = Signal()
        # The steps between rows, kernel rows and kernel positions, from the instruction as it starts: products of a
        # 3- or 4-bit field and another field, by shifts and additions, registered.
        row_step = Signal.like(shift_add(comp.stride, comp.act_pitch), name="row_step")
        dil_row_step = Signal.like(shift_add(comp.dilation, comp.act_pitch), name="dil_row_step")
        kernel_span = Signal.like(shift_add(comp.kw, comp.dilation), name="kernel_span")    # (kw - 1) * dilation
        with m.If(seq.start & (opcode_in == Opcode.COMPUTE)):
            m.d.sync += [ky.eq(0), kx.eq(0), oy.eq(0), ox.eq(0), a_active.eq(1),
                         tile_base.eq(comp_in.act_addr), row_base.eq(comp_in.act_addr), a_addr.eq(comp_in.act_addr),
                         *([] if c.compute_compact else
                           [row_step.eq(shift_add(comp_in.stride, comp_in.act_pitch)),
                            dil_row_step.eq(shift_add(comp_in.dilation, comp_in.act_pitch)),
                            kernel_span.eq(shift_add((comp_in.kw - 1)[:len(comp_in.kw)], comp_in.dilation))])]
        if c.compute_compact:
            # The kernel row's first tile (kx = 0), kept instead of a product to subtract: the next row's is
            # dil_row_step further.
            row_tile = Signal.like(tile_base, name="row_tile")
            with m.If(seq.start & (opcode_in == Opcode.COMPUTE)):
                m.d.sync += row_tile.eq(comp_in.act_addr)
        last_ox = ox + 1 == comp.out_w
        kept_ox = c.compute_compact and c.mid_clock
        if kept_ox:
            # Whether ox is the last output column, a register set as ox moves (its compare and carry chain off the
            # path from ox through the feeder's issue into the activation address: the 1x1 board engine's at 30 MHz).
            last_ox = Signal(name="last_ox")
            with m.If(seq.start & (opcode_in == Opcode.COMPUTE)):
                m.d.sync += last_ox.eq(comp_in.out_w == 1)
        last_oy = oy + 1 == comp.out_h
        if c.compute_compact:
            # Whether oy is the last output row, a register set as oy moves (a compare off the path from oy through
            # the pitch product's choice into the activation address: the 2x2 board engine's critical path). An ALU
            # moves oy too (shared), but each COMPUTE sets it afresh as it starts.
            last_oy = Signal(name="last_oy")
            with m.If(seq.start & (opcode_in == Opcode.COMPUTE)):
                m.d.sync += last_oy.eq(comp_in.out_h == 1)
        last_kx = kx + 1 == comp.kw
        last_ky = ky + 1 == comp.kh
        if c.compute_compact:
            # One product of act_pitch, as it is used: an issue moves to the next output row (stride) or, after the
            # last one, to the next kernel row (dilation), never both.
            row_step = dil_row_step = Signal.like(row_step, name="pitch_step")
            m.d.comb += row_step.eq(shift_add(Mux(last_oy, comp.dilation, comp.stride), comp.act_pitch))
        m.d.comb += [acts.want.eq(is_compute & a_active), acts.addr.eq(a_addr), acts.tag[0].eq(last_ox & last_oy)]
        if ends:
            m.d.comb += acts.tag[-1].eq(last_ox & last_oy & last_kx & last_ky)
        if c.multi_format:
            m.d.comb += acts.tag[1:len(acts.tag) - ends].eq(Cat(comp.weight_format[:selects[0]],     # not the end tag
                                                                comp.act_format[:selects[1]],
                                                                *([comp.packed] if packing else [])))
            m.d.comb += [array.acts.payload.weight_format.eq(acts.extra[:selects[0]]),
                         array.acts.payload.act_format.eq(acts.extra[selects[0]:sum(selects)])]
            if packing:
                m.d.comb += array.acts.payload.packed.eq(acts.extra[sum(selects)])
        step_sum, row_sum = a_addr + comp.stride, row_base + row_step
        if shared:      # the ALU's destination: the next line of a row, the next row
            step_sum, row_sum = Signal.like(a_addr), Signal.like(row_base)
            m.d.comb += [step_sum.eq(a_addr + Mux(is_alu, 1, comp.stride)),
                         row_sum.eq(row_base + Mux(is_alu, alu.dst_stride, row_step))]
        with m.If(acts.issue):
            if kept_ox:
                m.d.sync += last_ox.eq(Mux(last_ox, comp.out_w == 1, ox + 2 == comp.out_w))
            with m.If(~last_ox):
                m.d.sync += [ox.eq(ox + 1), a_addr.eq(step_sum)]
            with m.Elif(~last_oy):
                m.d.sync += [ox.eq(0), oy.eq(oy + 1), row_base.eq(row_sum), a_addr.eq(row_sum)]
                if c.compute_compact:
                    m.d.sync += last_oy.eq(oy + 2 == comp.out_h)
            with m.Else():
                m.d.sync += [ox.eq(0), oy.eq(0)]
                if c.compute_compact:
                    m.d.sync += last_oy.eq(comp.out_h == 1)
                next_tile = Signal.like(tile_base)      # past the last kernel position it may wrap: unused then
                with m.If(~last_kx):
                    m.d.comb += next_tile.eq(tile_base + comp.dilation)
                    m.d.sync += kx.eq(kx + 1)
                with m.Else():
                    if c.compute_compact:
                        m.d.comb += next_tile.eq(row_tile + dil_row_step)
                        m.d.sync += row_tile.eq(next_tile)
                    else:
                        m.d.comb += next_tile.eq(tile_base + dil_row_step - kernel_span)
                    m.d.sync += [kx.eq(0), ky.eq(ky + 1)]
                m.d.sync += [tile_base.eq(next_tile), row_base.eq(next_tile), a_addr.eq(next_tile)]
                with m.If(last_kx & last_ky):
                    m.d.sync += a_active.eq(0)
        m.d.comb += [array.acts.valid.eq(acts.fifo.r_rdy), array.acts.payload.codes.eq(acts.data),
                     array.acts.payload.last.eq(acts.last), acts.fifo.r_en.eq(array.acts.ready)]

        # --- partial sums into the accumulators: the retire side -------------------------------------------
        # COMPUTE ends once its reads are issued (so the next one can start and the array never drains);
        # what comes out of the array is written by the retire side, one descriptor per instruction, and the
        # results-ready token is pushed after the instruction's last write.
        arrive = array.psums.valid
        if c.compute_compact:
            # The vector's tags, delayed as its partial sums through the array (which never stalls here).
            accept = array.acts.valid & array.acts.ready
            tile_end, instr_end = accept & acts.last, accept & acts.extra[-1]
            for _ in range(array.latency):
                tile_end, instr_end = _delayed(m, tile_end), _delayed(m, instr_end)
            retire_queue, current, retiring, p_line, later_tile, last_of_current = _retire_tagged(
                m, c, seq.start & (opcode_in == Opcode.COMPUTE), comp_in, arrive, tile_end, instr_end)
        else:
            taps = shift_add(comp_in.kh, comp_in.kw)
            descriptor = data.StructLayout({"acc_addr": comp_in.acc_addr.shape(), "out_w": comp_in.out_w.shape(),
                                            "out_h": comp_in.out_h.shape(), "tiles": taps.shape(),
                                            "accumulate": unsigned(1), "push_next": unsigned(1)})
            m.submodules.retire_queue = retire_queue = SyncFIFOBuffered(width=descriptor.size,
                                                                        depth=c.retire_queue_depth)
            m.d.comb += [
                retire_queue.w_en.eq(seq.start & (opcode_in == Opcode.COMPUTE)),
                retire_queue.w_data.eq(Cat(comp_in.acc_addr, comp_in.out_w, comp_in.out_h, taps,
                                           comp_in.accumulate, comp_in.push_next)),
            ]
            head = data.View(descriptor, retire_queue.r_data)
            current = Signal(descriptor)
            retiring = Signal()
            p_line = Signal(range(c.acc_buffer_depth))
            # Down-counters (columns, rows and kernel positions still to come, this one included), so that the end of
            # a row, of a tile and of the instruction are compares with 1, not carry chains.
            cols_left = Signal.like(current.out_w)
            rows_left = Signal.like(current.out_h)
            tiles_left = Signal.like(current.tiles)
            later_tile = Signal()               # past the instruction's first kernel position: always accumulate
            last_col, last_row = cols_left == 1, rows_left == 1
            last_of_current = last_col & last_row & (tiles_left == 1)
            take_next = retire_queue.r_rdy & (~retiring | (arrive & last_of_current))
            with m.If(take_next):
                m.d.comb += retire_queue.r_en.eq(1)
                m.d.sync += [current.eq(head), retiring.eq(1), p_line.eq(head.acc_addr), cols_left.eq(head.out_w),
                             rows_left.eq(head.out_h), tiles_left.eq(head.tiles), later_tile.eq(0)]
            with m.Elif(arrive & last_of_current):
                m.d.sync += retiring.eq(0)
            with m.Elif(arrive):
                with m.If(last_col):
                    m.d.sync += cols_left.eq(current.out_w)
                    with m.If(last_row):
                        m.d.sync += [rows_left.eq(current.out_h), tiles_left.eq(tiles_left - 1), later_tile.eq(1),
                                     p_line.eq(current.acc_addr)]
                    with m.Else():
                        m.d.sync += [rows_left.eq(rows_left - 1), p_line.eq(p_line + 1)]
                with m.Else():
                    m.d.sync += [cols_left.eq(cols_left - 1), p_line.eq(p_line + 1)]
        # Read (the address goes out as the partial sums arrive), then wait for the line, register it as it leaves the
        # block RAM, then add and write: the block RAM's output, the forwarding and the adder sit in different cycles.
        # (A slow_clock engine adds and writes as the line leaves the block RAM: c.accumulate_latency.)
        retire = _stages(m, "retire", {"valid": 1, "line": p_line.shape(), "psums": array.psums.payload.shape(),
                                       "accumulate": 1, "push": 1}, c.accumulate_latency)
        reading, stage = retire[0], retire[-1]
        m.d.sync += [reading.valid.eq(arrive), reading.line.eq(p_line), reading.psums.eq(array.psums.payload),
                     reading.accumulate.eq(current.accumulate | later_tile),
                     reading.push.eq(arrive & last_of_current & current.push_next)]
        m.d.comb += self.control.push_next.eq(stage.valid & stage.push)
        background = retiring
        for record in retire:
            background = background | record.valid
        m.d.comb += seq.background.eq(background | retire_queue.r_rdy)
        # An ALU reads the accumulators: it waits until every earlier COMPUTE has written them.
        with m.If(opcode_in == Opcode.ALU):
            m.d.comb += seq.ready.eq(~seq.background & ~retire_queue.r_rdy)
        with m.Else():
            m.d.comb += seq.ready.eq(retire_queue.w_rdy)

        # --- ALU: element (y, x) -------------------------------------------------------------------------------
        if not shared:
            is_alu = Signal()
            m.d.comb += is_alu.eq(self.control.running & (opcode == Opcode.ALU))
        ay, ax = Signal.like(alu.y_size, name="ay"), Signal.like(alu.x_size, name="ax")
        if c.compute_compact:       # a legal ALU's rows of x_size lines lie in the buffer (not its rows: stride 0)
            ax = Signal(range(c.acc_buffer_depth), name="ax")
        # Accumulator line addresses (past the last element they may wrap: unused then).
        a_dst_row, a_src_row, a_dst, a_src = (Signal(range(c.acc_buffer_depth), name=n)
                                              for n in ("alu_dst_row", "alu_src_row", "alu_dst", "alu_src"))
        if shared:
            ay, ax, a_dst_row, a_dst = oy, ox, row_base, a_addr
        alu_active = Signal()
        # Every operation takes its operands ACCUMULATE_LATENCY cycles after the issue and writes two cycles later
        # (the operands and the result are registered): an element waits while one issued in those two cycles writes
        # a line it uses. Whether it uses the line of the element before (``dep_last``) or of the one before that
        # (``dep_before``) is registered as the element before issues, so the wait is a few gates on flip-flops.
        # A slow_clock engine registers neither (accumulate_latency cycles, like COMPUTE's updates): every write is
        # seen in time, and no element waits.
        assert ALU_LATENCY == ACCUMULATE_LATENCY + 2 and c.alu_latency in (ALU_LATENCY, c.accumulate_latency)
        registered = c.alu_latency == ALU_LATENCY
        dep_last, dep_before = Signal(name="alu_dep_last"), Signal(name="alu_dep_before")
        last_dst = Signal.like(a_dst, name="alu_last_dst")
        with m.If(seq.start & (opcode_in == Opcode.ALU)):
            m.d.sync += [ay.eq(0), ax.eq(0), a_dst_row.eq(alu_in.dst_addr), a_src_row.eq(alu_in.src_addr),
                         a_dst.eq(alu_in.dst_addr), a_src.eq(alu_in.src_addr), alu_active.eq(1),
                         *([dep_last.eq(0), dep_before.eq(0)] if registered else [])]
        alu_wait = Signal()
        alu_issue = Signal()
        m.d.comb += alu_issue.eq(is_alu & alu_active & ~alu_wait)
        # The next element's lines (past the last element they may wrap: unused then).
        row_end = Signal()
        next_dst_row, next_src_row = Signal.like(a_dst_row), Signal.like(a_src_row)
        next_dst, next_src = Signal.like(a_dst), Signal.like(a_src)
        if kept_ox:
            # Whether ax is a row's last element, a register set as ax moves (as last_ox: off the path from ax
            # through the next line's choice into the shared activation/destination address).
            row_end = Signal(name="alu_row_end")
            with m.If(seq.start & (opcode_in == Opcode.ALU)):
                m.d.sync += row_end.eq(alu_in.x_size == 1)
            with m.If(alu_issue):
                m.d.sync += row_end.eq(Mux(row_end, alu.x_size == 1, ax + 2 == alu.x_size))
        else:
            m.d.comb += row_end.eq(ax + 1 == alu.x_size)
        m.d.comb += [next_dst_row.eq(row_sum if shared else a_dst_row + alu.dst_stride),
                     next_src_row.eq(a_src_row + alu.src_stride),
                     next_dst.eq(Mux(row_end, next_dst_row, step_sum if shared else a_dst + 1)),
                     next_src.eq(Mux(row_end, next_src_row, a_src + alu.src_step))]
        with m.If(alu_issue):
            m.d.sync += [a_dst.eq(next_dst), a_src.eq(next_src)]
            if registered:
                m.d.sync += [last_dst.eq(a_dst), dep_last.eq((next_dst == a_dst) | (next_src == a_dst)),
                             dep_before.eq((next_dst == last_dst) | (next_src == last_dst))]
            with m.If(row_end):
                m.d.sync += [ax.eq(0), ay.eq(ay + 1), a_dst_row.eq(next_dst_row), a_src_row.eq(next_src_row)]
                with m.If(ay + 1 == alu.y_size):
                    m.d.sync += alu_active.eq(0)
            with m.Else():
                m.d.sync += ax.eq(ax + 1)
        # Like the retire side: read dst and src, wait for the lines, then operate and write.
        alu_records = _stages(m, "alu", {"valid": 1, "line": a_dst.shape(), "src_line": a_src.shape()},
                              c.accumulate_latency)
        alu_reading, alu_stage = alu_records[0], alu_records[-1]
        m.d.sync += [alu_reading.valid.eq(alu_issue), alu_reading.line.eq(a_dst), alu_reading.src_line.eq(a_src)]
        # The element before issued in one of the two cycles before (the last issue was then), or both it and the
        # one before it did (in the cycles just before).
        if registered:
            alu_settling = alu_records[1]
            m.d.comb += alu_wait.eq((dep_last & (alu_reading.valid | alu_settling.valid)) |
                                    (dep_before & alu_reading.valid & alu_settling.valid))

        # --- the accumulator ports --------------------------------------------------------------------------------
        m.d.comb += [self.acc_a.en.eq(1), self.acc_b.en.eq(1),
                     self.acc_a.addr.eq(Mux(is_alu, a_dst, p_line)), self.acc_b.addr.eq(a_src)]
        # The lines, registered as they leave the block RAM, then again with the line written in the cycle after the
        # read in their place (reads are transparent to writes of their own cycle only), then used with the line
        # written in the cycle after that in their place: every write between a read and its update is seen.
        # (A slow_clock engine's lines are updated as they leave the block RAM: the read of the next cycle, transparent
        # to the write, sees the update, and nothing is forwarded.)
        acc_line = acc_line_layout(c)
        forwarding = c.accumulate_latency == ACCUMULATE_LATENCY
        if forwarding:
            written = Signal(acc_line)
            a_line = Mux(alu_reading.valid, alu_reading.line, reading.line)
            a_line_settling = Mux(alu_records[1].valid, alu_records[1].line, retire[1].line)
            old, old_settled, old_hit = _forwarded(m, "a", self.acc_a.data, self.acc_w, written, a_line,
                                                   a_line_settling)
            src, _, _ = _forwarded(m, "b", self.acc_b.data, self.acc_w, written, alu_reading.src_line,
                                   alu_records[1].src_line)
        else:
            old, src = self.acc_a.data, self.acc_b.data
        new = Signal(acc_line)
        if c.compute_compact and c.alu_latency == c.accumulate_latency and not forwarding:
            # One adder for COMPUTE's updates and ALU's ADD and MAX (slow_clock: both update lines as they leave).
            _shared_update(m, c, alu.op, old, src, stage, new)
            with m.If(stage.valid | alu_stage.valid):
                m.d.comb += [self.acc_w.en.eq(1), self.acc_w.addr.eq(Mux(stage.valid, stage.line, alu_stage.line)),
                             self.acc_w.data.eq(new)]
            alu_busy = []
        else:
            alu_busy = self._update(m, c, alu.op, old, src, stage, alu_stage, a_dst.shape(), new, forwarding,
                                    written if forwarding else None, old_hit if forwarding else None,
                                    old_settled if forwarding else None)
        self._complete(m, seq, opcode, w_active, a_active, alu_active, alu_records, alu_busy, alu)
        return m

    def _update(self, m, c, op, old, src, stage, alu_stage, line_shape, new, forwarding, written, old_hit,
                old_settled):
        """The accumulator write: COMPUTE's update of a line, else an ALU element's result; returns the ALU's
        records still in flight after its stage."""
        cols = c.cols
        alu_valid, alu_line, results, alu_nonfinite, alu_busy = _alu_operations(m, c, op, old, src, alu_stage,
                                                                                line_shape)
        with m.If(stage.valid):
            for col in range(cols):
                psum = stage.psums[col]
                with m.If(stage.accumulate):
                    # Both candidate sums, then the forwarding's choice: no multiplexer before the carry chain.
                    total = Mux(old_hit, written[col].value + psum.value, old_settled[col].value + psum.value) \
                        if forwarding else old[col].value + psum.value
                    m.d.comb += [new[col].value.eq(total), new[col].nonfinite.eq(old[col].nonfinite | psum.nonfinite)]
                with m.Else():
                    m.d.comb += [new[col].value.eq(psum.value), new[col].nonfinite.eq(psum.nonfinite)]
            m.d.comb += [self.acc_w.en.eq(1), self.acc_w.addr.eq(stage.line), self.acc_w.data.eq(new)]
        with m.Elif(alu_valid):
            for col in range(cols):
                m.d.comb += [new[col].value.eq(results[col]), new[col].nonfinite.eq(alu_nonfinite[col])]
            m.d.comb += [self.acc_w.en.eq(1), self.acc_w.addr.eq(alu_line), self.acc_w.data.eq(new)]
        if forwarding:
            m.d.sync += written.eq(new)
        return alu_busy

    def _complete(self, m, seq, opcode, w_active, a_active, alu_active, alu_records, alu_busy, alu):
        """An instruction is done once its reads are issued (COMPUTE) or its writes are done (ALU)."""
        with m.If(self.control.running):
            with m.Switch(opcode):
                with m.Case(Opcode.COMPUTE):
                    m.d.comb += seq.done.eq(~w_active & ~a_active)
                with m.Case(Opcode.ALU):
                    done = ~alu_active
                    for busy in [record.valid for record in alu_records] + alu_busy:
                        done = done & ~busy
                    m.d.comb += seq.done.eq(done)
                    m.d.comb += self.control.push_next.eq(seq.done & alu.push_next)
