"""Random whole programs for one configuration: run each on the RTL engine and on the emulator, compare memory.

A legal program is a few *tiles*, each the classic pattern of an accelerated layer: LOADs of parameters,
weights and activations (random padding and pad value) -> COMPUTEs (GEMMs, and convolutions with random
kernel, stride, dilation and padding, several of them accumulating into one accumulator region) -> optional
ALU operations (MAX or ADD between accumulator lines, with steps and strides) -> SETPP (random zero point
and clamps) -> STOREs (random blocks, strides and parameter lines). Tiles alternate between two halves of
every buffer (double buffering), may be software-pipelined (the next tile's loads issued before this one's
computes), may read the output of an earlier tile back from external memory, and may write their output over
an input nobody reads any more.

Tokens are not placed by hand: :func:`random_program` lists what every instruction reads and writes
(:func:`footprint`) and gives each instruction exactly the pops it needs so that every pair of instructions of
different engines that touch one buffer line or memory beat, one of them writing, is ordered by program
order whatever the timing: ``LOAD push_next``/``COMPUTE pop_prev`` for data, ``COMPUTE push_next``/``STORE
pop_prev`` for results, and the reverse tokens when a buffer region is overwritten while an earlier user of
another engine might still need it. Load and store are not neighbours: an order between them goes through a
compute-engine instruction that is already ordered after the first one, or through a one-line ``ALU MAX`` on a
scratch accumulator line (a *barrier*) inserted for that purpose. A token queue holds ``TOKEN_QUEUE_DEPTH``
tokens: when the producer of a queue could run far enough ahead of its consumer to push onto a full queue,
the producer is made to wait for the consumer (:func:`check_schedule` proves neither can happen).

Every pop matches a push of an earlier instruction, so no legal program can deadlock, and the result of a
race-free program is that of running its instructions one at a time in program order: that is what
:func:`reference_run` does, with its own loops and the golden model (:mod:`sw.golden`), independently of the
emulator, to give each program's expected external memory.

Data: codes are drawn among the finite codes of a format or, in about a third of the programs ("all codes" in
the description), among all codes, NaN and Inf included; pad values are mostly the code of zero. In half the
programs ("padding garbage") the unused bits that pad each packed line to whole bus beats hold random bits,
which the engine must ignore; every other byte of memory starts random too. Parameters scale most outputs
into the output format (some saturate); one column in ten gets any bias, multiplier and shift (0..63).

:func:`illegal_program` puts one faulty instruction (or a deadlock, or a token overflow) after a legal prefix.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import IntFormat, product_of
from hw.spec.isa import (HEADER, INSTRUCTION_BITS, INSTRUCTION_BYTES, KINDS, TOKEN_QUEUE_DEPTH, AluOp, Buffer,
                         ErrorCode, IsaError, Opcode, Queue, decode, encode)
from hw.spec.layout import PARAM_ENTRY_BYTES, line_bytes, output_line_bytes
from sw.compiler.program import Program as BaseProgram
from sw.golden.gemm import gemm
from sw.golden.postprocess import rescale

__all__ = ["ILLEGAL_KINDS", "Program", "StoreRecord", "random_program", "illegal_program", "footprint",
           "check_schedule", "reference_run"]

#: The kinds of faulty program :func:`illegal_program` builds, and the error each one must raise.
ILLEGAL_KINDS: dict[str, ErrorCode] = {
    "opcode": ErrorCode.ILLEGAL_OPCODE,
    "dependency": ErrorCode.ILLEGAL_DEPENDENCY,
    "bad_field": ErrorCode.BAD_FIELD,
    "sram_range": ErrorCode.SRAM_RANGE,
    "dram_range": ErrorCode.DRAM_RANGE,
    "deadlock": ErrorCode.DEADLOCK,
    "token_overflow": ErrorCode.TOKEN_OVERFLOW,
}

#: Whether ALU instructions may update one destination line several times (``dst_stride < x_size``); the ISA
#: defines it (one element after the other), tests/sim/test_programs.py::test_emulator_alu_repeated_destination
#: pins it.
REPEATED_ALU_DESTINATIONS = True

_FLAGS = tuple(f.name for f in HEADER[1:])          # pop_prev, pop_next, push_prev, push_next
_FLAG_BIT = {name: KINDS[Opcode.LOAD].offsets[name] for name in _FLAGS}

# Engines as indices in pipeline order: a neighbour is one index away; queue (a, b) carries tokens from a to b.
_LOAD, _COMPUTE, _STORE = 0, 1, 2
_ENGINE = {Queue.LOAD: _LOAD, Queue.COMPUTE: _COMPUTE, Queue.STORE: _STORE}
_ENGINE_NAME = ("load", "compute", "store")


# --- programs --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoreRecord:
    """What one STORE of a legal program must leave in external memory: ``(byte address, line bytes)``."""

    index: int                      # instruction index of the STORE
    lines: tuple[tuple[int, bytes], ...]
    codes: np.ndarray               # (lines, cols) output codes, for failure messages


@dataclass
class Program(BaseProgram):
    """A generated program and what it must do."""

    #: The ``error_pc`` status register after the run: the faulty instruction, or FINISH.
    error_pc: int | None = None
    #: Legal programs: the whole external memory after FINISH, and what each STORE wrote.
    expected_dram: bytes | None = None
    stores: list[StoreRecord] = field(default_factory=list)
    #: Legal programs: the ``macs`` counter and the non-finite status bit after FINISH.
    expected_macs: int | None = None
    expected_nonfinite: bool | None = None


# --- what an instruction touches ---------------------------------------------------------------------------

_SPACE_ACT, _SPACE_WEIGHT, _SPACE_PARAM, _SPACE_ACC, _SPACE_DRAM = range(5)
_SPACE_NAMES = ("act line", "weight line", "param line", "acc line", "memory beat at byte")
_SPACE_OF_BUFFER = {Buffer.ACT: _SPACE_ACT, Buffer.WEIGHT: _SPACE_WEIGHT, Buffer.PARAM: _SPACE_PARAM}


def _key(space: int, address: int) -> int:
    return (space << 48) | address


def _describe_key(key: int, bus: int) -> str:
    space, address = key >> 48, key & ((1 << 48) - 1)
    return f"{_SPACE_NAMES[space]} {address * bus if space == _SPACE_DRAM else address:#x}"


def _beats(start: int, nbytes: int, bus: int) -> range:
    return range(start // bus, -(-(start + nbytes) // bus))


def footprint(opcode: Opcode, f: dict, config: AcceleratorConfig) -> tuple[frozenset, frozenset]:
    """(reads, writes) of one instruction: buffer lines and memory beats, as opaque keys.

    The post-processing registers are left out: only the store engine uses them.
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
        reads.update(_key(_SPACE_WEIGHT, f["weight_addr"] + i) for i in range(f["kh"] * f["kw"] * c.rows))
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
        reads.add(_key(_SPACE_PARAM, f["param_addr"]))
        nbytes = output_line_bytes(c)
        for y in range(f["y_size"]):
            row = f["dram_addr"] + y * f["dram_stride"]
            writes.update(_key(_SPACE_DRAM, b) for b in _beats(row, f["x_size"] * nbytes, bus))
    return frozenset(reads), frozenset(writes)


def _conflict(a: tuple[frozenset, frozenset], b: tuple[frozenset, frozenset]) -> frozenset:
    """Keys that ``a`` and ``b`` both touch, at least one of them writing."""
    return (a[1] & (b[0] | b[1])) | (a[0] & b[1])


# --- token analysis ----------------------------------------------------------------------------------------

@dataclass
class _Analysis:
    pos: list            # index of each instruction within its engine
    clock: list          # per instruction: how many instructions of each engine surely completed before it starts
    pushes: dict         # queue (src, dst) -> instruction indices that push onto it, in order
    pops: dict           # queue -> instruction indices that pop from it, in order
    unmatched: list      # (instruction, queue) pops whose push comes later in program order or never
    overflows: list      # (instruction, queue, instruction whose pop would have made room or None)

    def before(self, i: int, engine_of_i: int, clock: tuple) -> bool:
        """Instruction ``i`` surely completed before an instruction with ``clock`` starts."""
        return clock[engine_of_i] > self.pos[i]


_QUEUES = ((_LOAD, _COMPUTE), (_COMPUTE, _LOAD), (_COMPUTE, _STORE), (_STORE, _COMPUTE))


