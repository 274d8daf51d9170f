"""The accelerator configuration: one frozen, validated, hashable description of a build."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from .formats import LANE_BITS, Format, FormatError, IntFormat, get_format, product_of, signed_width
from .isa import FORMAT_FIELD_BITS, KINDS, Opcode
from .microarchitecture import (ACCUMULATE_LATENCY, ALU_LATENCY, COMMAND_QUEUE_DEPTH, DECODE_CHAINS, DECODE_LATENCY,
                                POSTPROCESS_LATENCY, POSTPROCESS_MERGED_STAGES, POSTPROCESS_MID_STAGES,
                                POSTPROCESS_SERIAL_STAGES, POSTPROCESS_SLOW_STAGES, POSTPROCESS_STAGES,
                                RETIRE_QUEUE_DEPTH, SERIAL_DECODE_LATENCY, SLOW_ACCUMULATE_LATENCY)

__all__ = ["ConfigError", "AcceleratorConfig", "DATAFLOWS", "ADDRESS_FIELDS", "LUT_MAX_BITS", "MAX_FORMATS",
           "max_depth", "scaled_accumulator_bits"]

#: Formats a multi-format build may carry: as many as the instructions' format fields can select.
MAX_FORMATS = 1 << FORMAT_FIELD_BITS

DATAFLOWS = ("weight_stationary",)

#: Fields added after configurations were first hashed, with their defaults: left out of the JSON at the default.
_SINCE = {"command_queue_depth": COMMAND_QUEUE_DEPTH, "decode_chains": DECODE_CHAINS, "perf_counters": True,
          "decode_shared": False, "decode_serial": False, "decode_stepped": False, "postprocess_shared": False,
          "postprocess_held": False, "postprocess_merged": False, "postprocess_columns_per_lane": 1,
          "load_direct_write": False, "slow_clock": False, "table_bram": False, "narrow_line_fifo": False,
          "postprocess_serial": False, "dram_addr_bits": 32,
          "compute_compact": False, "mid_clock": False, "dsp_pes": 0,
          "decode_pairs": False}


class ConfigError(ValueError):
    """A configuration value out of its allowed range; the message names the field, the value and the range."""


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")


def _check_pow2(name: str, value, lo: int, hi: int, why: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi or value & (value - 1):
        raise ConfigError(f"{name} must be a power of two in {lo}..{hi}{why}, not {value!r}")


#: The instruction fields that hold line addresses of each buffer: a buffer holds no more lines than the narrowest
#: of them addresses, so that no legal instruction names a line an address field cannot hold (and no counter of
#: the RTL, sized from the depths, can wrap). 2**16 lines is 8 Mbit for a 16-wide int8 activation buffer, twice the
#: block RAM of an ECP5-85F.
ADDRESS_FIELDS = {
    "act_buffer_depth": ((Opcode.LOAD, "sram_addr"), (Opcode.COMPUTE, "act_addr")),
    "weight_buffer_depth": ((Opcode.LOAD, "sram_addr"), (Opcode.COMPUTE, "weight_addr")),
    "acc_buffer_depth": ((Opcode.COMPUTE, "acc_addr"), (Opcode.ALU, "dst_addr"), (Opcode.ALU, "src_addr"),
                         (Opcode.STORE, "acc_addr")),
    "param_buffer_depth": ((Opcode.LOAD, "sram_addr"), (Opcode.STORE, "param_addr")),
}


#: Widest activation format with a lookup table (the LUT buffer): 2**8 entries per post-processing lane. Wider
#: formats would need 2**bits entries per lane (a 16-bit table is 1 Mbit per column); their engines have none.
LUT_MAX_BITS = 8


def scaled_accumulator_bits(a: Format, b: Format, terms: int, shift: int) -> int:
    """Width of an accumulator holding ``terms`` products of ``a`` and ``b``, each shifted left by ``shift`` bits
    (a multi-format build accumulates every pair in the units of its finest pair)."""
    p = product_of(a, b)
    return signed_width(terms * (p.fixed_min << shift), terms * (p.fixed_max << shift))


def max_depth(name: str) -> tuple[int, str]:
    """The largest depth of buffer ``name`` (a power of two) its address fields can address, and why."""
    fields = [(op, field, KINDS[op].field(field).bits) for op, field in ADDRESS_FIELDS[name]]
    op, field, bits = min(fields, key=lambda f: f[2])
    return 1 << bits, f" (lines the {bits}-bit field {op.name}.{field} can address)"


@dataclass(frozen=True)
class AcceleratorConfig:
    """Everything that shapes a build. Derived quantities are properties, never stored twice."""

    rows: int = 16
    cols: int = 16
    weight_format: str = "int8"
    act_format: str = "int8"
    #: Longest reduction (K of a GEMM, C*kh*kw of a convolution) the accumulators hold exactly.
    max_reduction: int = 4096
    #: Accumulator width; ``None`` derives the exact width for ``max_reduction``.
    acc_bits: int | None = None
    dataflow: str = "weight_stationary"
    act_buffer_depth: int = 4096
    weight_buffer_depth: int = 1024
    acc_buffer_depth: int = 1024
    param_buffer_depth: int = 64
    dma_bits: int = 128
    clock_mhz: float = 100.0
    #: A multi-format build: the formats a layer may select (by index, in COMPUTE and SETPP); empty for a
    #: single-format build (``weight_format`` x ``act_format``). With a set, both of those name its first format.
    formats: tuple = ()
    #: Instructions each engine's command queue holds: each entry is an instruction word of flip-flops (a small
    #: part has no room for four per engine); fewer entries let the fetch run less far ahead of the engines. 0: no
    #: queue, the dispatcher offers the fetched word to its engine and waits until the engine takes it (the word is
    #: kept once, in the fetch register, until the engine copies what it needs; the fetch cannot run ahead).
    command_queue_depth: int = COMMAND_QUEUE_DEPTH
    #: Carry chains the instruction decoder's checks put in one cycle (hw/pipeline.py): 2 fit 100 MHz on an ECP5; a
    #: slow small part's build takes more per cycle and so needs fewer pipeline registers. The decode latency stays
    #: :attr:`decode_latency` cycles whatever the value.
    decode_chains: int = DECODE_CHAINS
    #: The busy and stall counters of each engine (six 32-bit registers no software reads yet): a small part's build
    #: leaves them out (they read 0); cycles, instructions and MACs are always counted, without them in 32 bits
    #: (``cycles_hi`` and ``macs_hi`` read 0: a count wraps after 2**32, six minutes at 12 MHz).
    perf_counters: bool = True
    #: The decoder's products of fields through multipliers the instruction kinds share (the opcode chooses their
    #: operands) instead of each kind's own, and LOAD and STORE share one external-memory range check (sum and
    #: comparison): a small part's build saves the logic, at a multiplexer more per check.
    decode_shared: bool = False
    #: The decoder's products of fields one bit of the narrower operand per cycle (a shift-and-add loop per product)
    #: instead of all at once: a small part's build saves most of the decoder's logic, and every instruction takes
    #: :attr:`decode_latency` cycles to check instead of ``DECODE_LATENCY``. Its comparisons with the buffer depths
    #: (powers of two) test bits instead of running a carry chain, and the fetch's range check compares the high
    #: bits of the word's address with those of ``dram_size`` (exact for aligned words) instead of adding first.
    decode_serial: bool = False
    #: The decoder's range checks as a short program per instruction kind run through one adder and one
    #: accumulator (hw/decode_steps.py: operands read a bit per cycle, a product a cycle per multiplier bit), its
    #: steps read from a table (block RAM on an iCE40), instead of each kind's sums and comparisons side by side: a
    #: small part's build saves most of the decoder's logic, carry chains and registers, and an instruction takes
    #: its kind's program's cycles to check (:meth:`decode_latency_of`: 194 to 264 on the iCEBreaker, 122 to 176 with
    #: ``decode_pairs``; the engine's
    #: fetch holds the word that long; the iCEBreaker's build takes ``decode_serial`` too, for the fetch's range
    #: check by bits).
    decode_stepped: bool = False
    #: A ``decode_stepped`` decoder reads its operands two bits a cycle instead of one (two multiplexers of half the
    #: width, over the word's even and odd bits: no more multiplexer inputs): an instruction's checks take about a
    #: third fewer cycles (:meth:`decode_latency_of`), for an engine that waits on its decoder (the iCEBreaker's:
    #: the 2x2 board's digits CNN 194,039 -> 134,446 cycles, in 3 cells fewer).
    decode_pairs: bool = False
    #: One post-processing lane for all the columns, a column per cycle (time-multiplexed), instead of a lane per
    #: column: a small part's build saves ``cols - 1`` lanes, and a STORE makes an output line every ``cols`` cycles.
    postprocess_shared: bool = False
    #: Columns each post-processing lane takes in turn, adjacent ones (a divisor of ``cols``; 1: a lane per column):
    #: ``cols / n`` lanes, and a STORE makes an output line every ``n`` cycles, a wide engine's trade between logic
    #: and store rate (``postprocess_shared`` is the one-lane case, ``n = cols``).
    postprocess_columns_per_lane: int = 1
    #: SETPP's values (zero point, clamps, table flag, output format) and STORE's ``negative_param`` reach the
    #: post-processing stages that use them straight from the store engine's registers, which hold while a STORE's
    #: elements are in flight, instead of travelling beside every element through the stages' registers: a small
    #: part's build saves the flip-flops.
    postprocess_held: bool = False
    #: The post-processing lane without the registers of ``POSTPROCESS_MERGED_STAGES`` (three stages each sharing a
    #: cycle with the next): a slow small part's build saves the flip-flops, and a STORE ends three cycles sooner.
    postprocess_merged: bool = False
    #: A LOAD's lines go from the walk straight into the buffers' write ports instead of through a register stage
    #: (address, data, enables: there for a fast clock, the ports fanning out to many block RAMs): a slow small
    #: part's build saves the flip-flops. Lines land a cycle sooner; nothing reads them before the LOAD's tokens,
    #: so no cycle changes. The line's last beat then goes from the bus into the line unregistered (a bus word of
    #: flip-flops less), and the read addresses go onto the bus without the skid register (no cycle changes
    #: either: an address waits in the generator instead). Each buffer's port then takes its own line (its
    #: assembled beats and the arriving one), not one line multiplexed for all, and the padding walk counts each
    #: region of rows and lines against its own field (equalities) instead of comparing the position with the
    #: block's bounds, sums registered as the LOAD starts: the same lines in the same cycles. A line of several
    #: beats (PARAM's) goes into its buffer beat by beat as they arrive (a write enable per beat), none kept.
    load_direct_write: bool = False
    #: A slow small part's clock (the iCEBreaker's 12 MHz): the registers that split paths for 100 MHz on an ECP5 cost
    #: the part cells it lacks, so they are left out: the post-processing lane's after ``POSTPROCESS_SLOW_STAGES``
    #: (a STORE ends sooner: :attr:`postprocess_latency`), and the store engine keeps each column's PARAM bias
    #: saturated to the accumulator's range (as the lane uses it) instead of all 64 bits; the accumulator updates
    #: and the ALU add and write in the cycle the line leaves the block RAM, with no register behind it and nothing
    #: forwarded (:attr:`accumulate_latency`, :attr:`alu_latency`: an ALU ends four cycles sooner, and never waits);
    #: the lane's integer saturation compares the sum with the format's bounds after the addition.
    slow_clock: bool = False
    #: Each post-processing lane's activation table (:attr:`lut_buffer_depth` lines) in a block RAM, which synthesis
    #: would otherwise build of flip-flops and multiplexers for so small a memory (16 int4 entries): a small part
    #: with block RAMs to spare saves the logic (the 1x1 iCEBreaker engine's lane: 64 LUT4 and 54 flip-flops). Same
    #: reads, same cycles.
    table_bram: bool = False
    #: The store engine's FIFO of output lines only as wide as a line's codes (``cols`` codes), not its whole bus
    #: beats, whose other bits are zeros: a small engine on a wide bus (2x2 int4, 8 of 64 bits) saves block RAMs
    #: (3 of the iCEBreaker's 30). Same bytes, same cycles.
    narrow_line_fifo: bool = False
    #: The post-processing lane signed (no absolute values) and its right shift one bit a cycle (the rounding's guard
    #: and sticky bits gathered as the bits fall out) instead of a barrel shifter and two priority encoders: a small
    #: part's build saves the logic, and each lane takes an
    #: element every :attr:`postprocess_interval` cycles (a STORE makes an output line that much more slowly); the
    #: store engine around it is sized for that pace (FIFOs :data:`SERIAL_LINE_FIFO_DEPTH` deep, a lane of its own
    #: column reading its PARAM entries from the port: docs/architecture.md). Integer output formats only.
    postprocess_serial: bool = False
    #: Byte-address bits of the external memory, when the build knows it is small (a board's 128 KiB: 17): LOAD's
    #: and STORE's burst addresses are then counted in that many bits (narrower adders and registers). An address at
    #: or beyond ``2**dram_addr_bits`` (only a ``dram_size`` larger than the memory lets one through the decoder)
    #: still reaches the bus at or beyond the memory's end, never wrapped into it: the memory answers it with an
    #: error. 32: the whole AXI address space. Same bursts, same cycles.
    dram_addr_bits: int = 32
    #: The compute engine's small-part form, same cycles: its retire side follows two tags that travel with the
    #: activation vectors through the array (end of a kernel position, end of the COMPUTE) instead of counting the
    #: output's columns, rows and kernel positions, so a queued COMPUTE is its first accumulator line and two flags,
    #: not 47 bits; its feeders' FIFOs in block RAMs; its loop counters as wide as the buffers' lines; a register of
    #: the kernel row's first activation line instead of a product; with ``slow_clock`` one adder for COMPUTE's
    #: updates and ALU ADD/MAX, ALU MUL in a DSP, and the ALU's destination walk on the activation walker's registers.
    compute_compact: bool = False
    #: A small part's clock raised by its PLL (the iCEBreaker's 30 MHz): the registers that split its longest paths. A
    #: ``command_queue_depth`` 0 engine's dispatcher offers a decoded word the cycle after the decoder's result (the
    #: result's checks, the target engine and FINISH registered before an engine sees the offer: one cycle more an
    #: instruction, :attr:`dispatch_latency`). A ``postprocess_serial`` lane's offset, round and saturate stages
    #: registered again (``POSTPROCESS_MID_STAGES``: a STORE's elements come out three cycles later,
    #: :attr:`postprocess_latency`). A ``compute_compact`` engine's last output column and an ALU row's last element
    #: kept in registers set as the walk moves (same cycles). A ``decode_stepped`` decoder's operand bit registered out
    #: of its multiplexer and its range flags set from the sum's register (a cycle more before each operand and after
    #: the last addition, :meth:`decode_latency_of`). The engine's start a cycle after the host's write; a deadlock seen
    #: a cycle later; a store's rows-read flag and a small memory's burst row end (``dram_addr_bits`` below 32) kept in
    #: registers, the store's line count from 1, the feeders' room as two comparisons with constants (same cycles). A
    #: board top's bridge then drives its write valids from registers (boards/bridge.py).
    mid_clock: bool = False
    #: Packed PEs (two integer codes a lane, :attr:`values_per_lane` 2) whose pair of products comes from one wide
    #: multiply, which an FPGA's synthesis maps to a DSP (one ECP5 MULT18X18D for int4 x int4), instead of
    #: shift-and-add multipliers in LUTs: the first ``dsp_pes`` PEs in row-major order. A wide int4 array takes as
    #: many as its part has DSPs to spare, so its LUTs go further. Same sums, same cycles, same programs; the ASIC
    #: area estimate counts every PE in its LUT form.
    dsp_pes: int = 0
    _formats: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        _check_int("rows", self.rows, 1, 128)
        _check_int("cols", self.cols, 1, 128)
        self._check_format_set()
        formats = []
        for name in ("weight_format", "act_format"):
            value = getattr(self, name)
            try:
                fmt = get_format(value)
            except FormatError as e:
                raise ConfigError(f"{name}: {e}") from None
            object.__setattr__(self, name, fmt.name)
            formats.append(fmt)
        object.__setattr__(self, "_formats", tuple(formats))
        _check_int("max_reduction", self.max_reduction, self.reduction_rows, 1 << 24)
        needed = self._exact_bits(self.max_reduction)
        if self.acc_bits is None:
            object.__setattr__(self, "acc_bits", needed)
        else:
            _check_int("acc_bits", self.acc_bits, needed, 256)
        if self.dataflow not in DATAFLOWS:
            raise ConfigError(f"dataflow must be one of {', '.join(DATAFLOWS)}, not {self.dataflow!r}")
        for name, lo in (("act_buffer_depth", 16), ("weight_buffer_depth", 16), ("acc_buffer_depth", 16),
                         ("param_buffer_depth", 1)):
            _check_pow2(name, getattr(self, name), lo, *max_depth(name))
        _check_pow2("dma_bits", self.dma_bits, 32, 1024, " (the width of the engine's AXI4 data buses)")
        _check_int("command_queue_depth", self.command_queue_depth, 0, 64)
        _check_int("decode_chains", self.decode_chains, DECODE_CHAINS, 64)
        _check_int("dram_addr_bits", self.dram_addr_bits, 13, 32)
        for name in ("perf_counters", "decode_shared", "decode_serial", "decode_stepped", "decode_pairs",
                     "postprocess_shared",
                     "postprocess_held",
                     "postprocess_merged", "load_direct_write", "slow_clock", "table_bram",
                     "narrow_line_fifo", "postprocess_serial", "compute_compact", "mid_clock"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, not {getattr(self, name)!r}")
        self._check_lane_columns()
        if self.decode_pairs and not self.decode_stepped:
            raise ConfigError("decode_pairs reads a stepped decoder's operands two bits a cycle: set decode_stepped "
                              "too, or drop decode_pairs")
        _check_int("dsp_pes", self.dsp_pes, 0, self.rows * self.cols)
        if self.dsp_pes and self.values_per_lane != 2:
            raise ConfigError(f"dsp_pes needs a packed build (two integer codes a lane: int4 x int4 with rows * 2 <= "
                              f"cols), not {self.weight_format} x {self.act_format} {self.rows}x{self.cols}: "
                              "leave dsp_pes at 0")
        if self.postprocess_serial and (self.multi_format or not isinstance(self.acts, IntFormat)):
            names = ", ".join(f.name for f in self.act_formats)
            raise ConfigError(f"postprocess_serial needs one integer activation format, not {names}: drop "
                              "postprocess_serial for minifloat or multi-format outputs")
        if (not isinstance(self.clock_mhz, (int, float)) or isinstance(self.clock_mhz, bool)
                or not 1 <= self.clock_mhz <= 2000):
            raise ConfigError(f"clock_mhz must be a number in 1..2000, not {self.clock_mhz!r}")
        object.__setattr__(self, "clock_mhz", float(self.clock_mhz))

    def _check_lane_columns(self) -> None:
        n = self.postprocess_columns_per_lane
        _check_int("postprocess_columns_per_lane", n, 1, self.cols)
        if self.cols % n:
            divisors = ", ".join(str(d) for d in range(1, self.cols + 1) if self.cols % d == 0)
            raise ConfigError(f"postprocess_columns_per_lane must divide cols ({self.cols}): one of {divisors}, "
                              f"not {n}")
        if n != 1 and self.postprocess_shared is True:
            raise ConfigError("postprocess_shared already gives all the columns one lane: leave "
                              "postprocess_columns_per_lane at 1, or drop postprocess_shared")

    def _check_format_set(self) -> None:
        """A format set: 2..MAX_FORMATS distinct formats; ``weight_format``/``act_format`` become its first one
        (they may only name it, or be left at their default)."""
        if self.formats == ():
            return
        if isinstance(self.formats, str) or not isinstance(self.formats, (tuple, list)):
            raise ConfigError(f"formats must be a list of format names, not {self.formats!r}")
        names = []
        for value in self.formats:
            try:
                names.append(get_format(value).name)
            except (FormatError, TypeError) as e:
                raise ConfigError(f"formats: {e}") from None
        if not 2 <= len(names) <= MAX_FORMATS:
            raise ConfigError(f"formats must list 2..{MAX_FORMATS} formats (one format is a plain --pe build), "
                              f"not {len(names)}")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"formats lists {', '.join(twice)} more than once; list each format once")
        default = next(f.default for f in dataclasses.fields(self) if f.name == "weight_format")
        for name in ("weight_format", "act_format"):
            value = getattr(self, name)
            try:
                same = value == default or get_format(value).name == names[0]
            except FormatError as e:
                raise ConfigError(f"{name}: {e}") from None
            if not same:
                raise ConfigError(f"{name} must be {names[0]}, the first of formats, not {value!r}")
            object.__setattr__(self, name, names[0])
        object.__setattr__(self, "formats", tuple(names))

    def _exact_bits(self, terms: int) -> int:
        """Width that holds ``terms`` products of any selectable pair exactly, in the accumulators' units."""
        return max(scaled_accumulator_bits(w, a, terms, self.pair_shift(w, a))
                   for w in self.weight_formats for a in self.act_formats)

    # --- derived ---------------------------------------------------------------------------
    @property
    def weights(self) -> Format:
        """The weight format of a single-format build (of a multi-format build: its first format)."""
        return self._formats[0]

    @property
    def acts(self) -> Format:
        """The activation format of a single-format build (of a multi-format build: its first format)."""
        return self._formats[1]

    @property
    def multi_format(self) -> bool:
        return bool(self.formats)

    @property
    def weight_formats(self) -> tuple[Format, ...]:
        """The weight formats a COMPUTE selects from by its ``weight_format`` index."""
        return tuple(get_format(f) for f in self.formats) if self.formats else (self.weights,)

    @property
    def act_formats(self) -> tuple[Format, ...]:
        """The activation formats COMPUTE (``act_format``) and SETPP (``format``, the output) select from."""
        return tuple(get_format(f) for f in self.formats) if self.formats else (self.acts,)

    @property
    def values_per_lane(self) -> int:
        """Codes one PE multiplies per cycle, each with its own weight, summing the products: the formats'
        :attr:`~hw.spec.formats.Format.values_per_lane` (2 for an int4 x int4 build) when weights and activations
        both pack and the packed array is no taller than it is wide (``rows * values <= cols``: an 8x16 int4
        engine reduces over 16 rows like a 16x16 one, on half the PEs), else 1. A taller packed array would load
        each weight tile in ``rows * values`` cycles and hold only ``cols`` channels per tensor line, slower than
        not packing; a multi-format build packs none (its layers would need a reduction depth per format)."""
        values = 1 if self.multi_format else min(self.weights.values_per_lane, self.acts.values_per_lane)
        return values if self.rows * values <= self.cols else 1

    def pair_values_per_lane(self, weights: Format, acts: Format) -> int:
        """Codes one PE multiplies per cycle for a layer of ``weights`` x ``acts``: :attr:`values_per_lane` in a
        single-format build; in a multi-format one, 2 for a pair of integers of at most
        :data:`~hw.spec.formats.PACKED_INT_BITS` bits (int4 x int4) where :attr:`packs_per_layer`, else 1."""
        if not self.multi_format:
            return self.values_per_lane
        values = min(weights.values_per_lane, acts.values_per_lane)
        return values if self.packs_per_layer and values > 1 else 1

    @property
    def packs_per_layer(self) -> bool:
        """A multi-format build whose PEs run packing pairs (int4 x int4) two codes a lane, the layer's reduction
        depth ``rows * 2`` while its other pairs keep ``rows``: where the set has a packing integer format for
        both weights and activations, an activation slot of at least :data:`~hw.spec.formats.LANE_BITS` bits
        holds two of its codes (code ``k`` at bits ``k * PACKED_INT_BITS``, in the memory and buffer layout of an
        activation line and tensor alike: an int4 tensor is stored two codes a slot), and the packed array is no
        taller than it is wide (``rows * 2 <= cols``, as :attr:`values_per_lane`). Every other build is as
        before (its Verilog unchanged)."""
        if not self.multi_format or self.act_slot_bits < LANE_BITS:
            return False
        values = min(max(f.values_per_lane for f in self.weight_formats),
                     max(f.values_per_lane for f in self.act_formats))
        return values > 1 and self.rows * values <= self.cols

    def layer_reduction_rows(self, weights: Format, acts: Format) -> int:
        """The reduction depth of a COMPUTE of ``weights`` x ``acts``: codes it reads from an activation line, lines
        in its weight tile. :attr:`reduction_rows` but for a packed pair of a :attr:`packs_per_layer` build."""
        return self.rows * self.pair_values_per_lane(weights, acts)

    def compute_reduction_rows(self, weight_format: int, act_format: int, packed: int) -> int:
        """A COMPUTE's reduction depth from its fields ``weight_format``, ``act_format`` (indices into the build's
        set) and ``packed``: :meth:`layer_reduction_rows` with ``packed`` set on a pair the build packs, else
        :attr:`reduction_rows` (``packed`` on any other pair, or an index outside the set, the decoder refuses)."""
        if not (packed and (weight_format, act_format) in self.packed_pairs):
            return self.reduction_rows
        return self.layer_reduction_rows(self.weight_formats[weight_format], self.act_formats[act_format])

    @property
    def packed_reduction_rows(self) -> int:
        """The reduction depth of a packed pair's COMPUTE in a :attr:`packs_per_layer` build (its
        :attr:`reduction_rows` otherwise)."""
        return max([self.reduction_rows] + [self.compute_reduction_rows(i, j, 1) for i, j in self.packed_pairs])

    @property
    def packed_pairs(self) -> tuple[tuple[int, int], ...]:
        """(weight_format, act_format) index pairs whose COMPUTE may set ``packed`` (two codes a lane; empty but in
        a :attr:`packs_per_layer` build)."""
        return tuple((i, j) for i, w in enumerate(self.weight_formats) for j, a in enumerate(self.act_formats)
                     if self.multi_format and self.pair_values_per_lane(w, a) > 1)

    @property
    def reduction_rows(self) -> int:
        """The array's reduction depth: codes in an activation line, lines in a weight tile, products summed into
        a partial sum. ``rows * values_per_lane``: the PE rows times the codes each PE multiplies per cycle."""
        return self.rows * self.values_per_lane

    @property
    def weight_slot_bits(self) -> int:
        """Bits of one weight code in a buffer line and in memory: the widest weight format (a narrower code sits
        in the slot's low bits; the bits above it are ignored)."""
        return max(f.bits for f in self.weight_formats)

    @property
    def act_slot_bits(self) -> int:
        """Bits of one activation code in a buffer line, an output line and memory: the widest activation format."""
        return max(f.bits for f in self.act_formats)

    @property
    def acc_exponent(self) -> int:
        """Power of two of the accumulators' least significant bit: the finest product of any selectable pair."""
        return min(w.lsb_exponent for w in self.weight_formats) + min(a.lsb_exponent for a in self.act_formats)

    def pair_shift(self, weights: Format, acts: Format) -> int:
        """Left shift of a ``weights`` x ``acts`` product into the accumulators' units (0 in a single-format
        build)."""
        return product_of(weights, acts).min_exponent - self.acc_exponent

    @property
    def alu_mul_bits(self) -> int:
        """Width ``k`` of ALU MUL's operands (the low ``k`` bits of each sum, sign-extended): a signed integer holding
        the difference of any two codes of one activation format in accumulator units (a code minus a zero point), as
        an identity tile of the weight format's 1 brings them in. Sized so, the multiplier per lane is ``k`` x ``k``
        (int8: 9 x 9, one DSP) rather than ``acc_bits`` squared."""
        span = max((a.fixed_range[1] - a.fixed_range[0]) << (a.lsb_exponent - self.acc_exponent) for a in self.act_formats)
        return signed_width(-span, span)

    @property
    def psum_bits(self) -> int:
        """Width of the partial sums inside the array: exact for a column of ``reduction_rows`` products."""
        if self.packs_per_layer:
            return max(scaled_accumulator_bits(w, a, self.layer_reduction_rows(w, a), self.pair_shift(w, a))
                       for w in self.weight_formats for a in self.act_formats)
        return self._exact_bits(self.reduction_rows)

    @property
    def lut_entries(self) -> int:
        """Entries of the activation lookup table: one per activation code (slot), 0 (no table) above
        :data:`LUT_MAX_BITS` bits."""
        return 1 << self.act_slot_bits if self.act_slot_bits <= LUT_MAX_BITS else 0

    @property
    def lut_entries_per_line(self) -> int:
        """Table entries in one LUT line: the largest power of two that fits the line's ``cols`` codes (so entry
        ``q`` sits at line ``q >> k``, code ``q & (2**k - 1)``: no division), at most the table's size."""
        return min(1 << (self.cols.bit_length() - 1), max(self.lut_entries, 1))

    @property
    def lut_buffer_depth(self) -> int:
        """Lines of the LUT buffer (every post-processing lane holds a copy): 0 without a table."""
        return self.lut_entries // self.lut_entries_per_line

    @property
    def decode_latency(self) -> int:
        """Cycles the decoder takes to check an instruction: ``DECODE_LATENCY``, or ``SERIAL_DECODE_LATENCY`` with
        ``decode_serial`` (hw/spec/microarchitecture.py; the fetch cadence of the cycle model grows with it); with
        ``decode_stepped`` the longest kind's program (:meth:`decode_latency_of`)."""
        if self.decode_stepped:
            return self.decode_latency_of(None)
        return SERIAL_DECODE_LATENCY if self.decode_serial else DECODE_LATENCY

    def decode_latency_of(self, opcode: int | None) -> int:
        """Cycles the decoder takes to check an instruction of ``opcode``: a stepped decoder waits for its kind's
        range-check program (``decode_cycles``; the longest kind's for ``None`` or an unknown opcode), the others
        take :attr:`decode_latency` whatever the kind."""
        if self.decode_stepped:
            from .decode_programs import decode_cycles
            return decode_cycles(self, opcode)
        return self.decode_latency

    @property
    def dispatch_latency(self) -> int:
        """Cycles from the decoder's result to the dispatcher acting on it: 1 in a ``mid_clock`` build without
        command queues (its offer registered), else 0 (the cycle model's fetch cadence grows with it)."""
        return int(self.mid_clock and self.command_queue_depth == 0)

    @property
    def postprocess_latency(self) -> int:
        """Cycles from an element into a post-processing lane to its code out: ``POSTPROCESS_LATENCY``, less the
        stages ``postprocess_merged`` and ``slow_clock`` leave out (hw/spec/microarchitecture.py; the cycle model's
        STORE reads it)."""
        registered = [s for s in POSTPROCESS_STAGES if s not in self.postprocess_unregistered]
        if not self.postprocess_serial:
            return len(registered)
        # The serial shift takes the place of the locate, exponent and align stages: a register the element is
        # loaded into, then a cycle per bit of the window.
        return len([s for s in registered if s not in POSTPROCESS_SERIAL_STAGES]) + 1 + self.postprocess_serial_steps

    @property
    def postprocess_serial_steps(self) -> int:
        """Shifts a ``postprocess_serial`` lane makes room for: the width of the window it shifts (the signed product
        ``(acc + bias) * M`` of ``acc_bits + 33`` bits, a guard bit below it, less what the accumulator's exponent
        shifts left: more shifts change nothing); 0 without it."""
        return self.acc_bits + 34 + self.acc_exponent if self.postprocess_serial else 0

    @property
    def postprocess_interval(self) -> int:
        """Cycles between elements into a post-processing lane: 1, or ``postprocess_serial_steps + 1`` with
        ``postprocess_serial`` (hw/postprocess.py; the store engine's issue and the cycle model's STORE read it)."""
        return self.postprocess_serial_steps + 1 if self.postprocess_serial else 1

    @property
    def retire_queue_depth(self) -> int:
        """COMPUTE descriptors the compute engine's retire side queues (hw/compute_engine.py): as many as a command
        queue holds, from 2 to ``RETIRE_QUEUE_DEPTH``. A small part's engine without command queues starts its
        COMPUTEs no faster than the fetch hands them over, so two are enough, and each entry is a descriptor's
        flip-flops (47 for the iCEBreaker's, 10 with compute_compact)."""
        return max(2, min(RETIRE_QUEUE_DEPTH, self.command_queue_depth))

    @property
    def accumulate_latency(self) -> int:
        """Cycles from a partial sum's arrival at the accumulators to the write of its line: ``ACCUMULATE_LATENCY``, or
        ``SLOW_ACCUMULATE_LATENCY`` with ``slow_clock`` (hw/spec/microarchitecture.py; the cycle model reads it)."""
        return SLOW_ACCUMULATE_LATENCY if self.slow_clock else ACCUMULATE_LATENCY

    @property
    def alu_latency(self) -> int:
        """Cycles from an ALU element's issue to its write: ``ALU_LATENCY`` (operands and result registered), or
        :attr:`accumulate_latency` with ``slow_clock`` (hw/spec/microarchitecture.py; the cycle model's ALU reads
        it)."""
        return self.accumulate_latency if self.slow_clock else ALU_LATENCY

    @property
    def postprocess_unregistered(self) -> tuple[str, ...]:
        """Stages of the post-processing lane without a register after them (each shares a cycle with the next):
        ``POSTPROCESS_MERGED_STAGES`` with ``postprocess_merged``, ``POSTPROCESS_SLOW_STAGES`` with ``slow_clock``
        (but those of ``POSTPROCESS_MID_STAGES`` with ``mid_clock`` and ``postprocess_serial``)."""
        slow = POSTPROCESS_SLOW_STAGES if self.slow_clock else ()
        if self.mid_clock and self.postprocess_serial:
            slow = tuple(s for s in slow if s not in POSTPROCESS_MID_STAGES)
        return (POSTPROCESS_MERGED_STAGES if self.postprocess_merged else ()) + slow

    @property
    def postprocess_lanes(self) -> int:
        """Post-processing lanes of the store engine: one per column, one with ``postprocess_shared``, or one per
        ``postprocess_columns_per_lane`` columns (fewer lanes than columns: each takes its columns in turn)."""
        return 1 if self.postprocess_shared else self.cols // self.postprocess_columns_per_lane

    @property
    def postprocess_lane_columns(self) -> int:
        """Columns each post-processing lane takes in turn: a STORE makes an output line every this many cycles at
        most (hw/store_engine.py; the cycle model's STORE reads it)."""
        return self.cols // self.postprocess_lanes

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.reduction_rows * self.cols

    # --- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The init fields; ``formats`` only when set, the fields of :data:`_SINCE` only when not their defaults (the
        JSON and hash of a configuration that sets none of them are those of configurations from before them)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        if out["formats"]:
            out["formats"] = list(out["formats"])
        else:
            del out["formats"]
        for name, default in _SINCE.items():
            if out[name] == default:
                del out[name]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "AcceleratorConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"A configuration must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Unknown configuration field(s) {', '.join(unknown)}; "
                              f"known fields are {', '.join(sorted(known))}")
        if isinstance(data.get("formats"), list):
            data = {**data, "formats": tuple(data["formats"])}
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "AcceleratorConfig":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ConfigError(f"Configuration is not valid JSON: {str(e)[:120]}") from None
        return cls.from_dict(data)

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit digest of the configuration, used to name and cache builds."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]
