"""The board's memory (boards/memory.py) seen from the engine's data port, on Amaranth's simulator: bursts inside
the memory read back what was written with OKAY; a burst that runs past the end answers SLVERR on every beat (reads)
or once (writes) and writes nothing."""

import pytest
from amaranth.sim import Simulator

from boards.memory import BoardMemory

BEAT = 8                # bytes per beat of a 64-bit data port
SIZE = 64 * BEAT        # bytes
OKAY, SLVERR = 0, 2


async def _write(ctx, port, addr: int, words: list[int]) -> int:
    ctx.set(port.aw.valid, 1)
    ctx.set(port.aw.addr, addr)
    ctx.set(port.aw.len, len(words) - 1)
    while not ctx.get(port.aw.ready):
        await ctx.tick()
    await ctx.tick()
    ctx.set(port.aw.valid, 0)
    for i, word in enumerate(words):
        ctx.set(port.w.valid, 1)
        ctx.set(port.w.data, word)
        ctx.set(port.w.strb, (1 << BEAT) - 1)
        ctx.set(port.w.last, i == len(words) - 1)
        while not ctx.get(port.w.ready):
            await ctx.tick()
        await ctx.tick()
    ctx.set(port.w.valid, 0)
    ctx.set(port.b.ready, 1)
    while not ctx.get(port.b.valid):
        await ctx.tick()
    resp = ctx.get(port.b.resp)
    await ctx.tick()
    ctx.set(port.b.ready, 0)
    return resp


async def _read(ctx, port, addr: int, beats: int) -> list[tuple[int, int]]:
    ctx.set(port.ar.valid, 1)
    ctx.set(port.ar.addr, addr)
    ctx.set(port.ar.len, beats - 1)
    while not ctx.get(port.ar.ready):
        await ctx.tick()
    await ctx.tick()
    ctx.set(port.ar.valid, 0)
    ctx.set(port.r.ready, 1)
    got = []
    while len(got) < beats:
        if ctx.get(port.r.valid):
            got.append((ctx.get(port.r.data), ctx.get(port.r.resp)))
        await ctx.tick()
    ctx.set(port.r.ready, 0)
    return got


def _run(testbench) -> None:
    dut = BoardMemory(data_bits=BEAT * 8, size=SIZE)
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def bench(ctx):
        await testbench(ctx, dut.data)
    sim.add_testbench(bench)
    sim.run()


def test_bursts_inside_the_memory_are_okay():
    async def tb(ctx, port):
        words = [0x1111_0000_0000_0000 * (i + 1) + i for i in range(5)]
        assert await _write(ctx, port, SIZE - 5 * BEAT, words) == OKAY
        assert await _read(ctx, port, SIZE - 5 * BEAT, 5) == [(w, OKAY) for w in words]
    _run(tb)


@pytest.mark.parametrize("start_beat", [57, 63, 64, 1000])
def test_a_burst_past_the_end_is_slverr_and_writes_nothing(start_beat):
    async def tb(ctx, port):
        assert await _write(ctx, port, 0, [0xAAAA] * 4) == OKAY
        # The memory wraps its own address: a write past the end must not land at the start.
        assert await _write(ctx, port, start_beat * BEAT, [0x5555] * 8) == SLVERR
        assert await _read(ctx, port, 0, 4) == [(0xAAAA, OKAY)] * 4
        assert [resp for _, resp in await _read(ctx, port, start_beat * BEAT, 8)] == [SLVERR] * 8
        # The next burst inside the memory is OKAY again.
        assert await _read(ctx, port, 0, 1) == [(0xAAAA, OKAY)]
    _run(tb)