def _pops(engine: int, flags: dict):
    if flags.get("pop_prev"):
        yield (engine - 1, engine)
    if flags.get("pop_next"):
        yield (engine + 1, engine)


def _pushes(engine: int, flags: dict):
    if flags.get("push_prev"):
        yield (engine, engine - 1)
    if flags.get("push_next"):
        yield (engine, engine + 1)


def _analyse(entries: list[tuple[int, dict]]) -> _Analysis:
    """Happens-before of a program (``(engine, flags)`` per instruction) under any timing.

    An instruction starts after the previous one of its engine completed and after the instructions that
    pushed the tokens it pops completed; the k-th pop from a queue takes the k-th push onto it.
    """
    count = [0, 0, 0]
    last = [None, None, None]
    pos, clock = [], []
    pushes = {q: [] for q in _QUEUES}
    pops = {q: [] for q in _QUEUES}
    unmatched = []

    def merge(into: list, i: int) -> None:
        for e in range(3):
            into[e] = max(into[e], clock[i][e])
        e = entries[i][0]
        into[e] = max(into[e], pos[i] + 1)

    for i, (engine, flags) in enumerate(entries):
        pos.append(count[engine])
        count[engine] += 1
        c = [0, 0, 0]
        if last[engine] is not None:
            merge(c, last[engine])
        for q in _pops(engine, flags):
            k = len(pops[q])
            pops[q].append(i)
            if k < len(pushes[q]):
                merge(c, pushes[q][k])
            else:
                unmatched.append((i, q))
        clock.append(tuple(c))
        for q in _pushes(engine, flags):
            pushes[q].append(i)
        last[engine] = i

    overflows = []
    for q, pushers in pushes.items():
        consumer_pos = [pos[j] for j in pops[q]]
        for n, i in enumerate(pushers, start=1):
            popped = bisect.bisect_left(consumer_pos, clock[i][q[1]])
            if n - popped > TOKEN_QUEUE_DEPTH:
                need = n - TOKEN_QUEUE_DEPTH - 1
                overflows.append((i, q, pops[q][need] if need < len(pops[q]) else None))
    return _Analysis(pos, clock, pushes, pops, unmatched, overflows)


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


# --- placing tokens ----------------------------------------------------------------------------------------

class _Retry(Exception):
    """This random draw cannot be made into a program; draw again."""


def _no_flags() -> dict:
    return dict.fromkeys(_FLAGS, 0)


@dataclass(eq=False)
class _Instr:
    opcode: Opcode
    fields: dict
    #: Where the instruction goes in program order (instructions are sorted by it).
    order: tuple = ()
    #: Instructions that must complete before this one starts, besides those it shares data with.
    after: list = field(default_factory=list)
    flags: dict = field(default_factory=_no_flags)
    touches: tuple = (frozenset(), frozenset())

    @property
    def engine(self) -> int:
        return _ENGINE[KINDS[self.opcode].queue]

    def word(self) -> int:
        return encode(self.opcode, **self.fields, **{k: v for k, v in self.flags.items() if v})


def _barrier(config: AcceleratorConfig, after: _Instr) -> _Instr:
    """A compute-engine instruction that changes nothing anyone reads: MAX of the scratch line with itself."""
    line = config.acc_buffer_depth - 1
    fields = dict(op=int(AluOp.MAX), dst_addr=line, src_addr=line, y_size=1, x_size=1, dst_stride=0,
                  src_stride=0, src_step=1)
    return _Instr(Opcode.ALU, fields, after=[after])


def _schedule(instrs: list[_Instr], config: AcceleratorConfig) -> list[_Instr]:
    """Set the token flags of ``instrs`` (in program order), inserting barriers where needed."""
    out: list[_Instr] = []
    for ins in instrs:
        _append(out, ins, config)
    return out


def _append(out: list[_Instr], ins: _Instr, config: AcceleratorConfig) -> None:
    """Append ``ins`` to the scheduled ``out``, with the pops it needs and the matching pushes.

    ``ins`` pops, from each neighbour, the token of the last earlier instruction of that neighbour it must
    wait for, unless it is already ordered after it. That instruction cannot have pushed towards ``ins``'s
    engine yet, nor can any later one of its engine (else ``ins`` would already be ordered after it), so the
    k-th push onto a queue is always the one the k-th pop wants.
    """
    ins.flags = _no_flags()
    required = {id(x) for x in ins.after}
    need: dict[int, int] = {}
    for idx, prev in enumerate(out):
        if prev.engine != ins.engine and (id(prev) in required or _conflict(prev.touches, ins.touches)):
            need[prev.engine] = idx
    if not need:
        out.append(ins)
        return
    a = _analyse([(x.engine, x.flags) for x in out])
    same = [idx for idx, x in enumerate(out) if x.engine == ins.engine]
    base = [0, 0, 0]
    if same:
        base = list(a.clock[same[-1]])
        base[ins.engine] = max(base[ins.engine], a.pos[same[-1]] + 1)
    partners: dict[int, int] = {}
    far = None
    for engine, i in need.items():
        if a.before(i, engine, base):
            continue
        if abs(engine - ins.engine) == 1:
            partners[engine] = i
        else:
            far = (engine, i)
    if far is not None:                  # load <-> store: through the compute engine
        engine, i = far
        p = partners.get(_COMPUTE)
        computes = [idx for idx, x in enumerate(out) if x.engine == _COMPUTE]
        if p is not None and a.before(i, engine, a.clock[p]):
            pass
        elif computes and a.before(i, engine, a.clock[computes[-1]]):
            partners[_COMPUTE] = computes[-1]
        else:
            _append(out, _barrier(config, out[i]), config)
            partners[_COMPUTE] = len(out) - 1
    for engine, idx in partners.items():
        push, pop = ("push_next", "pop_prev") if engine < ins.engine else ("push_prev", "pop_next")
        assert not out[idx].flags[push], "an instruction never pushes twice towards one engine"
        out[idx].flags[push] = 1
        ins.flags[pop] = 1
    out.append(ins)


def _place_tokens(instrs: list[_Instr], config: AcceleratorConfig) -> list[_Instr]:
    """Schedule, then make producers wait wherever a queue could overflow; repeat until none can."""
    for _ in range(100):
        out = _schedule(instrs, config)
        a = _analyse([(x.engine, x.flags) for x in out])
        assert not a.unmatched, "every pop is fed by an earlier push"
        if not a.overflows:
            return out
        i, q, j = a.overflows[0]
        if j is None or j > i:
            raise _Retry("a queue would overflow and the producer cannot wait for an earlier pop")
        out[i].after.append(out[j])
        instrs = out
    raise _Retry("token placement did not settle")


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
        self.act, self.weight, self.param, self.acc = {}, {}, {}, {}
        # The last accumulator line is the barriers' scratch line: what it holds is never stored.
        self.acc[c.acc_buffer_depth - 1] = ([0] * c.cols, [False] * c.cols)
        self.zero_point, self.clamp_lo, self.clamp_hi = 0, 0, 0
        self.acc_exponent = product_of(c.acts, c.weights).min_exponent
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
                    self.act[line] = [f["pad_value"]] * c.rows
                    continue
                at = f["dram_addr"] + sy * f["dram_stride"] + sx * nbytes
                data = bytes(self.dram[at:at + nbytes])
                if buffer is Buffer.ACT:
                    self.act[line] = _unpack(data, c.rows, c.acts.bits)
                elif buffer is Buffer.WEIGHT:
                    self.weight[line] = _unpack(data, c.cols, c.weights.bits)
                else:
                    self.param[line] = _param_entries(data, c.cols)

    def compute(self, index: int, f: dict) -> None:
        c = self.config
        for ky in range(f["kh"]):
            for kx in range(f["kw"]):
                tile = f["weight_addr"] + (ky * f["kw"] + kx) * c.rows
                w = np.array([self.weight[tile + r] for r in range(c.rows)], dtype=np.int64)
                lines, vectors = [], []
                for oy in range(f["out_h"]):
                    for ox in range(f["out_w"]):
                        row = oy * f["stride"] + ky * f["dilation"]
                        col = ox * f["stride"] + kx * f["dilation"]
                        vectors.append(self.act[f["act_addr"] + row * f["act_pitch"] + col])
                        lines.append(f["acc_addr"] + oy * f["out_w"] + ox)
                r = gemm(np.array(vectors, dtype=np.int64), w, c.acts, c.weights)
                overwrite = ky == 0 and kx == 0 and not f["accumulate"]
                for n, line in enumerate(lines):
                    value = [int(v) for v in r.value[n]]
                    flags = [bool(v) for v in r.nonfinite[n]]
                    if not overwrite:
                        old, old_flags = self.acc[line]
                        value = [a + b for a, b in zip(old, value)]
                        flags = [a or b for a, b in zip(old_flags, flags)]
                    self.acc[line] = ([self.wrap(v) for v in value], flags)
                self.macs += len(lines) * c.rows * c.cols

    def alu(self, index: int, f: dict) -> None:
        for y in range(f["y_size"]):            # one element after the other: overlaps see earlier results
            for x in range(f["x_size"]):
                dst = f["dst_addr"] + y * f["dst_stride"] + x
                src = f["src_addr"] + y * f["src_stride"] + x * f["src_step"]
                (a, fa), (b, fb) = self.acc[dst], self.acc[src]
                if AluOp(f["op"]) is AluOp.MAX:
                    value = [max(u, v) for u, v in zip(a, b)]
                else:
                    value = [self.wrap(u + v) for u, v in zip(a, b)]
                self.acc[dst] = (value, [u or v for u, v in zip(fa, fb)])

    def setpp(self, index: int, f: dict) -> None:
        self.zero_point, self.clamp_lo, self.clamp_hi = f["zero_point"], f["clamp_lo"], f["clamp_hi"]

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
        codes = rescale(np.array(values, dtype=object), np.array(flags, dtype=bool), self.acc_exponent,
                        bias, multiplier, shift, c.acts, self.zero_point, self.clamp_lo, self.clamp_hi,
                        acc_bits=c.acc_bits)
        self.nonfinite |= bool(np.any(flags))
        lines = []
        for at, row in zip(addresses, codes):
            data = _pack(row, c.acts.bits, nbytes)
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


