"""Hand-written programs whose answers are known by hand, and placing instruction words in a memory image."""

from __future__ import annotations

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import INSTRUCTION_BYTES, Buffer, Opcode, encode

__all__ = ["place", "one_mac_program"]


def place(dram: bytearray, words: list[int], at: int = 0) -> None:
    """Instruction words at address ``at`` of ``dram``."""
    for i, w in enumerate(words):
        dram[at + i * INSTRUCTION_BYTES:at + (i + 1) * INSTRUCTION_BYTES] = w.to_bytes(INSTRUCTION_BYTES, "little")


def one_mac_program(*, bias: int = 0, multiplier: int = 1, shift: int = 0, compute: dict | None = None,
                    store: dict | None = None) -> tuple[AcceleratorConfig, bytearray, list[int]]:
    """A 1x1 int8 engine loads ACT 3, WEIGHT 5 and (bias, multiplier, shift), computes 3 * 5 into accumulator 0
    and stores its rescale at byte 600: (config, memory image with the program at 0, words). ``compute`` and
    ``store`` are the token flags of the COMPUTE and the STORE (default: data ready, results ready)."""
    config = AcceleratorConfig(rows=1, cols=1, act_buffer_depth=16, weight_buffer_depth=16, acc_buffer_depth=16,
                               param_buffer_depth=1, dma_bits=32)
    dram = bytearray(1024)
    dram[512:516] = bytes([3, 0, 0, 0])                                          # ACT line: code 3
    dram[520:524] = bytes([5, 0, 0, 0])                                          # WEIGHT line: code 5
    dram[528:544] = bias.to_bytes(8, "little", signed=True) + multiplier.to_bytes(4, "little", signed=True) + \
        bytes([shift, 0, 0, 0])                                                  # PARAM entry
    words = [
        encode(Opcode.LOAD, buffer=int(Buffer.PARAM), sram_addr=0, dram_addr=528, y_size=1, x_size=1),
        encode(Opcode.LOAD, buffer=int(Buffer.WEIGHT), sram_addr=0, dram_addr=520, y_size=1, x_size=1),
        encode(Opcode.LOAD, buffer=int(Buffer.ACT), sram_addr=0, dram_addr=512, y_size=1, x_size=1, push_next=1),
        encode(Opcode.COMPUTE, acc_addr=0, act_addr=0, weight_addr=0, out_h=1, out_w=1, stride=1, dilation=1,
               kh=1, kw=1, **(dict(pop_prev=1, push_next=1) if compute is None else compute)),
        encode(Opcode.SETPP, zero_point=0, clamp_lo=0x80, clamp_hi=0x7F),
        encode(Opcode.STORE, acc_addr=0, dram_addr=600, y_size=1, x_size=1, param_addr=0,
               **(dict(pop_prev=1) if store is None else store)),
        encode(Opcode.FINISH),
    ]
    place(dram, words)
    return config, dram, words
