"""Arithmetic without multipliers (hw/pipeline.py): shift-and-add products, exhaustively, and staged sums that take
the stages they say they take."""

import gc
import itertools
import random

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from hw.pipeline import Pipeline, Staged, shift_add, times


def _values(shape):
    return range(-(1 << (shape.width - 1)), 1 << (shape.width - 1)) if shape.signed else range(1 << shape.width)


@pytest.mark.parametrize("sa,sb", [(signed(4), signed(4)), (signed(5), signed(5)), (signed(3), signed(6)),
                                   (unsigned(3), signed(5)), (signed(5), unsigned(2)), (unsigned(4), unsigned(4)),
                                   (signed(1), signed(3)), (unsigned(1), unsigned(5))], ids=str)
def test_shift_add_is_a_product(sa, sb):
    a, b = Signal(sa), Signal(sb)
    product = shift_add(a, b)
    m = Module()
    out = Signal(signed(len(product) + 1))
    m.d.comb += out.eq(product)
    bad = []

    async def bench(ctx):
        for x, y in itertools.product(_values(sa), _values(sb)):
            ctx.set(a, x)
            ctx.set(b, y)
            if ctx.get(out) != x * y:
                bad.append((x, y, ctx.get(out)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not bad, bad[:5]


@pytest.mark.parametrize("constant", [0, 1, 2, 3, 16, 48, 255, 1000])
def test_times_a_constant(constant):
    a = Signal(6)
    m = Module()
    out = Signal(20)
    m.d.comb += out.eq(times(a, constant))

    async def bench(ctx):
        for x in range(64):
            ctx.set(a, x)
            assert ctx.get(out) == x * constant

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


def test_staged_arithmetic():
    """A sum of products (the shape of the decoder's address checks) comes out exactly, at the stage it reports,
    with at most two carry chains in any stage, for a new input every cycle."""
    m = Module()
    p = Pipeline(m, "t")
    x, y, z, base = Signal(10), Signal(20), Signal(3), Signal(16)
    result = p.sum([p.input(base), p.product(p.apply(lambda v: (v - 1)[:10], p.input(x)), p.input(y)),
                    p.product(p.input(z), p.input(x))])
    assert isinstance(result, Staged) and result.depth <= 2
    stages = result.stage
    # Six chains on the longest way (the decrement, a tree of 10 copies in 4 levels, the last addition), two in
    # each stage: ready in stage 2, after two registers.
    assert stages == 2 and result.depth == 2
    out = Signal(len(result.value))
    m.d.comb += out.eq(result.value)
    rng = random.Random(3)
    cases = [(rng.randrange(1, 1024), rng.randrange(1 << 20), rng.randrange(8), rng.randrange(1 << 16))
             for _ in range(200)] + [(1023, (1 << 20) - 1, 7, (1 << 16) - 1), (1, 0, 0, 0)]

    async def bench(ctx):
        for i in range(len(cases) + stages):
            if i < len(cases):
                ctx.set(x, cases[i][0])
                ctx.set(y, cases[i][1])
                ctx.set(z, cases[i][2])
                ctx.set(base, cases[i][3])
            if i >= stages:
                cx, cy, cz, cb = cases[i - stages]
                assert ctx.get(out) == cb + (cx - 1) * cy + cz * cx, cases[i - stages]
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_values_cannot_go_back_in_time():
    m = Module()
    p = Pipeline(m, "t")
    late = p.register(p.input(Signal(4)))
    with pytest.raises(ValueError, match=r"^A value of stage 1 cannot be used at stage 0$"):
        p.at(late, 0)
    del m, p
    gc.collect()    # the unused module warns that it was never elaborated: here, not in a later test


def test_serial_staged_arithmetic():
    """A serial pipeline (``start``; the decoder of a ``decode_serial`` build): a sum of products, one of them of a
    product, is exact from the stage it reports on (counted from the ``start`` pulse) and holds while the inputs do;
    no product is a tree of adders."""
    m = Module()
    start = Signal()
    p = Pipeline(m, "t", levels=2, start=start)
    x, y, z, base = Signal(10), Signal(20), Signal(3), Signal(16)
    inner = p.product(p.input(z), p.input(y))
    result = p.sum([p.input(base), p.product(p.apply(lambda v: (v - 1)[:10], p.input(x)), inner),
                    p.product(p.input(z), p.input(x))])
    # z * y: loaded on the pulse, a bit of z a cycle (3); then (x - 1) * that, loaded on its stage (10 more).
    assert inner.stage == 1 + 3 and result.stage >= inner.stage + 1 + 10
    out = Signal(len(result.value))
    m.d.comb += out.eq(result.value)
    rng = random.Random(5)
    cases = [(rng.randrange(1, 1024), rng.randrange(1 << 20), rng.randrange(8), rng.randrange(1 << 16))
             for _ in range(60)] + [(1023, (1 << 20) - 1, 7, (1 << 16) - 1), (1, 0, 0, 0), (512, 1, 4, 0)]

    _run_started(m, start, (x, y, z, base), cases, out, result.stage, 3,     # from the stage it reports on, and held
                 lambda cx, cy, cz, cb: cb + (cx - 1) * cz * cy + cz * cx)


def _run_started(m, start, inputs, cases, out, stage: int, held: int, expected) -> None:
    """Simulate ``m`` case by case: ``inputs`` set to a case, ``start`` for a cycle, then ``out`` checked against
    ``expected(*case)`` from ``stage`` cycles on, for ``held`` cycles."""
    async def bench(ctx):
        for case in cases:
            for signal, value in zip(inputs, case):
                ctx.set(signal, value)
            ctx.set(start, 1)
            await ctx.tick()
            ctx.set(start, 0)
            for _ in range(stage - 1):
                await ctx.tick()
            for _ in range(held):
                assert ctx.get(out) == expected(*case), case
                await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("serial", [True, False])
@pytest.mark.parametrize("addend_bits", [24, 8])
def test_product_with_an_addend(serial, addend_bits):
    """``product(a, b, addend)`` is ``a * b + addend``: a serial loop starts its running sum at the addend (an
    addend wider or narrower than the wide operand, the extremes included), the other adds it to the copies."""
    m = Module()
    start = Signal()
    p = Pipeline(m, "t", levels=2, start=start if serial else None)
    a, b, c = Signal(5), Signal(12), Signal(addend_bits)
    result = p.product(p.input(a), p.input(b), p.input(c))
    out = Signal(len(result.value))
    m.d.comb += out.eq(result.value)
    rng = random.Random(addend_bits)
    top = (1 << addend_bits) - 1
    cases = [(rng.randrange(32), rng.randrange(1 << 12), rng.randrange(top + 1)) for _ in range(40)] + \
        [(31, (1 << 12) - 1, top), (0, 0, top), (31, (1 << 12) - 1, 0), (1, 1, 1)]

    _run_started(m, start, (a, b, c), cases, out, result.stage, 2, lambda ca, cb, cc: ca * cb + cc)
