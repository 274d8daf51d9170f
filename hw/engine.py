"""The complete inference engine: fetch and dispatch, three engines, buffers, token queues, control port.

Block diagram::

    insn (AXI4) -> fetch -> decoder -> dispatch -+-> load queue    -> LoadEngine    -> act / weight / param
                                                 +-> compute queue -> ComputeEngine -> array -> acc
                                                 +-> store queue   -> StoreEngine   -> post-processing -> data (AXI4)
    ctrl (AXI4-Lite): start, status, error code, counters (hw/spec/registers.py)
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, axi4_lite_signature, axi4_signature
from .buffer_ports import NO_COLLISIONS
from .compute_engine import ComputeEngine, acc_line_layout
from .decoder import InstructionDecoder
from .load_engine import LoadEngine, beat_granularity
from .spec.config import AcceleratorConfig
from .spec.isa import INSTRUCTION_BITS, INSTRUCTION_BYTES, TOKEN_QUEUE_DEPTH, Buffer, ErrorCode, Opcode
from .spec.layout import line_bits
from .spec.microarchitecture import COMMAND_QUEUE_DEPTH
from .spec.registers import REGISTERS, STATUS_BUSY, STATUS_DONE, STATUS_ERROR, STATUS_NONFINITE, by_name
from .store_engine import StoreEngine

__all__ = ["InferenceEngine", "COMMAND_QUEUE_DEPTH"]



class _TokenQueue:
    """A counter of tokens between two engines; a push onto a full queue is an overflow."""

    def __init__(self, m: Module, name: str, clear):
        self.count = Signal(range(TOKEN_QUEUE_DEPTH + 1), name=f"{name}_tokens")
        self.push = Signal(name=f"{name}_push")
        self.pop = Signal(name=f"{name}_pop")
        self.overflow = Signal(name=f"{name}_overflow")
        m.d.comb += self.overflow.eq(self.push & (self.count == TOKEN_QUEUE_DEPTH))
        with m.If(clear):
            m.d.sync += self.count.eq(0)
        with m.Elif(self.push & ~self.overflow & ~self.pop):
            m.d.sync += self.count.eq(self.count + 1)
        with m.Elif(self.pop & ~(self.push & ~self.overflow)):
            m.d.sync += self.count.eq(self.count - 1)

    @property
    def available(self):
        return self.count != 0


class InferenceEngine(wiring.Component):
    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")
        self._config = config
        super().__init__({
            "insn": Out(axi4_signature(32, config.dma_bits)),
            "data": Out(axi4_signature(32, config.dma_bits)),
            "ctrl": In(axi4_lite_signature(8)),
            "irq": Out(1),
        })

    @property
    def config(self) -> AcceleratorConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config

        # --- buffers ---------------------------------------------------------------------------------------
        def loaded(buffer: Buffer, depth: int) -> Memory:
            """A buffer a LOAD writes while other engines read other lines (``NO_COLLISIONS``)."""
            return Memory(shape=unsigned(line_bits(buffer, c)), depth=depth, init=[], attrs=NO_COLLISIONS)
        m.submodules.act_buffer = act_mem = loaded(Buffer.ACT, c.act_buffer_depth)
        m.submodules.weight_buffer = weight_mem = loaded(Buffer.WEIGHT, c.weight_buffer_depth)
        # A PARAM buffer of one line is built with two: Amaranth's memory of one line has no address bits, the
        # ports' addresses have one, and the decoder refuses every PARAM address but 0.
        m.submodules.param_buffer = param_mem = loaded(Buffer.PARAM, max(c.param_buffer_depth, 2))
        m.submodules.accumulator_buffer = acc_mem = Memory(shape=acc_line_layout(c), depth=c.acc_buffer_depth,
                                                           init=[])

        # --- engines ---------------------------------------------------------------------------------------
        m.submodules.load = load = LoadEngine(c)
        m.submodules.compute = compute = ComputeEngine(c)
        m.submodules.store = store = StoreEngine(c)
        engines = (load, compute, store)

        wiring.connect(m, load.act, act_mem.write_port(granularity=beat_granularity(Buffer.ACT, c)))
        wiring.connect(m, load.weight, weight_mem.write_port(granularity=beat_granularity(Buffer.WEIGHT, c)))
        wiring.connect(m, load.param, param_mem.write_port(granularity=beat_granularity(Buffer.PARAM, c)))
        wiring.connect(m, load.lut, store.lut)          # the activation table: a copy in every PPU lane
        wiring.connect(m, compute.act, act_mem.read_port())
        wiring.connect(m, compute.weight, weight_mem.read_port())
        acc_write = acc_mem.write_port()
        wiring.connect(m, compute.acc_w, acc_write)
        wiring.connect(m, compute.acc_a, acc_mem.read_port(transparent_for=(acc_write,)))
        wiring.connect(m, compute.acc_b, acc_mem.read_port(transparent_for=(acc_write,)))
        wiring.connect(m, store.acc, acc_mem.read_port())
        wiring.connect(m, store.param, param_mem.read_port())

        for name in ("ar", "r"):
            wiring.connect(m, getattr(load.axi, name), wiring.flipped(getattr(self.data, name)))
        for name in ("aw", "w", "b"):
            wiring.connect(m, getattr(store.axi, name), wiring.flipped(getattr(self.data, name)))
        m.d.comb += [self.insn.aw.valid.eq(0), self.insn.w.valid.eq(0), self.insn.b.ready.eq(1)]

        # --- control registers -----------------------------------------------------------------------------
        regs = {r.name: Signal(32, name=f"reg_{r.name}") for r in REGISTERS}
        start = Signal()
        running = Signal()          # between start and done/error
        done = Signal()
        error = Signal(range(max(ErrorCode) + 1))
        # Without perf_counters (a small part) the cycle and MAC counts are 32 bits: the high words read 0.
        count_bits = 64 if c.perf_counters else 32
        cycles = Signal(count_bits)
        macs = Signal(count_bits)
        # The busy and stall counters only with perf_counters (a small part's build leaves them out: they read 0).
        # The instructions register reads the pc: both count the instructions dispatched since start.
        counted = ("busy_load", "busy_compute", "busy_store", "stall_load", "stall_compute",
                   "stall_store") if c.perf_counters else ()
        counters = {n: Signal(32, name=n) for n in counted}
        for bit, value in ((STATUS_BUSY, running), (STATUS_DONE, done), (STATUS_ERROR, error != 0),
                           (STATUS_NONFINITE, store.nonfinite)):
            m.d.comb += regs["status"][bit.bit_length() - 1].eq(value)
        m.d.comb += [
            regs["error_code"].eq(error),
            regs["cycles_lo"].eq(cycles[:32]), regs["cycles_hi"].eq(cycles[32:]),
            regs["macs_lo"].eq(macs[:32]), regs["macs_hi"].eq(macs[32:]),
            self.irq.eq(done | (error != 0)),
        ]
        for n, s in counters.items():
            m.d.comb += regs[n].eq(s)
        self._control_port(m, regs, start)

        # --- command and token queues ----------------------------------------------------------------------
        queues = []
        # command_queue_depth 0: no queue; the dispatcher offers the fetch register's word to its engine (``offer``,
        # set in DISPATCH) and waits there until the engine takes it.
        direct = c.command_queue_depth == 0
        offer = Signal(3, name="dispatch_offer") if direct else None
        for i, (name, engine) in enumerate(zip(("load", "compute", "store"), engines)):
            if direct:
                continue
            fifo = SyncFIFOBuffered(width=INSTRUCTION_BITS, depth=c.command_queue_depth)
            # A halted program may leave instructions queued: a new start begins with empty queues.
            m.submodules[f"{name}_queue"] = ResetInserter(start)(fifo)
            queues.append(fifo)
            m.d.comb += [engine.control.cmd.valid.eq(fifo.r_rdy), engine.control.cmd.payload.eq(fifo.r_data),
                         fifo.r_en.eq(engine.control.cmd.ready)]
        l2c, c2l, c2s, s2c = (_TokenQueue(m, n, start) for n in ("l2c", "c2l", "c2s", "s2c"))
        m.d.comb += [
            load.control.avail_next.eq(c2l.available), load.control.avail_prev.eq(0),
            compute.control.avail_prev.eq(l2c.available), compute.control.avail_next.eq(s2c.available),
            store.control.avail_prev.eq(c2s.available), store.control.avail_next.eq(0),
            l2c.push.eq(load.control.push_next), l2c.pop.eq(compute.control.pop_prev),
            c2l.push.eq(compute.control.push_prev), c2l.pop.eq(load.control.pop_next),
            c2s.push.eq(compute.control.push_next), c2s.pop.eq(store.control.pop_prev),
            s2c.push.eq(store.control.push_prev), s2c.pop.eq(compute.control.pop_next),
        ]
        # Overflows and bus errors are events; they are kept until the dispatcher acts on them.
        overflow = Signal()
        bus_error = Signal()
        with m.If(start):
            m.d.sync += [overflow.eq(0), bus_error.eq(0)]
        with m.Else():
            with m.If(l2c.overflow | c2l.overflow | c2s.overflow | s2c.overflow):
                m.d.sync += overflow.eq(1)
            with m.If(load.bus_error | store.bus_error):
                m.d.sync += bus_error.eq(1)
        any_running = Cat(e.control.active for e in engines).any()
        any_can_start = Cat(e.control.can_start for e in engines).any()
        queues_empty = Const(1) if direct else ~Cat(q.r_rdy for q in queues).any()

        # --- counters ----------------------------------------------------------------------------------------
        with m.If(start):
            m.d.sync += [cycles.eq(0), macs.eq(0)] + [s.eq(0) for s in counters.values()]
        with m.Elif(running):
            m.d.sync += cycles.eq(cycles + 1)
            for name, engine in zip(("load", "compute", "store"), engines if c.perf_counters else ()):
                with m.If(engine.control.running):
                    m.d.sync += counters[f"busy_{name}"].eq(counters[f"busy_{name}"] + 1)
                with m.If(engine.control.waiting):
                    m.d.sync += counters[f"stall_{name}"].eq(counters[f"stall_{name}"] + 1)
            with m.If(compute.mac_vectors):
                if c.packs_per_layer:       # a packed pair's vector: twice the reduction rows
                    m.d.sync += macs.eq(macs + Mux(compute.mac_packed, c.packed_reduction_rows * c.cols,
                                                   c.rows * c.cols))
                else:
                    m.d.sync += macs.eq(macs + c.reduction_rows * c.cols)
        m.d.comb += store.clear.eq(start)

        # --- fetch, decode, dispatch -------------------------------------------------------------------------
        m.submodules.decoder = decoder = InstructionDecoder(c)
        word = Signal(INSTRUCTION_BITS)
        beat = Signal(range(INSTRUCTION_BITS // c.dma_bits + 1))
        fetch_error = Signal()
        pc = Signal(32)
        fetch_addr = Signal(32)
        halting = Signal()
        beats = INSTRUCTION_BITS // c.dma_bits
        # The pc stops at an error or at FINISH: error_pc reads it then (0 while running, as after start).
        m.d.comb += regs["error_pc"].eq(Mux(done | (error != 0), pc, 0))
        m.d.comb += [regs["instructions"].eq(pc), decoder.word.eq(word), decoder.dram_size.eq(regs["dram_size"]),
                     self.insn.ar.addr.eq(fetch_addr), self.insn.ar.len.eq(beats - 1),
                     self.insn.ar.size.eq((c.dma_bits // 8).bit_length() - 1), self.insn.ar.burst.eq(BURST_INCR)]
        for e in engines:
            m.d.comb += e.control.halt.eq(halting | ~running)

        def fail(code):
            m.d.sync += [error.eq(code), halting.eq(1)]
            m.next = "HALT"

        target = Signal(range(3))
        with m.Switch(decoder.opcode):
            with m.Case(Opcode.LOAD):
                m.d.comb += target.eq(0)
            with m.Case(Opcode.COMPUTE, Opcode.ALU):
                m.d.comb += target.eq(1)
            with m.Default():
                m.d.comb += target.eq(2)
        target_ready = Signal()
        # mid_clock: the dispatcher acts on the decoder's result a cycle later (``decoded``), the offer's checks and
        # target registered meanwhile, so an engine's start sees registers only (c.dispatch_latency).
        late = direct and c.dispatch_latency == 1
        decoded = Signal(name="dispatch_decoded") if late else decoder.valid
        stuck = Signal(name="dispatch_stuck") if late else None
        if direct:
            # The target takes the offered word in the cycle it starts it (its sequencer copies what it needs).
            for i, e in enumerate(engines):
                m.d.comb += [e.control.cmd.valid.eq(offer[i]), e.control.cmd.payload.eq(word)]
            if late:        # only the target is offered the word: only it can be ready
                m.d.comb += target_ready.eq(Cat(e.control.cmd.ready for e in engines).any())
            else:
                m.d.comb += target_ready.eq(Cat(e.control.cmd.ready for e in engines).bit_select(target, 1))
        else:
            m.d.comb += target_ready.eq(Cat(q.w_rdy for q in queues).bit_select(target, 1))
        for i, q in enumerate(queues):
            m.d.comb += q.w_data.eq(word)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [running.eq(1), done.eq(0), error.eq(0), pc.eq(0),
                                 halting.eq(0), fetch_addr.eq(regs["program_addr"])]
                    m.next = "FETCH"
            with m.State("FETCH"):
                align = (INSTRUCTION_BYTES - 1).bit_length()
                misaligned = fetch_addr[:align] != 0
                if c.decode_serial:
                    # An aligned word a + 16 passes the size s exactly when a // 16 >= s // 16: a comparison of the
                    # high bits, without the adder (a small part's fetch, with its serial decoder).
                    beyond = fetch_addr[align:] >= regs["dram_size"][align:]
                else:
                    beyond = fetch_addr + INSTRUCTION_BYTES > regs["dram_size"]
                with m.If(misaligned | beyond):
                    fail(ErrorCode.DRAM_RANGE)
                with m.Else():
                    m.d.comb += self.insn.ar.valid.eq(1)
                    with m.If(self.insn.ar.ready):
                        m.d.sync += [beat.eq(0), fetch_error.eq(0)]
                        m.next = "RECEIVE"
            with m.State("RECEIVE"):
                m.d.comb += self.insn.r.ready.eq(1)
                with m.If(self.insn.r.valid):
                    m.d.sync += word.word_select(beat, c.dma_bits).eq(self.insn.r.data)
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(self.insn.r.resp != 0):
                        m.d.sync += fetch_error.eq(1)
                    with m.If(self.insn.r.last):
                        m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += decoder.en.eq(1)
                if late:
                    m.d.sync += [decoded.eq(0), stuck.eq(0)]
                m.next = "DISPATCH"
            with m.State("DISPATCH"):
                if late:
                    # The word's own checks and its target registered; the events (bus error, overflow) as they are.
                    offer_late = Signal(3, name="dispatch_target")
                    ok = ~fetch_error & (decoder.error == 0) & (decoder.opcode != Opcode.FINISH)
                    m.d.sync += [decoded.eq(decoder.valid), offer_late.eq(Cat(ok & (target == i) for i in range(3)))]
                    m.d.comb += offer.eq(Mux(decoded & ~bus_error & ~overflow, offer_late, 0))
                    # Offered, nothing running, nothing can start: so it stays, a deadlock seen the cycle after.
                    m.d.sync += stuck.eq(decoded & ~any_running & ~any_can_start)
                elif direct:
                    offered = decoder.valid & ~fetch_error & ~bus_error & ~overflow & (decoder.error == 0) \
                        & (decoder.opcode != Opcode.FINISH)
                    m.d.comb += offer.eq(Cat(offered & (target == i) for i in range(3)))
                def accept():
                    for i, q in enumerate(queues):
                        m.d.comb += q.w_en.eq(target == i)
                    m.d.sync += [pc.eq(pc + 1), fetch_addr.eq(fetch_addr + INSTRUCTION_BYTES)]
                    m.next = "FETCH"

                def checks(accepting: bool):
                    with m.If(~decoded):
                        pass                    # the checks take config.decode_latency_of(opcode) cycles
                    with m.Elif(fetch_error | bus_error):
                        fail(ErrorCode.DRAM_RANGE)
                    with m.Elif(overflow):
                        fail(ErrorCode.TOKEN_OVERFLOW)
                    with m.Elif(decoder.error != 0):
                        fail(decoder.error)
                    with m.Elif(decoder.opcode == Opcode.FINISH):
                        m.next = "FINISH"
                    if accepting:
                        with m.Elif(target_ready):
                            accept()
                    with m.Elif(stuck if late else ~any_running & ~any_can_start):
                        fail(ErrorCode.DEADLOCK)

                if late:    # an engine takes only a word offered: its checks passed, no event since (off pc's enable)
                    with m.If(target_ready):
                        accept()
                    with m.Else():
                        checks(False)
                else:
                    checks(True)
            with m.State("FINISH"):
                with m.If(bus_error):
                    fail(ErrorCode.DRAM_RANGE)
                with m.Elif(overflow):
                    fail(ErrorCode.TOKEN_OVERFLOW)
                with m.Elif(queues_empty & ~any_running):
                    m.d.sync += [done.eq(1), running.eq(0)]
                    m.next = "IDLE"
                with m.Elif(~any_running & ~any_can_start):
                    fail(ErrorCode.DEADLOCK)
            with m.State("HALT"):
                with m.If(~any_running):
                    m.d.sync += [running.eq(0), halting.eq(0)]
                    m.next = "IDLE"
        return m

    def _control_port(self, m: Module, regs: dict, start: Signal) -> None:
        """AXI4-Lite slave: one write or read at a time, OKAY responses."""
        ctrl = self.ctrl
        by_address = {r.address: r for r in REGISTERS}
        pending_b = Signal()
        if self._config.mid_clock:
            start_write = Signal(name="start_write")
            m.d.sync += start_write.eq(0)       # a pulse (the write below sets it)
            m.d.comb += start.eq(start_write)
        m.d.comb += [ctrl.aw.ready.eq(ctrl.aw.valid & ctrl.w.valid & ~pending_b),
                     ctrl.w.ready.eq(ctrl.aw.valid & ctrl.w.valid & ~pending_b),
                     ctrl.b.valid.eq(pending_b), ctrl.b.resp.eq(0)]
        with m.If(ctrl.aw.valid & ctrl.w.valid & ~pending_b):
            m.d.sync += pending_b.eq(1)
            with m.Switch(ctrl.aw.addr):
                for address, r in by_address.items():
                    if r.writable and r.name != "control":
                        with m.Case(address):
                            m.d.sync += regs[r.name].eq(ctrl.w.data)
                with m.Case(by_name("control").address):
                    if self._config.mid_clock:
                        # The start a cycle after the write, from a register: the host's write path (a board's
                        # bridge) off the many enables start drives (the run's cycles count from start all the same).
                        m.d.sync += start_write.eq(ctrl.w.data[0] & ~regs["status"][0] & ~start_write)
                    else:
                        m.d.comb += start.eq(ctrl.w.data[0] & ~regs["status"][0])
        with m.If(pending_b & ctrl.b.ready):
            m.d.sync += pending_b.eq(0)

        pending_r = Signal()
        read_data = Signal(32)
        m.d.comb += [ctrl.ar.ready.eq(~pending_r), ctrl.r.valid.eq(pending_r), ctrl.r.data.eq(read_data),
                     ctrl.r.resp.eq(0)]
        with m.If(ctrl.ar.valid & ~pending_r):
            m.d.sync += pending_r.eq(1)
            with m.Switch(ctrl.ar.addr):
                for address, r in by_address.items():
                    with m.Case(address):
                        m.d.sync += read_data.eq(regs[r.name])
                with m.Default():
                    m.d.sync += read_data.eq(0)
        with m.If(pending_r & ctrl.r.ready):
            m.d.sync += pending_r.eq(0)
