"""The stepped decoder's range checks as programs, and the cycles each kind's program takes
(``AcceleratorConfig.decode_stepped``; the RTL is hw/decode_steps.py).

Each kind's SRAM and DRAM range checks are a short program of additions, subtractions and shift-and-add products
into one accumulator. Every check is ``end > limit`` (or ``>=``) as ``sw/emulator/checks.py`` writes it, with
``(count - 1) * step`` made as ``count * step - step`` and a comparison as a subtraction whose sign decides, the
DRAM checks in bus words. A step reads its operand a bit per cycle (two with ``decode_pairs``; a product reads its
narrower operand first, in a step of its own), then adds (once, or once per bit of the multiplier). A kind's checks take the sum of its steps'
longest cycles, whatever the word: :func:`decode_cycles` is what the decoder waits for that kind, and what the cycle
model charges its fetch (a kind without range checks waits only for its field checks).
"""

from __future__ import annotations

import functools

from .config import AcceleratorConfig
from .isa import KINDS, Buffer, Opcode
from .layout import line_bytes, output_line_bytes

__all__ = ["PROGRAMS", "IN_BUS_WORDS", "SteppedPlan", "stepped_plan", "decode_cycles", "largest_special",
           "read_cycles"]

# A step: (operation, operand, other operand of a product, clear, flag). ``add``/``sub`` add or subtract the operand;
# ``sub1`` subtracts it and one more (``acc > size`` as ``acc - size - 1 >= 0``); ``mul`` adds the product of both.
# ``clear``: the step's sum starts at 0 (``"T"``: and T takes the previous one). ``flag``: the step is a comparison
# whose non-negative result raises SRAM_RANGE ("sram") or DRAM_RANGE ("dram"). Operands: a field of the kind, ``T``,
# or a name of :func:`largest_special`.
_C, _T, _S, _D = True, "T", "sram", "dram"
PROGRAMS: dict[Opcode, tuple] = {
    Opcode.LOAD: (
        # (pad_top + y_size + pad_bottom) * (pad_left + x_size + pad_right) + sram_addr > depth of the buffer
        ("add", "pad_left", None, _C, None), ("add", "x_size", None, False, None),
        ("add", "pad_right", None, False, None), ("add", "sram_addr", None, _T, None),
        ("mul", "pad_top", "T", False, None), ("mul", "y_size", "T", False, None),
        ("mul", "pad_bottom", "T", False, None), ("sub", "load_depth+1", None, False, _S),
        # dram_addr + (y_size - 1) * dram_stride + x_size * line_bytes(buffer) > dram_size
        ("add", "dram_addr", None, _C, None), ("mul", "y_size", "dram_stride", False, None),
        ("sub", "dram_stride", None, False, None), ("mul", "x_size", "line_bytes", False, None),
        ("sub1", "dram_size", None, False, _D),
    ),
    Opcode.COMPUTE: (
        # act_addr + act_pitch * ((out_h - 1) * stride + (kh - 1) * dilation) + (out_w - 1) * stride
        # + (kw - 1) * dilation >= act depth
        ("mul", "stride", "out_h", _C, None), ("sub", "stride", None, False, None),
        ("mul", "dilation", "kh", False, None), ("sub", "dilation", None, False, None),
        ("add", "act_addr", None, _T, None), ("mul", "act_pitch", "T", False, None),
        ("mul", "stride", "out_w", False, None), ("sub", "stride", None, False, None),
        ("mul", "dilation", "kw", False, None), ("sub", "dilation", None, False, None),
        ("sub", "act_depth", None, False, _S),
        # weight_addr + kh * kw * reduction rows > weight depth
        ("mul", "kh", "kw", _C, None), ("add", "weight_addr", None, _T, None),
        ("mul", "tile_rows", "T", False, None), ("sub", "weight_depth+1", None, False, _S),
        # acc_addr + out_h * out_w > acc depth
        ("add", "acc_addr", None, _C, None), ("mul", "out_h", "out_w", False, None),
        ("sub", "acc_depth+1", None, False, _S),
    ),
    Opcode.ALU: (
        # dst_addr + (y_size - 1) * dst_stride + x_size - 1 >= acc depth
        ("add", "dst_addr", None, _C, None), ("mul", "y_size", "dst_stride", False, None),
        ("sub", "dst_stride", None, False, None), ("add", "x_size", None, False, None),
        ("sub", "acc_depth+1", None, False, _S),
        # src_addr + (y_size - 1) * src_stride + (x_size - 1) * src_step >= acc depth
        ("add", "src_addr", None, _C, None), ("mul", "y_size", "src_stride", False, None),
        ("sub", "src_stride", None, False, None), ("mul", "src_step", "x_size", False, None),
        ("sub", "src_step", None, False, None), ("sub", "acc_depth", None, False, _S),
    ),
    Opcode.STORE: (
        # acc_addr + (y_size - 1) * acc_stride + x_size - 1 >= acc depth
        ("add", "acc_addr", None, _C, None), ("mul", "y_size", "acc_stride", False, None),
        ("sub", "acc_stride", None, False, None), ("add", "x_size", None, False, None),
        ("sub", "acc_depth+1", None, False, _S),
        # param_addr + negative_param >= PARAM depth
        ("add", "param_addr", None, _C, None), ("add", "negative_param", None, False, None),
        ("sub", "param_depth", None, False, _S),
        # dram_addr + (y_size - 1) * dram_stride + x_size * output line bytes > dram_size
        ("add", "dram_addr", None, _C, None), ("mul", "y_size", "dram_stride", False, None),
        ("sub", "dram_stride", None, False, None), ("mul", "x_size", "out_line_bytes", False, None),
        ("sub1", "dram_size", None, False, _D),
    ),
}

