"""What an instruction reads and writes (:func:`footprint`), and the token analysis that proves a program
race-free under any timing (:func:`check_schedule`)."""

from __future__ import annotations

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import INSTRUCTION_BYTES, KINDS, Buffer, Opcode, decode
from hw.spec.layout import line_bytes, output_line_bytes
from sw.emulator.order import QUEUES, TokenAnalysis, analyse_tokens

from .common import _ENGINE, _ENGINE_NAME


# --- what an instruction touches ---------------------------------------------------------------------------

_SPACE_ACT, _SPACE_WEIGHT, _SPACE_PARAM, _SPACE_ACC, _SPACE_DRAM, _SPACE_LUT = range(6)
_SPACE_NAMES = ("act line", "weight line", "param line", "acc line", "memory beat at byte", "lut line")
_SPACE_OF_BUFFER = {Buffer.ACT: _SPACE_ACT, Buffer.WEIGHT: _SPACE_WEIGHT, Buffer.PARAM: _SPACE_PARAM,
                    Buffer.LUT: _SPACE_LUT}


def _key(space: int, address: int) -> int:
    return (space << 48) | address


def _describe_key(key: int, bus: int) -> str:
    space, address = key >> 48, key & ((1 << 48) - 1)
    return f"{_SPACE_NAMES[space]} {address * bus if space == _SPACE_DRAM else address:#x}"


def _beats(start: int, nbytes: int, bus: int) -> range:
    return range(start // bus, -(-(start + nbytes) // bus))


def footprint(opcode: Opcode, f: dict, config: AcceleratorConfig) -> tuple[frozenset, frozenset]:
    """(reads, writes) of one instruction: buffer lines and memory beats, as opaque keys.

    The post-processing registers are left out: only the store engine uses them. Every STORE counts as reading
    the whole LUT buffer (whether it does depends on the SETPP before it, which only the store engine sees).
    """
    c = config
    bus = c.dma_bits // 8
    reads, writes = set(), set()
    if opcode is Opcode.LOAD:
        buffer = Buffer(f["buffer"])
        nbytes = line_bytes(buffer, c)
        height = f["pad_top"] + f["y_size"] + f["pad_bottom"]
        width = f["pad_left"] + f["x_size"] + f["pad_right"]
        space = _SPACE_OF_BUFFER[buffer]
        writes.update(_key(space, f["sram_addr"] + i) for i in range(height * width))
        for y in range(f["y_size"]):
            row = f["dram_addr"] + y * f["dram_stride"]
            reads.update(_key(_SPACE_DRAM, b) for b in _beats(row, f["x_size"] * nbytes, bus))
    elif opcode is Opcode.COMPUTE:
        for ky in range(f["kh"]):
            for kx in range(f["kw"]):
                for oy in range(f["out_h"]):
                    for ox in range(f["out_w"]):
                        reads.add(_key(_SPACE_ACT, f["act_addr"] + (oy * f["stride"] + ky * f["dilation"])
                                       * f["act_pitch"] + ox * f["stride"] + kx * f["dilation"]))
        depth = c.compute_reduction_rows(f.get("weight_format", 0), f.get("act_format", 0), f.get("packed", 0))
        reads.update(_key(_SPACE_WEIGHT, f["weight_addr"] + i) for i in range(f["kh"] * f["kw"] * depth))
        acc = {_key(_SPACE_ACC, f["acc_addr"] + i) for i in range(f["out_h"] * f["out_w"])}
        writes.update(acc)
        if f["accumulate"] or f["kh"] * f["kw"] > 1:
            reads.update(acc)
    elif opcode is Opcode.ALU:
        dst = {_key(_SPACE_ACC, f["dst_addr"] + y * f["dst_stride"] + x)
               for y in range(f["y_size"]) for x in range(f["x_size"])}
        reads.update(dst)
        reads.update(_key(_SPACE_ACC, f["src_addr"] + y * f["src_stride"] + x * f["src_step"])
                     for y in range(f["y_size"]) for x in range(f["x_size"]))
        writes.update(dst)
    elif opcode is Opcode.STORE:
        reads.update(_key(_SPACE_ACC, f["acc_addr"] + y * f["acc_stride"] + x)
                     for y in range(f["y_size"]) for x in range(f["x_size"]))
        reads.update(_key(_SPACE_PARAM, f["param_addr"] + i) for i in range(1 + f.get("negative_param", 0)))
        reads.update(_key(_SPACE_LUT, line) for line in range(c.lut_buffer_depth))
        nbytes = output_line_bytes(c)
        for y in range(f["y_size"]):
            row = f["dram_addr"] + y * f["dram_stride"]
            writes.update(_key(_SPACE_DRAM, b) for b in _beats(row, f["x_size"] * nbytes, bus))
    return frozenset(reads), frozenset(writes)


def _conflict(a: tuple[frozenset, frozenset], b: tuple[frozenset, frozenset]) -> frozenset:
    """Keys that ``a`` and ``b`` both touch, at least one of them writing."""
    return (a[1] & (b[0] | b[1])) | (a[0] & b[1])


# --- token analysis (sw.emulator.order) ---------------------------------------------------------------------

_Analysis, _QUEUES, _analyse = TokenAnalysis, QUEUES, analyse_tokens


def _decode_program(words: list[int]) -> list[tuple[Opcode, dict]]:
    out = []
    for w in words:
        kind, values = decode(w)
        out.append((kind.opcode, values))
        if kind.opcode is Opcode.FINISH:
            break
    return out


def check_schedule(config: AcceleratorConfig, words: list[int], program_addr: int = 0) -> list[str]:
    """Why ``words`` (legal instructions up to FINISH) could behave differently under different timings.

    Lists pops that no earlier instruction's push feeds (a possible deadlock), pushes that could find their
    queue full, and pairs of instructions of different engines that touch one line or beat, one writing,
    without being ordered by tokens. An empty list means the program is race-free.
    """
    bus = config.dma_bits // 8
    decoded = [(op, f) for op, f in _decode_program(words) if op is not Opcode.FINISH]
    engines = [_ENGINE[KINDS[op].queue] for op, _ in decoded]
    a = _analyse([(e, f) for e, (_, f) in zip(engines, decoded)])
    problems = [f"instruction {i} pops from the {_ENGINE_NAME[q[0]]}->{_ENGINE_NAME[q[1]]} queue, which no "
                f"earlier push feeds" for i, q in a.unmatched]
    problems += [f"instruction {i} may push onto a full {_ENGINE_NAME[q[0]]}->{_ENGINE_NAME[q[1]]} queue"
                 for i, q, _ in a.overflows]
    prints = [footprint(op, f, config) for op, f in decoded]
    program = {_key(_SPACE_DRAM, b) for b in _beats(program_addr, len(words) * INSTRUCTION_BYTES, bus)}
    for i, (op, _) in enumerate(decoded):
        if prints[i][1] & program:
            problems.append(f"instruction {i} ({op.name}) writes over the program")
        for j in range(i + 1, len(decoded)):
            if engines[i] == engines[j] or a.before(i, engines[i], a.clock[j]):
                continue
            shared = _conflict(prints[i], prints[j])
            if shared:
                problems.append(f"instructions {i} ({decoded[i][0].name}) and {j} ({decoded[j][0].name}) race on "
                                f"{_describe_key(min(shared), bus)} ({len(shared)} places)")
    return problems
