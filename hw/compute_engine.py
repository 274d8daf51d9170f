"""The compute engine: COMPUTE (the systolic array fed from the buffers) and ALU (on accumulator lines)."""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .array import SystolicArray
from .buffer_ports import read_port, write_port
from .decoder import layout_of
from .lanes import psum_lane
from .sequencer import Sequencer, engine_control_signature
from .spec.config import AcceleratorConfig
from .spec.isa import HEADER, KINDS, AluOp, Opcode
from .spec.microarchitecture import feeder_depth

__all__ = ["ComputeEngine", "acc_line_layout"]


def acc_line_layout(config: AcceleratorConfig) -> data.ArrayLayout:
    """An accumulator line: one exact sum and its non-finite flag per array column."""
    return data.ArrayLayout(psum_lane(config.acc_bits), config.cols)


class _Feeder:
    """Reads buffer lines in order and offers them as a stream, hiding the one-cycle read latency.

    ``issue`` requests the line at ``addr``; a FIFO holds what arrived until the consumer takes it. Reads
    are issued only while the FIFO has room for them and everything already in flight.
    """

    def __init__(self, m: Module, name: str, port, width: int, depth: int):
        self.fifo = fifo = SyncFIFOBuffered(width=width + 1, depth=depth)
        m.submodules[name] = fifo
        self.port = port
        self.addr = Signal.like(port.addr, name=f"{name}_addr")
        self.tag = Signal(name=f"{name}_tag")
        self.want = Signal(name=f"{name}_want")
        in_flight = Signal(name=f"{name}_in_flight")
        tag_in_flight = Signal(name=f"{name}_tag_in_flight")
        self.issue = Signal(name=f"{name}_issue")
        m.d.comb += [
            self.issue.eq(self.want & (fifo.level + in_flight < depth - 1)),
            port.addr.eq(self.addr), port.en.eq(self.issue),
            fifo.w_en.eq(in_flight), fifo.w_data.eq(Cat(port.data, tag_in_flight)),
        ]
        m.d.sync += [in_flight.eq(self.issue), tag_in_flight.eq(self.tag)]
        self.data = fifo.r_data[:width]
        self.last = fifo.r_data[width]


