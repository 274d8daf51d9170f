"""Random legal programs (:func:`random_program`): tiles drawn by :mod:`.tiles`, tokens placed by
:mod:`.tokens`, the expected memory given by :mod:`.reference`."""

from __future__ import annotations

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import INSTRUCTION_BYTES, ErrorCode, Opcode, encode

from .common import Program
from .reference import reference_run
from .tiles import _Builder, _Tile
from .tokens import _place_tokens, _Retry


def _config_summary(config: AcceleratorConfig) -> str:
    if config.multi_format:
        return f"{config.rows}x{config.cols} formats {','.join(config.formats)}"
    fmt = config.acts.name if config.acts == config.weights else f"{config.weights.name}x{config.acts.name}"
    return f"{config.rows}x{config.cols} {fmt}"


def _draw(config: AcceleratorConfig, rng: np.random.Generator, dram_size: int, max_instructions: int,
          program_at_end: bool = False, budget: int | None = None):
    """Plan tiles and place tokens: (builder, scheduled instructions, tile summaries, program_addr)."""
    bus = config.dma_bits // 8
    align = max(bus, INSTRUCTION_BYTES)
    program_bytes = max_instructions * INSTRUCTION_BYTES
    if program_at_end:
        program_addr = (dram_size - program_bytes) // align * align
        data_range = (0, program_addr)
    else:
        program_addr = 0 if rng.random() < 0.6 else int(rng.integers(0, 16)) * align
        data_range = (program_addr + program_bytes, dram_size // bus * bus)
    if data_range[1] - data_range[0] < 64 * bus or program_addr < 0:
        raise ValueError(f"dram_size {dram_size} is too small for programs of {max_instructions} instructions")
    b = _Builder(config, rng, dram_size, program_addr, program_bytes, data_range)
    if budget is None:
        budget = int(rng.integers(min(24, max_instructions), max_instructions + 1)) - 1
    tiles: list[_Tile] = []
    used = 0
    while True:
        left = budget - used
        if left < 6 and tiles:
            break
        tile = b.conv_tile(len(tiles), left) if rng.random() < 0.55 else b.gemm_tile(len(tiles), left)
        tiles.append(tile)
        used += len(tile.instrs) + 1        # a barrier, perhaps
    instrs = sorted((i for t in tiles for i in t.instrs), key=lambda i: i.order)
    while True:
        scheduled = _place_tokens(instrs, config)
        if len(scheduled) <= max_instructions - 1 or len(tiles) == 1:
            break
        dropped = tiles.pop()               # too long: drop the last tile
        instrs = [i for i in instrs if not any(i is d for d in dropped.instrs)
                  and not (i.opcode is Opcode.ALU and i.fields["dst_addr"] == config.acc_buffer_depth - 1)]
        for i in instrs:
            i.after = [x for x in i.after if not any(x is d for d in dropped.instrs)]
    if len(scheduled) > max_instructions - 1:
        raise _Retry("program too long")
    return b, scheduled, [t.summary for t in tiles], program_addr


def _image(b: _Builder, dram_size: int, program_addr: int, words: list[int]) -> bytearray:
    dram = bytearray(b.rng.bytes(dram_size))
    for addr, data in b.blobs:
        dram[addr:addr + len(data)] = data
    for i, w in enumerate(words):
        at = program_addr + i * INSTRUCTION_BYTES
        dram[at:at + INSTRUCTION_BYTES] = w.to_bytes(INSTRUCTION_BYTES, "little")
    return dram


def _finish_word() -> int:
    return encode(Opcode.FINISH)


def random_program(config: AcceleratorConfig, rng: np.random.Generator, *, dram_size: int = 1 << 16,
                   max_instructions: int = 60) -> Program:
    """A random legal, race-free program of at most ``max_instructions`` instructions (FINISH included)."""
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")
    if not isinstance(max_instructions, int) or max_instructions < 12:
        raise ValueError(f"max_instructions must be an integer of at least 12, not {max_instructions!r}")
    for _ in range(50):
        try:
            b, scheduled, summaries, program_addr = _draw(config, rng, dram_size, max_instructions)
        except _Retry:
            continue
        words = [i.word() for i in scheduled] + [_finish_word()]
        dram = _image(b, dram_size, program_addr, words)
        ref = reference_run(config, dram, program_addr)
        barriers = sum(i.opcode is Opcode.ALU and i.fields["dst_addr"] == config.acc_buffer_depth - 1
                       for i in scheduled)
        style = [s for s, on in (("pipelined", b.lead), ("lagged stores", b.lag), ("all codes", b.wild),
                                 ("padding garbage", b.garbage)) if on]
        description = (f"{_config_summary(config)}: {len(words)} instructions, {len(summaries)} tiles "
                       f"[{'; '.join(summaries)}]{', ' + str(barriers) + ' barriers' if barriers else ''}"
                       f"{' (' + ', '.join(style) + ')' if style else ''}")
        return Program(config, words, dram, program_addr, dram_size, ErrorCode.NONE, description,
                       error_pc=len(words) - 1, expected_dram=bytes(ref.dram), stores=ref.stores,
                       expected_macs=ref.macs, expected_nonfinite=ref.nonfinite)
    raise ValueError(f"Could not draw a program for {config!r} in {dram_size} bytes")
