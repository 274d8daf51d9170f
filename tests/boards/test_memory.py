"""The board's memory (boards/memory.py) seen from the engine's data port, on Amaranth's simulator: bursts inside
the memory read back what was written with OKAY; a burst that runs past the end answers SLVERR on every beat (reads)
or once (writes) and writes nothing."""

import pytest
from amaranth.sim import Simulator

from boards.memory import SPRAM_WORDS, BoardMemory

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


async def _send_read_address(ctx, port, addr: int, beats: int) -> None:
    ctx.set(port.ar.valid, 1)
    ctx.set(port.ar.addr, addr)
    ctx.set(port.ar.len, beats - 1)
    while not ctx.get(port.ar.ready):
        await ctx.tick()
    await ctx.tick()
    ctx.set(port.ar.valid, 0)


async def _read(ctx, port, addr: int, beats: int) -> list[tuple[int, int]]:
    await _send_read_address(ctx, port, addr, beats)
    ctx.set(port.r.ready, 1)
    got = []
    while len(got) < beats:
        if ctx.get(port.r.valid):
            got.append((ctx.get(port.r.data), ctx.get(port.r.resp)))
        await ctx.tick()
    ctx.set(port.r.ready, 0)
    return got


def _run(testbench, *, whole: bool = False, kind: str = "bram") -> None:
    """Run ``testbench(ctx, port)`` on the memory's data port (``whole``: on the memory); ``kind`` "spram": the
    SPRAM memory (its behavioural model, its fixed size), whose read side has no skid register."""
    dut = BoardMemory(data_bits=BEAT * 8, size=SIZE if kind == "bram" else SPRAM_WORDS * BEAT, kind=kind)
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def bench(ctx):
        await testbench(ctx, dut if whole else dut.data)
    sim.add_testbench(bench)
    sim.run()


def test_bursts_inside_the_memory_are_okay():
    async def tb(ctx, port):
        words = [0x1111_0000_0000_0000 * (i + 1) + i for i in range(5)]
        assert await _write(ctx, port, SIZE - 5 * BEAT, words) == OKAY
        assert await _read(ctx, port, SIZE - 5 * BEAT, 5) == [(w, OKAY) for w in words]
    _run(tb)


@pytest.mark.parametrize("kind", ["bram", "spram"])
@pytest.mark.parametrize("from_end", [-7, -1, 0, 936, 1 << 28])
def test_a_burst_past_the_end_is_slverr_and_writes_nothing(from_end, kind):
    """Bursts of 8 beats from ``from_end`` beats after the memory's last (1 << 28: at the 2 GiB address, far beyond
    either), on both memories (the SPRAM's checks its range from a flag of the address's high bits)."""
    start_beat = (SIZE if kind == "bram" else SPRAM_WORDS * BEAT) // BEAT + from_end

    async def tb(ctx, port):
        assert await _write(ctx, port, 0, [0xAAAA] * 4) == OKAY
        # The memory wraps its own address: a write past the end must not land at the start.
        assert await _write(ctx, port, start_beat * BEAT, [0x5555] * 8) == SLVERR
        assert await _read(ctx, port, 0, 4) == [(0xAAAA, OKAY)] * 4
        assert [resp for _, resp in await _read(ctx, port, start_beat * BEAT, 8)] == [SLVERR] * 8
        # The next burst inside the memory is OKAY again.
        assert await _read(ctx, port, 0, 1) == [(0xAAAA, OKAY)]
    _run(tb, kind=kind)


async def _read_stalling(ctx, port, addr: int, beats: int, ready: list[int]) -> list[tuple[int, int, int]]:
    """A burst read whose reader takes a beat only in the cycles ``ready`` marks (cyclically): (data, resp, last)."""
    await _send_read_address(ctx, port, addr, beats)
    got, cycle = [], 0
    while len(got) < beats:
        ctx.set(port.r.ready, ready[cycle % len(ready)])
        if ctx.get(port.r.valid) and ready[cycle % len(ready)]:
            got.append((ctx.get(port.r.data), ctx.get(port.r.resp), ctx.get(port.r.last)))
        await ctx.tick()
        cycle += 1
        assert cycle < 10 * len(ready) * beats, f"only {len(got)} of {beats} beats came"
    ctx.set(port.r.ready, 0)
    for _ in range(4):                      # nothing more comes
        assert not ctx.get(port.r.valid)
        await ctx.tick()
    return got


@pytest.mark.parametrize("kind", ["bram", "spram"])
@pytest.mark.parametrize("ready", [[1], [0, 1], [1, 1, 0], [1, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1]])
def test_a_reader_that_stalls_gets_every_beat_once_in_order(ready, kind):
    """The read side's register slice under back-pressure: each beat once, in order, ``last`` on the last only
    (with and without the skid register)."""
    words = [(0x0123_4567_89AB_CDEF * (i + 3)) % (1 << 64) for i in range(12)]

    async def tb(ctx, port):
        assert await _write(ctx, port, 8 * BEAT, words) == OKAY
        got = await _read_stalling(ctx, port, 8 * BEAT, len(words), ready)
        assert got == [(w, OKAY, i == len(words) - 1) for i, w in enumerate(words)]
        assert await _read_stalling(ctx, port, 9 * BEAT, 1, ready) == [(words[1], OKAY, 1)]
    _run(tb, kind=kind)


def test_the_host_reads_32_bit_words_of_a_beat():
    words = [0x1111_2222_3333_4444, 0x5555_6666_7777_8888]

    async def tb(ctx, memory):
        assert await _write(ctx, memory.data, 0, words) == OKAY
        host = memory.host
        for byte in range(0, 2 * BEAT, 4):
            ctx.set(host.ar.valid, 1)
            ctx.set(host.ar.addr, byte)
            while not ctx.get(host.ar.ready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(host.ar.valid, 0)
            ctx.set(host.r.ready, 1)
            while not ctx.get(host.r.valid):
                await ctx.tick()
            assert (ctx.get(host.r.data), ctx.get(host.r.resp)) == ((words[byte // BEAT] >> (8 * (byte % BEAT))) &
                                                                    0xFFFF_FFFF, OKAY)
            await ctx.tick()
            ctx.set(host.r.ready, 0)
    _run(tb, whole=True)
