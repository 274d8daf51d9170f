"""The emulator's cycle model against the RTL's cycle counter (memory latency fixed, no bus stalls)."""

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from sim.engine_harness import Traffic, check_programs
from sim.layer_programs import random_layer_program
from sim.programs import random_program
from sw.compiler.program import ProgramBuilder

CONFIG = AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8", act_buffer_depth=512,
                           weight_buffer_depth=128, acc_buffer_depth=128, param_buffer_depth=8)


def _single(name, opcode, **fields):
    b = ProgramBuilder(CONFIG, max_instructions=8)
    data = b.region("data", bytes(8192))
    if "dram_addr" in fields:
        fields["dram_addr"] += data.addr
    b.emit(opcode, **fields)
    return b.build(name)


def _one_instruction_programs():
    compute = dict(act_pitch=0, stride=1, dilation=1, kh=1, kw=1, acc_addr=0, act_addr=0, weight_addr=0, out_h=1)
    return [
        _single("load", "LOAD", buffer=0, sram_addr=0, dram_addr=0, y_size=4, x_size=16, dram_stride=256),
        _single("load with padding", "LOAD", buffer=0, sram_addr=0, dram_addr=0, y_size=4, x_size=16,
                dram_stride=256, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1),
        _single("weights", "LOAD", buffer=1, sram_addr=0, dram_addr=0, y_size=1, x_size=16),
        _single("compute", "COMPUTE", **compute, out_w=32),
        _single("compute 3x3", "COMPUTE", **{**compute, "kh": 3, "kw": 3, "act_pitch": 10, "out_h": 4}, out_w=8),
        _single("store", "STORE", acc_addr=0, dram_addr=0, y_size=4, x_size=8, dram_stride=256, acc_stride=8),
        _single("alu", "ALU", op=1, dst_addr=0, src_addr=64, y_size=2, x_size=16, src_step=1, dst_stride=16,
                src_stride=16),
    ]


@pytest.mark.parametrize("latency", [1, 4])
def test_single_instructions_are_cycle_exact(latency, tmp_path):
    pairs = check_programs(CONFIG, _one_instruction_programs(), tmp_path, Traffic(latency=latency))
    assert [rtl for rtl, _ in pairs] == [emulator for _, emulator in pairs]


def test_whole_programs_within_two_percent(tmp_path):
    rng = np.random.default_rng(11)
    programs = [random_layer_program(CONFIG, rng) for _ in range(20)] + [random_program(CONFIG, rng)
                                                                          for _ in range(20)]
    pairs = check_programs(CONFIG, programs, tmp_path, Traffic(latency=4))
    deviations = [abs(emulator - rtl) / rtl for rtl, emulator in pairs]
    assert max(deviations) <= 0.02, sorted(zip(deviations, pairs))[-3:]
    total_rtl, total_emulator = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    assert abs(total_emulator - total_rtl) / total_rtl <= 0.005
