"""The ``tall`` loop order (sw/compiler/tall.py): a chunk's channel-block patches as the rows of one tall kernel,
one weight LOAD and one COMPUTE per output block. Golden == emulator (padded, strided, a short last chunk, a fused
pool, every format); the cost model picks it where the instruction fetch bounds the job."""

import numpy as np
import pytest

from sim.random_network import random_inputs
from sw.compiler.network import compile_network
from sw.compiler.tall import tall_tiles
from sw.compiler.program import Region
from sw.compiler.tiling import ConvJob, Source, _tiles, job_depth
from sw.golden.network import run_network
from hw.spec.formats import get_format
from tests.sw.test_compiler_network import _config, _emulate, _single
from tests.sw.test_compiler_stack import _pooled, measured_plans


def _conv(channels: int, cout: int, size: tuple[int, int], kernel: int, stride: int, pad: int, fmt: str,
          acc_bits: int):
    rng = np.random.default_rng(channels * cout + kernel)
    w = rng.integers(0, 1 << get_format(fmt).bits, (cout, channels, kernel, kernel)).astype(np.uint8)
    attrs = dict(kernel=(kernel, kernel), stride=(stride, stride), padding=(pad,) * 4, dilation=(1, 1), groups=1)
    out = (cout, (size[0] + 2 * pad - kernel) // stride + 1, (size[1] + 2 * pad - kernel) // stride + 1)
    return _single("conv", attrs, (channels, *size), out, [w], fmt=fmt, acc_bits=acc_bits,
                   shift=np.full(cout, {"int8": 42, "int4": 36}.get(fmt, 31)))


@pytest.mark.parametrize("fmt,kernel,stride,pad,size,rows", [
    ("int8", 3, 1, 1, (9, 7), 2),          # padded, a short last chunk (9 rows in chunks of 2)
    ("int8", 3, 2, 1, (11, 8), 1),         # strided
    ("int4", 2, 1, 0, (6, 6), 3),          # an even kernel, unpadded
    ("minifloat6", 3, 1, 1, (5, 5), 1),
    ("int8", 1, 1, 0, (4, 5), 2),          # a 1x1 convolution: an n x 1 kernel over the chunk's rows
])
def test_tall_kernels_match_golden(fmt, kernel, stride, pad, size, rows):
    config = _config(fmt, fmt, 4, act_buffer_depth=512, weight_buffer_depth=512)
    net = _conv(12, 8, size, kernel, stride, pad, fmt, config.acc_bits)
    compiled = compile_network(net, config, order="tall", max_rows=rows)
    (entry,) = compiled.layers
    assert entry["plan"]["order"] == "tall", entry
    in_rows = (entry["plan"]["rows"] - 1) * stride + kernel
    assert f" kh={2 * in_rows + kernel} " in compiled.program.listing()    # 3 channel blocks: at rows 0, in, 2 in
    x = random_inputs(np.random.default_rng(7), net, 1)
    dram, _ = _emulate(compiled, x[0])
    np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), run_network(net, x)[0])


def _job(channels: int, cout: int, size: tuple[int, int], kernel: int):
    """A padded ``kernel`` x ``kernel`` convolution job at stride 1."""
    weights = np.ones((1, kernel, kernel, channels, cout), np.int64)
    return ConvJob("L", [Source(Region(0, 0), channels, weights)], *size, cout, (kernel, kernel), 1, 1,
                   (1, 1, 1, 1), 0, None, Region(0, 0))


def test_blocks_whose_kernel_exceeds_the_compute_field_run_in_groups():
    """Three channel blocks of 7-row patches would make a 17-row kernel, beyond COMPUTE's 15: the blocks go in
    groups of two (a 10-row and a 3-row tall tile); patches so tall that not even two blocks fit one kernel get no
    tall tiles. A 7x7 kernel's patches are at least 7 rows, so its three blocks always run in groups: an output
    block's two tall tiles load by one LOAD into one slot, and the result is the golden model's."""
    config = _config("int8", "int8", 4, act_buffer_depth=1024, weight_buffer_depth=2048)
    job = _job(12, 8, (10, 6), 3)
    dense = _tiles(config, job, dense=True)
    assert tall_tiles(config, job, dense, 7, job_depth(config, job)).groups == [(0, 10, 0, 3), (0, 3, 0, 3)]
    assert tall_tiles(config, job, dense, 13, job_depth(config, job)) is None
    net = _conv(12, 8, (10, 6), 7, 1, 3, "int8", config.acc_bits)
    compiled = compile_network(net, config, order="tall")
    (entry,) = compiled.layers
    assert entry["plan"]["order"] == "tall", entry
    in_rows = entry["plan"]["rows"] + 6
    listing = compiled.program.listing()
    assert f" kh={in_rows + 7} kw=7 " in listing and " kh=7 kw=7 " in listing
    assert f" y_size={(in_rows + 14) * 7} x_size=4 " in listing
    x = random_inputs(np.random.default_rng(9), net, 1)
    dram, _ = _emulate(compiled, x[0])
    np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), run_network(net, x)[0])


def test_a_pooled_conv_runs_tall_where_the_fetch_bounds_it():
    """On an engine whose stepped decoder takes about 200 to 260 cycles an instruction (the iCEBreaker's), a 3x3
    convolution with a fused 2x2 max pool takes a weight LOAD and a COMPUTE per channel block and output tile in
    ``chunk`` order; tall, one of each per output tile (the zero rows between the blocks' kernels cost taps, not
    instructions). The cost model picks tall, and the result is the golden model's in about half the cycles and
    instructions."""
    config = _config("int4", "int4", 2, act_buffer_depth=256, decode_stepped=True)
    net = _pooled(_conv(8, 8, (12, 12), 3, 1, 1, "int4", config.acc_bits), (2, 2), (2, 2), (0, 0, 0, 0))
    runs = measured_plans(net, config, random_inputs(np.random.default_rng(5), net, 1))
    tall, chunked = runs["tall"], runs["chunk"]
    assert tall[0] < 0.6 * chunked[0] and tall[1] < 0.6 * chunked[1], (tall, chunked)


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2"])
def test_formats_with_nan_or_inf_keep_chunk_order(fmt):
    """A tall window covers rows outside an output's receptive field (the zero rows between the blocks' kernels, a
    short chunk's unused rows): a NaN or Inf code there would make a finite output NaN. Formats that have them get
    no tall tiles, and a NaN in the input pools into the outputs exactly as in the golden model."""
    config = _config(fmt, fmt, 4, act_buffer_depth=512, weight_buffer_depth=512)
    job = _job(8, 8, (8, 6), 3)
    assert tall_tiles(config, job, _tiles(config, job, dense=True), 4, job_depth(config, job)) is None
    net = _conv(8, 8, (8, 6), 3, 1, 1, fmt, config.acc_bits)
    compiled = compile_network(net, config, order="tall", max_rows=2)
    assert compiled.layers[0]["plan"]["order"] != "tall"
    x = random_inputs(np.random.default_rng(10), net, 1)
    x[0, 0, 2, 3] = get_format(fmt).nan_code
    dram, _ = _emulate(compiled, x[0])
    np.testing.assert_array_equal(compiled.read_tensor(dram, net.output), run_network(net, x)[0])
