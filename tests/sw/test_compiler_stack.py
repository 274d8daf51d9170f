"""The ``stack`` loop order (sw/compiler/stacking.py): a 1x1 job's channel blocks as the taps of one COMPUTE,
patches prefetched a chunk ahead, slots shared where two chunks do not fit side by side, a ramp of chunk heights.
Golden == emulator on every tensor, in every format; the cost model picks the order where the emulator agrees it
pays."""

from pathlib import Path

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from sim.random_network import random_inputs
from sw.compiler.network import compile_network
from sw.compiler.stacking import kernel_shapes, stack_spans
from sw.compiler.program import Region
from sw.compiler.tiling import ConvJob, Source, _stack_layout, _tiles
from sw.frontend.onnx_import import load_onnx
from sw.golden.network import run_network
from sw.quantize import quantize_network
from tests.onnx_models import stem_shortcut_digits
from tests.sw.test_compiler_network import _config, _emulate, _single, assert_every_tensor_matches_golden

DIGITS = Path(__file__).resolve().parents[2] / "models" / "digits"


def _stem_shortcut(tmp_path, fmt: str, config: AcceleratorConfig):
    net = load_onnx(stem_shortcut_digits(tmp_path / "stem_shortcut.onnx"))
    images = np.load(DIGITS / "calibration.npy")
    qnet = quantize_network(net, act_format=fmt, weight_format=fmt, acc_bits=config.acc_bits, samples=images,
                            method="mmse", per_channel=True)
    return qnet, qnet.tensors[qnet.input].quantize(images[:2])


@pytest.mark.parametrize("fmt,n", [("int8", 8), ("int4", 4), ("minifloat6", 8), ("fp8_e4m3", 4)])
def test_stem_and_shortcut_run_stacked_and_match_golden(tmp_path, fmt, n):
    """The folded stem and the strided 1x1 shortcut (after a barrier: its PARAM lines load before it) pick the
    stack order on their own (the Gemm too on the 4x4 array, where it has enough channel and output blocks); every
    tensor is the golden model's."""
    config = _config(fmt, fmt, n)
    qnet, x = _stem_shortcut(tmp_path, fmt, config)
    orders = {e["name"]: e["plan"]["order"] for e in compile_network(qnet, config).layers}
    assert orders["c1"] == orders["c4"] == "stack", orders
    assert_every_tensor_matches_golden(qnet, config, x)


@pytest.mark.parametrize("fmt,rows,cols", [("int8", 4, 8), ("int8", 8, 4), ("int4", 4, 8)],
                         ids=["4x8", "8x4", "4x8-int4-packed"])
def test_stacked_layers_on_rectangular_arrays_match_golden(tmp_path, fmt, rows, cols):
    """A wide array loads its patches a line at a time, a tall one stores a line at a time (sw/compiler/lines.py):
    the stacked jobs' LOADs and STOREs go through the same helpers. A packed int4 4x8 engine's weight tiles hold
    8 reduction rows, not its 4 PE rows."""
    config = _config(fmt, fmt, rows, cols=cols, dma_bits=32)
    assert config.reduction_rows == (8 if fmt == "int4" else rows)
    qnet, x = _stem_shortcut(tmp_path, fmt, config)
    assert "stack" in {e["plan"]["order"] for e in compile_network(qnet, config).layers}
    assert_every_tensor_matches_golden(qnet, config, x)


