"""The whole engine on Verilator against the emulator: every byte of external memory, every status register."""

import gc
import warnings

import numpy as np
import pytest

from hw.engine import InferenceEngine
from hw.spec.config import AcceleratorConfig
from sim.engine_harness import Traffic, check_programs
from sim.layer_programs import random_layer_program

CONFIGS = [
    ("int8", "int8", 4, 4, 64),
    ("minifloat6", "minifloat6", 4, 8, 64),
    ("int4", "int8", 8, 4, 32),
    ("fp8_e4m3", "fp8_e4m3", 2, 2, 32),
]
BUSY_BUS = Traffic(latency=3, ready_stall=0.25, valid_gap=0.25, seed=7)


def _config(weights, acts, rows, cols, dma_bits=64):
    return AcceleratorConfig(rows=rows, cols=cols, weight_format=weights, act_format=acts, act_buffer_depth=512,
                             weight_buffer_depth=128, acc_buffer_depth=128, param_buffer_depth=8,
                             dma_bits=dma_bits)


@pytest.mark.parametrize("weights,acts,rows,cols,count", CONFIGS, ids=lambda x: str(x))
def test_random_layers_under_bus_stalls(weights, acts, rows, cols, count, tmp_path):
    """Random GEMM and convolution layers (all post-processing options) give identical bytes on RTL and emulator."""
    config = _config(weights, acts, rows, cols)
    rng = np.random.default_rng(rows * 100 + cols)
    programs = [random_layer_program(config, rng) for _ in range(count)]
    check_programs(config, programs, tmp_path, BUSY_BUS)


def test_engine_needs_a_config():
    with warnings.catch_warnings():
        # The half-built object is collected here, not during some later test.
        warnings.simplefilter("ignore")
        with pytest.raises(TypeError, match=r"Configuration must be an AcceleratorConfig, not 'int8'"):
            InferenceEngine("int8")
        gc.collect()


ISA_CONFIGS = [("int8", "int8", 4, 4, 64), ("minifloat6", "minifloat6", 2, 4, 128)]


@pytest.mark.parametrize("weights,acts,rows,cols,dma_bits", ISA_CONFIGS, ids=lambda x: str(x))
@pytest.mark.parametrize("batch", range(2))
def test_random_isa_programs(weights, acts, rows, cols, dma_bits, batch, tmp_path):
    """Random legal programs (every instruction, tokens, overlapping engines), 80 per simulation, under stalls."""
    from sim.programs import random_program

    config = _config(weights, acts, rows, cols, dma_bits)
    rng = np.random.default_rng(1000 * batch + rows)
    programs = [random_program(config, rng) for _ in range(80)]
    check_programs(config, programs, tmp_path, Traffic(latency=1 + batch * 6, ready_stall=0.2, valid_gap=0.2,
                                                        seed=batch))


@pytest.mark.parametrize("weights,acts,rows,cols,dma_bits", ISA_CONFIGS, ids=lambda x: str(x))
def test_illegal_programs_stop_with_the_same_error(weights, acts, rows, cols, dma_bits, tmp_path):
    """Every kind of illegal program ends with the emulator's error code on RTL, in bounded time (no hang)."""
    from sim.programs import ILLEGAL_KINDS, illegal_program

    config = _config(weights, acts, rows, cols, dma_bits)
    rng = np.random.default_rng(rows + cols)
    programs = [illegal_program(config, rng, kind) for kind in ILLEGAL_KINDS for _ in range(4)]
    check_programs(config, programs, tmp_path, BUSY_BUS)


def test_misaligned_program_address_is_an_error(tmp_path):
    """A program address that is not a multiple of 16 stops both with DRAM_RANGE (a fetch could cross 4 KiB)."""
    from hw.spec.isa import ErrorCode
    from sw.compiler.program import ProgramBuilder

    config = _config("int8", "int8", 4, 4)
    b = ProgramBuilder(config, max_instructions=4)
    b.emit("SETPP", clamp_lo=0x80, clamp_hi=0x7F)
    program = b.build("misaligned")
    program.words = [0] + program.words
    program.dram[0:8] = bytes(8)
    program.dram[8:8 + 32] = b"".join(w.to_bytes(16, "little") for w in program.words[1:])
    program.program_addr = 8
    program.expected_error = ErrorCode.DRAM_RANGE
    check_programs(config, [program], tmp_path, Traffic(latency=2))