# --- drawing legal programs --------------------------------------------------------------------------------

def _finite_codes(fmt) -> np.ndarray:
    codes = np.arange(1 << fmt.bits)
    return codes[np.isfinite(fmt.decode(codes))]


def _mean_fixed(fmt) -> float:
    """Mean magnitude of a finite code in units of its least significant bit."""
    sig, shift, finite = fmt.exact(_finite_codes(fmt))
    return float(np.mean(np.abs(sig.astype(np.float64)) * np.exp2(shift)))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass
class _Tile:
    kind: str
    instrs: list
    summary: str


class _Builder:
    """Draws the tiles of one program: buffer regions, memory regions, data and instructions."""

    def __init__(self, config: AcceleratorConfig, rng: np.random.Generator, dram_size: int,
                 program_addr: int, program_bytes: int, data_range: tuple[int, int]):
        c = self.config = config
        self.rng = rng
        self.rows, self.cols = c.rows, c.cols
        self.bus = c.dma_bits // 8
        self.lb = {b: line_bytes(b, c) for b in Buffer}
        self.olb = output_line_bytes(c)
        self.dram_size = dram_size
        self.program_addr, self.program_bytes = program_addr, program_bytes
        self.cursor, self.data_end = data_range
        self.blobs: list[tuple[int, bytes]] = []
        self.inputs: list[dict] = []     # fresh input regions: addr, size, order of their last reader, reused
        self.outputs: list[dict] = []    # store regions: addr, y, x, stride, order
        self.seq = 0
        self.acc_written: set[int] = set()
        self.setpp_done = False
        # Value distributions of this program.
        self.wild = rng.random() < 0.3             # any code, NaN and Inf included
        self.garbage = rng.random() < 0.5          # random bits in the padding of each packed line
        # Buffer halves (two sets for double buffering); the last accumulator line is the barriers' scratch.
        self.act_half = c.act_buffer_depth // 2
        self.weight_half = c.weight_buffer_depth // 2
        self.acc_half = (c.acc_buffer_depth - 1) // 2
        if self.weight_half < c.rows or self.acc_half < 1:
            raise ValueError(f"Buffers too small for programs: weight_buffer_depth must be at least "
                             f"{2 * c.rows} and acc_buffer_depth at least 3")
        self.param_next = 0
        self.lead = int(rng.random() < 0.4)        # next tile's loads issued before this tile's computes
        self.lag = int(rng.random() < 0.3)         # this tile's stores issued after the next tile's computes
        if c.param_buffer_depth < 4:
            self.lead = self.lag = 0
        self.alternate = bool(self.lead or self.lag or rng.random() < 0.7)

    # memory -------------------------------------------------------------------------------------------
    def align(self, n: int) -> int:
        return -(-n // self.bus) * self.bus

    def alloc(self, nbytes: int) -> int:
        start = self.align(self.cursor) + int(self.rng.integers(0, 3)) * self.bus
        end = start + self.align(max(nbytes, 1))
        if end > self.data_end:
            raise _Retry("out of external memory")
        self.cursor = end
        return start

    def codes(self, fmt, shape) -> np.ndarray:
        if self.wild:
            return self.rng.integers(0, 1 << fmt.bits, size=shape)
        return self.rng.choice(_finite_codes(fmt), size=shape)

    def line(self, codes, bits: int, nbytes: int) -> bytes:
        garbage = int.from_bytes(self.rng.bytes(nbytes), "little") if self.garbage else 0
        return _pack(codes, bits, nbytes, garbage)

    def write_lines(self, addr: int, stride: int, lines: np.ndarray, bits: int, nbytes: int) -> None:
        """``lines`` (y, x, per_line) codes at ``addr``, rows ``stride`` bytes apart."""
        for y in range(lines.shape[0]):
            for x in range(lines.shape[1]):
                self.blobs.append((addr + y * stride + x * nbytes, self.line(lines[y, x], bits, nbytes)))

    def row_stride(self, row_bytes: int, rows: int) -> int:
        if rows == 1:
            return int(self.rng.integers(0, 64)) * self.bus
        return self.align(row_bytes) + int(self.rng.integers(0, 3)) * self.bus

    # instructions -------------------------------------------------------------------------------------
    def order(self, phase: str, tile: int) -> tuple:
        """Where the next instruction of ``phase`` of ``tile`` goes in program order (instructions sort by it).

        Prefetch loads of a tile go ``lead`` tiles early and its stores ``lag`` tiles late.
        """
        major = {"prefetch": tile - self.lead, "body": tile, "store": tile + self.lag}[phase]
        return (major, {"prefetch": 0, "body": 1, "store": 2}[phase], tile, self.seq + 1)

    def instr(self, opcode: Opcode, phase: str, tile: int, **fields) -> _Instr:
        order = self.order(phase, tile)
        self.seq += 1
        ins = _Instr(opcode, fields, order=order)
        ins.touches = footprint(opcode, fields, self.config)
        return ins

    def load(self, buffer: Buffer, phase: str, tile: int, sram_addr: int, dram_addr: int, y: int, x: int,
             stride: int, pads=(0, 0, 0, 0), pad_value: int = 0) -> _Instr:
        pt, pb, pl, pr = pads
        return self.instr(Opcode.LOAD, phase, tile, buffer=int(buffer), sram_addr=sram_addr, dram_addr=dram_addr,
                          y_size=y, x_size=x, dram_stride=stride, pad_top=pt, pad_bottom=pb, pad_left=pl,
                          pad_right=pr, pad_value=pad_value)

    def act_image(self, h: int, w: int, order: tuple) -> dict:
        """A source of at least ``h`` x ``w`` activation lines: the output of an earlier STORE (read back as
        activations) or fresh random codes."""
        lb = self.lb[Buffer.ACT]
        chained = [o for o in self.outputs if o["order"] < order and o["y"] >= h
                   and o["row_bytes"] // lb >= w]
        if chained and self.rng.random() < 0.35:
            o = chained[int(self.rng.integers(len(chained)))]
            return dict(addr=o["addr"], stride=o["stride"], H=o["y"], W=o["row_bytes"] // lb, chained=True)
        H, W = h + int(self.rng.integers(0, 2)), w + int(self.rng.integers(0, 3))
        stride = self.row_stride(W * lb, H)
        addr = self.alloc((H - 1) * stride + W * lb)
        self.write_lines(addr, stride, self.codes(self.config.acts, (H, W, self.rows)), self.config.acts.bits, lb)
        size = (H - 1) * stride + W * lb
        self.inputs.append(dict(addr=addr, size=size, order=order, reused=False))
        return dict(addr=addr, stride=stride, H=H, W=W, chained=False)

    def act_load(self, phase: str, tile: int, sram_addr: int, y: int, x: int, pads, pad_value: int,
                 split: bool) -> list[_Instr]:
        """LOADs of a padded y x x block of activations into lines from ``sram_addr`` (one or two LOADs)."""
        img = self.act_image(y, x, self.order(phase, tile))
        iy = int(self.rng.integers(0, img["H"] - y + 1))
        ix = int(self.rng.integers(0, img["W"] - x + 1))
        lb = self.lb[Buffer.ACT]
        src = img["addr"] + iy * img["stride"] + ix * lb
        stride = img["stride"] if y > 1 else self.row_stride(x * lb, 1)
        if y > 1 and self.rng.random() < 0.08:      # rows that overlap in memory (0: one row, repeated)
            stride = int(self.rng.integers(0, -(-stride // self.bus))) * self.bus
        pt, pb, pl, pr = pads
        width = pl + x + pr
        if split and y >= 2:
            y1 = int(self.rng.integers(1, y))
            return [self.load(Buffer.ACT, phase, tile, sram_addr, src, y1, x, stride, (pt, 0, pl, pr), pad_value),
                    self.load(Buffer.ACT, phase, tile, sram_addr + (pt + y1) * width, src + y1 * stride, y - y1, x,
                              stride, (0, pb, pl, pr), pad_value)]
        return [self.load(Buffer.ACT, phase, tile, sram_addr, src, y, x, stride, pads, pad_value)]

    def weight_load(self, phase: str, tile: int, sram_addr: int, lines: int) -> _Instr:
        """A LOAD of ``lines`` fresh weight lines, shaped as a random y x x block."""
        x = int(self.rng.choice(_divisors(lines)))
        y = lines // x
        lb = self.lb[Buffer.WEIGHT]
        stride = self.row_stride(x * lb, y)
        addr = self.alloc((y - 1) * stride + x * lb)
        self.write_lines(addr, stride, self.codes(self.config.weights, (y, x, self.cols)),
                         self.config.weights.bits, lb)
        self.inputs.append(dict(addr=addr, size=(y - 1) * stride + x * lb, order=(tile,), reused=False))
        if y > 1 and self.rng.random() < 0.08:      # rows that overlap in memory (0: one row, repeated)
            stride = int(self.rng.integers(0, -(-stride // self.bus))) * self.bus
        return self.load(Buffer.WEIGHT, phase, tile, sram_addr, addr, y, x, stride)

    def pad_value(self) -> int:
        fmt = self.config.acts
        if self.rng.random() < 0.6:
            return int(fmt.quantize(0.0))
        return int(self.codes(fmt, ()))

    def pads(self, limit: int = 2) -> tuple[int, int, int, int]:
        if self.rng.random() < 0.3:
            return (0, 0, 0, 0)
        return tuple(int(v) for v in self.rng.integers(0, limit + 1, size=4))

    def region(self, half: int, which: int, lines: int) -> int:
        """First line of a block of ``lines`` at a random place in half ``which`` of a buffer."""
        return which * half + int(self.rng.integers(0, half - lines + 1))

    # parameters and post-processing -------------------------------------------------------------------
    def param_lines(self, tile: int, count: int) -> tuple[int, int, _Instr, tuple]:
        """(first line, lines, the LOAD, its source block) of ``count`` parameter lines for ``tile``."""
        c = self.config
        count = min(count, c.param_buffer_depth)
        if self.param_next + count > c.param_buffer_depth:
            self.param_next = 0
        first = self.param_next
        self.param_next += count
        lb = self.lb[Buffer.PARAM]
        x = count if self.rng.random() < 0.6 else 1
        y = count // x
        stride = self.row_stride(x * lb, y)
        addr = self.alloc((y - 1) * stride + x * lb)
        self.inputs.append(dict(addr=addr, size=(y - 1) * stride + x * lb, order=(tile,), reused=False))
        ins = self.load(Buffer.PARAM, "prefetch", tile, first, addr, y, x, stride)
        return first, count, ins, (addr, stride, y, x)

    def write_params(self, source, terms: int) -> None:
        """Bias, multiplier and shift of each column, scaled so that most outputs land inside the format."""
        addr, stride, y, x = source
        c, rng = self.config, self.rng
        typical = max(_mean_fixed(c.acts) * _mean_fixed(c.weights) * math.sqrt(terms), 1.0)
        exponent = product_of(c.acts, c.weights).min_exponent
        fmt = c.acts
        for row in range(y):
            for col in range(x):
                bias, mult, shift = [], [], []
                for _ in range(self.cols):
                    if rng.random() < 0.1:      # anything the fields hold
                        bias.append(int(rng.integers(-(1 << 40), 1 << 40)))
                        mult.append(int(rng.integers(-(1 << 31), 1 << 31)))
                        shift.append(int(rng.integers(0, 64)))
                        continue
                    if isinstance(fmt, IntFormat):
                        target = 2.0 ** (fmt.bits - 1 + rng.uniform(-3, 1))
                    else:
                        target = fmt.max * 2.0 ** rng.uniform(-8, 1)
                    m = int(2 ** rng.uniform(0, 30)) * (-1 if rng.random() < 0.2 else 1)
                    s = round(math.log2(typical * abs(m)) + exponent - math.log2(target))
                    bias.append(0 if rng.random() < 0.3 else int(typical * rng.uniform(-2, 2)))
                    mult.append(m)
                    shift.append(min(max(s, 0), 63))
                data = bytearray()
                for b, m, s in zip(bias, mult, shift):
                    data += b.to_bytes(8, "little", signed=True) + m.to_bytes(4, "little", signed=True)
                    data += bytes([s, 0, 0, 0])
                data += bytes(self.lb[Buffer.PARAM] - len(data))
                self.blobs.append((addr + row * stride + col * self.lb[Buffer.PARAM], bytes(data)))

    def setpp(self, tile: int) -> _Instr:
        fmt, rng = self.config.acts, self.rng
        finite = _finite_codes(fmt)
        top, bottom = int(fmt.quantize(fmt.max)), int(fmt.quantize(fmt.min))
        zero = int(fmt.quantize(0.0))
        positive = finite[fmt.decode(finite) > 0]
        choice = rng.integers(4)
        if choice == 0:
            lo, hi = bottom, top
        elif choice == 1:
            lo, hi = zero, top
        elif choice == 2:
            lo, hi = zero, int(rng.choice(positive)) if positive.size else top
        else:
            pool = np.arange(1 << fmt.bits) if self.wild else finite
            pool = pool[~np.isnan(fmt.decode(pool))]
            a, b = (int(v) for v in rng.choice(pool, size=2))
            lo, hi = (a, b) if fmt.decode(np.array([a]))[0] <= fmt.decode(np.array([b]))[0] else (b, a)
        zp = int(rng.integers(-8, 9)) if rng.random() < 0.8 else int(rng.integers(-(1 << 15), 1 << 15))
        self.setpp_done = True
        return self.instr(Opcode.SETPP, "store", tile, zero_point=zp, clamp_lo=lo, clamp_hi=hi)

    # accumulator blocks -------------------------------------------------------------------------------
    def alu(self, tile: int, written: set[int], residual=None) -> _Instr | None:
        rng = self.rng
        lo, hi = min(written), max(written) + 1
        if residual is not None and rng.random() < 0.6:
            dst, src, y, x = residual
            return self.instr(Opcode.ALU, "body", tile, op=int(rng.integers(2)), dst_addr=dst, src_addr=src,
                              y_size=y, x_size=x, dst_stride=x, src_stride=x, src_step=1)
        overlap = rng.random() < 0.4                # source and destination share lines
        repeat = REPEATED_ALU_DESTINATIONS and rng.random() < 0.3     # rows of the destination overlap
        for _ in range(60):
            y, x, step = int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 4))
            if y == 1:
                dst_stride = int(rng.integers(0, 4096))
            else:
                dst_stride = int(rng.integers(0, x)) if repeat else int(rng.integers(x, x + 4))
            src_stride = int(rng.integers(0, 8)) if y > 1 else int(rng.integers(0, 4096))
            dst, src = int(rng.integers(lo, hi)), int(rng.integers(lo, hi))
            dst_lines = {dst + j * dst_stride + i for j in range(y) for i in range(x)}
            src_lines = {src + j * src_stride + i * step for j in range(y) for i in range(x)}
            if dst_lines <= written and src_lines <= written and overlap == bool(dst_lines & src_lines):
                return self.instr(Opcode.ALU, "body", tile, op=int(rng.integers(2)), dst_addr=dst, src_addr=src,
                                  y_size=y, x_size=x, dst_stride=dst_stride, src_stride=src_stride, src_step=step)
        return None

    def store(self, tile: int, written: set[int], whole: tuple[int, int, int], params: tuple[int, int]) -> _Instr:
        rng = self.rng
        if rng.random() < 0.4:
            acc, y, x = whole
            acc_stride = x if y > 1 else int(rng.integers(0, 4096))
        else:
            lo, hi = min(written), max(written) + 1
            for _ in range(60):
                y, x = int(rng.integers(1, 4)), int(rng.integers(1, 6))
                acc_stride = int(rng.integers(0, 2 * x + 2)) if y > 1 else int(rng.integers(0, 4096))
                acc = int(rng.integers(lo, hi))
                if all(acc + j * acc_stride + i in written for j in range(y) for i in range(x)):
                    break
            else:
                acc, y, x = whole
                acc_stride = x
        row = x * self.olb
        stride = self.row_stride(row, y)
        size = (y - 1) * stride + row
        order = self.order("store", tile)
        dead = [r for r in self.inputs if not r["reused"] and r["order"] < order and r["size"] >= size]
        if dead and rng.random() < 0.2:
            region = dead[int(rng.integers(len(dead)))]
            region["reused"] = True
            addr = region["addr"]
        else:
            addr = self.alloc(size)
        param = params[0] + int(rng.integers(params[1]))
        ins = self.instr(Opcode.STORE, "store", tile, acc_addr=acc, dram_addr=addr, y_size=y, x_size=x,
                         acc_stride=acc_stride, dram_stride=stride, param_addr=param)
        self.outputs.append(dict(addr=addr, y=y, row_bytes=row, stride=stride, order=ins.order))
        return ins

    # tiles --------------------------------------------------------------------------------------------
    def which(self, tile: int) -> int:
        return tile % 2 if self.alternate else int(self.rng.integers(2))

    def gemm_tile(self, tile: int, budget: int) -> _Tile:
        c, rng = self.config, self.rng
        which = self.which(tile)
        burst = rng.random() < 0.1 and budget >= 14
        for _ in range(50):
            chunks = int(rng.integers(4, 9)) if burst else int(rng.choice([1, 1, 2, 2, 3]))
            chunks = min(chunks, self.weight_half // c.rows, max((budget - 4) // 3, 1))
            top = min(16, self.acc_half, self.act_half // chunks)
            if top >= 1:
                break
        else:
            raise _Retry("no GEMM fits")
        m = int(rng.integers(1, top + 1))
        residual = chunks >= 2 and 2 * m <= self.acc_half and rng.random() < 0.3
        interleaved = rng.random() < 0.5
        params, nparams, param_load, param_source = self.param_lines(tile, int(rng.integers(1, 3)))
        instrs = [param_load]
        act_base = self.region(self.act_half, which, chunks * m)
        weight_base = self.region(self.weight_half, which, chunks * c.rows)
        acc_base = self.region(self.acc_half, which, 2 * m if residual else m)
        onto = all(acc_base + i in self.acc_written for i in range(m)) and rng.random() < 0.3
        for k in range(chunks):
            instrs.append(self.weight_load("prefetch", tile, weight_base + k * c.rows, c.rows))
        phase = "body" if interleaved else "prefetch"
        loads, computes = [], []
        for k in range(chunks):
            width = int(rng.choice(_divisors(m)))
            height = m // width
            pads = self.pads(1) if rng.random() < 0.3 else (0, 0, 0, 0)
            pt, pb = min(pads[0], height - 1), min(pads[1], max(height - 1 - pads[0], 0))
            pl, pr = min(pads[2], width - 1), min(pads[3], max(width - 1 - pads[2], 0))
            block = self.act_load(phase, tile, act_base + k * m, height - pt - pb, width - pl - pr,
                                  (pt, pb, pl, pr), self.pad_value(), split=rng.random() < 0.2)
            second = residual and k == chunks - 1
            compute = self.instr(Opcode.COMPUTE, "body", tile, acc_addr=acc_base + (m if second else 0),
                                 act_addr=act_base + k * m, weight_addr=weight_base + k * c.rows, out_h=1,
                                 out_w=m, act_pitch=int(rng.integers(0, 1024)), stride=1,
                                 dilation=int(rng.integers(1, 8)), kh=1, kw=1,
                                 accumulate=int(onto if k == 0 else not second and rng.random() < 0.9))
            loads += block
            computes.append(compute)
            if interleaved:
                instrs += block + [compute]
        if not interleaved:
            instrs += loads + computes
        written = set(range(acc_base, acc_base + (2 * m if residual else m)))
        self.write_params(param_source, c.rows * chunks * (2 if onto else 1))
        summary = f"gemm M={m} K={chunks}x{c.rows}{' +residual' if residual else ''}{' +acc' if onto else ''}"
        return self.finish_tile(tile, "gemm", instrs, written, (acc_base, 1, m),
                                (acc_base, acc_base + m, 1, m) if residual else None, (params, nparams), summary,
                                budget)

    def conv_tile(self, tile: int, budget: int) -> _Tile:
        c, rng = self.config, self.rng
        which = self.which(tile)
        for _ in range(80):
            kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            stride, dilation = int(rng.integers(1, 3)), int(rng.integers(1, 3))
            chunks = int(rng.choice([1, 1, 2]))
            if chunks * kh * kw * c.rows > self.weight_half:
                continue
            pads = self.pads()
            h, w = int(rng.integers(1, 7)), int(rng.integers(1, 7))
            hp, wp = pads[0] + h + pads[1], pads[2] + w + pads[3]
            ekh, ekw = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
            if ekh > hp or ekw > wp or chunks * hp * wp > self.act_half:
                continue
            out_h = int(rng.integers(1, min((hp - ekh) // stride + 1, 4) + 1))
            out_w = int(rng.integers(1, min((wp - ekw) // stride + 1, 6) + 1))
            if out_h * out_w <= self.acc_half:
                break
        else:
            return self.gemm_tile(tile, budget)
        y0 = int(rng.integers(0, hp - ((out_h - 1) * stride + ekh) + 1))
        x0 = int(rng.integers(0, wp - ((out_w - 1) * stride + ekw) + 1))
        params, nparams, param_load, param_source = self.param_lines(tile, int(rng.integers(1, 3)))
        instrs = [param_load]
        act_base = self.region(self.act_half, which, chunks * hp * wp)
        taps = kh * kw * c.rows
        weight_base = self.region(self.weight_half, which, chunks * taps)
        acc_base = self.region(self.acc_half, which, out_h * out_w)
        onto = all(acc_base + i in self.acc_written for i in range(out_h * out_w)) and rng.random() < 0.3
        interleaved = rng.random() < 0.5
        phase = "body" if interleaved else "prefetch"
        loads, computes = [], []
        for k in range(chunks):
            instrs.append(self.weight_load("prefetch", tile, weight_base + k * taps, taps))
        for k in range(chunks):
            block = self.act_load(phase, tile, act_base + k * hp * wp, h, w, pads, self.pad_value(),
                                  split=rng.random() < 0.3)
            compute = self.instr(Opcode.COMPUTE, "body", tile, acc_addr=acc_base,
                                 act_addr=act_base + k * hp * wp + y0 * wp + x0, weight_addr=weight_base + k * taps,
                                 out_h=out_h, out_w=out_w, act_pitch=wp, stride=stride, dilation=dilation, kh=kh,
                                 kw=kw, accumulate=int(onto if k == 0 else rng.random() < 0.9))
            loads += block
            computes.append(compute)
            if interleaved:
                instrs += block + [compute]
        if not interleaved:
            instrs += loads + computes
        written = set(range(acc_base, acc_base + out_h * out_w))
        self.write_params(param_source, taps * chunks * (2 if onto else 1))
        summary = (f"conv {kh}x{kw} s{stride} d{dilation} pad{''.join(map(str, pads))} {h}x{w}->{out_h}x{out_w}"
                   f"{' x' + str(chunks) if chunks > 1 else ''}{' +acc' if onto else ''}")
        return self.finish_tile(tile, "conv", instrs, written, (acc_base, out_h, out_w), None, (params, nparams),
                                summary, budget)

    def finish_tile(self, tile, kind, instrs, written, whole, residual, params, summary, budget) -> _Tile:
        rng = self.rng
        for _ in range(int(rng.choice([0, 0, 1, 1, 2]))):
            if len(instrs) + 2 > budget:
                break
            alu = self.alu(tile, written, residual)
            if alu is not None:
                instrs.append(alu)
                summary += " +" + AluOp(alu.fields["op"]).name.lower()
        stores = int(rng.integers(1, 4))
        for k in range(stores):
            if not self.setpp_done or (rng.random() < (0.9 if k == 0 else 0.3)):
                instrs.append(self.setpp(tile))
            instrs.append(self.store(tile, written, whole, params))
            if len(instrs) + 2 > budget:
                break
        self.acc_written |= written
        return _Tile(kind, instrs, summary)


def _config_summary(config: AcceleratorConfig) -> str:
    fmt = config.acts.name if config.acts == config.weights else f"{config.weights.name}x{config.acts.name}"
    return f"{config.rows}x{config.cols} {fmt}"


def _draw(config: AcceleratorConfig, rng: np.random.Generator, dram_size: int, max_instructions: int,
          program_at_end: bool = False, budget: int | None = None):
    """Plan tiles and place tokens: (builder, scheduled instructions, tile summaries, program_addr)."""
    bus = config.dma_bits // 8
    align = max(bus, INSTRUCTION_BYTES)
    program_bytes = max_instructions * INSTRUCTION_BYTES
    if program_at_end:
        program_addr = (dram_size - program_bytes) // align * align
        data_range = (0, program_addr)
    else:
        program_addr = 0 if rng.random() < 0.6 else int(rng.integers(0, 16)) * align
        data_range = (program_addr + program_bytes, dram_size // bus * bus)
    if data_range[1] - data_range[0] < 64 * bus or program_addr < 0:
        raise ValueError(f"dram_size {dram_size} is too small for programs of {max_instructions} instructions")
    b = _Builder(config, rng, dram_size, program_addr, program_bytes, data_range)
    if budget is None:
        budget = int(rng.integers(min(24, max_instructions), max_instructions + 1)) - 1
    tiles: list[_Tile] = []
    used = 0
    while True:
        left = budget - used
        if left < 6 and tiles:
            break
        tile = b.conv_tile(len(tiles), left) if rng.random() < 0.55 else b.gemm_tile(len(tiles), left)
        tiles.append(tile)
        used += len(tile.instrs) + 1        # a barrier, perhaps
    instrs = sorted((i for t in tiles for i in t.instrs), key=lambda i: i.order)
    while True:
        scheduled = _place_tokens(instrs, config)
        if len(scheduled) <= max_instructions - 1 or len(tiles) == 1:
            break
        dropped = tiles.pop()               # too long: drop the last tile
        instrs = [i for i in instrs if not any(i is d for d in dropped.instrs)
                  and not (i.opcode is Opcode.ALU and i.fields["dst_addr"] == config.acc_buffer_depth - 1)]
        for i in instrs:
            i.after = [x for x in i.after if not any(x is d for d in dropped.instrs)]
    if len(scheduled) > max_instructions - 1:
        raise _Retry("program too long")
    return b, scheduled, [t.summary for t in tiles], program_addr


def _image(b: _Builder, dram_size: int, program_addr: int, words: list[int]) -> bytearray:
    dram = bytearray(b.rng.bytes(dram_size))
    for addr, data in b.blobs:
        dram[addr:addr + len(data)] = data
    for i, w in enumerate(words):
        at = program_addr + i * INSTRUCTION_BYTES
        dram[at:at + INSTRUCTION_BYTES] = w.to_bytes(INSTRUCTION_BYTES, "little")
    return dram


def _finish_word() -> int:
    return encode(Opcode.FINISH)


def random_program(config: AcceleratorConfig, rng: np.random.Generator, *, dram_size: int = 1 << 16,
                   max_instructions: int = 60) -> Program:
    """A random legal, race-free program of at most ``max_instructions`` instructions (FINISH included)."""
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")
    if not isinstance(max_instructions, int) or max_instructions < 12:
        raise ValueError(f"max_instructions must be an integer of at least 12, not {max_instructions!r}")
    for _ in range(50):
        try:
            b, scheduled, summaries, program_addr = _draw(config, rng, dram_size, max_instructions)
        except _Retry:
            continue
        words = [i.word() for i in scheduled] + [_finish_word()]
        dram = _image(b, dram_size, program_addr, words)
        ref = reference_run(config, dram, program_addr)
        barriers = sum(i.opcode is Opcode.ALU and i.fields["dst_addr"] == config.acc_buffer_depth - 1
                       for i in scheduled)
        style = [s for s, on in (("pipelined", b.lead), ("lagged stores", b.lag), ("all codes", b.wild),
                                 ("padding garbage", b.garbage)) if on]
        description = (f"{_config_summary(config)}: {len(words)} instructions, {len(summaries)} tiles "
                       f"[{'; '.join(summaries)}]{', ' + str(barriers) + ' barriers' if barriers else ''}"
                       f"{' (' + ', '.join(style) + ')' if style else ''}")
        return Program(config, words, dram, program_addr, dram_size, ErrorCode.NONE, description,
                       error_pc=len(words) - 1, expected_dram=bytes(ref.dram), stores=ref.stores,
                       expected_macs=ref.macs, expected_nonfinite=ref.nonfinite)
    raise ValueError(f"Could not draw a program for {config!r} in {dram_size} bytes")


# --- illegal programs ---------------------------------------------------------------------------------------

def _set_flags(word: int, *flags: str) -> int:
    for name in flags:
        word |= 1 << _FLAG_BIT[name]
    return word


class _Faults:
    """Faulty words for one configuration; each method returns (word, what it is)."""

    def __init__(self, config: AcceleratorConfig, rng: np.random.Generator, dram_size: int, data_addr: int):
        self.c, self.rng, self.dram_size = config, rng, dram_size
        self.bus = config.dma_bits // 8
        self.data = data_addr        # a byte address of legal data (for otherwise legal instructions)

    # legal instructions to corrupt ---------------------------------------------------------------------
    def legal(self, opcode: Opcode) -> dict:
        c, rng = self.c, self.rng
        if opcode is Opcode.LOAD:
            return dict(buffer=int(Buffer.ACT), sram_addr=int(rng.integers(0, 8)), dram_addr=self.data, y_size=2,
                        x_size=2, dram_stride=self.bus * 4, pad_top=0, pad_bottom=0, pad_left=0, pad_right=0,
                        pad_value=0)
        if opcode is Opcode.COMPUTE:
            return dict(acc_addr=0, act_addr=0, weight_addr=0, out_h=1, out_w=2, act_pitch=3, stride=1,
                        dilation=1, kh=1, kw=1, accumulate=0)
        if opcode is Opcode.ALU:
            return dict(op=0, dst_addr=0, src_addr=4, y_size=1, x_size=2, dst_stride=0, src_stride=0, src_step=1)
        if opcode is Opcode.SETPP:
            zero = int(c.acts.quantize(0.0))
            return dict(zero_point=0, clamp_lo=zero, clamp_hi=zero)
        if opcode is Opcode.STORE:
            return dict(acc_addr=0, dram_addr=self.data, y_size=1, x_size=1, acc_stride=0, dram_stride=0,
                        param_addr=0)
        return {}

    def opcode(self) -> tuple[int, str]:
        op = int(self.rng.choice([0, *range(7, 16)]))
        word = int.from_bytes(self.rng.bytes(INSTRUCTION_BYTES), "little") if self.rng.random() < 0.7 else 0
        return (word & ~0xF) | op, f"opcode {op}"

    def dependency(self) -> tuple[int, str]:
        rng = self.rng
        opcode = Opcode(int(rng.choice([Opcode.LOAD, Opcode.SETPP, Opcode.STORE, Opcode.FINISH])))
        kind = KINDS[opcode]
        bad = [f for f in _FLAGS if not getattr(kind, f"may_{f}")]
        flags = [str(f) for f in rng.choice(bad, size=int(rng.integers(1, len(bad) + 1)), replace=False)]
        fields = self.legal(opcode)
        what = f"{opcode.name} {'+'.join(flags)}"
        if fields and rng.random() < 0.3:         # precedence: the dependency wins over a bad field
            nonzero = [f.name for f in kind.fields if f.nonzero]
            if nonzero:
                name = str(rng.choice(nonzero))
                fields[name] = 0
                what += f" and {name}=0"
        return _set_flags(encode(opcode, **fields), *flags), what

    def bad_field(self) -> tuple[int, str]:
        c, rng = self.c, self.rng
        fmt = c.acts
        choices = ["zero", "misaligned_addr", "misaligned_stride", "weight_padding", "param_padding", "buffer3",
                   "alu_op", "clamp_order", "clamp_width", "pad_value_width", "reserved_bits"]
        if fmt.has_nan:
            choices.append("clamp_nan")
        what = str(rng.choice(choices))
        if what == "zero":
            opcode = Opcode(int(rng.choice([1, 2, 3, 5])))
            fields = self.legal(opcode)
            name = str(rng.choice([f.name for f in KINDS[opcode].fields if f.nonzero]))
            fields[name] = 0
            return encode(opcode, **fields), f"{opcode.name} {name}=0"
        if what in ("misaligned_addr", "misaligned_stride"):
            opcode = Opcode.LOAD if rng.random() < 0.5 else Opcode.STORE
            fields = self.legal(opcode)
            name = "dram_addr" if what == "misaligned_addr" else "dram_stride"
            fields[name] += int(rng.integers(1, self.bus)) if self.bus > 1 else 0
            if self.bus == 1:
                return self.bad_field()
            if opcode is Opcode.STORE and name == "dram_stride":
                fields["y_size"] = 2
            if rng.random() < 0.3:                # precedence: BAD_FIELD before SRAM_RANGE and DRAM_RANGE
                fields["dram_addr"] = (fields["dram_addr"] + self.dram_size) | 1
            return encode(opcode, **fields), f"{opcode.name} {name} not a multiple of {self.bus}"
        if what in ("weight_padding", "param_padding"):
            fields = self.legal(Opcode.LOAD)
            fields["buffer"] = int(Buffer.WEIGHT if what == "weight_padding" else Buffer.PARAM)
            fields["sram_addr"] = 0
            fields["y_size"] = fields["x_size"] = 1
            side = str(rng.choice(["pad_top", "pad_bottom", "pad_left", "pad_right"]))
            fields[side] = int(rng.integers(1, 8))
            return encode(Opcode.LOAD, **fields), f"{Buffer(fields['buffer']).name} LOAD with {side}"
        if what == "buffer3":
            fields = self.legal(Opcode.LOAD)
            fields["buffer"] = 3
            return encode(Opcode.LOAD, **fields), "LOAD buffer=3"
        if what == "alu_op":
            fields = self.legal(Opcode.ALU)
            fields["op"] = int(rng.integers(2, 4))
            if rng.random() < 0.3:
                fields["dst_addr"] = c.acc_buffer_depth     # precedence: BAD_FIELD before SRAM_RANGE
            return encode(Opcode.ALU, **fields), f"ALU op={fields['op']}"
        if what == "clamp_order":
            finite = _finite_codes(fmt)
            values = fmt.decode(finite)
            for _ in range(100):
                a, b = (int(v) for v in rng.choice(len(finite), size=2))
                if values[a] > values[b]:
                    return (encode(Opcode.SETPP, zero_point=0, clamp_lo=int(finite[a]), clamp_hi=int(finite[b])),
                            f"SETPP clamp_lo {values[a]} > clamp_hi {values[b]}")
            return self.bad_field()
        if what == "clamp_nan":
            nan = [int(v) for v in np.arange(1 << fmt.bits) if np.isnan(fmt.decode(np.array([v]))[0])]
            fields = self.legal(Opcode.SETPP)
            side = str(rng.choice(["clamp_lo", "clamp_hi"]))
            fields[side] = int(rng.choice(nan))
            return encode(Opcode.SETPP, **fields), f"SETPP {side} is NaN"
        if what == "clamp_width":
            if fmt.bits >= 16:
                return self.bad_field()
            fields = self.legal(Opcode.SETPP)
            fields["clamp_hi"] = int(rng.integers(1 << fmt.bits, 1 << 16))
            return encode(Opcode.SETPP, **fields), f"SETPP clamp_hi wider than {fmt.bits} bits"
        if what == "pad_value_width":
            if fmt.bits >= 16:
                return self.bad_field()
            fields = self.legal(Opcode.LOAD)
            fields["pad_left"] = 1
            fields["pad_value"] = int(rng.integers(1 << fmt.bits, 1 << 16))
            return encode(Opcode.LOAD, **fields), f"ACT LOAD pad_value wider than {fmt.bits} bits"
        # reserved bits: any bit above the fields of an otherwise legal instruction
        opcode = Opcode(int(rng.choice([o.value for o in Opcode])))
        kind = KINDS[opcode]
        bit = int(rng.integers(kind.used_bits, INSTRUCTION_BITS))
        return encode(opcode, **self.legal(opcode)) | (1 << bit), f"{opcode.name} with reserved bit {bit} set"

    def sram_range(self) -> tuple[int, str]:
        c, rng = self.c, self.rng
        what = str(rng.choice(["load", "compute_act", "compute_weight", "compute_acc", "alu_dst", "alu_src",
                               "store_acc", "store_param"]))
        if what == "load":
            buffer = Buffer(int(rng.integers(3)))
            depth = {Buffer.ACT: c.act_buffer_depth, Buffer.WEIGHT: c.weight_buffer_depth,
                     Buffer.PARAM: c.param_buffer_depth}[buffer]
            fields = self.legal(Opcode.LOAD)
            fields["buffer"] = int(buffer)
            fields["y_size"], fields["x_size"] = 1, int(rng.integers(1, 4))
            if buffer is Buffer.ACT and rng.random() < 0.5:     # the padding is what overflows
                fields["pad_bottom"] = int(rng.integers(1, 8))
            lines = fields["x_size"] * (1 + fields["pad_bottom"])
            fields["sram_addr"] = max(depth - lines + int(rng.integers(1, 4)), 0)
            if rng.random() < 0.3:                               # precedence over DRAM_RANGE
                fields["dram_addr"] = self.dram_size // self.bus * self.bus
            return encode(Opcode.LOAD, **fields), f"{buffer.name} LOAD past line {depth - 1}"
        if what.startswith("compute"):
            f = self.legal(Opcode.COMPUTE)
            if what == "compute_act":
                f.update(out_h=2, out_w=2, kh=2, kw=2, act_pitch=int(rng.integers(1, c.act_buffer_depth // 8 + 1)),
                         stride=int(rng.integers(1, 3)), dilation=int(rng.integers(1, 3)))
                last = (f["out_h"] - 1) * f["stride"] * f["act_pitch"] + (f["kh"] - 1) * f["dilation"] * f["act_pitch"]
                last += (f["out_w"] - 1) * f["stride"] + (f["kw"] - 1) * f["dilation"]
                f["act_addr"] = c.act_buffer_depth - last + int(rng.integers(0, 3))
            elif what == "compute_weight":
                f.update(kh=int(rng.integers(1, 4)), kw=int(rng.integers(1, 4)))
                f["weight_addr"] = max(c.weight_buffer_depth - f["kh"] * f["kw"] * c.rows + int(rng.integers(1, 4)), 0)
            else:
                f["acc_addr"] = c.acc_buffer_depth - f["out_h"] * f["out_w"] + int(rng.integers(1, 4))
            return encode(Opcode.COMPUTE, **f), f"COMPUTE past the {what.split('_')[1]} buffer"
        if what.startswith("alu"):
            f = self.legal(Opcode.ALU)
            f.update(y_size=2, x_size=2, dst_stride=3, src_stride=5, src_step=2)
            if what == "alu_dst":
                f["dst_addr"] = c.acc_buffer_depth - (3 + 1) + int(rng.integers(1, 3))
            else:
                f["src_addr"] = c.acc_buffer_depth - (5 + 2) + int(rng.integers(0, 3))
            return encode(Opcode.ALU, **f), f"ALU {what.split('_')[1]} past the accumulators"
        f = self.legal(Opcode.STORE)
        if what == "store_param" and c.param_buffer_depth < 1024:
            f["param_addr"] = int(rng.integers(c.param_buffer_depth, min(1 << 10, 2 * c.param_buffer_depth + 1)))
        else:
            what = "store_acc"
            f.update(y_size=2, x_size=2, acc_stride=int(rng.integers(0, 8)), dram_stride=self.bus * 4)
            f["acc_addr"] = c.acc_buffer_depth - f["acc_stride"] - 1 + int(rng.integers(0, 2))
        if rng.random() < 0.3:
            f["dram_addr"] = self.dram_size // self.bus * self.bus
        return encode(Opcode.STORE, **f), f"STORE past the {'accumulators' if what == 'store_acc' else 'parameters'}"

    def dram_range(self) -> tuple[int, str]:
        c, rng = self.c, self.rng
        opcode = Opcode.LOAD if rng.random() < 0.5 else Opcode.STORE
        f = self.legal(opcode)
        nbytes = line_bytes(Buffer.ACT, c) if opcode is Opcode.LOAD else output_line_bytes(c)
        how = str(rng.choice(["end", "stride", "far", "wrap"]))
        top = -(-self.dram_size // self.bus) * self.bus
        stride_max = ((1 << 20) - 1) // self.bus * self.bus
        if how == "end":           # the last line ends just past the window
            f.update(y_size=1, x_size=int(rng.integers(1, 5)))
            f["dram_addr"] = max(top - f["x_size"] * nbytes + self.bus * int(rng.integers(1, 3)), 0)
        elif how == "stride" and self.data + 2 * stride_max > self.dram_size:   # a later row is past the end
            f.update(x_size=1, dram_addr=self.data)
            f["dram_stride"] = min(-(-(self.dram_size // 2) // self.bus) * self.bus, stride_max)
            f["y_size"] = min((self.dram_size - self.data) // f["dram_stride"] + 2, 1023)
        elif how in ("far", "stride"):
            how = "far"
            f["dram_addr"] = int(rng.integers(top // self.bus, (1 << 32) // self.bus)) * self.bus
        else:                      # would wrap around 2**32 in a 32-bit adder
            f.update(y_size=2, x_size=2, dram_stride=self.bus * 16)
            f["dram_addr"] = (1 << 32) - self.bus * int(rng.integers(1, 4))
        return encode(opcode, **f), f"{opcode.name} past the end of memory ({how})"


def illegal_program(config: AcceleratorConfig, rng: np.random.Generator, kind: str, *,
                    dram_size: int = 1 << 16) -> Program:
    """A legal prefix, then a fault of ``kind`` (one of :data:`ILLEGAL_KINDS`), then FINISH."""
    if kind not in ILLEGAL_KINDS:
        raise ValueError(f"Illegal-program kind must be one of {', '.join(ILLEGAL_KINDS)}, not {kind!r}")
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")
    at_end = kind == "dram_range" and rng.random() < 0.25    # run off the end of memory: no FINISH
    for _ in range(50):
        try:
            b, prefix, summaries, program_addr = _draw(config, rng, dram_size, 40, program_at_end=at_end,
                                                       budget=int(rng.integers(0, 25)) if rng.random() < 0.8 else 0)
        except _Retry:
            continue
        if rng.random() < 0.15 and not at_end:
            prefix, summaries = [], []
        try:
            data = b.alloc(64 * b.bus + 4 * max(b.lb[Buffer.ACT], b.olb))   # read by the faulty instructions only
        except _Retry:
            continue
        faults = _Faults(config, rng, dram_size, data)
        if kind in ("deadlock", "token_overflow"):
            try:
                prefix, tail, what, error_at = _runtime_fault(config, rng, kind, prefix, faults)
            except _Retry:
                continue
            words = [i.word() for i in prefix] + [i.word() for i in tail] + [_finish_word()]
            error_pc = len(prefix) + error_at
        elif at_end:
            words = [i.word() for i in prefix]
            if (len(words) + 1) * INSTRUCTION_BYTES > dram_size - program_addr:
                continue
            # Move the program so that its last instruction ends exactly at the end of memory.
            program_addr = dram_size - len(words) * INSTRUCTION_BYTES
            if any(addr + len(blob) > program_addr for addr, blob in b.blobs) or not words:
                continue
            what, error_pc = "no FINISH: the fetch after the last instruction is past the end of memory", len(words)
        else:
            word, what = getattr(faults, kind)()
            words = [i.word() for i in prefix] + [word]
            error_pc = len(words) - 1
            if rng.random() < 0.3:    # never reached
                words.append(encode(Opcode.SETPP, **faults.legal(Opcode.SETPP)))
            words.append(_finish_word())
        dram = _image(b, dram_size, program_addr, words)
        description = (f"{_config_summary(config)}: {kind}: {what}; error_pc {error_pc}; after "
                       f"{len(prefix)} legal instructions [{'; '.join(summaries)}]")
        return Program(config, words, dram, program_addr, dram_size, ILLEGAL_KINDS[kind], description,
                       error_pc=error_pc)
    raise ValueError(f"Could not draw an illegal program for {config!r} in {dram_size} bytes")


def _runtime_fault(config: AcceleratorConfig, rng: np.random.Generator, kind: str, prefix: list[_Instr],
                   faults: _Faults):
    """The tail of a deadlock or token-overflow program: (prefix, tail, what, index of the faulty tail word)."""

    def harmless(engine: int) -> _Instr:
        if engine == _LOAD:      # one activation line into the top of the buffer nobody reads after this
            f = faults.legal(Opcode.LOAD)
            f.update(sram_addr=config.act_buffer_depth - 1, y_size=1, x_size=1)
            return _Instr(Opcode.LOAD, f, touches=footprint(Opcode.LOAD, f, config))
        if engine == _COMPUTE:
            return _barrier(config, None)
        return _Instr(Opcode.SETPP, faults.legal(Opcode.SETPP))

    if kind == "deadlock":
        engine, pop = [(_LOAD, "pop_next"), (_COMPUTE, "pop_prev"), (_COMPUTE, "pop_next"), (_STORE, "pop_prev"),
                       (None, "cycle")][int(rng.integers(5))]
        if engine is None:       # compute waits for store, store waits for compute
            a, b = harmless(_COMPUTE), harmless(_STORE)
            a.after = b.after = []
            a.flags.update(pop_next=1, push_next=1)
            b.flags.update(pop_prev=1, push_prev=1)
            return (prefix, [a, b], f"a compute instruction ({len(prefix)}) and a store instruction "
                    f"({len(prefix) + 1}) each wait for the other", 2)
        ins = harmless(engine)
        ins.after = []
        ins.flags[pop] = 1
        return (prefix, [ins], f"{_ENGINE_NAME[engine]} engine instruction {len(prefix)} pops ({pop}) a token "
                f"nobody pushes", 1)
    # token overflow: TOKEN_QUEUE_DEPTH + 1 pushes nobody pops, the first one after the consumer is idle
    producer, consumer = _QUEUES[int(rng.integers(4))]
    tail = [harmless(producer) for _ in range(TOKEN_QUEUE_DEPTH + 1)]
    for t in tail:
        t.after = []
    last = [x for x in prefix if x.engine == consumer]
    if last:
        tail[0].after = [last[-1]]
    out = _place_tokens(prefix + tail, config)
    first = next(i for i, x in enumerate(out) if x is tail[0])
    if out[first:] != tail:
        raise _Retry("a barrier went between the pushes")
    flag = "push_next" if consumer > producer else "push_prev"
    for t in tail:
        if t.flags[flag]:
            raise _Retry("the scheduler already gave the tail a push")
        t.flags[flag] = 1
    what = (f"{TOKEN_QUEUE_DEPTH + 1} {_ENGINE_NAME[producer]} instructions push onto the "
            f"{_ENGINE_NAME[producer]}->{_ENGINE_NAME[consumer]} queue; nothing pops")
    return out[:first], tail, what, TOKEN_QUEUE_DEPTH