def _one_by_one(channels: int, cout: int, size: tuple[int, int], stride: int = 1, fmt: str = "int8",
                acc_bits: int | None = None):
    rng = np.random.default_rng(channels + cout)
    w = rng.integers(0, 1 << get_format(fmt).bits, (cout, channels, 1, 1)).astype(np.uint8)
    attrs = dict(kernel=(1, 1), stride=(stride, stride), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)
    out = (cout, -(-size[0] // stride), -(-size[1] // stride))
    return _single("conv", attrs, (channels, *size), out, [w], fmt=fmt, acc_bits=acc_bits,
                   shift=np.full(cout, 40 if fmt == "int8" else 34))


def _layout(config, channels, cout, size, rows):
    """The stack layout and chunk spans of the 1x1 job of :func:`_one_by_one` at ``rows`` rows per chunk."""
    job = ConvJob("L", [Source(Region(0, 0), channels, np.ones((1, 1, 1, channels, cout), np.int64))], *size, cout,
                  (1, 1), 1, 1, (0, 0, 0, 0), 0, None, Region(0, 0))
    layout = _stack_layout(config, job, rows, _tiles(config, job))
    return layout, stack_spans(config, job, layout, rows)


@pytest.mark.parametrize("channels,cout,size,rows,act_depth,what", [
    (24, 12, (16, 6), 5, 256, "shared"),   # 6 blocks of 4 channels in chunks of 30 lines: 8 slots, patches share
    (80, 12, (16, 6), 2, 1024, "taps"),    # 20 blocks: two COMPUTEs per output tile (15 taps at most)
    (16, 32, (16, 16), 8, 1024, "ramp"),   # chunk heights ramp up to the plan's
])
def test_shared_slots_long_reductions_and_ramps_match_golden(channels, cout, size, rows, act_depth, what):
    config = _config("int8", "int8", 4, act_buffer_depth=act_depth)
    net = _one_by_one(channels, cout, size)
    compiled = compile_network(net, config, order="stack", max_rows=rows)
    (entry,) = compiled.layers
    assert entry["plan"]["order"] == "stack"
    layout, spans = _layout(config, channels, cout, size, entry["plan"]["rows"])
    assert {"shared": layout.shared > 0, "taps": layout.n > 15,
            "ramp": spans[0][1] < entry["plan"]["rows"] < 16}[what], (layout, spans)
    x = random_inputs(np.random.default_rng(2), net, 1)
    dram, _ = _emulate(compiled, x[0])
    np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), run_network(net, x)[0])


def _pooled(net, kernel, stride, padding):
    """``net`` (one layer x -> y) followed by a max pool y -> z, which the compiler fuses into the layer."""
    from sw.ir import QuantLayer
    c, h, w = net.shapes[net.output]
    out = (c, (h + padding[0] + padding[2] - kernel[0]) // stride[0] + 1,
           (w + padding[1] + padding[3] - kernel[1]) // stride[1] + 1)
    pool = QuantLayer("P", "maxpool", [net.output], "z", dict(kernel=kernel, stride=stride, padding=padding,
                                                              dilation=(1, 1)))
    return type(net)(net.act_format, net.weight_format, net.acc_bits, net.input, "z", {**net.shapes, "z": out},
                     {**net.tensors, "z": net.tensors[net.output]}, [*net.layers, pool])


@pytest.mark.parametrize("kernel,stride,padding,rows", [((2, 2), (2, 2), (0, 0, 0, 0), 2),
                                                        ((3, 3), (2, 2), (0, 0, 0, 0), 3)],
                         ids=["in-place", "overlapping"])
def test_a_fused_max_pool_runs_stacked_and_matches_golden(kernel, stride, padding, rows):
    """A 1x1 convolution's fused max pool (in place, or an overlapping 3x3/2 in accumulator regions of its own)
    pools each stacked output tile before its STORE, as in ``chunk`` order; the chunks of the ramp are whole
    pooled rows."""
    config = _config("int8", "int8", 4, act_buffer_depth=1024)
    net = _pooled(_one_by_one(20, 16, (12, 10)), kernel, stride, padding)
    compiled = compile_network(net, config, order="stack", max_rows=rows)
    (entry,) = compiled.layers
    assert entry["plan"]["order"] == "stack" and entry["fused"] == ["P"], entry
    assert " ALU op=MAX " in compiled.program.listing()
    x = random_inputs(np.random.default_rng(4), net, 1)
    dram, _ = _emulate(compiled, x[0])
    np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), run_network(net, x)[0])


