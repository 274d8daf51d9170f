"""A UART (8 data bits, no parity, one stop bit) as two streams of bytes, at a whole number of clocks per bit.

The receiver samples each bit in its middle, counted from the falling edge of the start bit; a byte whose stop bit
is low (a framing error) is dropped, and a byte that arrives while the last one is still unread is dropped too
(``overrun`` pulses): the bridge's protocol answers every request, so the host sees a lost byte as a timeout or a
bad checksum, never as a hang.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTReceiver", "UARTTransmitter"]


class _UARTSide(wiring.Component):
    """What the receiver and the transmitter share: their bit time in clock cycles (at least 4)."""

    def __init__(self, clocks_per_bit: int):
        if not isinstance(clocks_per_bit, int) or isinstance(clocks_per_bit, bool):
            raise TypeError(f"Clocks per bit must be an integer, not {clocks_per_bit!r}")
        if clocks_per_bit < 4:
            raise ValueError(f"Clocks per bit must be at least 4, not {clocks_per_bit}")
        self._clocks_per_bit = clocks_per_bit
        super().__init__()

    @property
    def clocks_per_bit(self) -> int:
        return self._clocks_per_bit


class UARTReceiver(_UARTSide):
    """``rx`` (idle high) to a stream of bytes; ``rx`` goes through a two-flip-flop synchronizer first."""

    rx: In(1, init=1)
    data: Out(stream.Signature(8))
    overrun: Out(1)

    def elaborate(self, platform):
        m = Module()
        cpb = self._clocks_per_bit
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(cpb + cpb // 2))
        bit = Signal(range(9))
        shift = Signal(8)

        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # the first data bit's middle is one and a half bits after the start bit's edge
                    m.d.sync += [timer.eq(cpb + cpb // 2 - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], rx)), timer.eq(cpb - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(rx):
                        with m.If(self.data.valid & ~self.data.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
                    m.next = "IDLE"
        return m


class UARTTransmitter(_UARTSide):
    """A stream of bytes to ``tx`` (idle high): start bit, eight data bits least significant first, stop bit."""

    data: In(stream.Signature(8))
    tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        cpb = self._clocks_per_bit
        frame = Signal(10, init=0x3FF)     # stop, data, start: shifted out from bit 0
        bits = Signal(range(11))
        timer = Signal(range(cpb))

        m.d.comb += [self.tx.eq(frame[0]), self.data.ready.eq(bits == 0)]
        with m.If(bits == 0):
            with m.If(self.data.valid):
                m.d.sync += [frame.eq(Cat(Const(0, 1), self.data.payload, Const(1, 1))), bits.eq(10),
                             timer.eq(cpb - 1)]
        with m.Elif(timer == 0):
            m.d.sync += [frame.eq(Cat(frame[1:], Const(1, 1))), bits.eq(bits - 1), timer.eq(cpb - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m
