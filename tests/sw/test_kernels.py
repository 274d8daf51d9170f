"""GEMM and convolution programs on the emulator against the golden model (im2col written here)."""

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import product_of
from sw.compiler.kernels import Requant, conv2d_program, gemm_program, read_conv2d_output, read_gemm_output
from sw.emulator import Emulator
from sw.golden import gemm
from sw.golden.postprocess import rescale


def _config(weights, acts, rows=4, cols=4, **kw):
    return AcceleratorConfig(rows=rows, cols=cols, weight_format=weights, act_format=acts,
                             **{"act_buffer_depth": 512, "weight_buffer_depth": 128, "acc_buffer_depth": 128,
                                "param_buffer_depth": 8, **kw})


def _requant(rng, n, fmt):
    return Requant(rng.integers(-100, 100, n), rng.integers(1, 1 << 20, n), rng.integers(8, 30, n), 0,
                   int(fmt.quantize(fmt.min)), int(fmt.quantize(fmt.max)))


def _expected(cols, w2d, config, q):
    g = gemm(cols, w2d, config.acts, config.weights)
    return rescale(g.value, g.nonfinite, product_of(config.acts, config.weights).min_exponent, q.bias,
                   q.multiplier, q.shift, config.acts, q.zero_point, q.clamp_lo, q.clamp_hi)


@pytest.mark.parametrize("weights,acts,rows,cols", [("int8", "int8", 4, 4), ("minifloat6", "minifloat6", 4, 8),
                                                    ("int4", "int8", 8, 4), ("fp8_e4m3", "fp8_e4m3", 2, 2)])
