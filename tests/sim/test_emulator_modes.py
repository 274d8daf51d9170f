"""The emulator's functional mode and its batches against its timed mode, sample by sample, and against the
independent reference of ``sim.programs`` (random race-free programs, illegal programs, a program whose pops wait
for later pushes, compiled networks).

Every legal program here runs three ways: timed (one sample), functional (one sample) and as a batch of samples
whose data differ, functional and timed; every memory must be the reference's, byte for byte.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import INSTRUCTION_BYTES, AluOp, ErrorCode, Opcode, decode
from sim.programs import (ILLEGAL_KINDS, check_schedule, illegal_program, one_mac_program, random_program,
                          reference_run)
from sim.random_network import random_inputs, random_network
from sw.compiler.network import compile_network
from sw.emulator import Emulator
from sw.emulator.memory import PAGE, BatchedMemory, DivergentProgram

FORMATS = [("int8", "int8"), ("int4", "int8"), ("minifloat6", "minifloat6"), ("fp8_e4m3", "fp8_e4m3"),
           ("fp8_e5m2", "fp8_e5m2"), ("uint8", "uint8")]
SHAPES = [(1, 1), (2, 4), (4, 4), (8, 8)]
VARIANTS = [dict(act_buffer_depth=64, weight_buffer_depth=128, acc_buffer_depth=64, param_buffer_depth=8,
                 dma_bits=64),
            dict(act_buffer_depth=256, weight_buffer_depth=256, acc_buffer_depth=128, param_buffer_depth=16,
                 dma_bits=32)]
CONFIGS = [AcceleratorConfig(rows=r, cols=c, weight_format=w, act_format=a, **VARIANTS[i % len(VARIANTS)])
           for i, ((r, c), (w, a)) in enumerate(itertools.product(SHAPES, FORMATS))]
# Multi-format engines: their buffers hold codes, decoded by each COMPUTE in the formats it selects.
CONFIGS += [AcceleratorConfig(rows=4, cols=4, formats=("int4", "int8", "minifloat6"), **VARIANTS[0]),
            AcceleratorConfig(rows=2, cols=4, formats=("int8", "fp8_e4m3"), **VARIANTS[1])]
SAMPLES = 3


def _name(config: AcceleratorConfig) -> str:
    if config.multi_format:
        return f"{config.rows}x{config.cols}-{','.join(config.formats)}"
    return f"{config.rows}x{config.cols}-{config.weights.name}x{config.acts.name}"


def _run(config, image, program_addr, *, timed, batch=1, data=None):
    emulator = Emulator(config, image, batch=batch)
    if data is not None:
        for lo, hi in data[0]:
            emulator.memory.write(lo, data[1][:, lo:hi])
    return emulator.run(program_addr, max_cycles=2_000_000, timed=timed), emulator


def _outside_code(program) -> list[tuple[int, int]]:
    code = (program.program_addr, program.program_addr + len(program.words) * INSTRUCTION_BYTES)
    return [r for r in ((0, code[0]), (code[1], program.dram_size)) if r[0] < r[1]]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("config_index", range(len(CONFIGS)), ids=[_name(c) for c in CONFIGS])
def test_functional_and_batched_runs_equal_the_timed_run(config_index, seed):
    config = CONFIGS[config_index]
    program = random_program(config, np.random.default_rng([config_index, seed, 77]))
    where = f"{program.description}\n{program.listing()}"
    timed, t_emulator = _run(config, program.dram, program.program_addr, timed=True)
    functional, f_emulator = _run(config, program.dram, program.program_addr, timed=False)
    assert timed.done and timed.error is ErrorCode.NONE, where
    assert functional.cycles is None, f"the functional mode declined a race-free program\n{where}"
    for field in ("done", "error", "pc", "instructions", "macs", "nonfinite"):
        assert getattr(functional, field) == getattr(timed, field), (field, where)
    assert bytes(f_emulator.dram) == bytes(t_emulator.dram) == program.expected_dram, where

    # A batch: sample 0 is the program's memory, the others hold other data everywhere but in the code.
    rng = np.random.default_rng([config_index, seed, 78])
    images = np.tile(np.frombuffer(program.dram, np.uint8), (SAMPLES, 1))
    regions = _outside_code(program)
    for lo, hi in regions:
        images[1:, lo:hi] = rng.integers(0, 256, (SAMPLES - 1, hi - lo), dtype=np.uint8)
    expected = [reference_run(config, bytes(image), program.program_addr) for image in images]
    for mode in (False, True):
        status, emulator = _run(config, program.dram, program.program_addr, timed=mode, batch=SAMPLES,
                                data=(regions, images))
        assert status.done and status.error is ErrorCode.NONE, where
        assert (status.cycles is None) is (not mode)
        if mode:
            assert status.cycles == timed.cycles and status.ended == timed.ended, where
        for i, ref in enumerate(expected):
            assert bytes(emulator.memory.sample(i)) == bytes(ref.dram), f"sample {i}, timed={mode}\n{where}"
            assert status.nonfinite_samples[i] == ref.nonfinite, f"sample {i}\n{where}"
        emulator.release()          # the next runs of this shape reuse its arrays: they must come back zeroed


@pytest.mark.parametrize("kind", list(ILLEGAL_KINDS))
def test_illegal_programs_run_timed(kind):
    """The functional mode declines every illegal program; the timed run then says what went wrong."""
    for config_index in range(0, len(CONFIGS), 5):
        config = CONFIGS[config_index]
        program = illegal_program(config, np.random.default_rng([config_index, 5]), kind)
        status, _ = _run(config, program.dram, program.program_addr, timed=False)
        assert status.cycles is not None
        assert status.error is program.expected_error and status.pc == program.error_pc


def test_a_pop_fed_by_a_later_push_runs_timed():
    """A STORE after a COMPUTE in program order, which the COMPUTE waits for (pop_next): the hardware stores the
    accumulator before the COMPUTE overwrites it. In program order the COMPUTE would come first."""
    config, dram, _ = one_mac_program(compute=dict(pop_prev=1, pop_next=1), store=dict(push_prev=1))
    timed, t_emulator = _run(config, dram, 0, timed=True)
    functional, f_emulator = _run(config, dram, 0, timed=False)
    assert timed.done and t_emulator.dram[600] == 0          # the STORE read the accumulator before 3 * 5
    assert functional.cycles is not None and f_emulator.dram[600] == 0


def _compiled(acts, weights, rows):
    config = AcceleratorConfig(rows=rows, cols=rows, weight_format=weights, act_format=acts,
                               act_buffer_depth=1024, weight_buffer_depth=256, acc_buffer_depth=256,
                               param_buffer_depth=16, dma_bits=64)
    net = random_network(np.random.default_rng(rows), acts, weights, config.acc_bits)
    return compile_network(net, config)


def _real_races(config, words, program_addr) -> list[str]:
    """check_schedule's findings, less the compiler's barriers racing with STOREs: an ALU MAX of one line with
    itself writes back the value it read, so a STORE reads the same whichever comes first."""
    found = []
    for problem in check_schedule(config, words, program_addr):
        if " race on acc line" in problem and "(STORE) and" in problem:
            kind, f = decode(words[int(problem.split(" and ")[1].split()[0])])
            if kind.opcode is Opcode.ALU and f["op"] == AluOp.MAX and f["dst_addr"] == f["src_addr"] \
                    and f["y_size"] == f["x_size"] == 1:
                continue
        found.append(problem)
    return found


@pytest.mark.parametrize("acts, weights, rows", [("int8", "int8", 4), ("fp8_e5m2", "fp8_e5m2", 8),
                                                 ("minifloat6", "minifloat6", 8), ("int8", "int4", 8)])
def test_compiled_networks_are_race_free_and_run_in_order(acts, weights, rows):
    """The premise of the functional mode holds for the compiler's programs, and it takes them."""
    compiled = _compiled(acts, weights, rows)
    program = compiled.program
    assert _real_races(compiled.config, program.words, program.program_addr) == []
    x = random_inputs(np.random.default_rng(3), compiled.network, SAMPLES)
    data = compiled.tensor_bytes(compiled.network.input, x)
    addr, _ = compiled.tensor_region(compiled.network.input)
    runs = {}
    for timed in (False, True):
        emulator = Emulator(compiled.config, program.dram, batch=SAMPLES)
        emulator.memory.write(addr, data)
        status = emulator.run(program.program_addr, timed=timed)
        assert status.done and (status.cycles is None) is (not timed)
        runs[timed] = [emulator.memory.sample(i) for i in range(SAMPLES)]
    for i in range(SAMPLES):
        single = Emulator(compiled.config, compiled.dram_with_input(x[i]))
        assert single.run(program.program_addr).done
        assert bytes(runs[False][i]) == bytes(runs[True][i]) == bytes(single.dram), f"sample {i}"


