"""The emulator: fetch, dispatch, three concurrent engines and their token queues, in simulated time.

Instructions are fetched in order from external memory and dispatched to the load, compute or store
queue. An engine starts its head instruction once the tokens it pops are there, runs it for the cycles
the :class:`~sw.emulator.timing.Timing` model gives, then applies its effect and pushes its tokens. FINISH
is dispatched once every queue is empty and every engine idle. An error stops dispatch; the engines
finish what they started and the machine halts with the error's code.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import INSTRUCTION_BYTES, TOKEN_QUEUE_DEPTH, ErrorCode, Kind, Opcode, Queue

from . import state as ops
from .checks import decode_checked
from .timing import Timing

__all__ = ["Emulator", "Status"]

_EFFECTS = {Opcode.LOAD: ops.load, Opcode.COMPUTE: ops.compute, Opcode.ALU: ops.alu,
            Opcode.SETPP: ops.setpp, Opcode.STORE: ops.store}
_ORDER = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)


@dataclass
class Status:
    """What the host reads back: the same registers the RTL exposes."""

    done: bool = False
    error: ErrorCode = ErrorCode.NONE
    #: Index of the instruction that raised the error (or of FINISH).
    pc: int = 0
    cycles: int = 0
    instructions: int = 0
    macs: int = 0
    busy: dict = field(default_factory=lambda: {q.value: 0 for q in _ORDER})
    #: Cycles an engine had an instruction but waited for a token.
    stalled: dict = field(default_factory=lambda: {q.value: 0 for q in _ORDER})
    nonfinite: bool = False


@dataclass
class _Engine:
    queue: Queue
    pending: deque = field(default_factory=deque)   # (index, kind, fields)
    running: tuple | None = None                    # (index, kind, fields, end)
    waiting_since: int | None = None


class Emulator:
    """Runs a program on numpy memories exactly as the RTL does, and counts cycles."""

    def __init__(self, config: AcceleratorConfig, dram, *, memory_latency: int = 4):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")
        self.config = config
        self.state = ops.EngineState(config, np.frombuffer(bytearray(dram), dtype=np.uint8).copy())
        self.timing = Timing(config, memory_latency=memory_latency)

    @property
    def dram(self) -> np.ndarray:
        return self.state.dram

    def _fetch(self, pc: int, program_addr: int) -> int | None:
        at = program_addr + pc * INSTRUCTION_BYTES
        if at + INSTRUCTION_BYTES > self.dram.size:
            return None
        return int.from_bytes(self.dram[at:at + INSTRUCTION_BYTES].tobytes(), "little")

    def run(self, program_addr: int = 0, *, max_cycles: int = 1 << 40) -> Status:
        """Run from ``program_addr`` until FINISH or an error."""
        st = Status()
        t = self.timing
        engines = {q: _Engine(q) for q in _ORDER}
        tokens = {pair: deque() for pair in (("load", "compute"), ("compute", "load"),
                                             ("compute", "store"), ("store", "compute"))}
        neighbours = {Queue.LOAD: (None, "compute"), Queue.COMPUTE: ("load", "store"), Queue.STORE: ("compute", None)}
        now, pc, fetched_at = 0, 0, t.fetch
        halting = False   # an error happened: finish what runs, start nothing new

        def tokens_ready(e: _Engine, f: dict) -> bool:
            prev, nxt = neighbours[e.queue]
            return (not f["pop_prev"] or bool(tokens[(prev, e.queue.value)])) and \
                   (not f["pop_next"] or bool(tokens[(nxt, e.queue.value)]))

        while True:
            progress = True
            while progress:
                progress = False
                # Engines start their head instruction when its tokens are there.
                for q in _ORDER:
                    e = engines[q]
                    if halting or e.running or not e.pending:
                        continue
                    index, kind, f = e.pending[0]
                    if not tokens_ready(e, f):
                        if e.waiting_since is None:
                            e.waiting_since = now
                        continue
                    prev, nxt = neighbours[q]
                    if f["pop_prev"]:
                        tokens[(prev, q.value)].popleft()
                    if f["pop_next"]:
                        tokens[(nxt, q.value)].popleft()
                    if e.waiting_since is not None:
                        st.stalled[q.value] += now - e.waiting_since
                        e.waiting_since = None
                    e.pending.popleft()
                    cost = t.cost(kind, f)
                    e.running = (index, kind, f, now + cost)
                    st.busy[q.value] += cost
                    progress = True
                # Dispatch the next fetched instruction.
                if not halting and fetched_at <= now:
                    word = self._fetch(pc, program_addr)
                    if word is None:
                        st.error, st.pc, halting = ErrorCode.DRAM_RANGE, pc, True
                        continue
                    kind, f, error = decode_checked(word, self.config, self.dram.size)
                    if error is not ErrorCode.NONE:
                        st.error, st.pc, halting = error, pc, True
                        continue
                    if kind.opcode is Opcode.FINISH:
                        if all(not e.pending and not e.running for e in engines.values()):
                            st.done, st.pc, st.cycles = True, pc, now + 1
                            st.nonfinite = self.state.saw_nonfinite
                            return st
                    else:
                        e = engines[kind.queue]
                        if len(e.pending) < t.queue_depth:
                            e.pending.append((pc, kind, f))
                            st.instructions += 1
                            pc += 1
                            fetched_at = now + t.fetch
                            progress = True

            # Advance to the next completion or fetch.
            events = [e.running[3] for e in engines.values() if e.running]
            if not halting and fetched_at > now:
                events.append(fetched_at)
            if not events:
                if halting:
                    st.cycles = now + 1
                    return st
                # Nothing runs and nothing can start: every engine waits for a token that cannot come.
                st.error, st.pc, st.cycles = ErrorCode.DEADLOCK, pc, now + 1
                return st
            now = min(events)
            if now > max_cycles:
                raise RuntimeError(f"emulation exceeded {max_cycles} cycles")
            for q in _ORDER:
                e = engines[q]
                if e.running and e.running[3] == now:
                    index, kind, f, _ = e.running
                    e.running = None
                    _EFFECTS[kind.opcode](self.state, f)
                    if kind.opcode is Opcode.COMPUTE:
                        st.macs += f["out_h"] * f["out_w"] * f["kh"] * f["kw"] * self.config.rows * self.config.cols
                    prev, nxt = neighbours[q]
                    for flag, other in (("push_prev", prev), ("push_next", nxt)):
                        if f[flag]:
                            queue = tokens[(q.value, other)]
                            if len(queue) >= TOKEN_QUEUE_DEPTH:
                                st.error, st.pc, halting = ErrorCode.TOKEN_OVERFLOW, index, True
                            else:
                                queue.append(now)
