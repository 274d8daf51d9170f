"""AxiCopy: a small DMA that copies 64-bit words over an AXI4 master, set up through an AXI4-Lite slave.

Test design for the AXI models of ``sim/axi.py``: it reads blocks of 16 beats into a buffer and writes them
back (AW and W offered together), splitting blocks at 4 KiB pages of either address. ``block`` raises the block
to as many as 256 beats (the longest AXI burst); ``pieces`` cuts each block into several bursts, all sent
before their answers are taken, so the memory holds several requests at once. ``throttle`` makes the design
hold RREADY and BREADY low and pause W on about half the cycles. A test-only ``fault`` register makes it break
one AXI rule at a time, so the model's protocol checks can be seen to fire; counters of its own handshakes and
waits let the model's view be compared with the design's.
"""

from enum import IntEnum

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.axi import BURST_INCR, axi4_lite_signature, axi4_signature

__all__ = ["AxiCopy", "Fault", "REGISTERS", "DONE", "ERROR", "BAD_RLAST", "BLOCK", "MAX_BLOCK"]

BLOCK = 16          # beats per block unless the block register says otherwise
MAX_BLOCK = 256     # the buffer's depth, and the longest AXI burst
RESP_SLVERR = 2
DONE, ERROR, BAD_RLAST = 1 << 0, 1 << 1, 1 << 2

# name -> address; "start" is write-only (any value starts a copy when idle; it reads 0), the rest read back.
# Other addresses answer SLVERR.
REGISTERS = {
    "src": 0x00,       # byte address, low 3 bits ignored
    "dst": 0x04,       # byte address, low 3 bits ignored
    "beats": 0x08,     # 64-bit words to copy
    "start": 0x0C,
    "done": 0x10,      # bit 0 done, bit 1 an R or B response was not OKAY, bit 2 an RLAST out of place
    "fault": 0x14,     # a Fault to inject, 0 for none
    "r_beats": 0x18,   # R handshakes since start
    "w_beats": 0x1C,   # W handshakes since start
    "r_wait": 0x20,    # of the last block: clock edges from its last AR handshake to its first R handshake
    "b_wait": 0x24,    # of the last block: edges from its completion (all AW and W taken) to its first B
    "pieces": 0x28,    # beats per AXI burst (0: the whole block); a block of 16 takes ceil(16 / pieces) bursts
    "throttle": 0x2C,  # bit 0: RREADY and BREADY low, and gaps before W beats, on about half the cycles
    "block": 0x30,     # beats per block, 1 to 256 (0: 16)
}


class Fault(IntEnum):
    NONE = 0
    FIXED_BURST = 1      # ARBURST and AWBURST = FIXED
    NARROW = 2           # ARSIZE = 2 (4-byte beats on a 64-bit bus)
    CROSS_4K = 3         # no split at 4 KiB pages
    EARLY_WLAST = 4      # WLAST on the next-to-last beat too
    NO_WLAST = 5         # WLAST never set
    UNSTABLE_AR = 6      # ARADDR bit 3 toggles while ARVALID waits for ARREADY
    UNSTABLE_W = 7       # WDATA bit 0 toggles while WVALID waits for WREADY
    AWVALID_DROP = 8     # AWVALID goes low for a cycle after a cycle without AWREADY


