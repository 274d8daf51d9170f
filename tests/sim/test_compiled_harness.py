"""The compiled engine testbench (sim/cpp, sim/engine_compiled.py): equal to the cocotb harness cycle for cycle,
able to fail, never hanging, and loud when the simulator dies."""

import stat
from pathlib import Path

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from sim import engine_compiled
from sim.checking import Mismatch
from sim.engine_compiled import Fault, SimulatorError
from sim.engine_harness import Traffic, check_programs, run_on_emulator, run_on_rtl
from sim.engine_run import cycle_budget
from sim.engine_tb_build import CompiledTestbench
from sim.layer_programs import random_layer_program
from sim.programs import ILLEGAL_KINDS, illegal_program, random_program

# The buffers of tests/hw/test_engine.py, so that the Verilator builds are shared.
CONFIG = AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8", act_buffer_depth=512,
                           weight_buffer_depth=128, acc_buffer_depth=128, param_buffer_depth=8, dma_bits=64)


def _programs(seed: int, count: int) -> list:
    rng = np.random.default_rng(seed)
    return ([random_layer_program(CONFIG, rng, max_size=6) for _ in range(count)]
            + [random_program(CONFIG, rng) for _ in range(count)]
            + [illegal_program(CONFIG, rng, kind) for kind in sorted(ILLEGAL_KINDS)[:count]])


def test_compiled_testbench_equals_the_cocotb_harness_cycle_for_cycle(tmp_path):
    """The C++ memory and host against sim/axi.py on a quiet bus: every register (cycle, busy and stall
    counters included) and every byte of memory equal, legal and illegal programs alike."""
    programs = _programs(3, 3)
    traffic = Traffic(latency=3)
    budgets = [cycle_budget(run_on_emulator(p, traffic)[1].cycles) for p in programs]
    compiled = run_on_rtl(CONFIG, programs, tmp_path / "compiled", traffic, budgets=budgets)
    cocotb = run_on_rtl(CONFIG, programs, tmp_path / "cocotb", traffic, budgets=budgets, harness="cocotb")
    assert len(compiled) == len(cocotb) == len(programs)
    for i, (a, b) in enumerate(zip(compiled, cocotb)):
        assert a is not None and b is not None, f"program {i} ran out of cycles"
        assert a.registers == b.registers, f"program {i} ({programs[i].description})"
        assert a.dram == b.dram, f"program {i} ({programs[i].description})"


@pytest.mark.parametrize("fault,message", [
    (Fault(program=1, register="instructions"), r"program 1 .*register instructions is"),
    (Fault(program=2, register="status"), r"program 2 .*register status is"),
])
def test_a_corrupted_register_is_caught(fault, message, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_WAVES_ON_FAILURE", "1")
    programs = _programs(5, 2)[:4]
    with pytest.raises(Mismatch, match=message):
        check_programs(CONFIG, programs, tmp_path, Traffic(latency=2), fault=fault)


def test_a_corrupted_memory_byte_is_caught(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_WAVES_ON_FAILURE", "1")
    programs = _programs(6, 1)[:1]
    emulated, _ = run_on_emulator(programs[0], Traffic(latency=2))
    written = np.flatnonzero(np.frombuffer(emulated.dram, np.uint8) != np.frombuffer(
        bytes(programs[0].dram[:programs[0].dram_size]), np.uint8))
    victim = int(written[-1]) if written.size else 0
    with pytest.raises(Mismatch, match=rf"1 bytes of external memory differ, first at 0x{victim:x}"):
        check_programs(CONFIG, programs, tmp_path, Traffic(latency=2), fault=Fault(program=0, byte=victim))


def test_a_program_out_of_cycles_is_none_and_the_next_one_still_runs(tmp_path):
    """A program that exceeds its budget is reported, the engine is reset, and the batch goes on."""
    programs = _programs(7, 1)[:2]
    traffic = Traffic(latency=2, ready_stall=0.3, valid_gap=0.3, seed=4)
    budgets = [10, cycle_budget(run_on_emulator(programs[1], traffic)[1].cycles)]
    runs = run_on_rtl(CONFIG, programs, tmp_path, traffic, budgets=budgets)
    assert runs[0] is None
    expected, _ = run_on_emulator(programs[1], traffic)
    assert runs[1] is not None and runs[1].dram == expected.dram


def _fake_testbench(monkeypatch, tmp_path, script: str):
    path = tmp_path / "fake_tb"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(engine_compiled, "build_testbench",
                        lambda *a, **k: CompiledTestbench(path, False))


def test_a_crashed_simulator_names_its_log(tmp_path, monkeypatch):
    _fake_testbench(monkeypatch, tmp_path, "echo dying; kill -SEGV $$")
    programs = _programs(8, 1)[:1]
    with pytest.raises(SimulatorError, match=r"killed by signal 11 after 0 of 1 programs; see .*sim\.log"):
        run_on_rtl(CONFIG, programs, tmp_path / "run", budgets=[1000])
    assert "dying" in (tmp_path / "run" / "sim.log").read_text()


def test_a_stuck_simulator_is_killed(tmp_path, monkeypatch):
    _fake_testbench(monkeypatch, tmp_path, "exec sleep 60")
    monkeypatch.setattr(engine_compiled, "_wall_limit", lambda budgets: 0.5)
    with pytest.raises(SimulatorError, match=r"ran longer than 0 s and was killed; see .*sim\.log"):
        run_on_rtl(CONFIG, _programs(8, 1)[:1], tmp_path / "run", budgets=[1000])


def test_the_register_header_comes_from_the_spec():
    from hw.spec.registers import REGISTERS
    from sim.engine_tb_build import config_header

    header = config_header(CONFIG)
    assert f"constexpr unsigned BEAT_BYTES = {CONFIG.dma_bits // 8};" in header
    for r in REGISTERS:
        assert f'{{"{r.name}", 0x{r.address:02x}}},' in header


def test_a_failure_writes_a_waveform(tmp_path, monkeypatch):
    """A mismatch re-runs the batch on a tracing build (FST, the vendored lz4) and names the file."""
    monkeypatch.delenv("NO_WAVES_ON_FAILURE", raising=False)
    programs = _programs(9, 1)[:1]
    with pytest.raises(Mismatch, match=r"waveform of the whole batch: .*waves/dump\.fst") as caught:
        check_programs(CONFIG, programs, tmp_path, Traffic(latency=2), fault=Fault(program=0, register="macs_lo"))
    waves = Path(str(caught.value).rsplit(": ", 1)[1])
    assert waves.is_file() and waves.stat().st_size > 1000