def _plans(net, config, x) -> dict:
    """The plan the cost model picks for one-layer ``net`` and the best ``chunk``-order one, each compiled and
    emulated on ``x[0]``: order -> (compiled, its layer entry, external memory after the run, status)."""
    runs = {}
    for order in (None, "chunk"):
        compiled = compile_network(net, config, order=order)
        (entry,) = compiled.layers
        dram, status = _emulate(compiled, x[0])
        runs[entry["plan"]["order"]] = (compiled, entry, dram, status)
    return runs


def measured_plans(net, config, x) -> dict:
    """:func:`_plans`, each run checked against the golden model: order -> (cycles, instructions, estimate)."""
    runs = {}
    for order, (compiled, entry, dram, status) in _plans(net, config, x).items():
        np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), run_network(net, x)[0])
        runs[order] = (status.cycles, len(compiled.program.words), entry["plan"]["estimated_cycles"])
    return runs


def test_the_cost_model_picks_stack_where_the_emulator_agrees():
    """A ResNet-like folded stem (16 output rows) at 16x16: the plan is stack, its estimate within 2 % of the
    emulated cycles, and the emulator runs it faster than the best chunk-order plan."""
    rng = np.random.default_rng(0)
    w = rng.integers(0, 256, (64, 3, 7, 7)).astype(np.uint8)
    attrs = dict(kernel=(7, 7), stride=(2, 2), padding=(3, 3, 3, 3), dilation=(1, 1), groups=1)
    net = _single("conv", attrs, (3, 32, 224), (64, 16, 112), [w], shift=np.full(64, 44))
    config = AcceleratorConfig(rows=16, cols=16)
    x = random_inputs(rng, net, 1)
    cycles = {order: (status.cycles, entry["plan"]["estimated_cycles"])
              for order, (_, entry, _, status) in _plans(net, config, x).items()}
    emulated, estimate = cycles["stack"]
    assert abs(estimate - emulated) <= 0.02 * emulated, cycles
    assert emulated < cycles["chunk"][0], cycles


@pytest.mark.parametrize("rows,cols,dma_bits,weight_depth", [(4, 4, 64, 64), (4, 8, 32, 256), (8, 4, 32, 256)],
                         ids=["4x4-groups", "4x8", "8x4"])
def test_a_long_gemm_stacks_its_taps_and_pays(rows, cols, dma_bits, weight_depth):
    """A Gemm's single vector takes a weight LOAD and a COMPUTE per channel block in ``chunk`` order, so the fetch
    bounds it (12 cycles an instruction); stacked, an output block's 64 blocks are a few COMPUTEs, its patches one LOAD.
    With 64 weight lines a slot holds 8 tiles, so each output block takes a step per group of 8 taps
    (``StackLayout.group``), one 1x8 COMPUTE each (a vector's lines read as a kernel's row); a rectangular array's lines
    hold its longer side. The cost model picks stack, its estimate within 20 % of the emulator's cycles; the result is
    the golden model's, in fewer cycles and a third of the instructions of ``chunk`` order."""
    rng = np.random.default_rng(3)
    w = rng.integers(0, 256, (24, 256)).astype(np.uint8)
    net = _single("linear", {}, (256,), (24,), [w], shift=np.full(24, 40))
    config = _config("int8", "int8", rows, cols=cols, dma_bits=dma_bits, weight_buffer_depth=weight_depth)
    x = random_inputs(rng, net, 1)
    runs = {}
    for order, (compiled, entry, dram, status) in _plans(net, config, x).items():
        np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), run_network(net, x)[0])
        runs[order] = (status.cycles, len(compiled.program.words), compiled.program.listing(),
                       entry["plan"]["estimated_cycles"])
    stacked, chunked = runs["stack"], runs["chunk"]
    if weight_depth == 64:
        assert " kh=1 kw=8 " in stacked[2] and " kw=15 " not in stacked[2]
    assert abs(stacked[3] - stacked[0]) <= 0.2 * stacked[0], stacked[::3]
    assert stacked[0] < chunked[0] and 3 * stacked[1] < chunked[1], (stacked[::3], chunked[::3])


