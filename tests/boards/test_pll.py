"""The iCE40 PLL's setting (boards/pll.py) against the data sheet's formula and ranges, and the board top around it."""

import re

import pytest

from boards.build import _elaborate, board_config, board_core, clocks_per_bit
from boards.pll import ice40_pll
from boards.top import BOARDS


def _data_sheet(f_in: float, divr: int, divf: int, divq: int) -> dict:
    """The iCE40 family data sheet's PLL (simple feedback), written from it: the output, phase detector and VCO."""
    return {"out": f_in * (divf + 1) / ((divr + 1) * 2 ** divq), "pfd": f_in / (divr + 1),
            "vco": f_in * (divf + 1) / (divr + 1)}


@pytest.mark.parametrize("f_in, f_out", [(12, 30), (12, 24), (12, 48), (12, 36), (25, 31.25), (12, 16.5),
                                         (12, 100.5), (100, 16.016)])
def test_a_setting_is_legal_and_within_half_a_percent(f_in, f_out):
    p = ice40_pll(f_in, f_out)
    f = _data_sheet(f_in, p.divr, p.divf, p.divq)
    assert 0 <= p.divr <= 15 and 0 <= p.divf <= 127 and 1 <= p.divq <= 6
    assert 10 <= f["pfd"] <= 133 and 533 <= f["vco"] <= 1066
    assert abs(f["out"] - f_out) <= 0.005 * f_out
    assert p.out_mhz == pytest.approx(f["out"]) and p.vco_mhz == pytest.approx(f["vco"])


def test_the_icebreakers_30_mhz():
    """12 MHz * 80 / 32: 30 MHz exactly, the VCO at 960 MHz; the loop filter of a 12 MHz phase detector (range 1, as
    IceStorm's icepll chooses it)."""
    p = ice40_pll(12, 30)
    assert (p.divr, p.divf, p.divq, p.filter_range) == (0, 79, 5, 1)
    assert _data_sheet(12, 0, 79, 5)["out"] == 30.0 == p.out_mhz
    # The iCEBreaker's 30 MHz board: its 1x1 engine with mid_clock, its UART counting 30e6 / 115200 = 260.4 clocks.
    fast = BOARDS["icebreaker-1x1"]
    assert fast.pll == p and fast.sync_mhz == 30.0 and board_config(fast).clock_mhz == 30.0
    assert (board_config(fast).rows, board_config(fast).cols, board_config(fast).mid_clock) == (1, 1, True)
    assert clocks_per_bit(fast, 115200) == 260


@pytest.mark.parametrize("pfd, expected", [(12, 1), (16, 1), (24, 2), (32, 3), (42, 3), (48, 4), (100, 5),
                                           (120, 6)])
def test_the_filter_range_follows_the_phase_detector(pfd, expected):
    """Found through settings whose phase detector runs at ``pfd`` (DIVR 0: the input frequency)."""
    p = ice40_pll(pfd, pfd * 2)       # a VCO of 2 * pfd * 2**divq, always reachable with DIVR 0
    assert _data_sheet(pfd, p.divr, p.divf, p.divq)["pfd"] == pfd
    assert p.filter_range == expected


@pytest.mark.parametrize("f_in, f_out", [(12, 10), (12, 300), (12, 16.7), (12, 136.5)])
def test_a_clock_it_cannot_make_is_refused_in_one_line(f_in, f_out):
    """Below its 16 MHz output, above 275, or between the frequencies its dividers make: from 12 MHz the phase
    detector runs at 12 MHz (DIVR 0; 10 MHz at least), so the outputs are 12 * (DIVF + 1) / 2**DIVQ with the VCO in
    533..1066 MHz: 16.5 then 16.875 (16.7 lies 1 % from either), and 135 then 138 (136.5: 1.1 %)."""
    with pytest.raises(ValueError, match=rf"^the iCE40 PLL cannot make {f_out:g} MHz from 12 MHz within 0.5%"
                                         r"[^\n]*: choose another clock_mhz$"):
        ice40_pll(f_in, f_out)


