"""The runtime's ``board`` backend: a compiled network on a board (or the board simulated on Verilator) over its UART
bridge, through :class:`sw.board.BoardLink`.

The board's memory holds the same image the ``rtl`` backend's testbench gets (``dram_with_input``) wherever the
program can look: its instructions and every region of the image (weights, parameters, tensors) are written once,
the alignment gaps between them are not (the engine never reads them), and
before each later sample only the tensors' regions (the only memory the engine writes) are written again from that
sample's image. Then the steps run as in the other backends: an engine program from its address (start, wait for
done), a host layer on the tensors read back from the board.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hw.spec.isa import ErrorCode
from sw.compiler.network import CompiledNetwork
from sw.emulator import Emulator

__all__ = ["BoardRun", "BoardFault", "ImageTooLarge", "run_network_on_board", "SECONDS_PER_MEGACYCLE"]

#: How long an engine program may run, per million cycles the emulator counts for it (a 1 MHz clock: far below any
#: board's and below the Verilator simulation's speed), plus a fixed margin for the polling itself.
SECONDS_PER_MEGACYCLE = 1.0
MARGIN_SECONDS = 10.0

HostStep = Callable[[str, Callable[[str], np.ndarray]], tuple[int, np.ndarray]]


@dataclass
class BoardRun:
    """One sample through the network on the board: the tensors read back, engine cycles of all the programs of
    its run (a program compiled with ``--batch N`` computes N samples per run)."""

    tensors: dict = field(default_factory=dict)
    cycles: int = 0


class BoardFault(RuntimeError):
    """The board's engine raised its error flag or did not stop in time."""


class ImageTooLarge(ValueError):
    """The program's image is larger than the board's memory."""


def run_network_on_board(compiled: CompiledNetwork, codes, link, *, host: HostStep, keep: bool = False,
                         progress=None) -> list[BoardRun]:
    """Every sample of ``codes`` (N, *input_shape), N a multiple of ``compiled.batch``, through the network's steps
    on the board behind ``link``, a program run per ``compiled.batch`` samples; a :class:`BoardRun` per sample."""
    image = compiled.program.dram
    _check_size(link, len(image))
    budgets = _budgets(compiled)
    tensors = [r for name, r in compiled.program.regions.items() if name.startswith("tensor:")]
    runs = []
    if progress:
        progress(0, len(codes))
    for i, dram in enumerate(compiled.drams_with_inputs(codes)):
        for addr, size in (_spans(compiled) if i == 0 else [(r.addr, r.size) for r in tensors]):
            link.write_memory(addr, _words(dram[addr:addr + size]))
        cycles = 0
        for step in compiled.steps:
            if step["kind"] == "host":
                address, data = host(step["layer"], lambda t: _read(compiled, link, t))
                link.write_memory(address, _words(data[0].tobytes()))
            else:
                cycles += _program(compiled, step, link, budgets[step["program"]], i)
        names = compiled.materialized if keep else [compiled.network.output]
        read = {name: _read(compiled, link, name) for name in names}
        runs += [BoardRun({name: v[k] for name, v in read.items()}, cycles) for k in range(compiled.batch)]
        if progress:
            progress(len(runs), len(codes))
    return runs


def _program(compiled: CompiledNetwork, step: dict, link, seconds: float, sample: int) -> int:
    """One engine program on the board; its cycles."""
    first = compiled.program.segments[step["program"]][0]
    link.start(compiled.program_address(step), compiled.program.dram_size)
    status = link.wait(seconds)
    if status is None:
        raise BoardFault(f"sample {sample}: the board's engine did not stop within {seconds:.0f} s")
    if not status.done or status.error:
        raise BoardFault(f"sample {sample}: the board's engine stopped with {ErrorCode(status.error).name} at "
                         f"instruction {first + status.error_pc}")
    return status.cycles


def _spans(compiled: CompiledNetwork) -> list[tuple[int, int]]:
    """(address, bytes) of what the engine may read: the instructions and the image's regions, merged."""
    from hw.spec.isa import INSTRUCTION_BYTES
    p = compiled.program
    spans = sorted([(p.program_addr, len(p.words) * INSTRUCTION_BYTES),
                    *((r.addr, r.size) for r in p.regions.values())])
    merged: list[list[int]] = []
    for addr, size in spans:
        start, end = addr - addr % 4, addr + size
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end - start) for start, end in merged]


def _budgets(compiled: CompiledNetwork) -> dict[int, float]:
    """Seconds each engine program may take, from the emulator's cycles (every sample takes the same path)."""
    budgets = {}
    for step in compiled.steps:
        if step["kind"] == "engine":
            cycles = Emulator(compiled.config, bytes(compiled.program.dram)).run(compiled.program_address(step)).cycles
            budgets[step["program"]] = MARGIN_SECONDS + SECONDS_PER_MEGACYCLE * (cycles or 0) / 1e6
    return budgets


def _check_size(link, nbytes: int) -> None:
    """The board's memory holds the image (its last word answers), else a clear error."""
    from sw.board import BridgeError
    try:
        link.read_memory(nbytes - 4, 4)
    except BridgeError as e:
        raise ImageTooLarge(f"the program's image ({nbytes} bytes) does not fit the board's memory ({e}); build "
                            f"the board with more memory or compile for a larger engine") from None


def _read(compiled: CompiledNetwork, link, name: str) -> np.ndarray:
    addr, nbytes = compiled.tensor_region(name)
    start, end = addr - addr % 4, -(-(addr + nbytes) // 4) * 4
    raw = np.frombuffer(link.read_memory(start, end - start), np.uint8)[addr - start:addr - start + nbytes]
    return compiled.tensor_codes(name, raw[None])


def _words(data) -> bytes:
    """``data`` padded with zeros to whole 32-bit words."""
    data = bytes(data)
    return data + bytes(-len(data) % 4)
