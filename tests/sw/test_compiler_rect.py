"""Whole networks on rectangular arrays (rows != cols): tensors in external memory hold ``tensor_lanes`` channels
a line, lines ``max(activation line, output line)`` bytes apart (hw/spec/layout.py, docs/architecture.md), so
every layer's output is the next one's input. Golden == emulator on every tensor; square programs unchanged."""

import hashlib

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import Buffer
from hw.spec.layout import line_bytes, output_line_bytes, tensor_lanes, tensor_line_bytes
from sim.random_network import random_inputs, random_network
from sw.compile import compile_model
from sw.compiler.network import compile_network
from sw.golden.network import run_network
from sw.model_folder import DIGITS, model_folder
from tests.sw.test_compiler_network import (_config, _emulate, assert_every_tensor_matches_golden,
                                           assert_runs_match_golden)

#: (weights, acts, rows, cols, dma_bits); the comment says which way lines differ (ACT, output, tensor bytes).
SHAPES = [
    ("int8", "int8", 4, 8, 64),          # 8, 8, 8: the same line, the wide side's upper lanes unused
    ("int8", "int8", 8, 4, 64),          # 8, 8, 8
    ("int8", "int8", 8, 16, 128),        # 16, 16, 16
    ("int8", "int8", 16, 8, 128),        # 16, 16, 16
    ("int8", "int8", 4, 16, 64),         # 8, 16, 16: LOADs a line at a time
    ("int8", "int8", 8, 16, 64),         # 8, 16, 16: LOADs a line at a time
    ("int8", "int8", 16, 8, 64),         # 16, 8, 16: STOREs a line at a time
    ("int8", "int8", 32, 8, 128),        # 32, 16, 32: STOREs a line at a time
    ("minifloat6", "minifloat6", 4, 8, 32),   # 4, 8, 8: six-bit codes, LOADs a line at a time
    ("minifloat6", "minifloat6", 8, 4, 32),   # 8, 4, 8: STOREs a line at a time
    ("int4", "int8", 8, 16, 64),
    ("int8", "uint8", 16, 4, 32),        # zero points in the padding; 16, 4, 16
]


@pytest.mark.parametrize("weights,acts,rows,cols,dma", SHAPES, ids=[f"{w}-{a}-{r}x{c}-{d}" for w, a, r, c, d in SHAPES])
def test_random_network_on_a_rectangular_array_matches_golden(weights, acts, rows, cols, dma):
    """Strides, padding, dilation, depthwise, max and average pools, a residual add, a concat, a global pool and a
    linear layer at the end, on every tensor."""
    config = _config(weights, acts, rows, cols=cols, dma_bits=dma)
    rng = np.random.default_rng(rows * 31 + cols + dma)
    net = random_network(rng, acts, weights, config.acc_bits)
    compiled = assert_every_tensor_matches_golden(net, config, random_inputs(rng, net, 2))
    assert {"p1", "dw", "sum", "cat", "mp", "avg", "dil", "gap", "fc", "out"} <= set(compiled.materialized)


@pytest.mark.parametrize("shape", ["4x8", "8x4", "8x16", "16x8", "4x16", "16x4", "8x16@64", "16x8@64", "16x32"])
def test_digits_cnn_on_a_rectangular_array(shape):
    """The default 128-bit bus (min(rows, cols) channels a line, but 16x32: dense), and a 64-bit one (dense)."""
    rows, cols = map(int, shape.split("@")[0].split("x"))
    dma = int(shape.split("@")[1]) if "@" in shape else 128
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format="int8", act_format="int8", dma_bits=dma)
    assert tensor_lanes(config) == (max(rows, cols) if dma == 64 or cols == 32 else min(rows, cols))
    folder = model_folder(DIGITS)
    compiled = compile_model(folder.onnx, config, np.load(folder.calibration), log=lambda *_: None,
                             method="mmse", per_channel=True)
    with np.load(folder.test_set) as data:
        images, labels = data["images"][:24], data["labels"][:24]
    net = compiled.network
    codes = net.tensors[net.input].quantize(images)
    emulated = assert_runs_match_golden(compiled, codes, f"{shape}: ")
    assert (net.tensors[net.output].dequantize(emulated.codes).argmax(axis=1) == labels).mean() > 0.9