def test_a_gemm_of_more_channel_blocks_than_a_load_holds_stacks_in_groups_one_load_each():
    """4,096 inputs on a 4-row array are 1,024 channel blocks, one more than a LOAD's ``y_size`` holds, with a
    weight buffer that would hold them all twice: the groups are capped at what one weight LOAD loads, and the
    result is the golden model's."""
    config = _config("int8", "int8", 4, act_buffer_depth=2048, weight_buffer_depth=8192, max_reduction=1 << 20)
    rng = np.random.default_rng(3)
    w = rng.integers(120, 136, (12, 4096)).astype(np.uint8)
    net = _single("linear", {}, (4096,), (12,), [w], shift=np.full(12, 48), acc_bits=config.acc_bits)
    compiled = compile_network(net, config)
    assert compiled.layers[0]["plan"]["order"] == "stack"
    x = random_inputs(rng, net, 1)
    dram, _ = _emulate(compiled, x[0])
    np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), run_network(net, x)[0])


def test_a_pooled_stem_stacks_where_the_fetch_bounds_it():
    """On an engine whose stepped decoder takes 194 to 264 cycles an instruction (the iCEBreaker's), a folded stem's
    output tile in ``chunk`` order is a weight LOAD and a COMPUTE per channel block, then its pooling ALUs and a
    STORE. Stacked it is one of each: the cost model picks stack (its all-zero weight tiles kept, as every output
    block must read every channel block), its estimate within 20 % of the emulator's cycles, the result the golden
    model's in fewer cycles and half the instructions."""
    config = _config("int4", "int4", 2, act_buffer_depth=256, decode_stepped=True)
    net = _pooled(_one_by_one(10, 8, (12, 12), fmt="int4", acc_bits=config.acc_bits), (2, 2), (2, 2), (0, 0, 0, 0))
    weights = net.layers[0].weights[0]
    weights[:4, 2:4] = 0                   # an all-zero 2x2 tile, which chunk order leaves out
    runs = measured_plans(net, config, random_inputs(np.random.default_rng(5), net, 1))
    stacked, chunked = runs["stack"], runs["chunk"]
    assert abs(stacked[2] - stacked[0]) <= 0.2 * stacked[0], stacked
    assert stacked[0] < chunked[0] and 2 * stacked[1] < chunked[1], (stacked, chunked)


@pytest.mark.parametrize("taps,flat,shapes", [(64, True, [(8, 8)]), (17, True, [(1, 15), (1, 2)]),
                                              (225, True, [(15, 15)]), (17, False, [(15, 1), (2, 1)])])
def test_kernel_shapes(taps, flat, shapes):
    """A vector's stacked taps (lines back to back) are kh x kw kernels of up to 15 x 15, exact where they factor;
    a map's are n x 1 kernels of at most 15 rows."""
    assert kernel_shapes(taps, flat) == shapes


def test_a_gemm_of_a_prime_number_of_channel_blocks_matches_golden():
    """17 channel blocks on a 4-row array: a 1x15 and a 1x2 COMPUTE per output block, the result the golden
    model's."""
    config = _config("int8", "int8", 4, dma_bits=32, weight_buffer_depth=256)
    rng = np.random.default_rng(8)
    w = rng.integers(0, 256, (24, 68)).astype(np.uint8)
    net = _single("linear", {}, (68,), (24,), [w], shift=np.full(24, 38))
    compiled = compile_network(net, config, order="stack")
    assert compiled.layers[0]["plan"]["order"] == "stack"
    listing = compiled.program.listing()
    assert " kh=1 kw=15 " in listing and " kh=1 kw=2 " in listing
    x = random_inputs(rng, net, 1)
    dram, _ = _emulate(compiled, x[0])
    np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), run_network(net, x)[0])
