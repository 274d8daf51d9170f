"""The instruction decoder: field layouts derived from ``hw/spec/isa.py``, and the static error checks.

The checks, and their precedence, are those of ``sw/emulator/checks.py``: ILLEGAL_OPCODE,
ILLEGAL_DEPENDENCY, BAD_FIELD, SRAM_RANGE, DRAM_RANGE. One cycle of latency (the result is registered).
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .spec.config import AcceleratorConfig
from .spec.isa import HEADER, INSTRUCTION_BITS, KINDS, AluOp, Buffer, ErrorCode, Kind, Opcode
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
    """``word`` in; its ``opcode`` and the ``error`` it raises out, registered on ``en``."""

    def __init__(self, config: AcceleratorConfig):
        self._config = config
        super().__init__({
            "en": In(1),
            "word": In(unsigned(INSTRUCTION_BITS)),
            "dram_size": In(unsigned(32)),
            "opcode": Out(unsigned(HEADER[0].bits)),
            "error": Out(range(max(ErrorCode) + 1)),
        })

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

    def _field_error(self, m: Module, kind: Kind):
        """(bad_field, sram_range, dram_range) as combinational signals for ``kind``."""
        c = self._config
        v = self._view(kind)
        bus = c.dma_bits // 8
        align = bus.bit_length() - 1
        bad = v.unused != 0
        for f in kind.fields:
            if f.nonzero:
                bad = bad | (v[f.name] == 0)
        sram = Const(0)
        dram = Const(0)
        op = kind.opcode

        def misaligned(value):
            return value[:align] != 0 if align else Const(0)

        if op is Opcode.LOAD:
            padded = (v.pad_top | v.pad_bottom | v.pad_left | v.pad_right) != 0
            bad = bad | (v.buffer > max(Buffer)) | ((v.buffer != Buffer.ACT) & padded) | \
                misaligned(v.dram_addr) | misaligned(v.dram_stride) | \
                ((v.buffer == Buffer.ACT) & ((v.pad_value >> c.acts.bits) != 0))
            lines = (v.pad_top + v.y_size + v.pad_bottom) * (v.pad_left + v.x_size + v.pad_right)
            depth = Mux(v.buffer == Buffer.ACT, c.act_buffer_depth,
                        Mux(v.buffer == Buffer.WEIGHT, c.weight_buffer_depth, c.param_buffer_depth))
            sram = (v.sram_addr + lines) > depth
            nbytes = Mux(v.buffer == Buffer.ACT, line_bytes(Buffer.ACT, c),
                         Mux(v.buffer == Buffer.WEIGHT, line_bytes(Buffer.WEIGHT, c), line_bytes(Buffer.PARAM, c)))
            end = v.dram_addr + (v.y_size - 1) * v.dram_stride + v.x_size * nbytes
            dram = end > self.dram_size
        elif op is Opcode.COMPUTE:
            pitch_step = v.stride * v.act_pitch
            dil_step = v.dilation * v.act_pitch
            act_last = (v.act_addr + (v.out_h - 1) * pitch_step + (v.kh - 1) * dil_step
                        + (v.out_w - 1) * v.stride + (v.kw - 1) * v.dilation)
            sram = ((act_last >= c.act_buffer_depth)
                    | ((v.weight_addr + v.kh * v.kw * c.rows) > c.weight_buffer_depth)
                    | ((v.acc_addr + v.out_h * v.out_w) > c.acc_buffer_depth))
        elif op is Opcode.ALU:
            bad = bad | (v.op > max(AluOp))
            dst_last = v.dst_addr + (v.y_size - 1) * v.dst_stride + (v.x_size - 1)
            src_last = v.src_addr + (v.y_size - 1) * v.src_stride + (v.x_size - 1) * v.src_step
            sram = (dst_last >= c.acc_buffer_depth) | (src_last >= c.acc_buffer_depth)
        elif op is Opcode.SETPP:
            fmt = c.acts
            lo, hi = v.clamp_lo, v.clamp_hi
            bad = bad | ((lo >> fmt.bits) != 0) | ((hi >> fmt.bits) != 0) | \
                ~_ordered(m, fmt, lo[:fmt.bits], hi[:fmt.bits])
        elif op is Opcode.STORE:
            bad = bad | misaligned(v.dram_addr) | misaligned(v.dram_stride)
            acc_last = v.acc_addr + (v.y_size - 1) * v.acc_stride + (v.x_size - 1)
            sram = (acc_last >= c.acc_buffer_depth) | (v.param_addr >= c.param_buffer_depth)
            end = v.dram_addr + (v.y_size - 1) * v.dram_stride + v.x_size * output_line_bytes(c)
            dram = end > self.dram_size
        return bad, sram, dram

    def elaborate(self, platform):
        m = Module()
        opcode = self.word[:HEADER[0].bits]
        error = Signal.like(self.error)
        with m.Switch(opcode):
            for op, kind in KINDS.items():
                with m.Case(op):
                    bad, sram, dram = self._field_error(m, kind)
                    with m.If(self._flags_error(kind)):
                        m.d.comb += error.eq(ErrorCode.ILLEGAL_DEPENDENCY)
                    with m.Elif(bad):
                        m.d.comb += error.eq(ErrorCode.BAD_FIELD)
                    with m.Elif(sram):
                        m.d.comb += error.eq(ErrorCode.SRAM_RANGE)
                    with m.Elif(dram):
                        m.d.comb += error.eq(ErrorCode.DRAM_RANGE)
            with m.Default():
                m.d.comb += error.eq(ErrorCode.ILLEGAL_OPCODE)
        with m.If(self.en):
            m.d.sync += [self.opcode.eq(opcode), self.error.eq(error)]
        return m


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