class AxiCopy(wiring.Component):
    data: Out(axi4_signature(32, 64))
    ctrl: In(axi4_lite_signature(8))

    def elaborate(self, platform):
        m = Module()
        data, ctrl = self.data, self.ctrl

        src, dst, beats = Signal(32), Signal(32), Signal(32)
        done, error, bad_rlast = Signal(), Signal(), Signal()
        fault, pieces, throttle, block = Signal(4), Signal(9), Signal(), Signal(9)
        r_beats, w_beats, r_wait, b_wait = Signal(32), Signal(32), Signal(32), Signal(32)
        start = Signal()

        # ---- AXI4-Lite registers: a write needs AW and W together; one read or write in flight -------------
        m.d.comb += [ctrl.aw.ready.eq(ctrl.aw.valid & ctrl.w.valid & ~ctrl.b.valid),
                     ctrl.w.ready.eq(ctrl.aw.ready)]
        with m.If(ctrl.aw.valid & ctrl.aw.ready):
            m.d.sync += [ctrl.b.valid.eq(1), ctrl.b.resp.eq(0)]
            with m.Switch(ctrl.aw.addr[2:]):
                for name, reg in (("src", src), ("dst", dst), ("beats", beats), ("fault", fault),
                                  ("pieces", pieces), ("throttle", throttle), ("block", block)):
                    with m.Case(REGISTERS[name] >> 2):
                        m.d.sync += reg.eq(ctrl.w.data)
                with m.Case(REGISTERS["start"] >> 2):
                    m.d.comb += start.eq(1)
                with m.Case(*(a >> 2 for a in REGISTERS.values())):
                    pass
                with m.Default():
                    m.d.sync += ctrl.b.resp.eq(RESP_SLVERR)
        with m.Elif(ctrl.b.valid & ctrl.b.ready):
            m.d.sync += ctrl.b.valid.eq(0)

        m.d.comb += ctrl.ar.ready.eq(~ctrl.r.valid)
        with m.If(ctrl.ar.valid & ctrl.ar.ready):
            m.d.sync += [ctrl.r.valid.eq(1), ctrl.r.resp.eq(0), ctrl.r.data.eq(0)]
            with m.Switch(ctrl.ar.addr[2:]):
                for name, value in (("src", src), ("dst", dst), ("beats", beats), ("done", Cat(done, error, bad_rlast)),
                                    ("fault", fault), ("pieces", pieces), ("throttle", throttle), ("block", block),
                                    ("r_beats", r_beats), ("w_beats", w_beats),
                                    ("r_wait", r_wait), ("b_wait", b_wait)):
                    with m.Case(REGISTERS[name] >> 2):
                        m.d.sync += ctrl.r.data.eq(value)
                with m.Case(REGISTERS["start"] >> 2):
                    pass
                with m.Default():
                    m.d.sync += ctrl.r.resp.eq(RESP_SLVERR)
        with m.Elif(ctrl.r.valid & ctrl.r.ready):
            m.d.sync += ctrl.r.valid.eq(0)

        # ---- the copy ------------------------------------------------------------------------------------
        # A block of up to ``block`` beats (never crossing a 4 KiB page on either side) is read into the buffer and
        # written back. With ``pieces`` set the block travels as several AXI bursts of that many beats: all
        # of its ARs go out before the first R beat is taken, and AWs and W beats run independently, so the
        # memory holds several requests at once.
        m.submodules.buffer = buffer = Memory(shape=64, depth=MAX_BLOCK, init=[])
        store = buffer.write_port()
        load = buffer.read_port(domain="comb")

        cur_src, cur_dst, remaining = Signal(32), Signal(32), Signal(32)
        count = Signal(range(MAX_BLOCK + 1))      # beats in the current block
        ar_sent = Signal(range(MAX_BLOCK + 1))    # beats of the block covered by ARs so far
        aw_sent = Signal(range(MAX_BLOCK + 1))    # the same for AWs
        index = Signal(range(MAX_BLOCK + 1))      # beats taken on R, then sent on W
        burst_start = Signal(range(MAX_BLOCK + 1))  # index of the first beat of the burst R or W is in
        bursts, b_seen = Signal(range(MAX_BLOCK + 1)), Signal(range(MAX_BLOCK + 1))
        first = Signal()                          # waiting for the first R (or B) of the block
        toggle = Signal()                         # flips on each cycle a faulty channel waits

        # A free-running LFSR (x^16 + x^14 + x^13 + x^11 + 1) for the throttle.
        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]))
        r_hold, b_hold, w_pause = (throttle & lfsr[i] for i in range(3))
        w_waiting = Signal()                      # a W beat was offered and not taken: keep offering it

        limit = Signal(range(MAX_BLOCK + 1))     # beats per block
        m.d.comb += limit.eq(Mux(block == 0, BLOCK, Mux(block > MAX_BLOCK, MAX_BLOCK, block)))
        size = Signal(range(MAX_BLOCK + 1))      # beats per burst
        m.d.comb += size.eq(Mux((pieces == 0) | (pieces > limit), limit, pieces))

        def burst_len(sent):                      # beats of the next burst once ``sent`` are covered
            return Mux(count - sent < size, count - sent, size)

        room_src = (4096 - cur_src[:12]) >> 3
        room_dst = (4096 - cur_dst[:12]) >> 3
        room = Signal(range(513))
        m.d.comb += room.eq(Mux(fault == Fault.CROSS_4K, 512, Mux(room_src < room_dst, room_src, room_dst)))
        wanted = Mux(remaining < limit, remaining, limit)
        plan = Mux(room < wanted, room, wanted)

        burst_end = Signal(range(2 * MAX_BLOCK + 1))   # index after the last beat of the current R/W burst
        m.d.comb += burst_end.eq(Mux(burst_start + size < count, burst_start + size, count))
        last = index + 1 == burst_end

        burst = Mux(fault == Fault.FIXED_BURST, 0, BURST_INCR)
        m.d.comb += [
            data.ar.addr.eq((cur_src + (ar_sent << 3)) ^ Mux((fault == Fault.UNSTABLE_AR) & toggle, 8, 0)),
            data.ar.len.eq(burst_len(ar_sent) - 1),
            data.ar.size.eq(Mux(fault == Fault.NARROW, 2, 3)),
            data.ar.burst.eq(burst),
            data.aw.addr.eq(cur_dst + (aw_sent << 3)),
            data.aw.len.eq(burst_len(aw_sent) - 1),
            data.aw.size.eq(3),
            data.aw.burst.eq(burst),
            load.addr.eq(index),
            data.w.data.eq(load.data ^ Mux((fault == Fault.UNSTABLE_W) & toggle, 1, 0)),
            data.w.strb.eq(0xFF),
            data.w.last.eq(Mux(fault == Fault.NO_WLAST, 0,
                               last | ((fault == Fault.EARLY_WLAST) & (index + 2 == burst_end)))),
            store.addr.eq(index),
            store.data.eq(data.r.data),
        ]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [cur_src.eq(src & ~7), cur_dst.eq(dst & ~7), remaining.eq(beats), done.eq(0),
                                 error.eq(0), bad_rlast.eq(0), r_beats.eq(0), w_beats.eq(0)]
                    m.next = "PLAN"
            with m.State("PLAN"):
                with m.If(remaining == 0):
                    m.d.sync += done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [count.eq(plan), ar_sent.eq(0), aw_sent.eq(0), index.eq(0), burst_start.eq(0),
                                 bursts.eq(0), b_seen.eq(0), toggle.eq(0), w_waiting.eq(0)]
                    m.next = "AR"
            with m.State("AR"):
                m.d.comb += data.ar.valid.eq(1)
                with m.If(data.ar.ready):
                    m.d.sync += [ar_sent.eq(ar_sent + data.ar.len + 1), first.eq(1), r_wait.eq(0)]
                    with m.If(ar_sent + data.ar.len + 1 == count):
                        m.next = "R"
                with m.Else():
                    m.d.sync += toggle.eq(~toggle)
            with m.State("R"):
                m.d.comb += data.r.ready.eq(~r_hold)
                with m.If(first):
                    m.d.sync += r_wait.eq(r_wait + 1)
                with m.If(data.r.valid & data.r.ready):
                    m.d.comb += store.en.eq(1)
                    m.d.sync += [index.eq(index + 1), first.eq(0), r_beats.eq(r_beats + 1),
                                 error.eq(error | (data.r.resp != 0))]
                    with m.If(data.r.last != last):
                        m.d.sync += bad_rlast.eq(1)
                    with m.If(last):
                        m.d.sync += burst_start.eq(burst_end)
                    with m.If(index + 1 == count):
                        m.d.sync += [index.eq(0), burst_start.eq(0), toggle.eq(0)]
                        m.next = "W"
            with m.State("W"):
                m.d.comb += [data.aw.valid.eq((aw_sent != count) & ~((fault == Fault.AWVALID_DROP) & toggle)),
                             data.w.valid.eq((index != count) & (w_waiting | ~w_pause))]
                m.d.sync += w_waiting.eq(data.w.valid & ~data.w.ready)
                aw_now = data.aw.valid & data.aw.ready
                w_now = data.w.valid & data.w.ready
                with m.If(aw_now):
                    m.d.sync += [aw_sent.eq(aw_sent + data.aw.len + 1), bursts.eq(bursts + 1)]
                with m.If((data.aw.valid & ~data.aw.ready) | (data.w.valid & ~data.w.ready)):
                    m.d.sync += toggle.eq(~toggle)
                with m.Elif(fault == Fault.AWVALID_DROP):
                    m.d.sync += toggle.eq(0)
                with m.If(w_now):
                    m.d.sync += [index.eq(index + 1), w_beats.eq(w_beats + 1)]
                    with m.If(last):
                        m.d.sync += burst_start.eq(burst_end)
                aw_all = (aw_sent == count) | (aw_now & (aw_sent + data.aw.len + 1 == count))
                w_all = (index == count) | (w_now & (index + 1 == count))
                with m.If(aw_all & w_all):
                    m.d.sync += [b_wait.eq(0), first.eq(1)]
                    m.next = "B"
            with m.State("B"):
                m.d.comb += data.b.ready.eq(~b_hold)
                with m.If(first):
                    m.d.sync += b_wait.eq(b_wait + 1)
                with m.If(data.b.valid & data.b.ready):
                    m.d.sync += [error.eq(error | (data.b.resp != 0)), b_seen.eq(b_seen + 1), first.eq(0)]
                    with m.If(b_seen + 1 == bursts):
                        m.d.sync += [cur_src.eq(cur_src + (count << 3)), cur_dst.eq(cur_dst + (count << 3)),
                                     remaining.eq(remaining - count)]
                        m.next = "PLAN"
        return m
