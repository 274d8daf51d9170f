"""Which error an instruction raises, decided from its fields alone (as the hardware decoder does).

Order of precedence, the same in RTL: ILLEGAL_OPCODE, ILLEGAL_DEPENDENCY, BAD_FIELD, SRAM_RANGE, DRAM_RANGE.
DEADLOCK and TOKEN_OVERFLOW arise while running and are the scheduler's business.
"""

from __future__ import annotations

from functools import lru_cache

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import AluOp, Buffer, ErrorCode, IsaError, Kind, Opcode, decode, kind_of
from hw.spec.layout import line_bytes, output_line_bytes

from .plans import compute_rows

__all__ = ["check", "decode_checked"]


@lru_cache(maxsize=1 << 16)
def decode_checked(word: int, config: AcceleratorConfig, dram_size: int) -> tuple[Kind | None, dict, ErrorCode]:
    """Decode ``word`` and check it; returns (kind, fields, error). Cached: a program decodes once however
    often it runs, so the fields dict is shared and must not be changed."""
    try:
        kind = kind_of(word & 0xF)
    except IsaError:
        return None, {}, ErrorCode.ILLEGAL_OPCODE
    flags = {name: (word >> kind.offsets[name]) & 1 for name in ("pop_prev", "pop_next", "push_prev", "push_next")}
    if (flags["pop_prev"] and not kind.may_pop_prev) or (flags["pop_next"] and not kind.may_pop_next) or \
            (flags["push_prev"] and not kind.may_push_prev) or (flags["push_next"] and not kind.may_push_next):
        return kind, {}, ErrorCode.ILLEGAL_DEPENDENCY
    if word >> kind.used_bits:
        return kind, {}, ErrorCode.BAD_FIELD
    kind, fields = decode(word)
    return kind, fields, check(kind, fields, config, dram_size)


def _last(base: int, *extents: tuple[int, int]) -> int:
    """Largest address ``base + sum((count - 1) * step)``."""
    return base + sum((count - 1) * step for count, step in extents)


def check(kind: Kind, f: dict, config: AcceleratorConfig, dram_size: int) -> ErrorCode:
    c = config
    if any(f[x.name] == 0 for x in kind.fields if x.nonzero):
        return ErrorCode.BAD_FIELD
    bus = c.dma_bits // 8
    op = kind.opcode
    if op is Opcode.LOAD:
        if f["buffer"] not in tuple(Buffer):
            return ErrorCode.BAD_FIELD
        buffer = Buffer(f["buffer"])
        padded = f["pad_top"] or f["pad_bottom"] or f["pad_left"] or f["pad_right"]
        if (buffer is not Buffer.ACT and padded) or f["dram_addr"] % bus or f["dram_stride"] % bus:
            return ErrorCode.BAD_FIELD
        if buffer is Buffer.ACT and f["pad_value"] >> c.act_slot_bits:
            return ErrorCode.BAD_FIELD
        depth = {Buffer.ACT: c.act_buffer_depth, Buffer.WEIGHT: c.weight_buffer_depth,
                 Buffer.PARAM: c.param_buffer_depth, Buffer.LUT: c.lut_buffer_depth}[buffer]
        lines = (f["pad_top"] + f["y_size"] + f["pad_bottom"]) * (f["pad_left"] + f["x_size"] + f["pad_right"])
        if f["sram_addr"] + lines > depth:
            return ErrorCode.SRAM_RANGE
        end = f["dram_addr"] + (f["y_size"] - 1) * f["dram_stride"] + f["x_size"] * line_bytes(buffer, c)
        if end > dram_size:
            return ErrorCode.DRAM_RANGE
    elif op is Opcode.COMPUTE:
        if f["weight_format"] >= len(c.weight_formats) or f["act_format"] >= len(c.act_formats):
            return ErrorCode.BAD_FIELD
        if f["packed"] and (f["weight_format"], f["act_format"]) not in c.packed_pairs:
            return ErrorCode.BAD_FIELD
        s, d = f["stride"], f["dilation"]
        act_last = _last(f["act_addr"], (f["out_h"], s * f["act_pitch"]), (f["kh"], d * f["act_pitch"]),
                         (f["out_w"], s), (f["kw"], d))
        if (act_last >= c.act_buffer_depth
                or f["weight_addr"] + f["kh"] * f["kw"] * compute_rows(c, f) > c.weight_buffer_depth
                or f["acc_addr"] + f["out_h"] * f["out_w"] > c.acc_buffer_depth):
            return ErrorCode.SRAM_RANGE
    elif op is Opcode.ALU:
        if f["op"] not in tuple(AluOp):
            return ErrorCode.BAD_FIELD
        if (_last(f["dst_addr"], (f["y_size"], f["dst_stride"]), (f["x_size"], 1)) >= c.acc_buffer_depth
                or _last(f["src_addr"], (f["y_size"], f["src_stride"]), (f["x_size"], f["src_step"]))
                >= c.acc_buffer_depth):
            return ErrorCode.SRAM_RANGE
    elif op is Opcode.SETPP:
        if f["format"] >= len(c.act_formats):
            return ErrorCode.BAD_FIELD
        fmt = c.act_formats[f["format"]]
        if f["clamp_lo"] >> fmt.bits or f["clamp_hi"] >> fmt.bits or (f["lut"] and not c.lut_buffer_depth):
            return ErrorCode.BAD_FIELD
        lo, hi = fmt.decode([f["clamp_lo"], f["clamp_hi"]])
        if not (lo <= hi):          # also false for NaN bounds
            return ErrorCode.BAD_FIELD
    elif op is Opcode.STORE:
        if f["dram_addr"] % bus or f["dram_stride"] % bus or (f.get("packed") and not c.packs_per_layer):
            return ErrorCode.BAD_FIELD
        if (_last(f["acc_addr"], (f["y_size"], f["acc_stride"]), (f["x_size"], 1)) >= c.acc_buffer_depth
                or f["param_addr"] + f["negative_param"] >= c.param_buffer_depth):
            return ErrorCode.SRAM_RANGE
        end = f["dram_addr"] + (f["y_size"] - 1) * f["dram_stride"] + f["x_size"] * output_line_bytes(c)
        if end > dram_size:
            return ErrorCode.DRAM_RANGE
    return ErrorCode.NONE
