"""The independent reference: a program run one instruction at a time with plain loops and the golden model
(:mod:`sw.golden`), sharing no code with the emulator (:func:`reference_run`)."""

from __future__ import annotations

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import PACKED_INT_BITS
from hw.spec.isa import INSTRUCTION_BYTES, AluOp, Buffer, Opcode, decode
from hw.spec.layout import PARAM_ENTRY_BYTES, line_bytes, output_line_bytes
from sw.golden.gemm import gemm
from sw.golden.postprocess import rescale

from .common import StoreRecord


# --- the independent reference -----------------------------------------------------------------------------

def _unpack(data: bytes, count: int, bits: int) -> list[int]:
    value = int.from_bytes(data, "little")
    mask = (1 << bits) - 1
    return [(value >> (i * bits)) & mask for i in range(count)]


def _pack(codes, bits: int, nbytes: int, garbage: int = 0) -> bytes:
    value = 0
    for i, code in enumerate(codes):
        value |= int(code) << (i * bits)
    used = len(codes) * bits
    value |= (garbage << used) & ((1 << (nbytes * 8)) - 1)
    return value.to_bytes(nbytes, "little")


def _param_entries(data: bytes, cols: int) -> tuple[list[int], list[int], list[int]]:
    bias, multiplier, shift = [], [], []
    for col in range(cols):
        entry = data[col * PARAM_ENTRY_BYTES:(col + 1) * PARAM_ENTRY_BYTES]
        bias.append(int.from_bytes(entry[0:8], "little", signed=True))
        multiplier.append(int.from_bytes(entry[8:12], "little", signed=True))
        shift.append(entry[12])
    return bias, multiplier, shift


