"""Packed int4 layers in networks compiled for a build that packs per layer (int4,int8,minifloat6, 2*rows <= cols):
a convolution of int4 weights on the network's int4 input runs packed COMPUTEs (the host writes the input two codes a
slot), and so does one on an int4 tensor the engine writes when every reader of it is such a convolution (its
writer's STOREs set ``packed``: two codes a slot); every other layer as before; golden == emulator on every tensor,
and on the RTL for a small build."""

from pathlib import Path

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from sim.random_network import random_inputs, random_network
from sw.compiler.network import compile_network
from sw.frontend.onnx_import import load_onnx
from sw.quantize import quantize_network
from tests.sw.test_compiler_network import assert_every_tensor_matches_golden, assert_runs_match_golden

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"
SET = ("int4", "int8", "minifloat6")
#: The digits CNN quantized for int4 (its input and conv1: the packed pair) with the later layers in int8.
LATER_INT8 = {"/conv2/Conv": ("int8", "int8"), "/fc1/Gemm": ("int8", "int8"), "/fc2/Gemm": ("int8", "int8")}


#: The digits CNN with int4 conv1 and conv2 (conv2 reads pool1's output, which conv1's STOREs write packed).
FC_INT8 = {"/fc1/Gemm": ("int8", "int8"), "/fc2/Gemm": ("int8", "int8")}
POOL1 = "/pool1/MaxPool_output_0"


def mixed_digits(config: AcceleratorConfig, images: int = 3, layer_formats: dict = LATER_INT8):
    net = load_onnx(DIGITS / "digits_cnn.onnx")
    qnet = quantize_network(net, act_format="int4", weight_format="int4", acc_bits=config.acc_bits,
                            samples=np.load(DIGITS / "calibration.npy"), method="mmse", per_channel=True,
                            layer_formats=layer_formats, formats=list(SET))
    x = qnet.tensors[qnet.input].quantize(np.load(DIGITS / "test_set.npz")["images"][:images])
    return qnet, x


def packed_computes(compiled) -> list[str]:
    return [line for line in compiled.program.listing().splitlines() if "COMPUTE" in line and "packed=1" in line]


@pytest.mark.parametrize("rows, cols, dma", [(4, 8, 128), (4, 8, 32), (8, 16, 64)])
def test_digits_int4_stem_runs_packed(rows, cols, dma):
    """conv1 (int4 x int4, on the folded input: 9 channels, two packed tiles of 2*rows instead of three of rows at
    4 rows) packed; conv2, fc1, fc2 (int8) unpacked; every tensor the golden model's."""
    config = AcceleratorConfig(rows=rows, cols=cols, formats=SET, dma_bits=dma)
    assert config.packs_per_layer
    qnet, x = mixed_digits(config)
    compiled = assert_every_tensor_matches_golden(qnet, config, x)
    assert compiled.placements[qnet.input].packed and compiled.placements[qnet.input].fold is not None
    assert not any(p.packed for name, p in compiled.placements.items() if name != qnet.input)
    computes = [line for line in compiled.program.listing().splitlines() if "COMPUTE" in line]
    packed = packed_computes(compiled)
    assert packed and all("weight_format=0 act_format=0" in line for line in packed)
    assert len(packed) < len(computes)                           # the int8 layers' COMPUTEs are not packed
    unpacked = compile_network(qnet, config, pack=False)
    assert not packed_computes(unpacked) and not unpacked.placements[qnet.input].packed


def packed_stores(compiled) -> list[str]:
    return [line for line in compiled.program.listing().splitlines() if "STORE" in line and "packed=1" in line]


@pytest.mark.parametrize("rows, cols, dma, stores_packed", [(4, 8, 128, True), (2, 4, 64, True), (4, 8, 32, False),
                                                            (8, 16, 64, False)])
def test_digits_int4_conv2_reads_a_packed_tensor_the_engine_writes(rows, cols, dma, stores_packed):
    """conv1 and conv2 int4: conv1's STOREs (its pool fused) write pool1's output two codes a slot and conv2 reads
    it packed, where a packed output line is a packed tensor line (cols = 2 * tensor_lanes: 4x8 at 128 bits, 2x4);
    4x8 at 32 bits and 8x16 at 64 bits (tensor lines of 2*rows channels) store it one code a slot. Every tensor
    the golden model's."""
    config = AcceleratorConfig(rows=rows, cols=cols, formats=SET, dma_bits=dma)
    qnet, x = mixed_digits(config, 2, FC_INT8)
    compiled = assert_every_tensor_matches_golden(qnet, config, x)
    assert compiled.placements[POOL1].packed == bool(packed_stores(compiled)) == stores_packed
    assert [name for name, p in compiled.placements.items() if p.packed] == [qnet.input] + [POOL1] * stores_packed
    # conv2's COMPUTEs (3x3 on pool1's map; conv1 runs 1x1 on the folded input) are packed where pool1's map is.
    assert any("kh=3 kw=3" in line for line in packed_computes(compiled)) == stores_packed
    unpacked = compile_network(qnet, config, pack=False)
    assert not packed_stores(unpacked) and not any(p.packed for p in unpacked.placements.values())


