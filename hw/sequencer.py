"""What every engine does around its instructions: wait for tokens, start, run, push tokens.

One implementation, used by the load, compute and store engines, so the token protocol of
``hw/spec/isa.py`` is written once in hardware.
"""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .spec.isa import HEADER, INSTRUCTION_BITS

__all__ = ["engine_control_signature", "Sequencer"]

_OFFSET = {}
_at = 0
for _f in HEADER:
    _OFFSET[_f.name] = _at
    _at += _f.bits


def engine_control_signature() -> wiring.Signature:
    """The engine's side of the command queue and the token queues, and what it reports to the controller."""
    return wiring.Signature({
        "cmd": In(stream.Signature(unsigned(INSTRUCTION_BITS))),
        "halt": In(1),                 # an error happened elsewhere: start nothing new
        "avail_prev": In(1), "avail_next": In(1),
        "pop_prev": Out(1), "pop_next": Out(1), "push_prev": Out(1), "push_next": Out(1),
        "running": Out(1),             # an instruction is executing
        "active": Out(1),              # running, or finishing earlier work in the background
        "waiting": Out(1),             # an instruction is at the head but its tokens are missing
        "can_start": Out(1),
    })


class Sequencer:
    """Builds the sequencing logic inside an engine's ``elaborate``.

    ``word`` holds the running instruction from the cycle after ``start``; during the ``start`` cycle the
    instruction is ``incoming`` (use it to initialise counters). The engine pulses ``done`` when it has
    finished, which pushes the instruction's tokens.
    """

    def __init__(self, m: Module, control, *, defer_push_next: bool = False):
        self.word = Signal(INSTRUCTION_BITS)
        self.incoming = control.cmd.payload
        #: The engine may refuse to start the incoming instruction (e.g. until earlier results are written).
        self.ready = Signal(init=1)
        #: Work that outlives ``done`` (results still being written); keeps the engine ``active``.
        self.background = Signal()
        m.d.comb += control.active.eq(control.running | self.background)
        self.start = Signal()
        self.done = Signal()
        c = control
        head = c.cmd.payload
        needs_prev = head[_OFFSET["pop_prev"]]
        needs_next = head[_OFFSET["pop_next"]]
        m.d.comb += [
            c.can_start.eq(c.cmd.valid & ~c.running & ~c.halt & self.ready
                           & (~needs_prev | c.avail_prev) & (~needs_next | c.avail_next)),
            c.waiting.eq(c.cmd.valid & ~c.running & ~c.halt & ~c.can_start),
            c.cmd.ready.eq(c.can_start),
            self.start.eq(c.can_start),
            c.pop_prev.eq(c.can_start & needs_prev),
            c.pop_next.eq(c.can_start & needs_next),
            c.push_prev.eq(self.done & self.word[_OFFSET["push_prev"]]),
        ]
        if not defer_push_next:
            # An engine that defers it drives ``push_next`` itself, once the instruction's results are visible.
            m.d.comb += c.push_next.eq(self.done & self.word[_OFFSET["push_next"]])
        with m.If(c.can_start):
            m.d.sync += [self.word.eq(head), c.running.eq(1)]
        with m.Elif(self.done):
            m.d.sync += c.running.eq(0)