class _Reference:
    """The ISA run one instruction at a time, with plain loops over lines: the meaning of a race-free program.

    Reading a buffer line no instruction has written raises KeyError: generated programs never rely on
    what a buffer holds after reset.
    """

    def __init__(self, config: AcceleratorConfig, dram: bytearray):
        c = self.config = config
        self.dram = dram
        self.act, self.weight, self.param, self.acc, self.lut = {}, {}, {}, {}, {}
        # The last accumulator line is the barriers' scratch line: what it holds is never stored.
        self.acc[c.acc_buffer_depth - 1] = ([0] * c.cols, [False] * c.cols)
        self.zero_point, self.clamp_lo, self.clamp_hi, self.use_lut, self.out_format = 0, 0, 0, 0, 0
        self.macs = 0
        self.nonfinite = False
        self.stores: list[StoreRecord] = []

    def wrap(self, v: int) -> int:
        bits = self.config.acc_bits
        return ((v + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))

    def run(self, index: int, op: Opcode, f: dict) -> None:
        getattr(self, op.name.lower())(index, f)

    def load(self, index: int, f: dict) -> None:
        c = self.config
        buffer = Buffer(f["buffer"])
        nbytes = line_bytes(buffer, c)
        width = f["pad_left"] + f["x_size"] + f["pad_right"]
        height = f["pad_top"] + f["y_size"] + f["pad_bottom"]
        for y in range(height):
            for x in range(width):
                line = f["sram_addr"] + y * width + x
                sy, sx = y - f["pad_top"], x - f["pad_left"]
                if not (0 <= sy < f["y_size"] and 0 <= sx < f["x_size"]):
                    assert buffer is Buffer.ACT, "only activation loads have padding"
                    self.act[line] = [f["pad_value"]] * c.reduction_rows
                    continue
                at = f["dram_addr"] + sy * f["dram_stride"] + sx * nbytes
                data = bytes(self.dram[at:at + nbytes])
                if buffer is Buffer.ACT:
                    self.act[line] = _unpack(data, c.reduction_rows, c.act_slot_bits)
                elif buffer is Buffer.WEIGHT:
                    self.weight[line] = _unpack(data, c.cols, c.weight_slot_bits)
                elif buffer is Buffer.LUT:
                    self.lut[line] = _unpack(data, c.cols, c.act_slot_bits)
                else:
                    self.param[line] = _param_entries(data, c.cols)

    def compute(self, index: int, f: dict) -> None:
        c = self.config
        # The selected formats' codes are the low bits of each slot; products enter in the accumulators' units.
        wf, af = c.weight_formats[f["weight_format"]], c.act_formats[f["act_format"]]
        shift = c.pair_shift(wf, af)
        # packed (a pair the build packs, hw/spec/config.py): a tile of ``depth`` lines, and slot r of an activation
        # line holds reduction rows values*r + k, code k at bits k * PACKED_INT_BITS.
        depth = c.compute_reduction_rows(f.get("weight_format", 0), f.get("act_format", 0), f.get("packed", 0))
        values = depth // c.reduction_rows

        def codes(line):
            return [slot >> (k * PACKED_INT_BITS) for slot in line for k in range(values)] if values > 1 else line

        for ky in range(f["kh"]):
            for kx in range(f["kw"]):
                tile = f["weight_addr"] + (ky * f["kw"] + kx) * depth
                w = np.array([self.weight[tile + r] for r in range(depth)], dtype=np.int64) % (1 << wf.bits)
                lines, vectors = [], []
                for oy in range(f["out_h"]):
                    for ox in range(f["out_w"]):
                        row = oy * f["stride"] + ky * f["dilation"]
                        col = ox * f["stride"] + kx * f["dilation"]
                        vectors.append(codes(self.act[f["act_addr"] + row * f["act_pitch"] + col]))
                        lines.append(f["acc_addr"] + oy * f["out_w"] + ox)
                r = gemm(np.array(vectors, dtype=np.int64) % (1 << af.bits), w, af, wf)
                overwrite = ky == 0 and kx == 0 and not f["accumulate"]
                for n, line in enumerate(lines):
                    value = [int(v) << shift for v in r.value[n]]
                    flags = [bool(v) for v in r.nonfinite[n]]
                    if not overwrite:
                        old, old_flags = self.acc[line]
                        value = [a + b for a, b in zip(old, value)]
                        flags = [a or b for a, b in zip(old_flags, flags)]
                    self.acc[line] = ([self.wrap(v) for v in value], flags)
                self.macs += len(lines) * depth * c.cols

    def alu(self, index: int, f: dict) -> None:
        for y in range(f["y_size"]):            # one element after the other: overlaps see earlier results
            for x in range(f["x_size"]):
                dst = f["dst_addr"] + y * f["dst_stride"] + x
                src = f["src_addr"] + y * f["src_stride"] + x * f["src_step"]
                (a, fa), (b, fb) = self.acc[dst], self.acc[src]
                op = AluOp(f["op"])
                if op is AluOp.COPY:
                    self.acc[dst] = (list(b), list(fb))
                    continue
                if op is AluOp.MAX:
                    value = [max(u, v) for u, v in zip(a, b)]
                elif op is AluOp.MUL:         # each operand's low k bits, as a signed number
                    k = self.config.alu_mul_bits
                    low = [[(v & ((1 << k) - 1)) - ((v >> (k - 1) & 1) << k) for v in line] for line in (a, b)]
                    value = [self.wrap(u * v) for u, v in zip(*low)]
                else:
                    value = [self.wrap(u + v) for u, v in zip(a, b)]
                self.acc[dst] = (value, [u or v for u, v in zip(fa, fb)])

    def setpp(self, index: int, f: dict) -> None:
        self.zero_point, self.clamp_lo, self.clamp_hi = f["zero_point"], f["clamp_lo"], f["clamp_hi"]
        self.use_lut, self.out_format = f["lut"], f["format"]

    def store(self, index: int, f: dict) -> None:
        c = self.config
        bias, multiplier, shift = self.param[f["param_addr"]]
        nbytes = output_line_bytes(c)
        values, flags, addresses = [], [], []
        for y in range(f["y_size"]):
            for x in range(f["x_size"]):
                value, nonfinite = self.acc[f["acc_addr"] + y * f["acc_stride"] + x]
                values.append(value)
                flags.append(nonfinite)
                addresses.append(f["dram_addr"] + y * f["dram_stride"] + x * nbytes)
        def rescaled(m, s):
            return rescale(np.array(values, dtype=object), np.array(flags, dtype=bool), c.acc_exponent,
                           bias, m, s, c.act_formats[self.out_format], self.zero_point, self.clamp_lo,
                           self.clamp_hi, acc_bits=c.acc_bits)
        codes = rescaled(multiplier, shift)
        if f["negative_param"]:
            # Line param_addr + 1's multiplier and shift where acc + bias (saturated) is negative, column by column.
            _, m_neg, s_neg = self.param[f["param_addr"] + 1]
            lo, hi = -(1 << (c.acc_bits - 1)), (1 << (c.acc_bits - 1)) - 1
            negative = np.array([[int(v) + min(max(int(b), lo), hi) < 0 for v, b in zip(row, bias)] for row in values])
            codes = np.where(negative, rescaled(m_neg, s_neg), codes)
        if self.use_lut:
            # Entry q: code q % per of LUT line q // per (the ISA's words, read line by line).
            per = c.lut_entries_per_line
            codes = np.array([[self.lut[int(q) // per][int(q) % per] for q in row] for row in codes])
        self.nonfinite |= bool(np.any(flags))
        lines = []
        for at, row in zip(addresses, codes):
            if f.get("packed"):
                # STORE.packed: slot r holds the low four bits of code 2r at bits 0..3 and of code 2r+1 at 4..7.
                row = [(int(row[2 * r]) % 16) + (int(row[2 * r + 1]) % 16) * 16 for r in range(len(row) // 2)]
            data = _pack(row, c.act_slot_bits, nbytes)
            self.dram[at:at + nbytes] = data
            lines.append((at, data))
        self.stores.append(StoreRecord(index, tuple(lines), np.asarray(codes)))


def reference_run(config: AcceleratorConfig, dram: bytes, program_addr: int = 0) -> _Reference:
    """Run the program at ``program_addr`` one instruction at a time; the result holds ``dram``, ``stores``,
    ``macs`` and ``nonfinite``. Only meaningful for a race-free legal program."""
    ref = _Reference(config, bytearray(dram))
    pc = 0
    while True:
        at = program_addr + pc * INSTRUCTION_BYTES
        kind, values = decode(int.from_bytes(ref.dram[at:at + INSTRUCTION_BYTES], "little"))
        if kind.opcode is Opcode.FINISH:
            return ref
        ref.run(pc, kind.opcode, values)
        pc += 1
