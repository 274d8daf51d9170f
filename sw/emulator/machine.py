"""The emulator: fetch, dispatch, three concurrent engines and their token queues, in simulated cycles.

Instructions are fetched in order and dispatched to the load, compute or store queue (the configuration's
``command_queue_depth`` each; with 0, handed to the engine in the cycle it starts them, the fetch waiting). An
engine starts its head instruction when it is free and the tokens it pops are visible; the instruction's effect
is applied, and its tokens pushed, when it ends (see :mod:`sw.emulator.timing`). FINISH completes once every
engine is idle. An error stops dispatch; engines finish what they started and the machine halts with the error's
code.

One run serves a batch of samples (:class:`~sw.emulator.memory.BatchedMemory`): they share the program, so they
share every decision and every cycle, and each effect applies to all of them at once. ``run(timed=False)`` is the
functional mode (:mod:`sw.emulator.functional`): program order, no cycles, for the programs where that leaves the
same memory; it falls back to the timed run for any other.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import HEADER, INSTRUCTION_BYTES, TOKEN_QUEUE_DEPTH, ErrorCode, Opcode, Queue

from . import state as ops
from .checks import decode_checked
from .events import Events, count_events
from .functional import run_in_order
from .memory import BatchedMemory
from .plans import compute_rows
from .timing import Timing

__all__ = ["Emulator", "Status"]

#: Effects applied when an instruction ends (COMPUTE has two halves, see run()).
_EFFECTS = {Opcode.LOAD: ops.load, Opcode.ALU: ops.alu, Opcode.SETPP: ops.setpp, Opcode.STORE: ops.store}
_ORDER = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)
_NEIGHBOURS = {Queue.LOAD: (None, Queue.COMPUTE), Queue.COMPUTE: (Queue.LOAD, Queue.STORE),
               Queue.STORE: (Queue.COMPUTE, None)}


@dataclass
class Status:
    """What the host reads back: the same registers the RTL exposes."""

    done: bool = False
    error: ErrorCode = ErrorCode.NONE
    #: Index of the instruction that raised the error (the dispatcher's position for runtime errors), or of FINISH.
    pc: int = 0
    #: Cycles from start to done; None for a functional-mode run.
    cycles: int | None = 0
    instructions: int = 0
    macs: int = 0
    busy: dict = field(default_factory=lambda: {q.value: 0 for q in _ORDER})
    #: Cycles an engine held an instruction it could not start yet.
    stalled: dict = field(default_factory=lambda: {q.value: 0 for q in _ORDER})
    #: Some STORE met a NaN or Inf operand (in any sample); per sample in ``nonfinite_samples``.
    nonfinite: bool = False
    nonfinite_samples: np.ndarray | None = None
    #: Cycle at which each instruction's effects became visible, by instruction index (per-layer timing).
    ended: dict = field(default_factory=dict)
    #: What the run made the engine do, a row per instruction (energy, see :mod:`sw.emulator.events`); None
    #: when it stopped with an error.
    events: Events | None = None


@dataclass
class _Engine:
    queue: Queue
    pending: deque = field(default_factory=deque)   # (ready cycle, index, kind, fields)
    free_at: int = 0                                # first cycle it may start an instruction
    results_at: int = 0                             # compute: cycle its last results are visible


class Emulator:
    """Runs a program on numpy memories exactly as the RTL does, and counts its cycles.

    ``dram`` is the memory image every sample starts from; ``batch`` samples run together (write their
    differences through :attr:`memory` before :meth:`run`, read their results from it after).
    """

    def __init__(self, config: AcceleratorConfig, dram, *, memory_latency: int = 4, batch: int = 1):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")
        self.config = config
        self.memory = BatchedMemory(dram, batch)
        self.state = ops.EngineState(config, self.memory)
        self.timing = Timing(config, memory_latency=memory_latency, queue_depth=config.command_queue_depth)

    @property
    def dram(self) -> np.ndarray:
        """The external memory of the first sample (of the only one: the memory itself)."""
        return self.memory.sample(0)

    def release(self) -> None:
        """Give the batch's large arrays back for the next run to reuse (optional; the emulator is unusable
        afterwards)."""
        self.state.release()
        self.memory.release()

    def _fetch(self, pc: int, program_addr: int) -> int | None:
        at = program_addr + pc * INSTRUCTION_BYTES
        if program_addr < 0 or program_addr % INSTRUCTION_BYTES or at + INSTRUCTION_BYTES > self.memory.size:
            return None
        return self.memory.word(at, INSTRUCTION_BYTES)

    def _opcode_at(self, pc: int, program_addr: int) -> int | None:
        """The opcode of instruction ``pc`` (what its fetch's decode waits for), None where it cannot be read."""
        word = self._fetch(pc, program_addr)
        return None if word is None else word & ((1 << HEADER[0].bits) - 1)

    def run(self, program_addr: int = 0, *, max_cycles: int = 1 << 40, timed: bool = True) -> Status:
        """Run from ``program_addr`` until FINISH or an error; ``timed=False``: the functional mode (no cycles,
        the same memory; the timed run where the program is not one it reproduces)."""
        if not timed:
            status = run_in_order(self.state, program_addr)
            if status is not None:
                return status
        return self._run_timed(program_addr, max_cycles)

    def _run_timed(self, program_addr: int, max_cycles: int) -> Status:
        st = Status()
        t = self.timing
        t.start()
        engines = {q: _Engine(q) for q in _ORDER}
        # Token queues hold the cycles their tokens become visible.
        tokens = {(a, b): deque() for a in _ORDER for b in _ORDER if b in _NEIGHBOURS[a]}
        events: list = []          # (cycle, sequence, action)
        products: dict = {}        # a COMPUTE's partial sums between its two halves
        sequence = 0

        def at(cycle, action):
            nonlocal sequence
            heapq.heappush(events, (cycle, sequence, action))
            sequence += 1

        now = 0
        pc = 0
        next_dispatch = t.fetch(self._opcode_at(0, program_addr))
        finish_at = None           # FINISH dispatched: the earliest cycle it can complete
        halting = False
        dispatched: list = []      # (kind, fields) in program order, for the events
        lut = self.state.use_lut   # the lookup flag before this program's first SETPP
        blocked = None             # command_queue_depth 0: (engine, kind, fields) of the word offered to it

        def push(source: Queue, target: Queue, visible: int, index: int):
            nonlocal halting
            queue = tokens[(source, target)]
            if len(queue) >= TOKEN_QUEUE_DEPTH:
                if not halting:
                    st.error, st.pc, halting = ErrorCode.TOKEN_OVERFLOW, index, True
            else:
                queue.append(visible)

        def ready_tokens(e: _Engine, f: dict) -> int | None:
            """The cycle the instruction's tokens are all visible, or None if one has not been pushed yet."""
            prev, nxt = _NEIGHBOURS[e.queue]
            when = 0
            for flag, other in (("pop_prev", prev), ("pop_next", nxt)):
                if f[flag]:
                    queue = tokens[(other, e.queue)]
                    if not queue:
                        return None
                    when = max(when, queue[0])
            return when

        def try_start(e: _Engine) -> bool:
            """Start the head instruction of ``e`` at ``now`` if it can; schedule its end."""
            if halting or not e.pending or e.free_at > now:
                return False
            ready, index, kind, f = e.pending[0]
            when = ready_tokens(e, f)
            if when is None or when > now or ready > now:
                return False
            if kind.opcode is Opcode.ALU and e.results_at > now:
                return False
            prev, nxt = _NEIGHBOURS[e.queue]
            for flag, other in (("pop_prev", prev), ("pop_next", nxt)):
                if f[flag]:
                    tokens[(other, e.queue)].popleft()
            e.pending.popleft()
            st.stalled[e.queue.value] += now - max(ready, e.free_at)
            start = now
            free, results = t.schedule(kind, f, start)
            results = max(results, e.results_at)      # an engine's results become visible in program order
            e.free_at = free
            e.results_at = results
            st.busy[e.queue.value] += free - 1 - start
            if kind.opcode is Opcode.COMPUTE:
                # The engine is free once the reads are issued; results (and push_next) come later.
                at(free, ("release", e, index, kind, f, ("push_prev",)))
                at(results, ("results", e, index, kind, f, ("push_next",)))
            else:
                at(free, ("release", e, index, kind, f, ("push_prev", "push_next")))
            return True

        while True:
            # What becomes visible now: ended instructions apply their effects and push their tokens.
            while events and events[0][0] <= now:
                _, _, (what, e, index, kind, f, flags) = heapq.heappop(events)
                st.ended[index] = now
                if kind.opcode is Opcode.COMPUTE:
                    # Buffers are read when the engine releases them; accumulators written when results show.
                    if what == "release":
                        products[index] = ops.compute_products(self.state, f)
                    else:
                        ops.compute_accumulate(self.state, f, products.pop(index))
                        st.macs += (f["out_h"] * f["out_w"] * f["kh"] * f["kw"] * compute_rows(self.config, f)
                                    * self.config.cols)
                else:
                    _EFFECTS[kind.opcode](self.state, f)
                prev, nxt = _NEIGHBOURS[e.queue]
                for flag in flags:
                    other = prev if flag == "push_prev" else nxt
                    if f[flag]:
                        push(e.queue, other, now, index)

            started = True
            while started:
                started = any([try_start(e) for e in engines.values()])

            idle = all(not e.pending and e.free_at <= now and e.results_at <= now for e in engines.values()) \
                and not events
            if finish_at is not None and now >= finish_at and idle and not halting:
                st.done, st.pc, st.cycles = True, pc, now
                st.nonfinite_samples = np.broadcast_to(self.state.saw_nonfinite, (self.memory.batch,)).copy()
                st.nonfinite = bool(st.nonfinite_samples.any())
                st.events = count_events(self.config, dispatched, lut=lut)
                return st

            # Dispatch.
            if not halting and finish_at is None and next_dispatch <= now:
                word = self._fetch(pc, program_addr)
                error = ErrorCode.DRAM_RANGE if word is None else None
                if word is not None:
                    kind, f, error = decode_checked(word, self.config, self.memory.size)
                if error is not ErrorCode.NONE:
                    st.error, st.pc, halting = error, pc, True
                elif kind.opcode is Opcode.FINISH:
                    finish_at = now + 1
                else:
                    e = engines[kind.queue]
                    if t.queue_depth == 0:
                        # No command queue: the engine takes the word in the cycle it starts it; until then the
                        # dispatcher offers it (from next_dispatch on: the engine's stall counter counts from there).
                        e.pending.append((next_dispatch, pc, kind, f))
                        blocked = None
                        if try_start(e):
                            dispatched.append((kind, f))
                            st.instructions += 1
                            pc += 1
                            next_dispatch = now + t.fetch(self._opcode_at(pc, program_addr))
                            continue
                        e.pending.pop()
                        blocked = (e, kind, f)
                    elif len(e.pending) < t.queue_depth:
                        e.pending.append((now + t.dispatch_to_start, pc, kind, f))
                        dispatched.append((kind, f))
                        st.instructions += 1
                        pc += 1
                        next_dispatch = now + t.fetch(self._opcode_at(pc, program_addr))
                        continue

            if halting and not events:
                st.cycles = now
                return st
            # Advance to the next cycle at which anything can change.
            candidates = [c for c, _, _ in events[:1]]
            if not halting:
                if finish_at is None and next_dispatch > now:
                    candidates.append(next_dispatch)
                if finish_at is not None and finish_at > now:
                    candidates.append(finish_at)
                if blocked is not None and next_dispatch <= now:
                    # The offered word's engine: when it could take it.
                    e, kind, f = blocked
                    when = ready_tokens(e, f)
                    if when is not None:
                        candidates.append(max(when, e.free_at, e.results_at if kind.opcode is Opcode.ALU else 0))
                for e in engines.values():
                    candidates += [e.free_at, e.results_at]
                    if e.pending:
                        ready, _, kind, f = e.pending[0]
                        when = ready_tokens(e, f)
                        if when is not None:
                            later = max(ready, when, e.free_at)
                            if kind.opcode is Opcode.ALU:
                                later = max(later, e.results_at)
                            if later > now:
                                candidates.append(later)
            candidates = [c for c in candidates if c > now]
            if not candidates:
                if halting:
                    st.cycles = now
                    return st
                # Nothing runs and nothing can start: every engine waits for a token that cannot come.
                st.error, st.pc, st.cycles = ErrorCode.DEADLOCK, pc, now
                return st
            now = min(candidates)
            if now > max_cycles:
                raise RuntimeError(f"emulation exceeded {max_cycles} cycles")
