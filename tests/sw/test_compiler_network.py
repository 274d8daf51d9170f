"""Whole networks compiled and run on the emulator against the golden model, tensor by tensor."""

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from sim.random_network import random_inputs, random_network
from sw.compiler.network import CompiledNetwork, CompileError, compile_network
from sw.emulator import Emulator
from sw.golden.network import run_network


def _config(weights, acts, n, **kw):
    base = dict(rows=n, cols=n, weight_format=weights, act_format=acts, act_buffer_depth=1024,
                weight_buffer_depth=256, acc_buffer_depth=256, param_buffer_depth=16, dma_bits=64)
    base.update(kw)
    return AcceleratorConfig(**base)


def _emulate(compiled: CompiledNetwork, codes: np.ndarray):
    dram = compiled.dram_with_input(codes)
    emulator = Emulator(compiled.config, bytes(dram))
    status = emulator.run(compiled.program.program_addr)
    assert status.done and int(status.error) == 0, status
    return emulator.dram, status


def assert_every_tensor_matches_golden(net, config, x) -> CompiledNetwork:
    """``net`` compiled for ``config`` and emulated on each input of ``x``: every materialized tensor equals the
    golden model's. Returns the compiled network."""
    compiled = compile_network(net, config)
    golden = run_network(net, x, keep=True)
    for i in range(len(x)):
        dram, _ = _emulate(compiled, x[i])
        for name in compiled.materialized:
            np.testing.assert_array_equal(compiled.read_tensor(dram, name), golden[name][i],
                                          err_msg=f"tensor {name}, image {i}")
    return compiled


def assert_runs_match_golden(compiled: CompiledNetwork, codes, what: str = "", backends=("emulator",), work_dir=None):
    """``compiled`` run on ``codes`` by the runtime's golden backend and ``backends``: every materialized tensor of
    every input equal. Returns the first backend's run."""
    from sw.runtime import run_codes
    runs = {b: run_codes(compiled, codes, b, keep=True, work_dir=work_dir) for b in ("golden", *backends)}
    for i in range(len(codes)):
        for name in compiled.materialized:
            for b in backends:
                np.testing.assert_array_equal(runs[b].tensors[i][name], runs["golden"].tensors[i][name],
                                              err_msg=f"{what}{b}, tensor {name}, input {i}")
    return runs[backends[0]]


@pytest.mark.parametrize("weights,acts,n", [("int8", "int8", 4), ("int4", "int8", 8), ("minifloat6", "minifloat6", 4),
                                            ("fp8_e4m3", "fp8_e4m3", 8), ("int8", "uint8", 4)])
def test_random_network_matches_golden_on_every_tensor(weights, acts, n):
    config = _config(weights, acts, n)
    rng = np.random.default_rng(n + len(weights) + len(acts))
    net = random_network(rng, acts, weights, config.acc_bits)
    compiled = compile_network(net, config)
    x = random_inputs(rng, net, 2)
    golden = run_network(net, x, keep=True)
    for i in range(len(x)):
        dram, status = _emulate(compiled, x[i])
        for name in compiled.materialized:
            got = compiled.read_tensor(dram, name)
            np.testing.assert_array_equal(got, golden[name][i], err_msg=f"tensor {name}, sample {i}")
    assert {"p1", "dw", "sum", "cat", "mp", "avg", "dil", "gap", "fc", "out"} <= set(compiled.materialized)
    assert "c1" not in compiled.materialized          # fused into its max pool


def test_saved_network_runs_the_same(tmp_path):
    config = _config("int8", "int8", 4)
    rng = np.random.default_rng(5)
    net = random_network(rng, "int8", "int8", config.acc_bits)
    compiled = compile_network(net, config)
    compiled.save(tmp_path)
    loaded = CompiledNetwork.load(tmp_path)
    x = random_inputs(rng, net, 1)[0]
    a, _ = _emulate(compiled, x)
    b, _ = _emulate(loaded, x)
    assert bytes(a) == bytes(b)
    listing = (tmp_path / "program.asm").read_text()
    assert "; layer conv0 (conv + maxpool1)" in listing and "COMPUTE" in listing


def test_formats_must_match_the_engine():
    net = random_network(np.random.default_rng(0), "int8", "int8", 20)
    with pytest.raises(CompileError, match="quantized for int8 weights x int8 activations, the engine is built for "
                                           "int4 x int8"):
        compile_network(net, _config("int4", "int8", 4))