@pytest.mark.parametrize("rows, cols, dma", [(4, 8, 128), (4, 8, 32), (2, 4, 64)])
def test_packed_input_with_padding_zero_points_and_a_fused_pool(rows, cols, dma):
    """A random int4 network whose first convolution (3x3, padding 1, 8 input channels, a fused max pool)
    reads the unfolded input two codes a slot: the pad value is the input's zero code in both nibbles."""
    config = AcceleratorConfig(rows=rows, cols=cols, formats=SET, dma_bits=dma)
    rng = np.random.default_rng(rows * 7 + dma)
    net = random_network(rng, "int4", "int4", config.acc_bits, size=(8, 16, 18))
    net.formats = list(SET)                 # a mixed-format network (of int4 layers only) for the set's build
    assert net.tensors["input"].zero_code()                 # a pad code other than 0 (3, 14 and 2 here)
    compiled = assert_every_tensor_matches_golden(net, config, random_inputs(rng, net, 2))
    assert compiled.placements["input"].packed and compiled.placements["input"].fold is None
    assert packed_computes(compiled)


def test_builds_that_do_not_pack_compile_unpacked():
    """A square multi-format build (2*rows > cols) and a single-format int4 build of the same shape (which packs
    every layer its own way, config.values_per_lane) never set COMPUTE.packed or lay a tensor out packed."""
    config = AcceleratorConfig(rows=4, cols=4, formats=SET)
    assert not config.packs_per_layer
    qnet, _ = mixed_digits(config, 1)
    compiled = compile_network(qnet, config)
    assert not packed_computes(compiled) and not any(p.packed for p in compiled.placements.values())
    config = AcceleratorConfig(rows=4, cols=8, weight_format="int4", act_format="int4")
    rng = np.random.default_rng(3)
    compiled = compile_network(random_network(rng, "int4", "int4", config.acc_bits, size=(8, 16, 18)), config)
    assert "packed=1" not in compiled.program.listing()
    assert not any(p.packed for p in compiled.placements.values())


@pytest.mark.parametrize("layer_formats", [LATER_INT8, FC_INT8], ids=["stem", "conv1-conv2"])
def test_mixed_digits_packed_on_rtl(layer_formats, tmp_path):
    """The digits CNN with its packed int4 stem (and int4 conv2, reading pool1's output that conv1's packed STOREs
    write) on the 2x4 int4+int8+minifloat6 build's Verilog: every stored tensor of every image is the golden
    model's, as is the emulator's."""
    config = AcceleratorConfig(rows=2, cols=4, formats=SET)
    assert config.packs_per_layer
    qnet, x = mixed_digits(config, 2, layer_formats)
    compiled = compile_network(qnet, config)
    assert packed_computes(compiled)
    assert bool(packed_stores(compiled)) == (layer_formats is FC_INT8)
    assert_runs_match_golden(compiled, x, backends=("emulator", "rtl"), work_dir=tmp_path)


def test_a_program_folder_keeps_the_packed_input(tmp_path):
    """sw.compile's folder records the packed placement; the loaded program lays the input out as compiled."""
    from sw.compiler.folder import FolderError, load_folder, save_folder

    config = AcceleratorConfig(rows=4, cols=8, formats=SET)
    qnet, x = mixed_digits(config, 1)
    compiled = compile_network(qnet, config)
    save_folder(compiled, tmp_path / "p")
    loaded = load_folder(tmp_path / "p")
    assert loaded.placements[qnet.input].packed
    np.testing.assert_array_equal(loaded.tensor_bytes(qnet.input, x), compiled.tensor_bytes(qnet.input, x))
    manifest = (tmp_path / "p" / "manifest.json").read_text()
    assert '"packed": true' in manifest
    (tmp_path / "p" / "manifest.json").write_text(manifest.replace('"packed": true', '"packed": 2'))
    with pytest.raises(FolderError, match="packed must be true or absent"):
        load_folder(tmp_path / "p", verify_digests=False)


@pytest.mark.parametrize("options", [dict(batch=2), dict(max_rows=1), dict(order="block")],
                         ids=["batch2", "rows1", "block"])
def test_packed_stem_in_batches_and_other_tilings(options):
    """The packed job copied per sample of a batch, cut into one-row chunks, and in block order: still the golden
    model's tensors (runtime golden and emulator backends)."""

    config = AcceleratorConfig(rows=4, cols=8, formats=SET)
    qnet, x = mixed_digits(config, 2)
    compiled = compile_network(qnet, config, **options)
    assert packed_computes(compiled)
    assert_runs_match_golden(compiled, x, f"{options}: ")
