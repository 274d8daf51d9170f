"""The emulator's cycle model against RTL cycle counts pinned in sim/cycle_fixture.json: no Verilator needed, so
a change of the model (a fetch cadence one cycle off, a fixed cost of an instruction) fails here at once.
tests/hw/test_engine_cycles.py keeps the fixture true of the RTL."""

import pytest

from sim.cycle_suite import CONFIG, digest, load_fixture, suite
from sw.emulator import Emulator

FIXTURE = {(e["name"], e["latency"]): e for e in load_fixture()["cases"]}
CASES = suite()


def test_the_fixture_covers_the_suite():
    assert load_fixture()["config"] == CONFIG.to_dict()
    assert sorted(FIXTURE) == sorted((c.name, c.latency) for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}@{c.latency}")
def test_emulated_cycles_equal_the_rtl(case):
    entry = FIXTURE[(case.name, case.latency)]
    assert entry["digest"] == digest(case.program), "the program changed: regenerate with python -m sim.cycle_suite"
    status = Emulator(CONFIG, bytes(case.program.dram[:case.program.dram_size]), memory_latency=case.latency).run(
        case.program.program_addr)
    assert status.done and not status.error
    rtl = entry["rtl_cycles"]
    if case.name.startswith(("layer", "program")):
        assert abs(status.cycles - rtl) <= 0.02 * rtl, (status.cycles, rtl)      # the model's stated bound
    else:
        assert status.cycles == rtl                                             # single instructions: exact
