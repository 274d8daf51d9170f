"""The runtime's checks of its inputs, and that every backend sees the same canonical codes."""

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from sim.random_network import random_inputs, random_network
from sw.compiler.network import compile_network
from sw.runtime import RunError, run, run_codes


@pytest.fixture(scope="module")
def compiled():
    config = AcceleratorConfig(rows=4, cols=4, weight_format="fp8_e4m3", act_format="fp8_e4m3",
                               act_buffer_depth=1024, weight_buffer_depth=256, acc_buffer_depth=256,
                               param_buffer_depth=16, dma_bits=64)
    net = random_network(np.random.default_rng(0), "fp8_e4m3", "fp8_e4m3", config.acc_bits)
    return compile_network(net, config)


def test_negative_zero_inputs_are_positive_zero_on_every_backend(compiled):
    x = random_inputs(np.random.default_rng(1), compiled.network, 1)
    x[0, 0, :4, :4] = 0x80                                # -0 codes: the engine never makes them
    golden = run_codes(compiled, x, "golden", keep=True)
    emulated = run_codes(compiled, x, "emulator", keep=True)
    assert not (golden.tensors[0]["input"] == 0x80).any() and (golden.tensors[0]["input"][0, :4, :4] == 0).all()
    for name in compiled.materialized:
        np.testing.assert_array_equal(emulated.tensors[0][name], golden.tensors[0][name], err_msg=name)


@pytest.mark.parametrize("case,message", [
    ("nan", "hold NaN or Inf codes of fp8_e4m3"),
    ("range", "input codes must lie in 0..255"),
    ("shape", "inputs must be shaped (N, 3, 16, 18)"),
    ("backend", "unknown backend 'tpu'; the backends are golden, emulator, rtl, board"),
    ("no-port", "the board backend needs the board's serial port (--port /dev/ttyUSB1)"),
    ("bad-port", "cannot open the board's serial port /nonexistent/ttyUSB9"),
    ("float", "input codes must be integers"),
])
def test_bad_codes_are_refused(compiled, case, message):
    x = random_inputs(np.random.default_rng(1), compiled.network, 1).astype(np.int64)
    backend, port = "golden", None
    if case == "nan":
        x[0, 0, 0, 0] = 0x7F
    elif case == "range":
        x[0, 0, 0, 0] = 256
    elif case == "shape":
        x = x[:, :, :8]
    elif case == "backend":
        backend = "tpu"
    elif case in ("no-port", "bad-port"):
        backend, port = "board", "/nonexistent/ttyUSB9" if case == "bad-port" else None
    elif case == "float":
        x = x.astype(np.float32)
    with pytest.raises(RunError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_codes(compiled, x, backend, port=port)


def test_float_inputs_must_be_finite(compiled):
    x = np.zeros((1, 3, 16, 18), np.float32)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(RunError, match="NaN or infinity"):
        run(compiled, x, "golden")


def test_emulator_batches_and_cycles(compiled, monkeypatch):
    """Functional by default; with cycles=True one timed run gives every sample the cycles a sample run alone
    gives (they share the path), in batches of any size, with the same codes as the golden model."""
    import importlib

    from hw.spec.isa import ErrorCode
    from sw.emulator import Emulator
    runtime = importlib.import_module("sw.runtime.run")
    x = random_inputs(np.random.default_rng(2), compiled.network, 5)
    golden = run_codes(compiled, x, "golden", keep=True)
    fast = run_codes(compiled, x, "emulator", keep=True)
    assert fast.cycles == [] and fast.layer_cycles == []
    monkeypatch.setattr(runtime, "EMULATOR_BATCH", 2)
    timed = run_codes(compiled, x, "emulator", keep=True, cycles=True)
    alone = Emulator(compiled.config, bytes(compiled.dram_with_input(x[3])))
    status = alone.run(compiled.program.program_addr)
    assert status.done and status.error is ErrorCode.NONE
    assert timed.cycles == [status.cycles] * 5
    assert timed.layer_cycles == [runtime._layer_cycles(compiled, status.ended)] * 5
    for result in (fast, timed):
        np.testing.assert_array_equal(result.codes, golden.codes)
        for i in range(5):
            for name in compiled.materialized:
                np.testing.assert_array_equal(result.tensors[i][name], golden.tensors[i][name], err_msg=name)
