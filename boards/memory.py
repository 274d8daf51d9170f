"""On-chip memory standing in for DRAM on a board: AXI4 slaves for the engine's two master ports and an AXI4-Lite
slave for the UART bridge, all serving one single-ported RAM.

Block diagram::

    insn (AXI4, reads) --+
    data (AXI4)  --------+--> read side:  one burst at a time (host, data, insn) --+
    host (AXI4-Lite) ----+--> write side: one burst at a time (host, data) --------+--> RAM (one port: writes first)

The read and write sides run independently, as an AXI4 interconnect's do (the engine's store engine may hold a
write burst open while its data waits on loads), and share the RAM's one port cycle by cycle: a write beat takes
the port, a read beat waits. The RAM is block RAM (``lib.memory.Memory``; ECP5 DP16KD) or the iCE40 UltraPlus's
SPRAM (``SB_SPRAM256KA``, 16K x 16 bits each, side by side across the bus). A burst that reaches beyond the memory
is answered SLVERR and touches nothing.
"""

from amaranth.hdl import Cat, ClockSignal, Const, Elaboratable, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.axi import axi4_lite_signature, axi4_signature
from hw.buffer_ports import NO_COLLISIONS

__all__ = ["BoardMemory", "RESP_SLVERR", "SPRAM_WORDS", "SPRAM_BITS"]

RESP_SLVERR = 2
#: One SB_SPRAM256KA: 16384 words of 16 bits.
SPRAM_WORDS, SPRAM_BITS = 16384, 16


