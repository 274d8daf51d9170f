"""The pair multiplier (hw/multiplier.py): every pair of two codes against the formats' own values."""

import gc
import warnings

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.multiplier import PairMultiplier
from hw.spec.formats import get_format


@pytest.mark.parametrize("acts,weights", [("int4", "int4"), ("uint4", "int4"), ("int4", "uint4"), ("int2", "int3")],
                         ids=lambda f: f)
def test_every_pair_of_two_codes(acts, weights):
    """``dot`` equals a0 w0 + a1 w1 for every code of both lanes (exhaustive: 65,536 cases for int4), the values
    from the format definitions (Format.decode), not from the multiply's arithmetic."""
    fa, fw = get_format(acts), get_format(weights)
    dut = PairMultiplier(fa, fw)
    assert max(dut.operand_bits) <= 18                                   # one ECP5 MULT18X18D
    a_values, w_values = fa.decode(np.arange(1 << fa.bits)), fw.decode(np.arange(1 << fw.bits))
    wrong = []

    async def testbench(ctx):
        for a in range(1 << 2 * fa.bits):
            a0, a1 = a & ((1 << fa.bits) - 1), a >> fa.bits
            ctx.set(dut.a, a)
            for w in range(1 << 2 * fw.bits):
                w0, w1 = w & ((1 << fw.bits) - 1), w >> fw.bits
                ctx.set(dut.b, w)
                expected = int(a_values[a0] * w_values[w0] + a_values[a1] * w_values[w1])
                if ctx.get(dut.dot) != expected:
                    wrong.append((a, w, ctx.get(dut.dot), expected))

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
    assert not wrong, f"{len(wrong)} wrong sums, e.g. (a, w, dot, expected) = {wrong[:3]}"


def test_minifloats_are_refused():
    with warnings.catch_warnings():
        # The half-built object is collected here, not during some later test.
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="integer formats, not minifloat4 x int4"):
            PairMultiplier("minifloat4", "int4")
        gc.collect()
