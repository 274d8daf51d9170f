"""The multi-format operand decoder and multiplier (hw/operand.py, hw/multiplier.py) in Amaranth's simulator,
against the format registry's exact decomposition of every code (``Format.exact``)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.multiplier import MultiFormatMultiplier
from hw.operand import MultiFormatDecoder
from hw.spec.formats import get_format

SETS = [("int4", "int8", "minifloat6"), ("int8", "fp8_e4m3", "fp8_e5m2"), ("minifloat4", "uint8")]


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("formats", SETS, ids=",".join)
def test_decoder_every_code_of_every_format(formats):
    """Each code, in the low bits of a slot whose upper bits are random garbage, decodes to the value the format
    defines, shifted into the units of the finest format of the set."""
    fmts = [get_format(f) for f in formats]
    dut = MultiFormatDecoder(fmts)
    finest = min(f.lsb_exponent for f in fmts)
    slot = max(f.bits for f in fmts)
    rng = np.random.default_rng(1)
    bad = []

    async def bench(ctx):
        for index, fmt in enumerate(fmts):
            sig, shift, finite = fmt.exact(fmt.codes)
            ctx.set(dut.select, index)
            for code in range(1 << fmt.bits):
                garbage = int(rng.integers(0, 1 << (slot - fmt.bits))) << fmt.bits if slot > fmt.bits else 0
                ctx.set(dut.code, code | garbage)
                got = (ctx.get(dut.significand) << ctx.get(dut.shift), ctx.get(dut.nonfinite))
                want = ((int(sig[code]) << int(shift[code])) << (fmt.lsb_exponent - finest) if finite[code] else 0,
                        int(not finite[code]))
                if got != want:
                    bad.append((fmt.name, code, got, want))

    _run(dut, bench)
    assert not bad, bad[:10]


@pytest.mark.parametrize("formats", SETS[:2], ids=",".join)
def test_multiplier_random_pairs(formats):
    """Products of random codes of every pair of the set, exact in the units of the finest pair."""
    fmts = [get_format(f) for f in formats]
    dut = MultiFormatMultiplier(fmts, fmts)
    rng = np.random.default_rng(2)
    bad = []

    async def bench(ctx):
        for ia, fa in enumerate(fmts):
            for ib, fb in enumerate(fmts):
                ctx.set(dut.a_select, ia)
                ctx.set(dut.b_select, ib)
                for _ in range(60):
                    a, b = int(rng.integers(0, 1 << fa.bits)), int(rng.integers(0, 1 << fb.bits))
                    ctx.set(dut.a, a)
                    ctx.set(dut.b, b)
                    va, vb = fa.decode(np.array([a]))[0], fb.decode(np.array([b]))[0]
                    got = ctx.get(dut.significands) * 2.0 ** (ctx.get(dut.shift) + dut.min_exponent)
                    nonfinite = not (np.isfinite(va) and np.isfinite(vb))
                    want = 0.0 if nonfinite else va * vb       # exact in float64: at most 2 x 11 significant bits
                    if got != want or ctx.get(dut.nonfinite) != nonfinite:
                        bad.append((fa.name, a, fb.name, b, got, want))

    _run(dut, bench)
    assert not bad, bad[:10]


def test_select_outside_the_set_decodes_as_the_first_format():
    dut = MultiFormatDecoder(["int4", "minifloat6", "int8"])

    async def bench(ctx):
        ctx.set(dut.select, 3)
        ctx.set(dut.code, 0x0F)          # int4 -1 (the low 4 bits)
        assert (ctx.get(dut.significand), ctx.get(dut.nonfinite)) == (-1, 0)

    _run(dut, bench)