@pytest.mark.parametrize("m,k,n", [(70, 10, 9), (1, 4, 4), (300, 3, 1)])
def test_gemm(weights, acts, rows, cols, m, k, n):
    config = _config(weights, acts, rows, cols)
    rng = np.random.default_rng(m + k + n)
    a = rng.integers(0, 1 << config.acts.bits, (m, k))
    w = rng.integers(0, 1 << config.weights.bits, (k, n))
    q = _requant(rng, n, config.acts)
    program = gemm_program(config, a, w, q)
    emulator = Emulator(config, bytes(program.dram))
    status = emulator.run(program.program_addr)
    assert status.done and status.error.name == "NONE"
    np.testing.assert_array_equal(read_gemm_output(program, emulator.dram, m, n), _expected(a, w, config, q))


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 0, 2), (1, 2, 1), (2, 0, 1)])
@pytest.mark.parametrize("weights,acts", [("int8", "int8"), ("minifloat6", "minifloat6")])
def test_conv2d(stride, padding, dilation, weights, acts):
    config = _config(weights, acts)
    rng = np.random.default_rng(stride * 10 + padding)
    h, wd, cin, cout, k = 9, 7, 6, 5, 3
    x = rng.integers(0, 1 << config.acts.bits, (h, wd, cin))
    w = rng.integers(0, 1 << config.weights.bits, (k, k, cin, cout))
    q = _requant(rng, cout, config.acts)
    program = conv2d_program(config, x, w, q, stride=stride, padding=padding, dilation=dilation)
    emulator = Emulator(config, bytes(program.dram))
    assert emulator.run(program.program_addr).done
    ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    wo = (wd + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    xp = np.zeros((h + 2 * padding, wd + 2 * padding, cin), np.int64)
    xp[padding:padding + h, padding:padding + wd] = x
    cols = np.array([[xp[oy * stride + ky * dilation, ox * stride + kx * dilation]
                      for ky in range(k) for kx in range(k)] for oy in range(ho) for ox in range(wo)])
    expected = _expected(cols.reshape(ho * wo, -1), w.reshape(-1, cout), config, q).reshape(ho, wo, cout)
    np.testing.assert_array_equal(read_conv2d_output(program, emulator.dram, ho, wo, cout), expected)


def test_layer_too_big_is_a_clear_error():
    config = _config("int8", "int8")
    with pytest.raises(ValueError, match=r"layer 'convolution 9x2000x4 -> 4 \(3x3\)' cannot be mapped onto this engine: one "
                                         r"output row \(1998 accumulator lines"):
        conv2d_program(config, np.zeros((9, 2000, 4), int), np.zeros((3, 3, 4, 4), int),
                       Requant([0] * 4, [1] * 4, [0] * 4))


def test_reduction_beyond_max_reduction_is_refused():
    """More products than the accumulators hold exactly would wrap silently: the kernel refuses."""
    config = AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8", max_reduction=16)
    with pytest.raises(ValueError, match=r"GEMM with K=64 sums 64 products per output, more than the 16 .*"
                                         r"--max-reduction"):
        gemm_program(config, np.zeros((4, 64), int), np.zeros((64, 4), int), Requant([0] * 4, [1] * 4, [0] * 4))
    # A convolution is held to the largest sum its weights can make: 72 products of -128 x -128 do not fit 20 bits,
    # 72 products of weight 1 do.
    with pytest.raises(ValueError, match=r"convolution 5x5x8 -> 4 \(3x3\)' cannot be mapped onto this engine: its "
                                         r"sums can reach 1179648, beyond what 20-bit accumulators hold exactly"):
        conv2d_program(config, np.zeros((5, 5, 8), int), np.full((3, 3, 8, 4), 0x80),
                       Requant([0] * 4, [1] * 4, [0] * 4), padding=1)
    conv2d_program(config, np.zeros((5, 5, 8), int), np.ones((3, 3, 8, 4), int), Requant([0] * 4, [1] * 4, [0] * 4),
                   padding=1)
    # Zero weights add nothing: a depthwise-like kernel with 9 non-zero products per output fits.
    w = np.zeros((3, 3, 8, 4), int)
    w[:, :, np.arange(4), np.arange(4)] = 1
    conv2d_program(config, np.zeros((5, 5, 8), int), w, Requant([0] * 4, [1] * 4, [0] * 4), padding=1)


@pytest.mark.parametrize("stride", [2, 3])
@pytest.mark.parametrize("h,wd", [(9, 7), (8, 8), (5, 11), (1, 4)])
def test_strided_1x1_convolution_loads_only_the_rows_it_reads(stride, h, wd):
    """A 1x1 convolution at stride s loads every s-th input row (its LOADs' DRAM stride is s rows) and walks
    them with a COMPUTE row pitch of the padded width / s; the outputs are the definition's."""
    from hw.spec.isa import Buffer, Opcode, decode
    from hw.spec.layout import line_bytes

    config = _config("int8", "int8")
    rng = np.random.default_rng(h * wd + stride)
    cin, cout = 6, 5
    x = rng.integers(0, 256, (h, wd, cin))
    w = rng.integers(0, 256, (1, 1, cin, cout))
    q = _requant(rng, cout, config.acts)
    program = conv2d_program(config, x, w, q, stride=stride)
    emulator = Emulator(config, bytes(program.dram))
    assert emulator.run(program.program_addr).done
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    cols = x[::stride, ::stride].reshape(ho * wo, cin)
    expected = _expected(cols, w.reshape(cin, cout), config, q).reshape(ho, wo, cout)
    np.testing.assert_array_equal(read_conv2d_output(program, emulator.dram, ho, wo, cout), expected)
    row = wd * line_bytes(Buffer.ACT, config)
    loads = [f for kind, f in map(decode, program.words)
             if kind.opcode is Opcode.LOAD and f["buffer"] == Buffer.ACT]
    assert loads and all(f["y_size"] == 1 or f["dram_stride"] == stride * row for f in loads)
    assert sum(f["y_size"] for f in loads) == ho * -(-cin // config.rows)


def test_strided_1x1_convolution_keeps_its_rows_where_skipping_would_not_fit():
    """A strip sized for the map's own width: the right padding that row skipping adds would not fit the buffers,
    so the job is planned as it was (the review's case: 40x40, 1x1, stride 3, 32 activation lines)."""
    from sw.compiler.splitting import split_job
    from sw.compiler.tiling import ConvJob, Region, Source, plan_job

    config = _config("int8", "int8", act_buffer_depth=32)
    rng = np.random.default_rng(3)
    job = ConvJob("strided", [Source(Region(0, 1 << 16), 4, rng.integers(-5, 5, (1, 1, 1, 4, 4)))], 40, 40, 4,
                  (1, 1), 3, 1, (0, 0, 0, 0), 0, _requant(rng, 4, config.acts), Region(0, 1 << 16))
    for part in split_job(config, job):
        plan_job(config, part)                      # every part plans (raised LayoutError before)
