"""The happens-before order tokens impose on a program, under any timing (a static analysis, no memory).

Engines are numbered in pipeline order (0 load, 1 compute, 2 store); queue ``(a, b)`` carries tokens from engine
``a`` to its neighbour ``b``. An instruction starts after the previous one of its engine completed and after the
instructions that pushed the tokens it pops completed; the k-th pop from a queue takes the k-th push onto it.
:func:`analyse_tokens` finds the pops no earlier push feeds and the pushes that could find their queue full.
``sim.programs`` builds its race check on it; :mod:`sw.emulator.functional` uses it to decide when running a
program in program order is the same as running it in time.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from hw.spec.isa import TOKEN_QUEUE_DEPTH

__all__ = ["QUEUES", "TokenAnalysis", "analyse_tokens"]

QUEUES = ((0, 1), (1, 0), (1, 2), (2, 1))


@dataclass
class TokenAnalysis:
    pos: list            # index of each instruction within its engine
    clock: list          # per instruction: how many instructions of each engine surely completed before it starts
    pushes: dict         # queue (src, dst) -> instruction indices that push onto it, in order
    pops: dict           # queue -> instruction indices that pop from it, in order
    unmatched: list      # (instruction, queue) pops whose push comes later in program order or never
    overflows: list      # (instruction, queue, instruction whose pop would have made room or None)

    def before(self, i: int, engine_of_i: int, clock: tuple) -> bool:
        """Instruction ``i`` surely completed before an instruction with ``clock`` starts."""
        return clock[engine_of_i] > self.pos[i]


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


def analyse_tokens(entries: list[tuple[int, dict]]) -> TokenAnalysis:
    """Happens-before of a program given as ``(engine, flags)`` per instruction, in program order."""
    count = [0, 0, 0]
    last = [None, None, None]
    pos, clock = [], []
    pushes = {q: [] for q in QUEUES}
    pops = {q: [] for q in QUEUES}
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
    return TokenAnalysis(pos, clock, pushes, pops, unmatched, overflows)