def _ram_signature(data_bits: int, depth: int) -> wiring.Signature:
    """A single-ported RAM, from the controller's side: ``read`` or a byte ``mask`` of writes at ``addr``;
    ``rdata`` holds the read word the cycle after a read."""
    return wiring.Signature({"addr": Out(range(depth)), "read": Out(1), "mask": Out(data_bits // 8),
                             "wdata": Out(data_bits), "rdata": In(data_bits)})


class _BlockRam(wiring.Component):
    """The RAM as block RAM."""

    def __init__(self, data_bits: int, depth: int):
        self._data_bits, self._depth = data_bits, depth
        super().__init__({"port": In(_ram_signature(data_bits, depth))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.storage = storage = Memory(shape=unsigned(self._data_bits), depth=self._depth, init=[],
                                                  attrs=NO_COLLISIONS)   # a read or a write a cycle
        read, write = storage.read_port(), storage.write_port(granularity=8)
        m.d.comb += [read.addr.eq(self.port.addr), read.en.eq(self.port.read), self.port.rdata.eq(read.data),
                     write.addr.eq(self.port.addr), write.en.eq(self.port.mask), write.data.eq(self.port.wdata)]
        return m


class _Spram(wiring.Component):
    """The RAM as SB_SPRAM256KA blocks side by side, 16 bits each; a behavioural model of the same block off the
    FPGA (``platform`` None: simulation), so the controller is tested with the single port it really has."""

    def __init__(self, data_bits: int):
        if data_bits % SPRAM_BITS:
            raise ValueError(f"SPRAM memory width must be a multiple of {SPRAM_BITS}, not {data_bits}")
        self._data_bits = data_bits
        super().__init__({"port": In(_ram_signature(data_bits, SPRAM_WORDS))})

    def elaborate(self, platform):
        m = Module()
        p = self.port
        for i in range(self._data_bits // SPRAM_BITS):
            lo, hi = p.mask[2 * i], p.mask[2 * i + 1]
            nibbles = Cat(lo, lo, hi, hi)             # MASKWREN enables nibbles; a byte is two
            data_in, data_out = p.wdata[16 * i:16 * i + 16], p.rdata[16 * i:16 * i + 16]
            if platform is None:
                m.submodules[f"spram{i}"] = _SpramModel(p.addr, data_in, nibbles, p.mask.any(), data_out)
            else:
                m.submodules[f"spram{i}"] = Instance(
                    "SB_SPRAM256KA", i_ADDRESS=p.addr, i_DATAIN=data_in, i_MASKWREN=nibbles,
                    i_WREN=p.mask.any(), i_CHIPSELECT=Const(1), i_CLOCK=ClockSignal(),
                    i_STANDBY=Const(0), i_SLEEP=Const(0), i_POWEROFF=Const(1), o_DATAOUT=data_out)
        return m


class _SpramModel(Elaboratable):
    """SB_SPRAM256KA's behaviour: a read or a nibble-masked write per cycle, the read word out one cycle later."""

    def __init__(self, addr, data_in, nibbles, write, data_out):
        self.addr, self.data_in, self.nibbles, self.write, self.data_out = addr, data_in, nibbles, write, data_out

    def elaborate(self, platform):
        m = Module()
        m.submodules.storage = storage = Memory(shape=unsigned(SPRAM_BITS), depth=SPRAM_WORDS, init=[])
        read, write = storage.read_port(), storage.write_port(granularity=4)
        m.d.comb += [read.addr.eq(self.addr), read.en.eq(~self.write), self.data_out.eq(read.data),
                     write.addr.eq(self.addr), write.data.eq(self.data_in),
                     write.en.eq(Mux(self.write, self.nibbles, 0))]
        return m


class BoardMemory(wiring.Component):
    """``size`` bytes of on-chip memory behind the engine's ``insn`` and ``data`` ports and the bridge's ``host``
    port (32-bit words); ``kind`` is ``"bram"`` or ``"spram"`` (then ``size`` is what the SPRAMs hold)."""

    def __init__(self, *, data_bits: int, size: int, kind: str = "bram"):
        if kind not in ("bram", "spram"):
            raise ValueError(f"Memory kind must be 'bram' or 'spram', not {kind!r}")
        if not isinstance(size, int) or size <= 0 or size % (data_bits // 8):
            raise ValueError(f"Memory size must be a positive multiple of {data_bits // 8} bytes, not {size!r}")
        if kind == "spram" and size != SPRAM_WORDS * data_bits // 8:
            raise ValueError(f"SPRAM blocks {data_bits} bits wide hold {SPRAM_WORDS * data_bits // 8} bytes, "
                             f"not {size}")
        self._data_bits, self._size, self._kind = data_bits, size, kind
        # The SPRAM build (a slow small part) checks a burst's range from the registers it has (the first word's
        # address, the beats) and one flag of the address's high bits, instead of keeping the whole address.
        self._compact = kind == "spram"
        super().__init__({"insn": In(axi4_signature(32, data_bits)), "data": In(axi4_signature(32, data_bits)),
                          "host": In(axi4_lite_signature(32))})

    @property
    def size(self) -> int:
        return self._size

    @property
    def kind(self) -> str:
        return self._kind

    def elaborate(self, platform):
        m = Module()
        beat = self._data_bits // 8
        depth = self._size // beat
        m.submodules.ram = ram = (_BlockRam(self._data_bits, depth) if self._kind == "bram"
                                  else _Spram(self._data_bits))
        write_addr = Signal(range(depth))
        self._write_side(m, ram.port, write_addr, depth)
        read_side = self._read_side_rereading if self._compact else self._read_side
        read_addr = read_side(m, ram.port, writing=ram.port.mask.any(), depth=depth)
        m.d.comb += ram.port.addr.eq(Mux(ram.port.mask.any(), write_addr, read_addr))
        m.d.comb += [self.insn.aw.ready.eq(0), self.insn.w.ready.eq(0), self.insn.b.valid.eq(0)]
        return m

    def _high(self, addr, depth: int):
        """Byte address ``addr``'s word address has a bit at or above the (power-of-two) ``depth``'s: it is beyond."""
        shift = (self._data_bits // 8).bit_length() - 1
        return addr[shift + depth.bit_length() - 1:] != 0

    def _beyond(self, addr, beats, depth: int):
        """A burst of ``beats`` (at least 1) from byte ``addr`` reaches beyond the memory. With a power-of-two
        ``depth``, a word address at or past it (a bit above the memory's set) is beyond whatever ``beats``, and
        one inside it needs only its own bits in the sum: a short adder instead of one as wide as the address."""
        shift = (self._data_bits // 8).bit_length() - 1
        word = addr[shift:]
        if depth & (depth - 1):
            return (word + beats) > depth
        bits = depth.bit_length() - 1
        return (word[bits:] != 0) | ((word[:bits] + beats) > depth)

    def _write_side(self, m: Module, port, addr_now: Signal, depth: int) -> None:
        """One write at a time: the host's word, or the data port's burst; then its response."""
        host, data = self.host, self.data
        shift = (self._data_bits // 8).bit_length() - 1
        grant_data = Signal()
        addr = Signal(range(depth))
        error = Signal()
        start, last_beat = Signal(32), Signal(8)
        resp = Signal(2)
        # The SPRAM build's: the burst's word address has bits above the memory's (it is beyond).
        high = Signal(name="write_high") if self._compact else None
        with m.FSM(name="write"):
            with m.State("IDLE"):
                with m.If(host.aw.valid & host.w.valid):
                    beyond = self._beyond(host.aw.addr, 1, depth)
                    lane = host.aw.addr[2:shift]
                    m.d.comb += [host.aw.ready.eq(1), host.w.ready.eq(1), addr_now.eq(host.aw.addr[shift:]),
                                 port.wdata.eq(host.w.data.replicate(self._data_bits // 32)),
                                 port.mask.eq(Mux(beyond, 0, host.w.strb << (lane * 4)))]
                    m.d.sync += [grant_data.eq(0), resp.eq(Mux(beyond, RESP_SLVERR, 0))]
                    m.next = "RESPOND"
                with m.Elif(data.aw.valid):
                    m.d.comb += data.aw.ready.eq(1)
                    kept = high.eq(self._high(data.aw.addr, depth)) if self._compact else start.eq(data.aw.addr)
                    m.d.sync += [grant_data.eq(1), addr.eq(data.aw.addr[shift:]), kept, last_beat.eq(data.aw.len)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                # A cycle for the range check on the registered request, off the address channel's path.
                if self._compact:       # addr is still the burst's first word
                    m.d.sync += error.eq(high | ((addr + last_beat + 1) > depth))
                else:
                    m.d.sync += error.eq(self._beyond(start, last_beat + 1, depth))
                m.next = "BURST"
            with m.State("BURST"):
                m.d.comb += data.w.ready.eq(1)
                with m.If(data.w.valid):
                    m.d.comb += [addr_now.eq(addr), port.wdata.eq(data.w.data),
                                 port.mask.eq(Mux(error, 0, data.w.strb))]
                    m.d.sync += addr.eq(addr + 1)
                    with m.If(data.w.last):
                        m.d.sync += resp.eq(Mux(error, RESP_SLVERR, 0))
                        m.next = "RESPOND"
            with m.State("RESPOND"):
                m.d.comb += [host.b.valid.eq(~grant_data), data.b.valid.eq(grant_data), host.b.resp.eq(resp),
                             data.b.resp.eq(resp)]
                with m.If(Mux(grant_data, data.b.ready, host.b.ready)):
                    m.next = "IDLE"

    def _read_side(self, m: Module, port, *, writing, depth: int) -> Signal:
        """One read burst at a time (host, data, insn by priority), a beat per cycle while the port is free and
        the reader takes them; returns the RAM address it reads. Beats leave through a register slice (an output
        register and a skid register), so the RAM's output goes no further than a register and the readers' ``ready``
        no further than the slice; the SPRAM build's leave straight from the RAM (a slow small part's clock)."""
        shift = (self._data_bits // 8).bit_length() - 1
        requesters = (self.host, self.data, self.insn)
        grant = Signal(range(len(requesters)))
        addr = Signal(range(depth))
        error = Signal()
        lane = Signal(max(shift - 2, 1))
        to_fetch, to_send = Signal(9), Signal(9)
        start, burst_beats = Signal(32), Signal(9)
        # The SPRAM build's: as the write side's flag; high in the burst's first cycle.
        high, first = (Signal(name="read_high"), Signal(name="read_first")) if self._compact else (None, None)
        out_valid, fresh = Signal(), Signal()
        hold = Signal(self._data_bits)
        rdata = Mux(fresh, port.rdata, hold)       # the RAM's output is only trusted the cycle after a read
        m.d.sync += fresh.eq(port.read)
        with m.If(fresh):
            m.d.sync += hold.eq(port.rdata)

        beat = _Beat(self._data_bits, len(requesters), len(lane))
        accept = Signal()                          # the slice takes the beat this cycle
        delivered = out_valid & accept
        m.d.comb += [beat.data.eq(rdata), beat.grant.eq(grant), beat.lane.eq(lane), beat.last.eq(to_send == 1),
                     beat.resp.eq(Mux(error, RESP_SLVERR, 0))]
        with m.FSM(name="read"):
            with m.State("IDLE"):
                for i, r in enumerate(requesters):
                    beats = 1 if r is self.host else r.ar.len + 1
                    with (m.If if i == 0 else m.Elif)(r.ar.valid):
                        m.d.comb += r.ar.ready.eq(1)
                        m.d.sync += [grant.eq(i), addr.eq(r.ar.addr[shift:]), to_fetch.eq(beats), to_send.eq(beats),
                                     *([high.eq(self._high(r.ar.addr, depth)), first.eq(1)] if self._compact
                                       else [start.eq(r.ar.addr), burst_beats.eq(beats)]),
                                     lane.eq(r.ar.addr[2:shift] if r is self.host else 0)]
                        m.next = "BURST"
            with m.State("BURST"):
                # The range check runs on the registered request, off the address channel's path: its result is
                # there before the first beat can leave (a beat leaves at the earliest a cycle after its read).
                if self._compact:
                    # In the first cycle addr and to_fetch are still the burst's first word and its beats; the check
                    # holds after it (addr moves on, and would wrap past the end).
                    with m.If(first):
                        m.d.sync += [error.eq(high | ((addr + to_fetch) > depth)), first.eq(0)]
                else:
                    m.d.sync += error.eq(self._beyond(start, burst_beats, depth))
                m.d.comb += port.read.eq((to_fetch != 0) & (~out_valid | accept) & ~writing)
                with m.If(port.read):
                    m.d.sync += [addr.eq(addr + 1), to_fetch.eq(to_fetch - 1), out_valid.eq(1)]
                with m.Elif(delivered):
                    m.d.sync += out_valid.eq(0)
                with m.If(delivered):
                    m.d.sync += to_send.eq(to_send - 1)
                    with m.If(to_send == 1):
                        m.next = "IDLE"
        out = self._slice(m, beat, out_valid, accept, requesters)
        self._deliver(m, out, requesters)
        return addr

    def _deliver(self, m: Module, out: "_Beat", requesters) -> None:
        """``out`` to the requester it was granted to: the host's 32-bit word of it, or the whole beat."""
        for i, r in enumerate(requesters):
            m.d.comb += [r.r.valid.eq(out.valid & (out.grant == i)), r.r.resp.eq(out.resp)]
            if r is self.host:
                m.d.comb += r.r.data.eq(out.data.word_select(out.lane, 32))
            else:
                m.d.comb += [r.r.data.eq(out.data), r.r.last.eq(out.last)]

    def _read_side_rereading(self, m: Module, port, *, writing, depth: int) -> Signal:
        """The SPRAM build's read side (a slow small part): the SPRAM reads the address it is given in every cycle
        it does not write, so the address of the beat still to deliver stays on it (the next one's as that beat
        leaves) and the beat is valid in a cycle after such a read: the RAM's output goes straight to the reader,
        with no register to hold it (and the readers' ``ready`` through logic to the RAM's address). Returns the
        address to read. One burst at a time (host, data, insn by priority), a beat per cycle while the reader
        takes them."""
        shift = (self._data_bits // 8).bit_length() - 1
        requesters = (self.host, self.data, self.insn)
        grant = Signal(range(len(requesters)))
        addr = Signal(range(depth))                 # the beat still to deliver
        error, high, first = Signal(), Signal(name="read_high"), Signal(name="read_first")
        lane = Signal(max(shift - 2, 1))
        to_send = Signal(9)
        fresh = Signal()                            # the RAM's output is the beat at addr
        out = _Beat(self._data_bits, len(requesters), len(lane), name="out")
        m.d.comb += [out.data.eq(port.rdata), out.grant.eq(grant), out.lane.eq(lane), out.last.eq(to_send == 1),
                     out.resp.eq(Mux(error, RESP_SLVERR, 0))]
        ready = Cat(r.r.ready for r in requesters).bit_select(grant, 1)
        delivered = Signal()
        m.d.comb += delivered.eq(out.valid & ready)
        following = Signal.like(addr)
        m.d.comb += following.eq(Mux(delivered, addr + 1, addr))
        m.d.sync += fresh.eq(0)
        with m.FSM(name="read"):
            with m.State("IDLE"):
                for i, r in enumerate(requesters):
                    beats = 1 if r is self.host else r.ar.len + 1
                    with (m.If if i == 0 else m.Elif)(r.ar.valid):
                        m.d.comb += r.ar.ready.eq(1)
                        m.d.sync += [grant.eq(i), addr.eq(r.ar.addr[shift:]), to_send.eq(beats),
                                     high.eq(self._high(r.ar.addr, depth)), first.eq(1),
                                     lane.eq(r.ar.addr[2:shift] if r is self.host else 0)]
                        m.next = "BURST"
            with m.State("BURST"):
                # The range check on the registered request in the first cycle (addr and to_send are still the
                # burst's first word and its beats: no beat is valid yet), there before the first beat is.
                with m.If(first):
                    m.d.sync += [error.eq(high | ((addr + to_send) > depth)), first.eq(0)]
                m.d.comb += [out.valid.eq(fresh), port.read.eq(Mux(delivered, to_send != 1, 1) & ~writing)]
                m.d.sync += fresh.eq(port.read)
                with m.If(delivered):
                    m.d.sync += [addr.eq(following), to_send.eq(to_send - 1)]
                    with m.If(to_send == 1):
                        m.next = "IDLE"
        self._deliver(m, out, requesters)
        return following

    @staticmethod
    def _slice(m: Module, beat: "_Beat", valid, accept: Signal, requesters) -> "_Beat":
        """A register slice: ``beat`` is taken while ``accept`` (a register: the skid register is empty); the
        returned beat (registers) leaves when its reader is ready."""
        ready = Signal()
        out = beat.like("out")
        m.d.comb += ready.eq(Cat(r.r.ready for r in requesters).bit_select(out.grant, 1))
        skid = beat.like("skid")
        m.d.comb += accept.eq(~skid.valid)
        leaves = out.valid & ready
        with m.If(~out.valid | leaves):
            with m.If(skid.valid):
                m.d.sync += [*out.eq(skid), out.valid.eq(1), skid.valid.eq(0)]
            with m.Else():
                m.d.sync += [*out.eq(beat), out.valid.eq(valid & accept)]
        with m.Elif(valid & accept):
            m.d.sync += [*skid.eq(beat), skid.valid.eq(1)]
        return out


class _Beat:
    """A read beat on its way out: data, to whom, the host's 32-bit lane, last, response; ``valid`` when held."""

    def __init__(self, data_bits: int, requesters: int, lane_bits: int, name: str = "beat"):
        self._shape = (data_bits, requesters, lane_bits)
        self.data = Signal(data_bits, name=f"{name}_data")
        self.grant = Signal(range(requesters), name=f"{name}_grant")
        self.lane = Signal(lane_bits, name=f"{name}_lane")
        self.last, self.valid = Signal(name=f"{name}_last"), Signal(name=f"{name}_valid")
        self.resp = Signal(2, name=f"{name}_resp")

    def like(self, name: str) -> "_Beat":
        return _Beat(*self._shape, name=name)

    def eq(self, other: "_Beat") -> list:
        """Assignments of the beat's fields (not ``valid``)."""
        return [self.data.eq(other.data), self.grant.eq(other.grant), self.lane.eq(other.lane),
                self.last.eq(other.last), self.resp.eq(other.resp)]
