"""DMA address generation shared by the load (AR) and store (AW) engines."""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR
from .spec.microarchitecture import BURST_BOUNDARY, MAX_BURST_BEATS

__all__ = ["BurstAddressGenerator", "MAX_BURST_BEATS", "max_bursts"]


def max_bursts(rows: int, beats: int, bus_bytes: int) -> int:
    """Most bursts ``rows`` rows of ``beats`` beats can take: each row is cut every 256 beats and at every 4 KiB
    boundary it crosses."""
    return rows * (beats // MAX_BURST_BEATS + beats * bus_bytes // BURST_BOUNDARY + 2)



class BurstAddressGenerator(wiring.Component):
    """Rows of beats into AXI4 INCR bursts: at most 256 beats, never across a 4 KiB boundary (AXI's rule).

    Row ``y`` starts at ``base + y * stride``. Each burst's length is also offered on ``lengths`` (the
    store engine needs it to place WLAST); a burst is issued only when both the address channel and
    ``lengths`` take it. ``max_rows`` and ``max_beats`` (per row) size the counters: the largest an instruction's
    fields can ask for.
    """

    def __init__(self, bus_bytes: int, *, max_rows: int, max_beats: int):
        self._bus_bytes = bus_bytes
        super().__init__({
            "start": In(1),
            "base": In(32), "rows": In(range(max_rows + 1)), "stride": In(32), "beats": In(range(max_beats + 1)),
            "addr": Out(wiring.Signature({"valid": Out(1), "ready": In(1), "addr": Out(32), "len": Out(8),
                                          "size": Out(3), "burst": Out(2)})),
            "lengths": Out(stream.Signature(range(MAX_BURST_BEATS + 1))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        shift = self._bus_bytes.bit_length() - 1
        row = Signal.like(self.rows)
        row_base = Signal(32)
        cursor = Signal(32)
        remaining = Signal.like(self.beats)

        to_4k = Signal(13 - shift + 1)
        m.d.comb += to_4k.eq((BURST_BOUNDARY - cursor[:BURST_BOUNDARY.bit_length() - 1]) >> shift)
        capped = Mux(remaining < MAX_BURST_BEATS, remaining, MAX_BURST_BEATS)
        count = Signal(range(MAX_BURST_BEATS + 1))
        m.d.comb += count.eq(Mux(to_4k < capped, to_4k, capped))

        m.d.comb += [
            self.addr.addr.eq(cursor), self.addr.len.eq(count - 1), self.addr.size.eq(shift),
            self.addr.burst.eq(BURST_INCR), self.lengths.payload.eq(count),
        ]
        issue = self.busy & self.addr.ready & self.lengths.ready
        m.d.comb += [self.addr.valid.eq(self.busy & self.lengths.ready),
                     self.lengths.valid.eq(self.busy & self.addr.ready)]

        with m.If(self.start):
            m.d.sync += [row.eq(0), row_base.eq(self.base), cursor.eq(self.base), remaining.eq(self.beats),
                         self.busy.eq((self.rows != 0) & (self.beats != 0))]
        with m.Elif(issue):
            with m.If(remaining == count):
                with m.If(row + 1 == self.rows):
                    m.d.sync += self.busy.eq(0)
                m.d.sync += [row.eq(row + 1), row_base.eq(row_base + self.stride),
                             cursor.eq(row_base + self.stride), remaining.eq(self.beats)]
            with m.Else():
                m.d.sync += [cursor.eq(cursor + (count << shift)), remaining.eq(remaining - count)]
        return m
