"""The DMA's burst address generator (hw/dma.py) against AXI4's rules written out here: each row from
``base + y * stride``, cut into INCR bursts of at most 256 beats that never cross a 4 KiB boundary, one burst a cycle
while the bus takes them, in order, none lost or repeated under stalls."""

import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from hw.dma import BurstAddressGenerator


def reference_bursts(base: int, rows: int, stride: int, beats: int, bus_bytes: int) -> list[tuple[int, int]]:
    """(address, beats) of every burst, from the rules: cut a row where 256 beats are reached or at a 4 KiB
    boundary, whichever comes first."""
    out = []
    for y in range(rows):
        addr, left = base + y * stride, beats
        while left:
            n = min(left, 256, (4096 - addr % 4096) // bus_bytes)
            out.append((addr % (1 << 32), n))                  # 32-bit addresses
            addr, left = addr + n * bus_bytes, left - n
    return out


def run(bus_bytes: int, base: int, rows: int, stride: int, beats: int, stall: float, seed: int,
        addr_bits: int = 32, held_end: bool = False):
    """The generator's bursts and the cycles from start to the last one (ready held high: one a cycle)."""
    dut = BurstAddressGenerator(bus_bytes, max_rows=63, max_beats=4095, addr_bits=addr_bits, held_end=held_end)
    rng = random.Random(seed)
    got, cycles = [], []

    async def bench(ctx):
        ctx.set(dut.base, base)
        ctx.set(dut.rows, rows)
        ctx.set(dut.stride, stride)
        ctx.set(dut.beats, beats)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for cycle in range(20000):
            ready = rng.random() >= stall
            ready_len = rng.random() >= stall
            ctx.set(dut.addr.ready, ready)
            ctx.set(dut.lengths.ready, ready_len)
            if not ctx.get(dut.busy):
                break
            if ready and ready_len:
                assert ctx.get(dut.addr.valid) and ctx.get(dut.lengths.valid)
                n = ctx.get(dut.lengths.payload)
                assert ctx.get(dut.addr.len) == n - 1
                got.append((ctx.get(dut.addr.addr), n))
                cycles.append(cycle)
            await ctx.tick()
        else:
            raise AssertionError("the generator never finished")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, cycles


CASES = [
    # (bus bytes, base, rows, stride, beats): short rows, rows cut at 256 beats and at 4 KiB, strides that cross
    # boundaries, a base just below one, a row of exactly one page, zero rows or beats.
    (8, 0, 3, 64, 8), (8, 4088, 4, 4096 - 8, 3), (8, 0x1F00, 2, 8192, 600), (8, 0xFF8, 1, 0, 1),
    (4, 4092, 5, 4100, 1100), (16, 4080, 3, 48, 300), (16, 0, 2, 4096, 256), (32, 4064, 6, 4128, 130),
    (8, 0x12345678 & ~7, 7, 0x1008, 513), (8, 0, 0, 64, 8), (8, 0, 3, 64, 0), (4, 0xFFFFF000 - 8, 3, 2048, 1030),
]


@pytest.mark.parametrize("bus_bytes,base,rows,stride,beats", CASES, ids=str)
@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_bursts_follow_the_axi_rules(bus_bytes, base, rows, stride, beats, stall):
    got, cycles = run(bus_bytes, base, rows, stride, beats, stall, seed=bus_bytes + rows + beats)
    assert got == reference_bursts(base, rows, stride, beats, bus_bytes)
    if stall == 0.0:
        assert cycles == list(range(len(got)))          # one burst a cycle from the cycle after start


def test_random_shapes():
    _random_shapes(random.Random(7), base_words=1 << 20)


def _random_shapes(rng: random.Random, base_words: int, addr_bits: int = 32, held_end: bool = False) -> None:
    """25 random burst shapes against the reference in a memory of ``2**addr_bits`` bytes, one burst a cycle."""
    for _ in range(25):
        bus_bytes = rng.choice([4, 8, 16])
        base = rng.randrange(0, base_words) * bus_bytes
        stride = rng.randrange(0, 1 << 11) * bus_bytes
        rows, beats = rng.randrange(0, 6), rng.choice([1, 2, 255, 256, 257, rng.randrange(1, 1500)])
        got, cycles = run(bus_bytes, base, rows, stride, beats, 0.0, seed=rows, addr_bits=addr_bits,
                          held_end=held_end)
        expected = beyond(reference_bursts(base, rows, stride, beats, bus_bytes), addr_bits)
        assert got == expected, (bus_bytes, base, rows, stride, beats)
        assert cycles == list(range(len(got)))


def beyond(bursts: list[tuple[int, int]], addr_bits: int) -> list[tuple[int, int]]:
    """A memory of ``2**addr_bits`` bytes: an address at or beyond its end keeps its offset below ``addr_bits`` and
    sets bit ``addr_bits`` (so the memory's range check refuses it) instead of wrapping into the memory."""
    top = 1 << addr_bits
    return [(a if a < top else top | a % top, n) for a, n in bursts]


NARROW_CASES = [
    # (addr bits, bus bytes, base, rows, stride, beats): inside a 128 KiB memory; rows cut at 256 beats and 4 KiB;
    # the last rows, or the base, or the stride beyond the memory's end; a 64 KiB and an 8 KiB memory.
    (17, 8, 0, 3, 64, 8), (17, 8, 0x1F000 - 8, 3, 4096 + 8, 700), (17, 8, 0x1E008, 4, 0x1000, 2046),
    (17, 8, 0x1FFF8, 3, 8, 1), (17, 8, 0x20000, 2, 64, 3), (17, 8, 0x7FFF8, 2, 64, 3), (17, 8, 8, 3, 0x20000, 2),
    (17, 8, 0x1FF00, 2, 0x100, 300), (16, 4, 0xF000, 4, 0x1004, 1100), (16, 16, 0xFFF0, 2, 16, 1),
    (13, 32, 0x1FE0, 3, 0x20, 130), (17, 8, 0, 0, 64, 8), (17, 8, 0, 3, 64, 0),
]


@pytest.mark.parametrize("addr_bits,bus_bytes,base,rows,stride,beats", NARROW_CASES, ids=str)
@pytest.mark.parametrize("stall", [0.0, 0.4])
@pytest.mark.parametrize("held_end", [False, True], ids=["", "held_end"])
def test_small_memory_bursts(addr_bits, bus_bytes, base, rows, stride, beats, stall, held_end):
    """(``held_end``: whether a burst ends its row from a register, a mid_clock engine's.)"""
    got, cycles = run(bus_bytes, base, rows, stride, beats, stall, seed=rows + beats, addr_bits=addr_bits,
                      held_end=held_end)
    assert got == beyond(reference_bursts(base, rows, stride, beats, bus_bytes), addr_bits)
    if stall == 0.0:
        assert cycles == list(range(len(got)))


@pytest.mark.parametrize("held_end", [False, True], ids=["", "held_end"])
def test_small_memory_random_shapes(held_end):
    _random_shapes(random.Random(11), base_words=1 << 15, addr_bits=17, held_end=held_end)


def test_small_memory_too_small():
    with warnings.catch_warnings():                     # the refused object is never elaborated, of course
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="addr_bits must be in 13..32"):
            BurstAddressGenerator(8, max_rows=3, max_beats=8, addr_bits=12)
        gc.collect()