@pytest.mark.parametrize("rows,cols,dma,bits,dense", [
    (4, 8, 64, 8, False), (8, 4, 64, 8, False), (8, 16, 64, 8, True), (16, 8, 64, 8, True), (4, 8, 32, 6, False),
    (8, 16, 128, 8, False), (16, 32, 128, 8, True), (32, 8, 64, 8, True), (12, 8, 64, 8, False)])
def test_tensor_layout_from_its_definition(rows, cols, dma, bits, dense):
    """A map's code of channel ch at pixel p sits in line (ch // m) * H * W + p, lines ``max(ACT line, output line)``
    bytes apart, at bits (ch % m) * bits of its line; m = max(rows, cols) where the longer side is k times the
    shorter and the shorter side's line fills whole beats (dense), else min(rows, cols). The last block's lanes
    past the channels hold the zero code, every other bit is zero."""
    fmt = "int8" if bits == 8 else "minifloat6"
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format=fmt, act_format=fmt, dma_bits=dma)
    m = max(rows, cols) if dense else min(rows, cols)
    beat = dma // 8
    line = max(-(-rows * bits // dma), -(-cols * bits // dma)) * beat
    assert (tensor_lanes(config), tensor_line_bytes(config)) == (m, line)
    assert line in (line_bytes(Buffer.ACT, config), output_line_bytes(config))
    net = random_network(np.random.default_rng(1), fmt, fmt, config.acc_bits)
    compiled = compile_network(net, config)
    name = "p1"
    c, h, w = net.shapes[name]
    rng = np.random.default_rng(2)
    codes = rng.integers(1, 1 << bits, size=(c, h, w))
    data = compiled.tensor_bytes(name, codes[None])[0]
    bit_array = np.unpackbits(data, bitorder="little")
    expected = np.zeros_like(bit_array)
    zero = net.tensors[name].zero_code()
    for ch in range(-(-c // m) * m):                # channels past the last hold the zero code
        for p in range(h * w):
            start = ((ch // m) * h * w + p) * line * 8 + (ch % m) * bits
            code = int(codes[ch].ravel()[p]) if ch < c else zero
            expected[start:start + bits] = (code >> np.arange(bits)) & 1
    np.testing.assert_array_equal(bit_array, expected)
    np.testing.assert_array_equal(compiled.tensor_codes(name, data[None])[0], codes)


#: sha256 of program.dram of square networks: a square array's programs must stay byte for byte what they were.
#: First pinned from the compiler before rectangular arrays compiled networks (commit 2b4e132); pinned again when
#: regions became aligned to the bus instead of 4 KiB and a Gemm's vector could run in ``stack`` order (the only
#: changes since, each checked golden == emulator on its own).
SQUARE_DIGESTS = {
    ("int8", "int8", 4, 64): "cc2519446a3f602a",
    ("int4", "int8", 8, 64): "d918442f73a63a24",
    ("minifloat6", "minifloat6", 4, 64): "911b72686e7e9b13",
    ("int8", "int8", 16, 128): "a4d77c4664aadffc",
}


@pytest.mark.parametrize("key", SQUARE_DIGESTS, ids=lambda k: f"{k[0]}-{k[1]}-{k[2]}x{k[2]}")
def test_square_programs_are_unchanged(key):
    weights, acts, n, dma = key
    config = _config(weights, acts, n, dma_bits=dma)
    net = random_network(np.random.default_rng(7), acts, weights, config.acc_bits)
    digest = hashlib.sha256(bytes(compile_network(net, config).program.dram)).hexdigest()[:16]
    assert digest == SQUARE_DIGESTS[key]


#: A wide array that LOADs a line at a time and a tall one that STOREs a line at a time (32-bit bus; dense: an
#: output line is two activation lines, resp. an activation line two output lines).
STRIDED = [(4, 8), (8, 4)]


@pytest.mark.parametrize("rows,cols", STRIDED, ids=["4x8", "8x4"])
@pytest.mark.parametrize("limits,tiling", [
    (dict(act_buffer_depth=256, acc_buffer_depth=32), {}),                  # column strips
    (dict(weight_buffer_depth=32), {}),                                      # kernel groups
    (dict(param_buffer_depth=2), {}),                     # channel groups (8x4: min(rows, cols) lanes, PARAM < k)
    (dict(param_buffer_depth=4), {}),                     # channel groups (8x4: the k = 2 output blocks of a line)
    ({}, dict(order="chunk", max_rows=1)),
    ({}, dict(order="block", max_rows=3)),
], ids=["strips", "kernel-groups", "channel-groups", "channel-groups-dense", "chunk-1", "block-3"])
def test_splits_and_tilings_on_a_rectangular_array(rows, cols, limits, tiling):
    """What does not fit is split (windows of the map, of the kernel, of the output channels) and every loop order
    and tile height runs, with tensors a line at a time."""
    config = _config("int8", "int8", rows, cols=cols, dma_bits=32, **limits)
    param = limits.get("param_buffer_depth")
    assert tensor_lanes(config) == (4 if rows > cols and param == 2 else 8)      # dense unless PARAM / 2 < k
    rng = np.random.default_rng(4)
    net = random_network(rng, "int8", "int8", config.acc_bits, size=(3, 9, 40))
    compiled = compile_network(net, config, **tiling)
    if "act_buffer_depth" in limits or param == 2 or (param == 4 and rows > cols):   # 12 channels > a group
        assert max(e["plan"]["parts"] for e in compiled.layers) > 1
    x = random_inputs(rng, net, 1)
    golden = run_network(net, x, keep=True)
    dram, _ = _emulate(compiled, x[0])
    for name in compiled.materialized:
        np.testing.assert_array_equal(compiled.read_tensor(dram, name), golden[name][0], err_msg=name)


@pytest.mark.parametrize("shape", ["8x16", "16x8"])
@pytest.mark.parametrize("model", ["softmax_digits", "lstm_digits", "activations_resnet"])
def test_host_layers_and_activation_tables_on_a_rectangular_array(model, shape, tmp_path):
    """Host layers read and write tensors in the rectangular layout (a Softmax at the end, an LSTM in the middle);
    lookup-table activations in residual blocks. 64-bit bus: 8x16 LOADs, 16x8 STOREs a line at a time."""
    import tests.onnx_models as models

    rows, cols = map(int, shape.split("x"))
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format="int8", act_format="int8", dma_bits=64)
    samples = np.load(DIGITS / "calibration.npy")
    compiled = compile_model(getattr(models, model)(tmp_path / f"{model}.onnx"), config, samples,
                             log=lambda *_: None)
    codes = compiled.network.tensors[compiled.network.input].quantize(samples[:2])
    assert bool(compiled.host_layers) == (model != "activations_resnet")
    assert_runs_match_golden(compiled, codes)


@pytest.mark.parametrize("shape", ["8x16", "16x8"])
@pytest.mark.parametrize("model", ["resnet8", "ds_cnn"])
def test_zoo_models_on_a_rectangular_array(model, shape):
    """Residual blocks, depthwise and strided convolutions, global pooling (models/zoo, random weights)."""
    from pathlib import Path

    zoo = Path(__file__).parents[2] / "models" / "zoo"
    rows, cols = map(int, shape.split("x"))
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format="int8", act_format="int8")
    samples = np.load(zoo / f"{model}_calibration.npy")
    compiled = compile_model(zoo / f"{model}.onnx", config, samples, log=lambda *_: None)
    codes = compiled.network.tensors[compiled.network.input].quantize(samples[:1])
    assert_runs_match_golden(compiled, codes)


@pytest.mark.parametrize("shape,dma", [("8x4", 32), ("4x16", 64), ("16x8", 128)])
def test_prelu_and_batches_on_a_rectangular_array(shape, dma, tmp_path):
    """A per-channel PRelu's second PARAM line follows the spread channels; a batched program's samples follow the
    tensor layout."""
    import tests.onnx_models as models

    rows, cols = map(int, shape.split("x"))
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format="int8", act_format="int8", dma_bits=dma)
    samples = np.load(DIGITS / "calibration.npy")
    for model, batch in ((models.prelu_net(tmp_path / "prelu.onnx"), 1), (DIGITS / "digits_cnn.onnx", 3)):
        compiled = compile_model(model, config, samples, log=lambda *_: None, batch=batch)
        codes = compiled.network.tensors[compiled.network.input].quantize(samples[:4])
        assert_runs_match_golden(compiled, codes)


@pytest.mark.parametrize("shape,dma,batch", [("8x4", 32, 1), ("8x4", 32, 3), ("4x16", 64, 2), ("16x8", 64, 1),
                                             ("8x16", 64, 2), ("16x8", 128, 1), ("4x4", 32, 2)])
def test_scattered_outputs_on_a_rectangular_array(shape, dma, batch, tmp_path):
    """ConvTranspose phases, a nearest Resize and a DepthToSpace scatter the spread channels' virtual output blocks
    (dense and min(rows, cols) layouts, tall and wide), in batches too (a scatter fused into the STOREs of the
    layer before writes each sample a sample of the *scattered* tensor further on; 4x4: square)."""
    import tests.onnx_models as models

    rows, cols = map(int, shape.split("x"))
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format="int8", act_format="int8", dma_bits=dma)
    samples = np.load(DIGITS / "calibration.npy")
    compiled = compile_model(models.decoder_digits(tmp_path / "d.onnx"), config, samples, log=lambda *_: None,
                             batch=batch)
    assert not compiled.host_layers
    codes = compiled.network.tensors[compiled.network.input].quantize(samples[:2 * batch])
    assert_runs_match_golden(compiled, codes)


def test_a_dense_line_of_few_channels_computes_only_their_blocks():
    """A tall array's dense tensor line holds k output blocks; a tensor of fewer channels (16 on 32x16) fills only
    the first: the blocks past its last channel are not computed, stored or read (their lanes meet zero weights).
    ResNet-8 (16, 32 and 64 channels) then plans no slower at 32x16 than at 16x16 (it planned 1.3x slower when
    every 16-channel layer computed two output blocks, one of them empty)."""
    from pathlib import Path

    zoo = Path(__file__).parents[2] / "models" / "zoo"
    samples = np.load(zoo / "resnet8_calibration.npy")
    planned = {}
    for rows, cols in ((16, 16), (32, 16)):
        config = AcceleratorConfig(rows=rows, cols=cols, weight_format="int8", act_format="int8")
        compiled = compile_model(zoo / "resnet8.onnx", config, samples, log=lambda *_: None)
        planned[rows, cols] = sum(e["plan"]["estimated_cycles"] for e in compiled.layers)
        stem = compiled.layers[0]
        assert stem["op"] == "conv" and compiled.network.shapes[stem["output"]][0] == 16
        # One PARAM line a block: the stem's 16 channels are one block of 16 columns on both arrays.
        param = [w for w in compiled.program.listing().splitlines()[stem["first_instruction"]:] if "buffer=PARAM" in w]
        assert "x_size=1 " in param[0] + " ", param[0]
    assert planned[32, 16] <= planned[16, 16], planned