def test_the_icebreaker_runs_at_the_plls_clock_and_the_ulx3s_at_its_oscillator():
    """The iCEBreaker's 22.5 MHz: 12 MHz * 60 / 32 (the VCO at 720 MHz); everything counted in cycles follows it."""
    ice, ulx3s = BOARDS["icebreaker"], BOARDS["ulx3s-85f"]
    p = ice.pll
    assert (ice.oscillator_mhz, ice.clock_mhz) == (12.0, 22.5)
    assert _data_sheet(12, p.divr, p.divf, p.divq)["out"] == 22.5 == ice.sync_mhz
    assert ulx3s.pll is None and ulx3s.sync_mhz == 25.0
    assert board_config(ice).clock_mhz == 22.5
    # The UART counts the PLL's clock: 22.5e6 / 115200 = 195.3 clocks a bit; the idle timeout 50 ms of them.
    assert clocks_per_bit(ice, 115200) == 195
    core = board_core(ice, board_config(ice, rows=1), 115200)
    assert core.bridge.idle_timeout == int(22.5e6 * 0.05)


def test_a_board_clock_the_pll_cannot_make_is_refused():
    from dataclasses import replace

    with pytest.raises(ValueError, match="cannot make 16.7 MHz from 12 MHz"):
        replace(BOARDS["icebreaker"], clock_mhz=16.7).sync_mhz
    with pytest.raises(ValueError, match="only an iCE40's PLL is supported"):
        replace(BOARDS["ulx3s-85f"], clock_mhz=50.0).pll


def test_the_icebreaker_top_instantiates_the_pll_on_the_oscillator_pin():
    board = BOARDS["icebreaker"]
    verilog, constraints = _elaborate(board, board_core(board, board_config(board, rows=1), 115200))
    pll = re.search(r"SB_PLL40_PAD #\((.*?)\) pll \((.*?)\);", verilog, re.S)
    assert pll, "no SB_PLL40_PAD in the board top"
    params, ports = pll[1], pll[2]
    for name, value in (("DIVR", 0), ("DIVF", 59), ("DIVQ", 5), ("FILTER_RANGE", 1)):
        assert re.search(rf"\.{name}\(32'd{value}\)", params)
    assert ".PACKAGEPIN(clk12_0__io)" in ports
    assert "set_io clk12_0__io 35" in constraints
    # No platform-made clock buffer on the pin besides the PLL: nothing else reads it.
    assert not re.search(r"PACKAGE_PIN\(clk12_0__io\)", verilog)


def test_the_reset_is_held_until_the_pll_has_been_locked_for_the_hold():
    """Written from what the board needs: reset while the PLL is unlocked, then for ``hold`` cycles after its lock
    passes the two-flip-flop synchronizer, and again as soon as the lock is lost."""
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    from boards.pll import hold_reset

    hold = 7
    lock, rst = Signal(), Signal()
    dut = Module()
    dut.d.comb += rst.eq(hold_reset(dut, lock, hold, "sync"))
    seen = []

    async def bench(ctx):
        for _ in range(5):
            await ctx.tick()
            seen.append(("unlocked", ctx.get(rst)))
        ctx.set(lock, 1)
        for _ in range(hold + 6):
            await ctx.tick()
            seen.append(("locked", ctx.get(rst)))
        ctx.set(lock, 0)
        for _ in range(4):
            await ctx.tick()
            seen.append(("lost", ctx.get(rst)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert all(rst for phase, rst in seen if phase == "unlocked")
    locked = [rst for phase, rst in seen if phase == "locked"]
    # The first edge samples the lock, the second passes it on, then hold edges count: reset falls at edge hold + 2,
    # so it reads high after edges 1 .. hold + 1.
    assert locked == [1] * (hold + 1) + [0] * 5
    lost = [rst for phase, rst in seen if phase == "lost"]
    assert lost[-1] == 1 and lost[:2] == [0, 0]         # the loss also passes the synchronizer first
