"""What the modules of :mod:`sim.programs` share: the engines, the token flags and the program types."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hw.spec.isa import HEADER, KINDS, Opcode, Queue
from sw.compiler.program import Program as BaseProgram

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
