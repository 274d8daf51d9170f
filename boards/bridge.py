"""The UART bridge: the host's access to the board's memory and to the engine's control registers.

Block diagram::

    rx --> UARTReceiver --> frame parser --+--> mem  (AXI4-Lite master: the board's memory, 32-bit words)
                                           +--> ctrl (AXI4-Lite master: the engine's control registers)
    tx <-- UARTTransmitter <-- responses <-+

The protocol (commands, header, checksums, statuses) is defined once in ``hw/spec/bridge.py`` and shared with the
host driver. Every request gets an answer; a malformed header is answered and the line is then drained until it
has been quiet for ``idle_timeout`` cycles, so a host can always resynchronise; a frame that stops half-way is
answered TIMEOUT. Nothing waits for the host forever, and nothing waits for a bus response forever either: the
memory and the control port answer every access.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.axi import axi4_lite_signature
from hw.spec.bridge import HEADER_BYTES, WRITES, Command, Status

from .uart import UARTReceiver, UARTTransmitter

__all__ = ["UARTBridge"]


class UARTBridge(wiring.Component):
    """The bridge at ``clocks_per_bit`` clock cycles per UART bit (the clock over the baud rate)."""

    def __init__(self, *, clocks_per_bit: int, idle_timeout: int, ctrl_addr_bits: int = 8, compact: bool = False,
                 held_valids: bool = False):
        if not isinstance(idle_timeout, int) or idle_timeout < 20 * clocks_per_bit:
            raise ValueError(f"Idle timeout must be at least two bytes' time ({20 * clocks_per_bit} cycles), "
                             f"not {idle_timeout!r}")
        self._clocks_per_bit, self._idle_timeout = clocks_per_bit, idle_timeout
        #: A small part's bridge: the frame's address and word count are counted in the header's registers, not
        #: copied out of them (48 flip-flops less).
        self._compact = compact
        #: A word's write valids from registers set as it is received (an engine's ``mid_clock``): the frame's checks
        #: off the memory's arbitration, which the engine's own requests wait on; and the write moves on from those
        #: registers a cycle after its handshakes, not from the target's ready (whose path back into the state went
        #: through the engine's register slave).
        self._held_valids = held_valids
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1),
                          "mem": Out(axi4_lite_signature(32)), "ctrl": Out(axi4_lite_signature(ctrl_addr_bits))})

    @property
    def idle_timeout(self) -> int:
        return self._idle_timeout

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = receiver = UARTReceiver(self._clocks_per_bit)
        m.submodules.transmitter = transmitter = UARTTransmitter(self._clocks_per_bit)
        m.d.comb += [receiver.rx.eq(self.rx), self.tx.eq(transmitter.tx)]
        got, byte = receiver.data.valid, receiver.data.payload

        # The line is quiet once no byte arrived for idle_timeout cycles.
        idle = Signal(range(self._idle_timeout + 1))
        quiet = idle == self._idle_timeout
        with m.If(got):
            m.d.sync += idle.eq(0)
        with m.Elif(~quiet):
            m.d.sync += idle.eq(idle + 1)

        s = _State(compact=self._compact)
        with m.FSM(init="HEADER", name="bridge") as fsm:
            self._parse_header(m, s, got, byte, quiet)
            self._access(m, s, got, byte, quiet)
            self._respond(m, s, transmitter, quiet)
        m.d.comb += receiver.data.ready.eq(fsm.ongoing("HEADER") | fsm.ongoing("RECEIVE")
                                           | fsm.ongoing("PAYLOAD_SUM") | fsm.ongoing("DRAIN"))
        return m

    def _parse_header(self, m: Module, s: "_State", got, byte, quiet) -> None:
        """HEADER collects eight bytes; CHECK accepts them or answers with what is wrong."""
        command, address, count = s.header[:8], s.header[8:40], s.header[40:56]
        with m.State("HEADER"):
            with m.If(got):
                m.d.sync += [s.header.eq(Cat(s.header[8:], byte)), s.received.eq(s.received + 1),
                             s.rx_sum.eq(s.rx_sum + byte)]
                with m.If(s.received == HEADER_BYTES - 1):
                    m.next = "CHECK"
            with m.Elif((s.received != 0) & quiet):
                s.answer(m, Status.TIMEOUT)
        with m.State("CHECK"):
            if not self._compact:       # else they are the header's
                m.d.sync += [s.addr.eq(address), s.left.eq(count)]
            m.d.sync += [s.status.eq(Status.OK), s.tx_sum.eq(0),
                         s.rx_sum.eq(0), s.registers.eq((command == Command.READ_REGISTER)
                                                        | (command == Command.WRITE_REGISTER)),
                         s.index.eq(0)]
            with m.If(s.rx_sum != 0):
                s.answer(m, Status.BAD_HEADER_CHECKSUM, drain=True)
            with m.Elif((command == 0) | (command > max(Command))):
                s.answer(m, Status.BAD_COMMAND, drain=True)
            with m.Elif(count == 0):
                s.answer(m, Status.BAD_COUNT, drain=True)
            with m.Elif(address[:2] != 0):
                s.answer(m, Status.MISALIGNED, drain=True)
            with m.Elif((command == WRITES[0]) | (command == WRITES[1])):
                m.next = "RECEIVE"
            with m.Else():
                m.next = "READ"

    def _access(self, m: Module, s: "_State", got, byte, quiet) -> None:
        """Words through the port the command addresses: read and sent, or received and written. A word beyond the
        register window is not accessed."""
        for port in (self.mem, self.ctrl):
            m.d.comb += [port.ar.addr.eq(s.addr), port.aw.addr.eq(s.addr), port.w.data.eq(s.word),
                         port.w.strb.eq(0b1111), port.r.ready.eq(1), port.b.ready.eq(not self._held_valids)]
        port = _Selected(self, s.registers)
        outside = s.registers & (s.addr[len(self.ctrl.ar.addr):] != 0)
        self._read_words(m, s, port, outside)
        self._write_words(m, s, port, outside, got, byte, quiet)

    def _read_words(self, m: Module, s: "_State", port: "_Selected", outside) -> None:
        with m.State("READ"):
            with m.If(outside):
                m.d.sync += [s.word.eq(0), s.status.eq(Status.BUS_ERROR)]
                m.next = "SEND"
            with m.Else():
                m.d.comb += [self.ctrl.ar.valid.eq(s.registers), self.mem.ar.valid.eq(~s.registers)]
                with m.If(port.ar_ready):
                    m.next = "READ_DATA"
        with m.State("READ_DATA"):
            with m.If(port.r_valid):
                m.d.sync += s.word.eq(Mux(port.r_resp != 0, 0, port.r_data))
                with m.If(port.r_resp != 0):
                    m.d.sync += s.status.eq(Status.BUS_ERROR)
                m.next = "SEND"

    def _write_words(self, m: Module, s: "_State", port: "_Selected", outside, got, byte, quiet) -> None:
        aw_done, w_done = Signal(), Signal()
        with m.State("RECEIVE"):
            with m.If(got):
                m.d.sync += [s.word.eq(Cat(s.word[8:], byte)), s.index.eq(s.index + 1), s.rx_sum.eq(s.rx_sum + byte)]
                with m.If(s.index == 3):
                    # held_valids: aw_done and w_done stand for "not to write" (a word outside the registers)
                    m.d.sync += [aw_done.eq(outside if self._held_valids else 0),
                                 w_done.eq(outside if self._held_valids else 0)]
                    m.next = "WRITE"
            with m.Elif(quiet):
                s.answer(m, Status.TIMEOUT)
        with m.State("WRITE"):
            if self._held_valids:
                for target, selected in ((self.ctrl, s.registers), (self.mem, ~s.registers)):
                    m.d.comb += [target.aw.valid.eq(selected & ~aw_done), target.w.valid.eq(selected & ~w_done)]
            with m.If(outside):
                m.d.sync += s.status.eq(Status.BUS_ERROR)
                m.next = "NEXT_WORD"
            with m.Else():
                if not self._held_valids:
                    for target, selected in ((self.ctrl, s.registers), (self.mem, ~s.registers)):
                        m.d.comb += [target.aw.valid.eq(selected & ~aw_done), target.w.valid.eq(selected & ~w_done)]
                m.d.sync += [aw_done.eq(aw_done | port.aw_ready), w_done.eq(w_done | port.w_ready)]
                done = aw_done & w_done if self._held_valids else \
                    (aw_done | port.aw_ready) & (w_done | port.w_ready)
                with m.If(done):
                    m.next = "WRITE_RESPONSE"
        with m.State("WRITE_RESPONSE"):
            if self._held_valids:       # (the response waits here: the write moved on a cycle after its handshakes)
                m.d.comb += [self.ctrl.b.ready.eq(s.registers), self.mem.b.ready.eq(~s.registers)]
            with m.If(port.b_valid):
                with m.If(port.b_resp != 0):
                    m.d.sync += s.status.eq(Status.BUS_ERROR)
                m.next = "NEXT_WORD"
        with m.State("NEXT_WORD"):
            m.d.sync += [s.addr.eq(s.addr + 4), s.left.eq(s.left - 1)]
            m.next = "RECEIVE"
            with m.If(s.left == 1):
                m.next = "PAYLOAD_SUM"
        with m.State("PAYLOAD_SUM"):
            with m.If(got):
                with m.If(((s.rx_sum + byte)[:8] != 0) & (s.status == Status.OK)):
                    m.d.sync += s.status.eq(Status.BAD_PAYLOAD_CHECKSUM)
                m.next = "STATUS"
            with m.Elif(quiet):
                s.answer(m, Status.TIMEOUT)

    def _respond(self, m: Module, s: "_State", transmitter, quiet) -> None:
        """Read data, then the status and the checksum of everything sent; then a new header (or the drain)."""
        tx = transmitter.data
        with m.State("SEND"):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(s.word[:8])]
            with m.If(tx.ready):
                m.d.sync += [s.word.eq(s.word >> 8), s.index.eq(s.index + 1), s.tx_sum.eq(s.tx_sum + s.word[:8])]
                with m.If(s.index == 3):
                    m.d.sync += [s.addr.eq(s.addr + 4), s.left.eq(s.left - 1)]
                    m.next = "READ"
                    with m.If(s.left == 1):
                        m.next = "STATUS"
        with m.State("STATUS"):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(s.status)]
            with m.If(tx.ready):
                m.d.sync += s.tx_sum.eq(s.tx_sum + s.status)
                m.next = "SUM"
        with m.State("SUM"):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(-s.tx_sum)]
            with m.If(tx.ready):
                m.d.sync += [s.received.eq(0), s.rx_sum.eq(0)]
                m.next = "HEADER"
                with m.If(s.drain):
                    m.next = "DRAIN"
        with m.State("DRAIN"):
            with m.If(quiet):
                m.d.sync += s.drain.eq(0)
                m.next = "HEADER"


class _Selected:
    """What the addressed port answers with: the control registers' signals for register commands, else the
    memory's."""

    def __init__(self, bridge: UARTBridge, registers: Signal):
        def pick(channel: str, field: str):
            return Mux(registers, getattr(getattr(bridge.ctrl, channel), field),
                       getattr(getattr(bridge.mem, channel), field))
        self.ar_ready, self.r_valid, self.r_resp, self.r_data = (pick("ar", "ready"), pick("r", "valid"),
                                                                 pick("r", "resp"), pick("r", "data"))
        self.aw_ready, self.w_ready = pick("aw", "ready"), pick("w", "ready")
        self.b_valid, self.b_resp = pick("b", "valid"), pick("b", "resp")


class _State:
    """The bridge's registers, shared by the parts of its state machine."""

    def __init__(self, *, compact: bool = False):
        self.header = Signal(8 * HEADER_BYTES)
        self.received = Signal(range(HEADER_BYTES + 1))
        self.rx_sum, self.tx_sum = Signal(8), Signal(8)
        self.addr, self.left, self.word = Signal(32), Signal(16), Signal(32)
        if compact:     # the header's address and count fields, counted in place once the header is checked
            self.addr, self.left = self.header[8:40], self.header[40:56]
        self.index = Signal(2)
        self.status = Signal(8)
        self.registers, self.drain = Signal(), Signal()

    def answer(self, m: Module, status: Status, *, drain: bool = False) -> None:
        """Answer ``status`` now (nothing was sent yet); with ``drain``, then drop bytes until the line is quiet."""
        m.d.sync += [self.status.eq(status), self.tx_sum.eq(0), self.drain.eq(int(drain))]
        m.next = "STATUS"