def test_layer_too_big_names_the_layer():
    """Wide rows run in strips, but a dilated 5-row window of three channel blocks fits no buffer of 64 lines."""
    config = _config("int8", "int8", 4, act_buffer_depth=64, acc_buffer_depth=16)
    net = random_network(np.random.default_rng(0), "int8", "int8", config.acc_bits, size=(3, 9, 40))
    with pytest.raises(CompileError, match="layer 'conv8' cannot be mapped onto this engine: one output pixel "
                                           r"\(3 input channel blocks of a 5-row window\) does not fit the buffers"):
        compile_network(net, config)


@pytest.mark.parametrize("weights", ["int8", "minifloat6"])
@pytest.mark.parametrize("limits,split", [
    (dict(act_buffer_depth=256, acc_buffer_depth=32), "column strips"),
    (dict(weight_buffer_depth=16), "kernel groups of 2 taps"),
    (dict(weight_buffer_depth=32), "kernel groups of 4 taps"),
    (dict(param_buffer_depth=2), "channel groups of one block"),
])
def test_what_does_not_fit_is_split(weights, limits, split):
    """Wide maps, kernels beyond the weight buffer and output channels beyond the PARAM buffer are split, and
    every tensor is still the golden model's."""
    config = _config(weights, weights, 4, **limits)
    rng = np.random.default_rng(4)
    net = random_network(rng, weights, weights, config.acc_bits, size=(3, 9, 40))
    compiled = compile_network(net, config)
    if split != "kernel groups" and "kernel" not in split:
        assert max(e["plan"]["parts"] for e in compiled.layers) > 1, split
    x = random_inputs(rng, net, 1)
    golden = run_network(net, x, keep=True)
    dram, _ = _emulate(compiled, x[0])
    for name in compiled.materialized:
        np.testing.assert_array_equal(compiled.read_tensor(dram, name), golden[name][0], err_msg=name)


def test_kernels_beyond_a_compute_run_in_groups():
    """A 17x3 kernel (a COMPUTE takes at most 15 rows of taps) and a 9x9 one that two tiles of cannot share the
    weight buffer."""
    rng = np.random.default_rng(5)
    for kernel, shape_in in (((17, 3), (5, 20, 6)), ((9, 9), (5, 12, 12))):
        w = rng.integers(0, 256, (6, 5, *kernel)).astype(np.uint8)
        attrs = dict(kernel=kernel, stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
        out = (6, shape_in[1] + 2 - kernel[0] + 1, shape_in[2] + 2 - kernel[1] + 1)
        _matches_golden(_single("conv", attrs, shape_in, out, [w], shift=np.full(6, 36)))


def test_long_reductions_of_real_weights_fit():
    """The accumulators are held to the largest sum the weights can make: 600 small weights fit where a bound on
    the count (max_reduction 64) would refuse them; large ones are refused with the bound."""
    config = _config("int8", "int8", 4, max_reduction=64)
    small = np.full((3, 600), 3, np.uint8)
    _matches_golden(_single("linear", {}, (600,), (3,), [small], acc_bits=config.acc_bits), config)
    large = np.full((3, 600), 100, np.uint8)
    with pytest.raises(CompileError, match=r"layer 'L' cannot be mapped onto this engine: its sums can reach "
                                           r"7680000, beyond what 22-bit accumulators hold exactly"):
        compile_network(_single("linear", {}, (600,), (3,), [large], acc_bits=config.acc_bits), config)


@pytest.mark.parametrize("weights", ["int8", "minifloat6"])
@pytest.mark.parametrize("order,max_rows", [("chunk", 1), ("chunk", 2), ("block", 1), ("block", 3)])
def test_every_tiling_gives_the_same_bytes(weights, order, max_rows):
    """Both loop orders and small tiles (many chunks) compute what the golden model computes."""
    config = _config(weights, weights, 4)
    rng = np.random.default_rng(3)
    net = random_network(rng, weights, weights, config.acc_bits)
    compiled = compile_network(net, config, order=order, max_rows=max_rows)
    orders = {e["plan"]["order"] for e in compiled.layers}
    assert order in orders and max(e["plan"]["rows"] for e in compiled.layers) <= max_rows
    x = random_inputs(rng, net, 1)
    golden = run_network(net, x, keep=True)
    dram, _ = _emulate(compiled, x[0])
    for name in compiled.materialized:
        np.testing.assert_array_equal(compiled.read_tensor(dram, name), golden[name][0], err_msg=name)


def _single(op, attrs, shape_in, shape_out, weights=(), channels=None, acc_bits=None, fmt="int8", **params):
    """A one-layer network x -> y in ``fmt`` (the full output range)."""
    from sw.ir import QuantizedNetwork, QuantLayer, QuantTensor
    from hw.spec.formats import get_format
    f = get_format(fmt)
    channels = channels or shape_out[0]
    layer = QuantLayer("L", op, ["x"], "y", attrs, list(weights),
                       bias=params.get("bias", np.zeros(channels, np.int64)),
                       multiplier=params.get("multiplier", np.full(channels, 1 << 30)),
                       shift=params.get("shift", np.full(channels, 31)), clamp_lo=int(f.quantize(f.min)),
                       clamp_hi=int(f.quantize(f.max)))
    return QuantizedNetwork(fmt, fmt, acc_bits or _config(fmt, fmt, 4).acc_bits, "x", "y",
                            {"x": shape_in, "y": shape_out},
                            {"x": QuantTensor(fmt, 1.0, 0), "y": QuantTensor(fmt, 1.0, 0)}, [layer])


def _matches_golden(net, config=None):
    config = config or _config("int8", "int8", 4)
    compiled = compile_network(net, config)
    x = random_inputs(np.random.default_rng(1), net, 1)
    dram, _ = _emulate(compiled, x[0])
    np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), run_network(net, x)[0])


