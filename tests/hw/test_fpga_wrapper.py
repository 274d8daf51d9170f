"""The shift-chain wrapper (hw/fpga_wrapper.py): every input bit of the core reachable from sin, every output bit
observable on sout, in simulation."""

import gc
import random
import warnings

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.fpga_wrapper import ShiftChainWrapper


class _Mixer(wiring.Component):
    """Outputs that depend on every input bit: ``x ^ y`` and ``x + y`` registered, and ``x`` straight through."""

    x: In(7)
    y: In(7)
    xor: Out(7)
    total: Out(8)
    copy: Out(7)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [self.xor.eq(self.x ^ self.y), self.total.eq(self.x + self.y)]
        m.d.comb += self.copy.eq(self.x)
        return m


def test_chains_reach_every_port_bit():
    dut = ShiftChainWrapper(_Mixer())
    assert dut.flipflops == 7 + 7 + 7 + 8 + 7
    rng = random.Random(1)
    cases = [(rng.randrange(128), rng.randrange(128)) for _ in range(6)] + [(127, 127), (0, 0), (1, 64)]
    seen = []

    async def bench(ctx):
        for x, y in cases:
            # The input chain shifts towards its end: the first bit shifted in lands in the last input bit.
            bits = [(x >> i) & 1 for i in range(7)] + [(y >> i) & 1 for i in range(7)]
            for bit in reversed(bits):
                ctx.set(dut.sin, bit)
                await ctx.tick()
            ctx.set(dut.capture, 1)             # the inputs hold: the core's registers take them, then the
            await ctx.tick().repeat(2)          # output chain takes every output
            ctx.set(dut.capture, 0)
            word = 0
            for i in range(dut.flipflops - 14):
                word |= ctx.get(dut.sout) << i
                await ctx.tick()
            seen.append(word)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for (x, y), word in zip(cases, seen):
        assert word == (x ^ y) | ((x + y) << 7) | (x << 15), (x, y)


def test_needs_a_component():
    with warnings.catch_warnings():
        # The half-built object is collected here, not during some later test.
        warnings.simplefilter("ignore")
        with pytest.raises(TypeError, match=r"^Core must be an amaranth.lib.wiring.Component, not 3$"):
            ShiftChainWrapper(3)
        gc.collect()