class ComputeEngine(wiring.Component):
    """COMPUTE streams weight tiles and activation lines into the array and adds what comes out into the
    accumulator buffer (read, add, write: two cycles, with write-transparent reads so consecutive updates
    of one line see each other). ALU reads two accumulator lines per cycle and writes the result a cycle
    later, in element order."""

    def __init__(self, config: AcceleratorConfig):
        self._config = c = config
        acc_shape = acc_line_layout(c)
        super().__init__({
            "control": In(engine_control_signature()),
            "act": read_port(c.act_buffer_depth, unsigned(c.rows * c.acts.bits)),
            "weight": read_port(c.weight_buffer_depth, unsigned(c.cols * c.weights.bits)),
            "acc_a": read_port(c.acc_buffer_depth, acc_shape),
            "acc_b": read_port(c.acc_buffer_depth, acc_shape),
            "acc_w": write_port(c.acc_buffer_depth, acc_shape),
            "mac_vectors": Out(1),     # pulses once per activation vector entering the array
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        rows, cols = c.rows, c.cols
        seq = Sequencer(m, self.control, defer_push_next=True)
        opcode = seq.word[:HEADER[0].bits]
        comp = data.View(layout_of(KINDS[Opcode.COMPUTE]), seq.word)
        alu = data.View(layout_of(KINDS[Opcode.ALU]), seq.word)
        # Counters start from the instruction as it is accepted (``word`` holds it one cycle later).
        comp_in = data.View(layout_of(KINDS[Opcode.COMPUTE]), seq.incoming)
        alu_in = data.View(layout_of(KINDS[Opcode.ALU]), seq.incoming)
        opcode_in = seq.incoming[:HEADER[0].bits]

        m.submodules.array = array = SystolicArray(c)
        is_compute = Signal()
        m.d.comb += is_compute.eq(self.control.running & (opcode == Opcode.COMPUTE))
        m.d.comb += self.mac_vectors.eq(array.acts.valid & array.acts.ready)

        # --- weights: tile t, row r -----------------------------------------------------------------
        weights = _Feeder(m, "weight_feed", self.weight, cols * c.weights.bits, feeder_depth(rows))
        w_line = Signal(16)
        w_left = Signal(16)
        with m.If(seq.start & (opcode_in == Opcode.COMPUTE)):
            m.d.sync += [w_line.eq(comp_in.weight_addr), w_left.eq(comp_in.kh * comp_in.kw * rows)]
        m.d.comb += [weights.want.eq(is_compute & (w_left != 0)), weights.addr.eq(w_line)]
        with m.If(weights.issue):
            m.d.sync += [w_line.eq(w_line + 1), w_left.eq(w_left - 1)]
        m.d.comb += [array.weights.valid.eq(weights.fifo.r_rdy), array.weights.payload.eq(weights.data),
                     weights.fifo.r_en.eq(array.weights.ready)]

        # --- activations: kernel position (ky, kx), then output (oy, ox) ---------------------------------
        acts = _Feeder(m, "act_feed", self.act, rows * c.acts.bits, feeder_depth(rows))
        ky, kx, oy, ox = (Signal(10, name=n) for n in ("ky", "kx", "oy", "ox"))
        tile_base = Signal(20)      # act_addr + ky*dilation*pitch + kx*dilation
        row_base = Signal(20)       # tile_base + oy*stride*pitch
        a_addr = Signal(20)         # row_base + ox*stride
        a_active = Signal()
        row_step = Signal(16)
        dil_row_step = Signal(16)
        m.d.comb += [row_step.eq(comp.stride * comp.act_pitch), dil_row_step.eq(comp.dilation * comp.act_pitch)]
        with m.If(seq.start & (opcode_in == Opcode.COMPUTE)):
            m.d.sync += [ky.eq(0), kx.eq(0), oy.eq(0), ox.eq(0), a_active.eq(1),
                         tile_base.eq(comp_in.act_addr), row_base.eq(comp_in.act_addr), a_addr.eq(comp_in.act_addr)]
        last_ox = ox + 1 == comp.out_w
        last_oy = oy + 1 == comp.out_h
        last_kx = kx + 1 == comp.kw
        last_ky = ky + 1 == comp.kh
        m.d.comb += [acts.want.eq(is_compute & a_active), acts.addr.eq(a_addr), acts.tag.eq(last_ox & last_oy)]
        with m.If(acts.issue):
            with m.If(~last_ox):
                m.d.sync += [ox.eq(ox + 1), a_addr.eq(a_addr + comp.stride)]
            with m.Elif(~last_oy):
                m.d.sync += [ox.eq(0), oy.eq(oy + 1), row_base.eq(row_base + row_step),
                             a_addr.eq(row_base + row_step)]
            with m.Else():
                m.d.sync += [ox.eq(0), oy.eq(0)]
                next_tile = Signal(20)
                with m.If(~last_kx):
                    m.d.comb += next_tile.eq(tile_base + comp.dilation)
                    m.d.sync += kx.eq(kx + 1)
                with m.Else():
                    m.d.comb += next_tile.eq(tile_base + dil_row_step - (comp.kw - 1) * comp.dilation)
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
        descriptor = data.StructLayout({"acc_addr": unsigned(16), "out_w": unsigned(10), "out_h": unsigned(10),
                                        "tiles": unsigned(8), "accumulate": unsigned(1), "push_next": unsigned(1)})
        m.submodules.retire_queue = retire_queue = SyncFIFOBuffered(width=descriptor.size, depth=4)
        m.d.comb += [
            retire_queue.w_en.eq(seq.start & (opcode_in == Opcode.COMPUTE)),
            retire_queue.w_data.eq(Cat(comp_in.acc_addr, comp_in.out_w, comp_in.out_h, comp_in.kh * comp_in.kw,
                                       comp_in.accumulate, comp_in.push_next)),
        ]
        head = data.View(descriptor, retire_queue.r_data)
        current = Signal(descriptor)
        retiring = Signal()
        p_line = Signal(16)
        p_col = Signal(10)
        p_row = Signal(10)
        p_tile = Signal(8)
        m.d.comb += array.psums.ready.eq(1)
        arrive = array.psums.valid
        last_col = p_col + 1 == current.out_w
        last_row = p_row + 1 == current.out_h
        last_of_current = last_col & last_row & (p_tile + 1 == current.tiles)
        take_next = retire_queue.r_rdy & (~retiring | (arrive & last_of_current))
        with m.If(take_next):
            m.d.comb += retire_queue.r_en.eq(1)
            m.d.sync += [current.eq(head), retiring.eq(1), p_line.eq(head.acc_addr), p_col.eq(0), p_row.eq(0),
                         p_tile.eq(0)]
        with m.Elif(arrive & last_of_current):
            m.d.sync += retiring.eq(0)
        with m.Elif(arrive):
            with m.If(last_col):
                m.d.sync += p_col.eq(0)
                with m.If(last_row):
                    m.d.sync += [p_row.eq(0), p_tile.eq(p_tile + 1), p_line.eq(current.acc_addr)]
                with m.Else():
                    m.d.sync += [p_row.eq(p_row + 1), p_line.eq(p_line + 1)]
            with m.Else():
                m.d.sync += [p_col.eq(p_col + 1), p_line.eq(p_line + 1)]
        stage_valid = Signal()
        stage_line = Signal(16)
        stage_psums = Signal.like(array.psums.payload)
        stage_accumulate = Signal()
        stage_push = Signal()
        m.d.sync += [stage_valid.eq(arrive), stage_line.eq(p_line), stage_psums.eq(array.psums.payload),
                     stage_accumulate.eq(current.accumulate | (p_tile != 0)),
                     stage_push.eq(arrive & last_of_current & current.push_next)]
        m.d.comb += self.control.push_next.eq(stage_valid & stage_push)
        m.d.comb += seq.background.eq(retiring | stage_valid | retire_queue.r_rdy)
        # An ALU reads the accumulators: it waits until every earlier COMPUTE has written them.
        with m.If(opcode_in == Opcode.ALU):
            m.d.comb += seq.ready.eq(~seq.background & ~retire_queue.r_rdy)
        with m.Else():
            m.d.comb += seq.ready.eq(retire_queue.w_rdy)

        # --- ALU: element (y, x) -------------------------------------------------------------------------------
        is_alu = Signal()
        m.d.comb += is_alu.eq(self.control.running & (opcode == Opcode.ALU))
        ay, ax = Signal(10), Signal(10)
        a_dst_row, a_src_row, a_dst, a_src = (Signal(20, name=n) for n in ("alu_dst_row", "alu_src_row",
                                                                           "alu_dst", "alu_src"))
        alu_left = Signal(20)
        with m.If(seq.start & (opcode_in == Opcode.ALU)):
            m.d.sync += [ay.eq(0), ax.eq(0), a_dst_row.eq(alu_in.dst_addr), a_src_row.eq(alu_in.src_addr),
                         a_dst.eq(alu_in.dst_addr), a_src.eq(alu_in.src_addr),
                         alu_left.eq(alu_in.y_size * alu_in.x_size)]
        alu_issue = is_alu & (alu_left != 0)
        with m.If(alu_issue):
            m.d.sync += alu_left.eq(alu_left - 1)
            with m.If(ax + 1 == alu.x_size):
                m.d.sync += [ax.eq(0), ay.eq(ay + 1), a_dst_row.eq(a_dst_row + alu.dst_stride),
                             a_src_row.eq(a_src_row + alu.src_stride), a_dst.eq(a_dst_row + alu.dst_stride),
                             a_src.eq(a_src_row + alu.src_stride)]
            with m.Else():
                m.d.sync += [ax.eq(ax + 1), a_dst.eq(a_dst + 1), a_src.eq(a_src + alu.src_step)]
        alu_valid = Signal()
        alu_line = Signal(16)
        m.d.sync += [alu_valid.eq(alu_issue), alu_line.eq(a_dst)]

        # --- the accumulator ports --------------------------------------------------------------------------------
        m.d.comb += [self.acc_a.en.eq(1), self.acc_b.en.eq(1),
                     self.acc_a.addr.eq(Mux(is_alu, a_dst, p_line)), self.acc_b.addr.eq(a_src)]
        old = self.acc_a.data
        new = Signal(acc_line_layout(c))
        with m.If(stage_valid):
            for col in range(cols):
                psum = stage_psums[col]
                with m.If(stage_accumulate):
                    m.d.comb += [new[col].value.eq(old[col].value + psum.value),
                                 new[col].nonfinite.eq(old[col].nonfinite | psum.nonfinite)]
                with m.Else():
                    m.d.comb += [new[col].value.eq(psum.value), new[col].nonfinite.eq(psum.nonfinite)]
            m.d.comb += [self.acc_w.en.eq(1), self.acc_w.addr.eq(stage_line), self.acc_w.data.eq(new)]
        with m.Elif(alu_valid):
            src = self.acc_b.data
            for col in range(cols):
                a, b = old[col].value, src[col].value
                with m.Switch(alu.op):
                    with m.Case(AluOp.MAX):
                        m.d.comb += new[col].value.eq(Mux(b > a, b, a))
                    with m.Case(AluOp.ADD):
                        m.d.comb += new[col].value.eq(a + b)
                    with m.Default():                       # COPY
                        m.d.comb += new[col].value.eq(b)
                with m.If(alu.op == AluOp.COPY):
                    m.d.comb += new[col].nonfinite.eq(src[col].nonfinite)
                with m.Else():
                    m.d.comb += new[col].nonfinite.eq(old[col].nonfinite | src[col].nonfinite)
            m.d.comb += [self.acc_w.en.eq(1), self.acc_w.addr.eq(alu_line), self.acc_w.data.eq(new)]

        # --- completion ------------------------------------------------------------------------------------------
        with m.If(self.control.running):
            with m.Switch(opcode):
                with m.Case(Opcode.COMPUTE):
                    m.d.comb += seq.done.eq((w_left == 0) & ~a_active)
                with m.Case(Opcode.ALU):
                    m.d.comb += seq.done.eq((alu_left == 0) & ~alu_valid)
                    m.d.comb += self.control.push_next.eq(seq.done & alu.push_next)
        return m