def test_dilated_average_pool():
    _matches_golden(_single("avgpool", dict(kernel=(2, 2), stride=(3, 3), dilation=(2, 2), padding=(0, 0, 0, 0)),
                            (3, 9, 9), (3, 3, 3)))


POOLS = [
    # op, kernel, stride, padding, dilation, input (C, H, W)
    ("maxpool", (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (5, 12, 12)),     # ResNet's stem pool
    ("maxpool", (3, 3), (2, 2), (0, 0, 1, 1), (1, 1), (6, 13, 13)),     # SqueezeNet's ceil-mode pool
    ("maxpool", (2, 2), (3, 3), (0, 0, 0, 0), (2, 2), (3, 9, 9)),       # dilated
    ("maxpool", (3, 2), (1, 2), (0, 1, 0, 1), (1, 1), (4, 7, 10)),      # unequal kernel and stride
    ("avgpool", (25, 5), (25, 5), (0, 0, 0, 0), (1, 1), (6, 25, 5)),    # DS-CNN's whole-map pool
    ("avgpool", (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (5, 8, 8)),
    ("avgpool", (2, 3), (2, 1), (0, 0, 1, 0), (2, 1), (3, 9, 9)),
    ("global_avgpool", None, None, None, None, (7, 13, 13)),             # SqueezeNet's head
]


@pytest.mark.parametrize("op,kernel,stride,padding,dilation,shape", POOLS, ids=range(len(POOLS)))
@pytest.mark.parametrize("fmt", ["int8", "minifloat6"])
def test_pooling_on_the_alu(op, kernel, stride, padding, dilation, shape, fmt):
    """Every window (overlapping, padded, dilated, unequal, a whole map) pools on the accumulators by ALU
    instructions, exactly as the golden model pools."""
    c, h, w = shape
    if op == "global_avgpool":
        attrs, out = {}, (c, 1, 1)
    else:
        attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
        out = (c, (h + padding[0] + padding[2] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1,
               (w + padding[1] + padding[3] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1)
    config = _config(fmt, fmt, 4, acc_buffer_depth=512)       # the 25x5 window: 151 lines a tile
    net = _single(op, attrs, shape, out, acc_bits=config.acc_bits, fmt=fmt)
    _matches_golden(net, config)


TALL_POOLS = [
    POOLS[4], POOLS[7],
    ("avgpool", (12, 2), (12, 2), (0, 0, 0, 0), (1, 1), (3, 24, 4)),
    ("maxpool", (9, 1), (4, 1), (2, 0, 2, 0), (1, 1), (3, 20, 3)),      # padded, windows overlap
    ("avgpool", (5, 1), (1, 1), (0, 0, 0, 0), (3, 1), (2, 16, 2)),      # dilated rows
]


@pytest.mark.parametrize("op,kernel,stride,padding,dilation,shape", TALL_POOLS, ids=range(len(TALL_POOLS)))
@pytest.mark.parametrize("fmt", ["int8", "minifloat6"])
def test_pooling_in_bands(op, kernel, stride, padding, dilation, shape, fmt):
    """Windows whose pooled row does not fit the accumulators at once (not even in a column strip) are pooled a
    band of rows at a time, exactly as the golden model pools."""
    c, h, w = shape
    if op == "global_avgpool":
        attrs, out = {}, (c, 1, 1)
    else:
        attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
        out = (c, (h + padding[0] + padding[2] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1,
               (w + padding[1] + padding[3] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1)
    config = _config(fmt, fmt, 4, acc_buffer_depth=32)
    net = _single(op, attrs, shape, out, acc_bits=config.acc_bits, fmt=fmt)
    assert compile_network(net, config).layers[0]["plan"]["band"] > 0
    _matches_golden(net, config)


def test_a_fused_overlapping_max_pool():
    """A 3x3/2 max pool right after a convolution pools its accumulators (rows of windows overlap across
    chunks: their conv rows are computed again)."""
    rng = np.random.default_rng(6)
    for weights in ("int8", "minifloat6"):
        config = _config(weights, weights, 4, acc_buffer_depth=64)
        b_net = random_network(rng, weights, weights, config.acc_bits, size=(3, 14, 14))
        conv = b_net.layers[0]
        pool = b_net.layers[1]
        pool.attrs.update(kernel=(3, 3), stride=(2, 2))
        b_net.shapes[pool.output] = (6, 6, 6)
        net = type(b_net)(b_net.act_format, b_net.weight_format, b_net.acc_bits, b_net.input, pool.output,
                          {k: b_net.shapes[k] for k in (b_net.input, conv.output, pool.output)},
                          {k: b_net.tensors[k] for k in (b_net.input, conv.output, pool.output)}, [conv, pool])
        compiled = compile_network(net, config, max_rows=2)
        assert compiled.layers[0]["fused"] == [pool.name]
        x = random_inputs(rng, net, 1)
        dram, _ = _emulate(compiled, x[0])
        np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), run_network(net, x)[0])


def test_one_bias_for_every_channel_and_no_bias():
    w = np.random.default_rng(0).integers(0, 256, (6, 3, 3, 3)).astype(np.uint8)
    attrs = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    _matches_golden(_single("conv", attrs, (3, 5, 5), (6, 5, 5), [w], bias=np.array([40])))
    _matches_golden(_single("conv", attrs, (3, 5, 5), (6, 5, 5), [w], bias=None))


def test_out_of_range_multiplier_names_the_layer():
    w = np.ones((2, 3, 1, 1), np.uint8)
    net = _single("conv", dict(kernel=(1, 1)), (3, 2, 2), (2, 2, 2), [w], multiplier=np.full(2, 1 << 31))
    with pytest.raises(CompileError, match=r"layer 'L': multiplier must lie in -2147483648..2147483647"):
        compile_network(net, _config("int8", "int8", 4))


def test_reduction_counts_only_non_zero_weights():
    """A depthwise 3x3 convolution on 64 channels sums 9 products per output, not 64*9."""
    w = np.random.default_rng(2).integers(1, 100, (64, 1, 3, 3)).astype(np.uint8)
    attrs = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=64)
    config = _config("int8", "int8", 4, max_reduction=64, param_buffer_depth=32)
    _matches_golden(_single("conv", attrs, (64, 4, 4), (64, 4, 4), [w], acc_bits=config.acc_bits), config)


def test_column_strips_share_one_copy_of_their_weights():
    """A map too wide for the activation buffer runs in column strips, each a job of its own with the same weights
    and parameters: the image holds one copy of each (regions shared by their bytes), and the result is the golden
    model's."""
    rng = np.random.default_rng(12)
    w = rng.integers(0, 256, (8, 8, 3, 3)).astype(np.uint8)
    attrs = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    net = _single("conv", attrs, (8, 6, 40), (8, 6, 40), [w], shift=np.full(8, 42))
    config = _config("int8", "int8", 4, act_buffer_depth=128)
    compiled = compile_network(net, config)
    names = list(compiled.program.regions)
    assert sum("[x1:" in name for name in names) == 0 and any("[x0:" in name for name in names), names
    assert sum(name.endswith(".weights") for name in names) == 1, names
    x = random_inputs(np.random.default_rng(1), net, 1)
    dram, _ = _emulate(compiled, x[0])
    np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), run_network(net, x)[0])


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2"])
def test_an_all_zero_weight_tile_still_meets_a_nan_activation(fmt):
    """An all-zero weight tile is left out of chunk and block order, but not where the activations have NaN or Inf
    codes: zero times NaN is NaN, so a NaN in that channel block makes the output NaN, as in the golden model."""
    from hw.spec.formats import get_format
    f = get_format(fmt)
    rng = np.random.default_rng(13)
    w = f.quantize(rng.uniform(-1, 1, (8, 8, 1, 1))).astype(np.uint8)
    w[:4, 4:] = f.quantize(np.zeros(1))[0]          # output block 0 reads nothing of channel block 1
    attrs = dict(kernel=(1, 1), stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)
    config = _config(fmt, fmt, 4)
    net = _single("conv", attrs, (8, 3, 3), (8, 3, 3), [w], fmt=fmt, acc_bits=config.acc_bits)
    compiled = compile_network(net, config, order="chunk")
    x = random_inputs(rng, net, 1)
    x[0, 5, 1, 1] = f.nan_code
    dram, _ = _emulate(compiled, x[0])
    expected = run_network(net, x)[0]
    assert (expected[:4, 1, 1] == f.nan_code).all()      # (the golden model's NaN reaches output block 0)
    np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), expected)