#: Fields counted in bus words by the DRAM checks (whole bus words: ``dram_size`` and the line sizes too).
IN_BUS_WORDS = ("dram_addr", "dram_stride")
#: The width the checks allow ``dram_size`` (the engine's register of it is at most this wide).
_DRAM_SIZE_BITS = 32
#: Specials whose value depends on the kind (their operand key carries the opcode).
PER_KIND = ("load_depth+1", "line_bytes", "tile_rows")


def largest_special(name: str, c: AcceleratorConfig) -> int:
    """The largest value of an operand that is not a field: a limit, a constant of the configuration (its value,
    for a constant: hw/decode_steps.py builds those from here)."""
    bus = c.dma_bits // 8
    depths = (c.act_buffer_depth, c.weight_buffer_depth, c.param_buffer_depth, c.lut_buffer_depth)
    if name == "dram_size":         # in bus words
        return (1 << (_DRAM_SIZE_BITS - bus.bit_length() + 1)) - 1
    if name == "load_depth+1":
        return max(depths) + 1
    if name == "line_bytes":
        return max(line_bytes(b, c) // bus for b in Buffer)
    if name == "tile_rows":
        return c.reduction_rows << int(c.packs_per_layer)     # a packed COMPUTE's tiles are twice as many lines
    return {"act_depth": c.act_buffer_depth, "weight_depth+1": c.weight_buffer_depth + 1,
            "acc_depth": c.acc_buffer_depth, "acc_depth+1": c.acc_buffer_depth + 1,
            "param_depth": c.param_buffer_depth, "out_line_bytes": output_line_bytes(c) // bus}[name]


class SteppedPlan:
    """The steps of every kind's program with their operands' keys and largest values, and the cycles and widths
    they need: ``steps[(op, i)] = (operation, m_key, m_max, d_key, d_max, clear, flag)`` (m the multiplier, 1 for
    an addition; d the multiplicand; ``flag`` "sram" or "dram" on a comparison, ``clear`` True or "T"),
    ``cycles[op]``, and the bits of T and of the accumulator."""

    def __init__(self, config: AcceleratorConfig):
        c = config
        align = (c.dma_bits // 8).bit_length() - 1
        self.steps, self.cycles = {}, {}
        #: Where each operand key's value comes from: (kind, field or special name, low bits dropped).
        self.sources: dict = {}
        t_max = acc_max = 0

        def operand(op, kind, name):
            if name in kind.offsets:
                # External-memory addresses and strides in bus words: their low bits are 0 (else BAD_FIELD).
                low = align if name in IN_BUS_WORDS else 0
                bits = kind.field(name).bits - low
                key, largest = ("field", kind.offsets[name] + low, bits), (1 << bits) - 1
            else:
                key, largest = ("special", name, int(op) if name in PER_KIND else 0), largest_special(name, c)
            self.sources.setdefault(key, (op, name, low if name in kind.offsets else 0))
            return key, largest

        for op, program in PROGRAMS.items():
            kind = KINDS[op]
            acc = t = 0
            for i, (kind_op, a, b, clear, flag) in enumerate(program):
                if clear:
                    t, acc = (acc if clear == _T else t), 0
                a_key, a_max = (("T",), t) if a == "T" else operand(op, kind, a)
                if kind_op == "mul":
                    b_key, b_max = (("T",), t) if b == "T" else operand(op, kind, b)
                    if a_max.bit_length() > b_max.bit_length():
                        (a_key, a_max), (b_key, b_max) = (b_key, b_max), (a_key, a_max)
                    acc += a_max * b_max
                    m_key, m_max, d_key, d_max = a_key, a_max, b_key, b_max
                else:
                    if kind_op == "add":
                        acc += a_max
                    m_key, m_max, d_key, d_max = ("one",), 1, a_key, a_max
                self.steps[(op, i)] = (kind_op, m_key, m_max, d_key, d_max, clear, flag)
                t_max, acc_max = max(t_max, t), max(acc_max, acc, d_max)
        # A step: a cycle to set up, one per bit of its operand (per two bits with decode_pairs), then (but for a
        # product's narrower operand, read first) a cycle per bit of the multiplier up to its highest set bit, or
        # one for an addition: at most these.
        for (op, i), (kind_op, _, m_max, _, d_max, _, _) in self.steps.items():
            d_bits, m_bits = max(d_max.bit_length(), 1), max(m_max.bit_length(), 1)
            d_reads, m_reads = read_cycles(d_bits, c), read_cycles(m_bits, c)
            cost = (2 + m_reads + m_bits + d_reads) if kind_op == "mul" else (2 + d_reads)
            if c.mid_clock:     # a cycle before each operand's bits, for the registered bit select
                cost += 2 if kind_op == "mul" else 1
            self.cycles[op] = self.cycles.get(op, 0) + cost
        self.t_bits, self.acc_bits = t_max.bit_length(), acc_max.bit_length() + 2


def read_cycles(bits: int, config: AcceleratorConfig) -> int:
    """Cycles a stepped decoder takes to read an operand of ``bits`` bits: one a bit, or one per two bits with
    ``decode_pairs`` (an odd width's top pair reads one bit above the operand, masked)."""
    return (bits + 1) // 2 if config.decode_pairs else bits


@functools.lru_cache(maxsize=64)
def stepped_plan(config: AcceleratorConfig) -> SteppedPlan:
    """The :class:`SteppedPlan` of ``config`` (cached: the cycle model asks for it at every fetch)."""
    return SteppedPlan(config)


def decode_cycles(config: AcceleratorConfig, opcode: int | None = None) -> int:
    """Cycles from the word to a stepped decoder's result for an instruction of ``opcode``: its kind's program and
    two more (three with ``mid_clock``, whose range flags follow the sum's register, not its carry chain); two (or
    three) for a kind without range checks; the longest kind's for ``None`` or an unknown opcode."""
    return _decode_cycles(config).get(opcode if opcode in _OPCODES else None, 0) + 2 + int(config.mid_clock)


@functools.lru_cache(maxsize=64)
def _decode_cycles(config: AcceleratorConfig) -> dict:
    """{opcode: its program's cycles, None: the longest} (the cycle model asks at every fetch)."""
    cycles = {int(op): n for op, n in stepped_plan(config).cycles.items()}
    return {**cycles, None: max(cycles.values())}


_OPCODES = frozenset(int(op) for op in KINDS)
