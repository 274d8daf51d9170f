"""Cycle costs of each instruction: the performance model of the engines, queues and DMA.

Each cost is what the RTL spends on the instruction once it has started (tokens popped), with the
external memory answering after ``memory_latency`` cycles and never stalling. The terms name the
hardware they model; ``tests/sim`` and ``bench/utilization.py`` compare the total with the RTL's counter.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import INSTRUCTION_BITS, Buffer, Kind, Opcode
from hw.spec.layout import line_bytes, output_line_bytes

__all__ = ["Timing"]

#: Longest AXI4 burst the DMA issues, in beats.
MAX_BURST = 256


def _bursts(beats: int) -> int:
    return -(-beats // MAX_BURST)


@dataclass(frozen=True)
class Timing:
    config: AcceleratorConfig
    #: Cycles from an accepted read address to its first data beat (the memory's latency).
    memory_latency: int = 4
    #: Depth of each engine's instruction queue.
    queue_depth: int = 4

    @property
    def bus_bytes(self) -> int:
        return self.config.dma_bits // 8

    def beats(self, nbytes: int) -> int:
        return nbytes // self.bus_bytes

    @property
    def fetch(self) -> int:
        """One instruction: address, latency, data beats, decode."""
        return 1 + self.memory_latency + INSTRUCTION_BITS // self.config.dma_bits + 1

    def cost(self, kind: Kind, f: dict) -> int:
        c = self.config
        op = kind.opcode
        if op is Opcode.LOAD:
            beats = f["x_size"] * self.beats(line_bytes(Buffer(f["buffer"]), c))
            per_row = _bursts(beats) * (1 + self.memory_latency) + beats
            width = f["pad_left"] + f["x_size"] + f["pad_right"]
            pad_lines = (f["pad_top"] + f["y_size"] + f["pad_bottom"]) * width - f["y_size"] * f["x_size"]
            return 1 + f["y_size"] * per_row + pad_lines
        if op is Opcode.COMPUTE:
            vectors = f["out_h"] * f["out_w"]
            tiles = f["kh"] * f["kw"]
            # First tile's weights, then each batch; a batch shorter than 2*rows + cols exposes the next load.
            per_tile = max(vectors, 2 * c.rows + c.cols)
            return 1 + c.rows + (tiles - 1) * per_tile + vectors + (c.rows + c.cols - 1) + 2
        if op is Opcode.ALU:
            return 1 + f["y_size"] * f["x_size"] + 2
        if op is Opcode.SETPP:
            return 1
        if op is Opcode.STORE:
            beats = f["x_size"] * self.beats(output_line_bytes(c))
            per_row = _bursts(beats) * 1 + beats + self.memory_latency
            return 1 + f["y_size"] * per_row + 4
        return 1
