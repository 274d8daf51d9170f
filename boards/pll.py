"""The iCE40's PLL (``SB_PLL40_PAD``, simple feedback): its dividers for a clock, and the ``sync`` domain it drives.

The iCE40 family data sheet's PLL: ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``, the phase detector at
``f_in / (DIVR + 1)`` (10..133 MHz), the VCO at ``f_in * (DIVF + 1) / (DIVR + 1)`` (533..1066 MHz), the output
16..275 MHz; DIVR 0..15, DIVF 0..127, DIVQ 1..6, and the loop filter's range chosen by the phase detector's
frequency (as the vendor's and IceStorm's ``icepll`` calculators choose it).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockDomain, Elaboratable, Instance, Module, Signal
from amaranth.lib.cdc import FFSynchronizer

__all__ = ["Ice40Pll", "ice40_pll", "PllDomain", "hold_reset", "TOLERANCE"]

#: How far the PLL's clock may lie from the one asked for: a board's UART and idle timeout are counted from the
#: actual frequency, so the tolerance only keeps the clock what the board's entry says.
TOLERANCE = 0.005

_PFD_MHZ = (10.0, 133.0)
_VCO_MHZ = (533.0, 1066.0)
_OUT_MHZ = (16.0, 275.0)
#: Upper ends (MHz, exclusive) of the phase detector's frequency for FILTER_RANGE 1, 2, ...; 6 above the last.
_FILTER_BOUNDS = (17.0, 26.0, 44.0, 66.0, 101.0)


@dataclass(frozen=True)
class Ice40Pll:
    """One setting of the PLL: its dividers, loop filter range, and the frequencies they make."""

    divr: int
    divf: int
    divq: int
    filter_range: int
    in_mhz: float

    @property
    def pfd_mhz(self) -> float:
        return self.in_mhz / (self.divr + 1)

    @property
    def vco_mhz(self) -> float:
        return self.pfd_mhz * (self.divf + 1)

    @property
    def out_mhz(self) -> float:
        return self.vco_mhz / (1 << self.divq)


def _filter_range(pfd_mhz: float) -> int:
    return next((i + 1 for i, bound in enumerate(_FILTER_BOUNDS) if pfd_mhz < bound), len(_FILTER_BOUNDS) + 1)


def ice40_pll(in_mhz: float, out_mhz: float, *, tolerance: float = TOLERANCE) -> Ice40Pll:
    """The legal setting whose output lies nearest ``out_mhz`` (the lowest DIVR, then DIVF, among equals); a
    ValueError when none lies within ``tolerance`` (a fraction) of it."""
    best = None
    for divr in range(16):
        pfd = in_mhz / (divr + 1)
        if not _PFD_MHZ[0] <= pfd <= _PFD_MHZ[1]:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not _VCO_MHZ[0] <= vco <= _VCO_MHZ[1]:
                continue
            for divq in range(1, 7):
                out = vco / (1 << divq)
                if _OUT_MHZ[0] <= out <= _OUT_MHZ[1] and (best is None or abs(out - out_mhz) < abs(best[0] - out_mhz)):
                    best = (out, divr, divf, divq)
    if best is None or abs(best[0] - out_mhz) > tolerance * out_mhz:
        closest = f" (the closest is {best[0]:.4g} MHz)" if best else ""
        raise ValueError(f"the iCE40 PLL cannot make {out_mhz:g} MHz from {in_mhz:g} MHz within "
                         f"{tolerance:.1%}{closest}: choose another clock_mhz")
    _, divr, divf, divq = best
    return Ice40Pll(divr, divf, divq, _filter_range(in_mhz / (divr + 1)), in_mhz)


class PllDomain(Elaboratable):
    """A clock (``clk``) from the board's oscillator pin through ``SB_PLL40_PAD`` (the pin feeds the PLL's pad
    directly, as the iCEBreaker's 12 MHz pin 35 can), and a reset for its domain (``rst``) held while the PLL is not
    locked and for ``hold_cycles`` more (the iCE40's block RAMs read zeros for about 3 us after configuration)."""

    def __init__(self, pin, setting: Ice40Pll, *, hold_cycles: int):
        self.pin, self.setting, self.hold_cycles = pin, setting, hold_cycles
        #: The domain's clock and reset, for the module that defines ``sync`` (the top: Amaranth 0.6 wants a domain
        #: defined above every use).
        self.clk, self.rst = Signal(name="pll_clock"), Signal(name="pll_reset", init=1)

    def elaborate(self, platform):
        m = Module()
        s = self.setting
        clock, lock = self.clk, Signal(name="pll_lock")
        m.submodules.pll = Instance(
            "SB_PLL40_PAD", p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
            p_DIVR=s.divr, p_DIVF=s.divf, p_DIVQ=s.divq, p_FILTER_RANGE=s.filter_range,
            i_PACKAGEPIN=self.pin, i_RESETB=1, i_BYPASS=0, o_PLLOUTGLOBAL=clock, o_LOCK=lock)
        # The power-on reset counts in a domain of its own on the PLL's clock, never reset: its flip-flops start at
        # zero with the configuration.
        m.domains.por = por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += por.clk.eq(clock)
        m.d.comb += self.rst.eq(hold_reset(m, lock, self.hold_cycles, "por"))
        return m


def hold_reset(m: Module, lock, hold_cycles: int, domain: str):
    """A reset (returned) high until ``lock`` (asynchronous: two flip-flops first) has been high for ``hold_cycles``
    cycles of ``domain``, and again as soon as it falls; built into ``m``."""
    locked = Signal(name="pll_locked")
    m.submodules.lock_sync = FFSynchronizer(lock, locked, o_domain=domain)
    count = Signal(range(hold_cycles + 1), name="por_count")
    with m.If(~locked):
        m.d[domain] += count.eq(0)
    with m.Elif(count != hold_cycles):
        m.d[domain] += count.eq(count + 1)
    return count != hold_cycles
