"""Per-layer format selection on multi-format engines (sw/compiler/formats.py): the digits CNN with int4 and int8
layers, compiled for one int8+int4 engine, gives the golden model's codes on every tensor in the emulator."""

from pathlib import Path

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from sw.compiler.network import CompileError, compile_network
from sw.emulator import Emulator
from sw.frontend.onnx_import import load_onnx
from sw.golden.network import run_network
from sw.quantize import quantize_network

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"


@pytest.fixture(scope="module")
def mixed_digits():
    """The digits CNN quantized for int8 with its middle layers in int4 (conv2, fc1), and the images."""
    net = load_onnx(DIGITS / "digits_cnn.onnx")
    config = AcceleratorConfig(rows=8, cols=8, formats=("int8", "int4"))
    middle = {"/conv2/Conv": ("int4", "int4"), "/fc1/Gemm": ("int4", "int4")}
    qnet = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=config.acc_bits,
                            samples=np.load(DIGITS / "calibration.npy"), method="mmse", per_channel=True,
                            layer_formats=middle)
    images = np.load(DIGITS / "test_set.npz")["images"][:4]
    return qnet, config, qnet.tensors[qnet.input].quantize(images)


def test_layers_select_their_formats(mixed_digits):
    qnet, config, _ = mixed_digits
    compiled = compile_network(qnet, config)
    f = compiled.formats
    assert f.weights == {"/conv1/Conv": 0, "/conv2/Conv": 1, "/fc1/Gemm": 1, "/fc2/Gemm": 0}
    # conv1's output (pooled) stays int8, conv2's (pooled, flattened) and fc1's are int4; the network's output int8.
    assert f.tensors == {"/pool1/MaxPool_output_0": 0, "/pool2/MaxPool_output_0": 1, "/flatten/Flatten_output_0": 1,
                         "/Relu_2_output_0": 1}
    listing = compiled.program.listing()
    for fields in ("weight_format=1 act_format=0", "weight_format=1 act_format=1", "weight_format=0 act_format=1",
                   "format=1"):
        assert fields in listing


def test_mixed_network_matches_golden_on_every_tensor(mixed_digits):
    qnet, config, x = mixed_digits
    compiled = compile_network(qnet, config)
    golden = run_network(qnet, x, keep=True)
    for i in range(len(x)):
        emulator = Emulator(config, bytes(compiled.dram_with_input(x[i])))
        status = emulator.run(compiled.program.program_addr)
        assert status.done and int(status.error) == 0, status
        for name in compiled.materialized:
            np.testing.assert_array_equal(compiled.read_tensor(emulator.dram, name), golden[name][i],
                                          err_msg=f"tensor {name}, image {i}")


def test_single_format_engine_selects_nothing(mixed_digits):
    qnet, _, _ = mixed_digits
    compiled = compile_network(qnet, AcceleratorConfig(rows=8, cols=8))
    assert (compiled.formats.weights, compiled.formats.tensors) == ({}, {})
    assert "format=1" not in compiled.program.listing()


@pytest.mark.parametrize("formats", [("int4", "int8"), ("int8", "minifloat6")])
def test_engines_the_compiler_cannot_target(mixed_digits, formats):
    qnet, _, _ = mixed_digits
    config = AcceleratorConfig(rows=8, cols=8, formats=formats)
    with pytest.raises(CompileError, match="needs a multi-format engine whose first format"):
        compile_network(qnet, config)


def test_mixed_network_on_rtl(mixed_digits, tmp_path):
    """The same network on the multi-format engine's Verilog (compiled Verilator testbench): every stored tensor of
    every image is the golden model's, as is the emulator's."""
    from sw.runtime import run_codes

    qnet, config, x = mixed_digits
    compiled = compile_network(qnet, config)
    runs = {backend: run_codes(compiled, x, backend, keep=True, work_dir=tmp_path)
            for backend in ("golden", "emulator", "rtl")}
    for i in range(len(x)):
        for tensor in runs["golden"].tensors[i]:
            for backend in ("emulator", "rtl"):
                np.testing.assert_array_equal(runs[backend].tensors[i][tensor], runs["golden"].tensors[i][tensor],
                                              err_msg=f"{backend}, tensor {tensor}, image {i}")
