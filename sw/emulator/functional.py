"""The emulator's functional mode: every instruction's effects at once, in program order, no cycles.

Why this leaves the memory the timed run leaves, for the programs it accepts. In the timed model
(:mod:`sw.emulator.machine`) an instruction's effects happen between its start and its end, and:

- each engine starts its instructions in program order, one after the other, so on each engine the effects
  follow program order (a COMPUTE reads its buffers when it frees its engine and writes the accumulators when
  its results show; the COMPUTE after it reads other buffers, and an ALU waits for those results);
- a popped token was pushed when its pusher ended, so the pusher's effects precede the popper's.

These two relations generate the happens-before order (:mod:`sw.emulator.order`). When every pop takes a token
pushed by an instruction *earlier in program order*, program order is a linear extension of happens-before. A
program is race-free when every two instructions of different engines that touch the same buffer line or memory
byte, one writing, are ordered by happens-before: then both runs apply every pair of conflicting effects in the same
order, so every location sees the same writes in the same order and ends with the same value (buffers, accumulators,
memory, the non-finite flags and the MAC count). A write of the value already there conflicts with no reader: the
compiler's barriers (an ALU MAX of one accumulator line with itself, which STOREs of the layer may read
concurrently) are such writes, and its programs are race-free up to them. Such a program also cannot deadlock (the
earliest unfinished instruction can always start) and, when the token analysis finds no push that could meet a full
queue under any timing, cannot overflow a token queue; it must reach FINISH without a decoding error and not store
over its own code, which is read before it runs.

:func:`run_in_order` checks all of that except race-freedom from the instruction words alone, and declines
(returns None) otherwise; the caller then runs the timed model. Race-freedom is the premise: the compiler's
programs have it (tests/sim/test_emulator_modes.py checks them with ``sim.programs.check_schedule``), and so do the
random programs of ``sim.programs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import INSTRUCTION_BYTES, ErrorCode, Kind, Opcode, Queue
from hw.spec.layout import output_line_bytes

from . import state as ops
from .checks import decode_checked
from .events import Events, count_events
from .memory import BatchedMemory
from .order import analyse_tokens
from .plans import compute_rows

__all__ = ["InOrderProgram", "decode_program", "run_in_order"]

_ENGINE = {Queue.LOAD: 0, Queue.COMPUTE: 1, Queue.STORE: 2}
#: Instructions are read this many bytes at a time.
_FETCH_BYTES = 64 * INSTRUCTION_BYTES
_EFFECTS = {Opcode.LOAD: ops.load, Opcode.ALU: ops.alu, Opcode.SETPP: ops.setpp, Opcode.STORE: ops.store}


@dataclass(frozen=True)
class InOrderProgram:
    """A program decoded up to its FINISH, and whether program order may stand in for time."""

    instructions: tuple[tuple[Kind, dict], ...]
    #: Index of FINISH.
    finish: int
    #: Why program order may not stand in for the timed run ("" when it may).
    refused: str
    #: Its events by the lookup flag it starts with (counted on first use; the program is cached by its words).
    _events: dict = field(default_factory=dict, compare=False, repr=False)

    def events(self, config: AcceleratorConfig, lut: int) -> Events:
        """What running it makes the engine do on ``config`` (the configuration it was decoded for), starting
        with the post-processing's lookup flag ``lut``."""
        if lut not in self._events:
            self._events[lut] = count_events(config, list(self.instructions), lut=lut)
        return self._events[lut]


def _words(memory: BatchedMemory, program_addr: int) -> list[int] | None:
    """Instruction words from ``program_addr`` up to the first FINISH opcode (None: none before the end); every
    sample must hold them alike."""
    if program_addr % INSTRUCTION_BYTES:
        return None
    words = []
    for at in range(program_addr, memory.size - INSTRUCTION_BYTES + 1, _FETCH_BYTES):
        n = min(_FETCH_BYTES, (memory.size - at) // INSTRUCTION_BYTES * INSTRUCTION_BYTES)
        code = memory.rows(at, 1, 0, n)[0, 0].tobytes()           # the first sample's; checked below
        for i in range(0, len(code), INSTRUCTION_BYTES):
            word = int.from_bytes(code[i:i + INSTRUCTION_BYTES], "little")
            words.append(word)
            if word & 0xF == Opcode.FINISH:
                memory.code(program_addr, len(words) * INSTRUCTION_BYTES)
                return words
    return None


def decode_program(memory: BatchedMemory, config: AcceleratorConfig, program_addr: int) -> InOrderProgram:
    """Decode the program at ``program_addr`` once (cached by its words) and decide whether it may run in order."""
    words = _words(memory, program_addr)
    if words is None:
        return InOrderProgram((), 0, "no FINISH where the engine would fetch")
    return _decode(tuple(words), config, memory.size, program_addr)


@lru_cache(maxsize=64)
def _decode(words: tuple[int, ...], config: AcceleratorConfig, dram_size: int, program_addr: int) -> InOrderProgram:
    instructions = []
    for i, word in enumerate(words[:-1]):
        kind, fields, error = decode_checked(word, config, dram_size)
        if error is not ErrorCode.NONE:
            return InOrderProgram((), 0, f"instruction {i} is illegal ({error.name})")
        instructions.append((kind, fields))
    kind, _, error = decode_checked(words[-1], config, dram_size)
    if error is not ErrorCode.NONE:
        return InOrderProgram((), 0, f"FINISH at {len(words) - 1} is illegal ({error.name})")
    analysis = analyse_tokens([(_ENGINE[k.queue], f) for k, f in instructions])
    if analysis.unmatched:
        return InOrderProgram((), 0, f"instruction {analysis.unmatched[0][0]} pops a token no earlier "
                                     f"instruction pushes")
    if analysis.overflows:
        return InOrderProgram((), 0, f"instruction {analysis.overflows[0][0]} may push onto a full token queue")
    code = (program_addr, program_addr + len(words) * INSTRUCTION_BYTES)
    for i, (kind, f) in enumerate(instructions):
        if kind.opcode is Opcode.STORE:
            end = f["dram_addr"] + (f["y_size"] - 1) * f["dram_stride"] + f["x_size"] * output_line_bytes(config)
            if f["dram_addr"] < code[1] and code[0] < end:
                return InOrderProgram((), 0, f"instruction {i} stores over the program")
    return InOrderProgram(tuple(instructions), len(words) - 1, "")


def run_in_order(s: ops.EngineState, program_addr: int = 0):
    """Run the program at ``program_addr`` in program order on ``s``; its :class:`~sw.emulator.machine.Status`
    (no cycles), or None if the program is not one whose timed run this reproduces (nothing has run then)."""
    from .machine import Status

    program = decode_program(s.memory, s.config, program_addr)
    if program.refused:
        return None
    c = s.config
    events = program.events(c, s.use_lut)
    macs = 0
    for kind, f in program.instructions:
        op = kind.opcode
        if op is Opcode.COMPUTE:
            ops.compute_accumulate(s, f, ops.compute_products(s, f))
            macs += f["out_h"] * f["out_w"] * f["kh"] * f["kw"] * compute_rows(c, f) * c.cols
        else:
            _EFFECTS[op](s, f)
    samples = np.broadcast_to(s.saw_nonfinite, (s.batch,)).copy()
    return Status(done=True, pc=program.finish, cycles=None, instructions=len(program.instructions), macs=macs,
                  nonfinite=bool(samples.any()), nonfinite_samples=samples, events=events)
