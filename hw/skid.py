"""A two-entry buffer whose ``ready`` is a flip-flop: back-pressure for a pipeline that stalls as a whole."""

from amaranth.hdl import Mux, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """``i`` -> two registers -> ``o``, one cycle of latency, a transfer per cycle in steady state.

    ``i.ready`` is registered: it says, one cycle ahead, that there is room for a transfer whatever ``o.ready``
    does in that cycle. A pipeline that advances exactly when ``i.ready`` is high (and offers its result on ``i``
    as it advances) therefore stalls through one flip-flop driving its enables, never through a combinational path
    from ``o.ready``; the second entry catches the result that was already on its way. ``o.payload`` is a
    register too.
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        head = Signal(self._shape)          # what o offers
        second = Signal(self._shape)        # the result that arrived while o was stalled
        count = Signal(range(3))
        push = self.i.valid & self.i.ready
        pop = self.o.valid & self.o.ready
        m.d.comb += [self.o.valid.eq(count != 0), self.o.payload.eq(head)]

        after = Signal(range(3))
        m.d.comb += after.eq(count + push - pop)
        m.d.sync += [count.eq(after), self.i.ready.eq(after < 2)]
        with m.If(pop):
            # The head leaves: the second entry (if any) moves up, or the incoming one takes its place.
            m.d.sync += head.eq(Mux(count == 2, second, self.i.payload))
            with m.If(push & (count == 2)):
                m.d.sync += second.eq(self.i.payload)
        with m.Elif(push):
            with m.If(count == 0):
                m.d.sync += head.eq(self.i.payload)
            with m.Else():
                m.d.sync += second.eq(self.i.payload)
        return m