# --- the batched memory ----------------------------------------------------------------------------------------

def test_batched_memory_shares_what_samples_hold_alike():
    image = bytes(range(256)) * (3 * PAGE // 256)
    memory = BatchedMemory(image, batch=4)
    assert memory.rows(0, 2, 16, 8).shape == (1, 2, 8)               # shared: one row for every sample
    data = np.arange(4 * 8, dtype=np.uint8).reshape(4, 8)
    memory.write(PAGE + 8, data)
    assert memory.rows(0, 1, 0, 8).shape[0] == 1                      # page 0 still shared
    rows = memory.rows(PAGE, 1, 0, 16)
    assert rows.shape == (4, 1, 16)
    assert (rows[:, 0, 8:] == data).all() and (rows[:, 0, :8] == np.frombuffer(image[PAGE:PAGE + 8], np.uint8)).all()
    memory.write_rows(2 * PAGE, 8, np.full((1, 3, 4), 7, np.uint8))     # one value for all, shared page
    assert memory.rows(2 * PAGE, 1, 0, 24).shape[0] == 1
    for i in range(4):
        sample = memory.sample(i)
        assert sample[PAGE + 8:PAGE + 16].tolist() == data[i].tolist()
        assert sample[2 * PAGE:2 * PAGE + 20].tolist() == [7] * 4 + list(image[2 * PAGE + 4:2 * PAGE + 8]) + \
            [7] * 4 + list(image[2 * PAGE + 12:2 * PAGE + 16]) + [7] * 4
    assert memory.word(0, 4) == int.from_bytes(image[:4], "little")
    with pytest.raises(DivergentProgram, match="different bytes"):
        memory.word(PAGE + 8, 4)


def test_overlapping_runs_are_written_in_order():
    memory = BatchedMemory(bytes(64), batch=2)
    data = np.array([[[1, 1, 1, 1], [2, 2, 2, 2]], [[3, 3, 3, 3], [4, 4, 4, 4]]], dtype=np.uint8)
    memory.write_rows(8, 2, data)                                      # runs of 4 bytes, 2 apart
    assert memory.sample(0)[8:14].tolist() == [1, 1, 2, 2, 2, 2]
    assert memory.sample(1)[8:14].tolist() == [3, 3, 4, 4, 4, 4]


def test_workspace_arrays_come_back_zeroed():
    from sw.emulator import workspace
    a = workspace.zeros((5, 3, 2), np.int32)
    a[1:3] = 7
    a[4, 0, 0] = 9                                  # written but not declared
    workspace.give_back(a, [slice(1, 3)])
    b = workspace.zeros((5, 3, 2), np.int32)
    assert b is a and (b[:4] == 0).all() and b[4, 0, 0] == 9   # zeroed where declared (and only there)
    b[4, 0, 0] = 0
    view = workspace.strided(b, 2 * 4, (2, 2), (12, 4))
    view[...] = 1
    assert b.reshape(-1)[2:4].tolist() == [1, 1] and b.reshape(-1)[5:7].tolist() == [1, 1]
    with pytest.raises((ValueError, TypeError)):
        workspace.strided(b, 0, (100,), (4,))       # beyond the array
