"""Per-layer format selection on multi-format engines (sw/compiler/formats.py): the digits CNN with int4 and int8
layers, compiled for one int8+int4 engine, gives the golden model's codes on every tensor in the emulator."""

from pathlib import Path

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from sw.compiler.network import CompileError, compile_network
from sw.frontend.onnx_import import load_onnx
from sw.quantize import quantize_network
from tests.sw.test_compiler_network import assert_every_tensor_matches_golden, assert_runs_match_golden

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
    assert_every_tensor_matches_golden(qnet, config, x)


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
    qnet, config, x = mixed_digits
    compiled = compile_network(qnet, config)
    assert_runs_match_golden(compiled, x, backends=("emulator", "rtl"), work_dir=tmp_path)


# --- networks mixing integer and minifloat layers (each layer in its own format, declared by the IR) -----------

#: conv1 in minifloat6, conv2 in int8, fc1 in int4 (fc2 in the default int8): every family and width of the set.
FAMILIES = {"/conv1/Conv": ("minifloat6", "minifloat6"), "/conv2/Conv": ("int8", "int8"),
            "/fc1/Gemm": ("int4", "int4")}
SET = ("int4", "int8", "minifloat6")


def _mixed_families(rows: int):
    net = load_onnx(DIGITS / "digits_cnn.onnx")
    config = AcceleratorConfig(rows=rows, cols=rows, formats=SET)
    qnet = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=config.acc_bits,
                            samples=np.load(DIGITS / "calibration.npy"), method="mmse", per_channel=True,
                            layer_formats=FAMILIES, formats=list(SET))
    images = np.load(DIGITS / "test_set.npz")["images"][:4]
    return qnet, config, qnet.tensors[qnet.input].quantize(images)


@pytest.fixture(scope="module")
def families():
    return _mixed_families(8)


def test_mixed_families_select_the_formats_the_network_declares(families):
    qnet, config, _ = families
    compiled = compile_network(qnet, config)
    f = compiled.formats
    index = {name: i for i, name in enumerate(SET)}
    assert {k: f.weights[k] for k in FAMILIES} == {k: index[w] for k, (w, _) in FAMILIES.items()}
    assert f.tensors["/pool1/MaxPool_output_0"] == index["minifloat6"]       # conv1 (and its fused pool) write
    assert f.tensors["/pool2/MaxPool_output_0"] == index["int8"]
    assert f.tensors["/Relu_2_output_0"] == index["int4"]
    listing = compiled.program.listing()
    # conv2 reads minifloat6 codes with int8 weights; fc2 reads int4 codes with int8 weights.
    for fields in ("weight_format=1 act_format=2", "weight_format=1 act_format=0", "weight_format=0 act_format=1",
                   "format=2", "format=0"):
        assert fields in listing


def test_mixed_families_match_golden_on_every_tensor(families):
    qnet, config, x = families
    assert_every_tensor_matches_golden(qnet, config, x)


@pytest.mark.parametrize("config, problem", [
    (AcceleratorConfig(rows=8, cols=8), "runs on a multi-format build holding all of them"),
    (AcceleratorConfig(rows=8, cols=8, formats=("int8", "int4")), "runs on a multi-format build holding all of them"),
    (AcceleratorConfig(rows=8, cols=8, formats=("int4", "int8", "minifloat6", "fp8_e4m3")), "units of 2\\*\\*-8"),
])
def test_engines_a_mixed_family_network_cannot_run_on(families, config, problem):
    qnet, _, _ = families
    with pytest.raises(CompileError, match=problem):
        compile_network(qnet, config)


#: program.bin of the digits CNN (mmse, per channel, 8x8) before networks could mix formats per layer (commit
#: 2b4e132, where these hashes were first computed): single-format and int8+int4 programs must not change by a
#: byte. Pinned again when regions became aligned to the bus instead of 4 KiB and the Gemms could run in ``stack``
#: order, and again when a stacked vector's taps became kh x kw COMPUTEs (``kernel_shapes``: fc1 at 8x8 one 4x8
#: instead of three (15, 15 and 2 taps) per output block; the only changes since).
PINNED = {"int8": "b9c386284cb78ca0", "minifloat6": "cdd37b3b572d7d0d", "int8+int4": "4f657326f1c25629"}


@pytest.mark.parametrize("case", sorted(PINNED))
def test_programs_of_single_format_networks_do_not_change(case, tmp_path):
    import hashlib
    config = {"int8": AcceleratorConfig(rows=8, cols=8),
              "minifloat6": AcceleratorConfig(rows=8, cols=8, weight_format="minifloat6", act_format="minifloat6"),
              "int8+int4": AcceleratorConfig(rows=8, cols=8, formats=("int8", "int4"))}[case]
    middle = {"/conv2/Conv": ("int4", "int4"), "/fc1/Gemm": ("int4", "int4")} if case == "int8+int4" else None
    qnet = quantize_network(load_onnx(DIGITS / "digits_cnn.onnx"), act_format=config.acts.name,
                            weight_format=config.weights.name, acc_bits=config.acc_bits,
                            samples=np.load(DIGITS / "calibration.npy"), method="mmse", per_channel=True,
                            layer_formats=middle)
    compile_network(qnet, config).save(tmp_path)
    assert hashlib.sha256((tmp_path / "program.bin").read_bytes()).hexdigest()[:16] == PINNED[case]


def test_mixed_families_on_rtl(tmp_path):
    """minifloat6 -> int8 -> int4 layers of one network on a 4x4 int4+int8+minifloat6 build's Verilog: every stored
    tensor of every image is the golden model's, as is the emulator's."""
    qnet, config, x = _mixed_families(4)
    compiled = compile_network(qnet, config)
    assert_runs_match_golden(compiled, x, backends=("emulator", "rtl"), work_dir=tmp_path)
