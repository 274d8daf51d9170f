"""The activation table on the emulator where the engine has none (activation formats above 8 bits), and a
compiled network that needs one there."""

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import Buffer, ErrorCode
from sw.compiler.program import ProgramBuilder
from sw.emulator import Emulator

WIDE = AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int16", act_buffer_depth=64,
                         weight_buffer_depth=64, acc_buffer_depth=64, param_buffer_depth=4, dma_bits=64)


def _run(config, emit) -> tuple:
    b = ProgramBuilder(config, max_instructions=4)
    b.region("data", size=4096)
    emit(b)
    b.emit("FINISH")
    program = b.build()
    status = Emulator(config, bytes(program.dram[:program.dram_size])).run(program.program_addr)
    return status.error, status.pc


def test_no_table_above_8_bits():
    assert WIDE.lut_buffer_depth == 0
    assert _run(WIDE, lambda b: b.emit("SETPP", clamp_lo=0x8000, clamp_hi=0x7FFF, lut=1)) == (ErrorCode.BAD_FIELD, 0)
    assert _run(WIDE, lambda b: b.emit("SETPP", clamp_lo=0x8000, clamp_hi=0x7FFF)) == (ErrorCode.NONE, 1)
    assert _run(WIDE, lambda b: b.emit("LOAD", buffer=Buffer.LUT, sram_addr=0, dram_addr=0, y_size=1,
                                       x_size=1)) == (ErrorCode.SRAM_RANGE, 0)


def test_compiling_an_activation_for_a_wide_engine_names_the_layer(tmp_path):
    from sw.compile import compile_model
    from sw.compiler.lowering import CompileError
    from sw.evaluate import DIGITS
    from tests.onnx_models import activations_resnet

    config = AcceleratorConfig(rows=8, cols=8, weight_format="int8", act_format="int16")
    with pytest.raises(CompileError, match=r"layer 'c1' ends with a nonlinear activation, but the engine's "
                                           r"activation format int16 has no lookup table"):
        compile_model(activations_resnet(tmp_path / "m.onnx"), config, np.load(DIGITS / "calibration.npy")[:8],
                      log=lambda *_: None)
