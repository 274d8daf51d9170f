"""The cycle model: when each instruction starts and ends on the engine, cycle by cycle as the RTL does.

Times are cycle indices counted from the cycle the host starts the engine (the ``cycles`` register counts
the same way). The rules, each named after the hardware that causes it:

- fetch: an instruction is dispatched ``memory_latency + beats + 2 + decode_latency + dispatch_latency`` cycles
  after the one before (address, latency, data beats, the decoder's pipelined checks: ``DECODE_LATENCY``, or
  ``SERIAL_DECODE_LATENCY`` in a ``decode_serial`` build, its kind's program in a ``decode_stepped`` one
  (``decode_latency_of``), the ``mid_clock`` dispatcher's registered offer, dispatch); an engine can start it two
  cycles after dispatch (its command queue);
- an engine starts when it is free, its instruction is there and the tokens it pops are visible; a token is
  visible the cycle after the instruction that pushes it ends;
- LOAD, ALU, SETPP, STORE keep their engine busy for a number of cycles given by their sizes (below; an ALU
  also by the waits of elements close behind one whose line they use, ``alu_issue_cycles``);
- COMPUTE frees its engine once its buffer reads are issued; its results are written ``array_latency +
  accumulate_latency`` cycles after the last activation vector entered the array, which is modelled as a resource
  (two weight banks, each reloadable ``bank_drain + 1`` cycles after its last vector).

The constants come from ``hw/spec/microarchitecture.py``; ``tests/hw/test_engine_cycles.py`` holds the model to
the RTL's counter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import INSTRUCTION_BITS, Buffer, Kind, Opcode
from hw.spec.layout import line_bytes, output_line_bytes
from hw.spec.microarchitecture import (BURST_BOUNDARY,
                                       MAX_BURST_BEATS, alu_issue_cycles, array_latency,
                                       bank_drain, feeder_depth)

from .plans import alu_plan, compute_rows

__all__ = ["Timing", "ArrayModel", "fetch_interval"]


def bursts_of_rows(base: int, rows: int, stride: int, beats: int, bus_bytes: int) -> int:
    """AXI bursts the DMA issues for ``rows`` rows of ``beats`` beats (<= 256 beats, no 4 KiB crossing)."""
    total = 0
    for y in range(rows):
        addr, left = base + y * stride, beats
        while left:
            room = (BURST_BOUNDARY - addr % BURST_BOUNDARY) // bus_bytes
            n = min(left, MAX_BURST_BEATS, room)
            total += 1
            addr += n * bus_bytes
            left -= n
    return total


@dataclass
class ArrayModel:
    """When activation vectors enter the systolic array, across instructions. ``rows``: the PE rows (the skew);
    ``tile_lines``: the weight lines of a tile (``reduction_rows``: more than ``rows`` where a PE packs codes)."""

    rows: int
    cols: int
    tile_lines: int
    bank_free: list = field(default_factory=lambda: [0, 0])   # first cycle a bank accepts weights again
    next_bank: int = 0
    last_accept: int = -1

    def run(self, start: int, tiles: int, vectors: int,
            tile_lines: int | None = None) -> tuple[int, list[int], list[int]]:
        """Enter ``tiles`` batches of ``vectors`` for an instruction started at ``start`` (tiles of ``tile_lines``
        weight lines: the instruction's own reduction depth where a build packs per layer).

        Returns the cycle of the last vector, and the cycle each vector and each weight row entered (the
        feeders' back-pressure depends on them).
        """
        accepts, rows_in = [], []
        lines = self.tile_lines if tile_lines is None else tile_lines
        for t in range(tiles):
            bank = self.next_bank
            self.next_bank ^= 1
            load = max(self.bank_free[bank], start + 4, rows_in[-1] + 1 if rows_in else 0)
            rows_in.extend(range(load, load + lines))    # weight lines stream in, one per cycle
            first = max(load + lines, self.last_accept + 1)
            accepts.extend(range(first, first + vectors))
            self.last_accept = first + vectors - 1
            self.bank_free[bank] = self.last_accept + bank_drain(self.rows, self.cols) + 1
        return self.last_accept, accepts, rows_in


def fetch_interval(config: AcceleratorConfig, memory_latency: int = 4, opcode: int | None = None) -> int:
    """Cycles from one instruction's dispatch to the next one's, of ``opcode``: the word's address, the memory's
    latency, its beats, the decoder's checks and the dispatch (the rule of the module docstring; the longest kind's
    for ``None``). The compiler's cost model counts a program's instructions with it: a schedule of short steps is
    bound by the fetch, not by the engines."""
    return (memory_latency + INSTRUCTION_BITS // config.dma_bits + 2 + config.decode_latency_of(opcode)
            + config.dispatch_latency)


@dataclass
class Timing:
    config: AcceleratorConfig
    #: Cycles from an accepted read address to its first data beat, less one (the memory model's latency).
    memory_latency: int = 4
    queue_depth: int = 4

    def __post_init__(self):
        self.start()

    def start(self) -> None:
        """A new run: cycles count from 0 again, and the array's banks are free (as after the engine's reset)."""
        self.array = ArrayModel(self.config.rows, self.config.cols, self.config.reduction_rows)

    @property
    def bus_bytes(self) -> int:
        return self.config.dma_bits // 8

    def fetch(self, opcode: int | None) -> int:
        """Cycles from a dispatch to the next one, an instruction of ``opcode`` (None: unknown or unreadable)."""
        return fetch_interval(self.config, self.memory_latency, opcode)

    #: Cycles from dispatch to the earliest start (the command queue).
    dispatch_to_start = 2

    def load(self, f: dict) -> int:
        c = self.config
        beats = f["x_size"] * line_bytes(Buffer(f["buffer"]), c) // self.bus_bytes
        padded = f["pad_top"] or f["pad_bottom"] or f["pad_left"] or f["pad_right"]
        width = f["pad_left"] + f["x_size"] + f["pad_right"]
        pad_lines = (f["pad_top"] + f["y_size"] + f["pad_bottom"]) * width - f["y_size"] * f["x_size"]
        pad_cycles = pad_lines + f["y_size"] if padded else 0
        return pad_cycles + self.memory_latency + f["y_size"] * beats + 3

    def store(self, f: dict) -> int:
        beats = f["x_size"] * output_line_bytes(self.config) // self.bus_bytes
        bursts = bursts_of_rows(f["dram_addr"], f["y_size"], f["dram_stride"], beats, self.bus_bytes)
        # negative_param: the second PARAM line is read in a cycle of its own before the first accumulator line.
        writes = f["y_size"] * beats + bursts
        c = self.config
        spacing = c.postprocess_lane_columns * c.postprocess_interval
        if spacing > 1:
            # Each lane takes its columns in turn, one every ``postprocess_interval`` cycles: a line every
            # ``spacing`` cycles, unless the writes are slower; the last line's last column enters its lane
            # ``postprocess_lane_columns - 1`` intervals after the line's read, and its beats follow it out.
            line_beats = output_line_bytes(c) // self.bus_bytes
            writes = max(writes, f["y_size"] * f["x_size"] * spacing - c.postprocess_interval + 1 + line_beats)
        return 6 + f["negative_param"] + writes + self.memory_latency + c.postprocess_latency

    def alu(self, f: dict) -> int:
        plan = alu_plan(f)              # dependent elements close together wait
        latency = self.config.alu_latency
        issue = plan.dst.size if plan.independent else alu_issue_cycles(
            plan.dst.tolist(), plan.src.tolist(), latency - self.config.accumulate_latency)
        return issue + latency + 1

    def schedule(self, kind: Kind, f: dict, start: int) -> tuple[int, int]:
        """(first cycle the engine is free again, cycle the instruction's effect and tokens are visible) of an
        instruction started at ``start``."""
        op = kind.opcode
        if op is Opcode.COMPUTE:
            return self.compute(start, f)
        cost = {Opcode.LOAD: self.load, Opcode.ALU: self.alu, Opcode.STORE: self.store}.get(op, lambda _: 1)(f)
        return start + cost + 1, start + cost + 1

    def compute(self, start: int, f: dict) -> tuple[int, int]:
        """(cycle the engine is free again, cycle the results are visible) of a COMPUTE started at ``start``."""
        tiles, vectors = f["kh"] * f["kw"], f["out_h"] * f["out_w"]
        last, accepts, rows_in = self.array.run(start, tiles, vectors, compute_rows(self.config, f))
        # The feeders read one line per cycle from start + 1, at most feeder_depth - 1 ahead of the array.
        ahead = feeder_depth(self.config.reduction_rows) - 1

        def last_read(entered):
            n = len(entered)
            return max(start + n, entered[n - 1 - ahead] if n > ahead else 0)

        issue_done = max(last_read(accepts), last_read(rows_in)) + 2
        # The partial sums leave the array array_latency cycles after the last vector; the retire side writes them
        # accumulate_latency (ACCUMULATE_LATENCY) cycles later and they are visible the cycle after that.
        written = last + array_latency(self.config.rows, self.config.cols) + self.config.accumulate_latency
        return issue_done + 1, written + 1
