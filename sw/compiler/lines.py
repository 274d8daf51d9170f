"""Tensor lines on a rectangular array: the LOADs and STOREs of a job when a tensor's line in external memory is
longer than the line the instruction moves.

A feature map's lines sit :func:`~hw.spec.layout.tensor_line_bytes` apart (the larger of an activation line and
an output line), while a LOAD of ACT lines reads a row of lines ``line_bytes(ACT)`` apart and a STORE writes a row
of output lines ``output_line_bytes`` apart. On a square array the three are equal and nothing here changes an
instruction. Otherwise:

- a tall array (``rows > cols``) has output lines shorter than tensor lines: each STORE row becomes STOREs of one
  line per row (``x_size`` 1), their rows a tensor line apart;
- a wide array (``cols > rows``) has activation lines shorter than tensor lines: each LOAD row becomes a LOAD of
  one line per row, the row's left and right padding its padding rows, and padding rows of the patch (above
  and below) a LOAD that reads one row of padding lines again and again (``dram_stride`` 0) from a region the
  compiler fills with the padding code.
"""

from __future__ import annotations

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import Buffer, KINDS, Opcode
from hw.spec.layout import line_bytes, output_line_bytes, pack_lines, tensor_line_bytes

__all__ = ["needs_strided_loads", "act_loads", "padding_row", "output_stores"]


def field_max(opcode: Opcode, name: str) -> int:
    """The largest value instruction field ``name`` of ``opcode`` holds (hw/spec/isa.py)."""
    return KINDS[opcode].field(name).max


def needs_strided_loads(config: AcceleratorConfig) -> bool:
    """Activation lines are shorter than a tensor's lines (a wide array whose output line has more bus beats)."""
    return line_bytes(Buffer.ACT, config) < tensor_line_bytes(config)


def padding_row(b, name: str, lines: int, pad_value: int, padding: tuple) -> int | None:
    """Address of a region of ``lines`` activation lines holding ``pad_value`` in every lane, which a wide
    array's padding rows load (``b``: the program builder); None where a job needs none (no padding rows, or
    LOADs that pad by themselves)."""
    c = b.config
    if not needs_strided_loads(c) or not (padding[0] or padding[2]):
        return None
    data = pack_lines(np.full((lines, c.reduction_rows), pad_value, dtype=np.int64), c.act_slot_bits, line_bytes(Buffer.ACT, c))
    return b.region(f"{name}.pad", data).addr


def act_loads(config: AcceleratorConfig, fields: dict, pad_addr: int | None) -> list[tuple[str, dict]]:
    """The LOADs that fill an activation patch as ``fields`` (one LOAD whose source lines sit a tensor line
    apart within a row) describes it: that LOAD itself unless :func:`needs_strided_loads`. ``pad_addr``: a
    :func:`padding_row` of at least the patch's pitch, needed when the patch has padding rows."""
    if not needs_strided_loads(config):
        return [("LOAD", fields)]
    f = fields
    tlb = tensor_line_bytes(config)
    top, bottom, left, right = f["pad_top"], f["pad_bottom"], f["pad_left"], f["pad_right"]
    rows, per_row = f["y_size"], f["x_size"]
    pitch = left + per_row + right
    base = dict(buffer=Buffer.ACT, pad_value=f["pad_value"])
    loads = []

    def padding(sram_addr, count):
        if pad_addr is None:
            raise ValueError("a patch with padding rows needs a padding row region")
        loads.append(("LOAD", dict(base, sram_addr=sram_addr, dram_addr=pad_addr, y_size=count, x_size=pitch,
                                   dram_stride=0, pad_top=0, pad_bottom=0, pad_left=0, pad_right=0)))
    if top:
        padding(f["sram_addr"], top)
    contiguous = left == right == 0 and (rows == 1 or f["dram_stride"] == per_row * tlb)
    if contiguous and rows * per_row <= field_max(Opcode.LOAD, "y_size"):
        groups = [(0, rows * per_row)]                 # the whole patch as one column of lines
    else:
        groups = [(y, per_row) for y in range(rows)]
    for y, count in groups:
        loads.append(("LOAD", dict(base, sram_addr=f["sram_addr"] + (top + y) * pitch,
                                   dram_addr=f["dram_addr"] + y * f["dram_stride"], y_size=count, x_size=1,
                                   dram_stride=tlb, pad_top=left, pad_bottom=right, pad_left=0, pad_right=0)))
    if bottom:
        padding(f["sram_addr"] + (top + rows) * pitch, bottom)
    return loads


def output_stores(config: AcceleratorConfig, stores: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """``stores`` (rows of output lines a tensor line apart) as the STOREs that write them: themselves unless
    output lines are shorter than a tensor's lines (a tall array)."""
    tlb = tensor_line_bytes(config)
    if output_line_bytes(config) == tlb:
        return stores
    out = []
    for opcode, f in stores:
        y_size, x_size = f["y_size"], f["x_size"]
        acc_stride, dram_stride = f.get("acc_stride", 0), f.get("dram_stride", 0)
        if x_size == 1:
            out.append((opcode, f))
            continue
        if ((y_size == 1 or (acc_stride == x_size and dram_stride == x_size * tlb))
                and y_size * x_size <= field_max(Opcode.STORE, "y_size")):
            rows = [(0, y_size * x_size)]               # one column of lines
        else:
            rows = [(y, x_size) for y in range(y_size)]
        for y, count in rows:
            out.append((opcode, dict(f, acc_addr=f["acc_addr"] + y * acc_stride,
                                     dram_addr=f["dram_addr"] + y * dram_stride, y_size=count, x_size=1,
                                     acc_stride=1, dram_stride=tlb)))
    return out
