"""Resize (nearest), DepthToSpace and ConvTranspose on the engine (sw/ops/resize.py, depth_to_space.py,
conv_transpose.py): the float import against onnxruntime, the golden model against naive references written
from the operators' definitions (np.repeat; index formulas; the scatter-add of a transposed convolution), and
compiled networks against the golden model on the emulator, tensor by tensor."""

import numpy as np
import pytest
from onnx import helper

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from sw.compiler.network import compile_network
from sw.frontend import FrontendError, load_onnx
from sw.golden.network import run_network
from sw.quantize import quantize_network
from sw.runtime import run_codes
from test_frontend import check, init, model, rand  # noqa: E402 - tests/sw is on sys.path


#: Engines the compiled networks run on: n x n, and rectangular (rows, cols, bus bits) ones, tall and wide, whose
#: tensor lines are dense (8x4 on 32 bits, 8x16 on 64) or hold min(rows, cols) channels (4x16 on 64, 16x8 on 128).
ENGINES = [4, 16, (8, 4, 32), (4, 16, 64), (8, 16, 64), (16, 8, 128)]


def _engine_id(n) -> str:
    return f"{n}x{n}" if isinstance(n, int) else f"{n[0]}x{n[1]}@{n[2]}"


def _compiled_equals_golden(m, in_shape, fmt, n, samples=8, seed=0):
    """Quantize ``m``, compile it for an n x n engine (or a (rows, cols, bus bits) one), and check every stored
    tensor on the emulator."""
    net = load_onnx(m)
    rows, cols, dma = (n, n, 128) if isinstance(n, int) else n
    config = AcceleratorConfig(rows=rows, cols=cols, dma_bits=dma, weight_format="int8" if fmt == "uint8" else fmt,
                               act_format=fmt)
    x = np.random.default_rng(seed).standard_normal((samples, *in_shape)).astype(np.float32)
    q = quantize_network(net, act_format=config.acts.name, weight_format=config.weights.name,
                         acc_bits=config.acc_bits, samples=x)
    compiled = compile_network(q, config)
    codes = q.tensors[q.input].quantize(x[:2])
    golden = run_network(q, codes, keep=True)
    emulated = run_codes(compiled, codes, "emulator", keep=True)
    for i in range(2):
        for name in compiled.materialized:
            np.testing.assert_array_equal(emulated.tensors[i][name], golden[name][i], err_msg=name)
    return q, compiled


# --- import and the float reference ---------------------------------------------------------------------------

RESIZES = [  # (opset, attributes, scales or None, sizes or None, engine?)
    (13, {"mode": "nearest"}, [1, 1, 2, 2], None, True),                      # half_pixel, round_prefer_floor
    (13, {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
     [1, 1, 3, 2], None, True),                                                  # torch's nearest
    (13, {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "round_prefer_ceil"},
     [1, 1, 3, 3], None, False),                                                 # not a replication
    (13, {"mode": "nearest"}, None, [1, 4, 10, 4], True),                        # sizes
    (13, {"mode": "linear"}, [1, 1, 2, 2], None, False),
    (13, {"mode": "nearest"}, [1, 1, 1.5, 1.5], None, False),
]


@pytest.mark.parametrize("case", RESIZES, ids=range(len(RESIZES)))
def test_resize_imports_as_onnx_computes_it(case):
    opset, attrs, scales, sizes, engine = case
    inits = [init("w", rand(4, 3, 1, 1)), init("roi", np.zeros(0, np.float32))]
    inputs = ["c", "roi"]
    if scales is not None:
        inits.append(init("sc", np.array(scales, np.float32)))
        inputs.append("sc")
    else:
        inits += [init("sc", np.zeros(0, np.float32)), init("sz", np.array(sizes, np.int64))]
        inputs += ["sc", "sz"]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Resize", inputs, ["y"], **attrs)]
    # Sizes fix the batch: the frontend runs one sample at a time, as the host evaluates such a node.
    net = check(model(nodes, (3, 5, 2), None, inits, opset), (3, 5, 2), batch=1 if sizes else 3)
    assert [layer.op for layer in net.layers][1] == ("resize" if engine else "host")


def test_upsample_imports_as_onnx_computes_it():
    nodes = [helper.make_node("Upsample", ["x", "sc"], ["y"], mode="nearest")]
    net = check(model(nodes, (3, 4, 5), None, [init("sc", np.array([1, 1, 2, 3], np.float32))], 9), (3, 4, 5))
    assert [layer.op for layer in net.layers] == ["resize"]


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_imports_as_onnx_computes_it(mode):
    nodes = [helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode=mode)]
    net = check(model(nodes, (12, 3, 4), None), (12, 3, 4))
    assert [layer.op for layer in net.layers] == ["depthtospace"]


CONV_TRANSPOSES = [  # (in channels, out channels, kernel, stride, pads, output_padding, group)
    (4, 6, (2, 2), (2, 2), (0, 0, 0, 0), (0, 0), 1),            # the U-Net's up-convolution
    (3, 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    (4, 3, (3, 2), (3, 2), (0, 1, 2, 0), (2, 1), 1),
    (2, 4, (1, 1), (2, 2), (0, 0, 0, 0), (1, 0), 1),            # phases without taps
    (6, 4, (4, 4), (2, 2), (1, 1, 1, 1), (0, 0), 2),
    (3, 7, (3, 3), (1, 1), (2, 0, 1, 1), (0, 0), 1),
    (5, 5, (5, 3), (3, 1), (4, 1, 0, 0), (1, 0), 1),            # padding at the kernel's reach
]


@pytest.mark.parametrize("case", CONV_TRANSPOSES, ids=range(len(CONV_TRANSPOSES)))
def test_conv_transpose_imports_as_onnx_computes_it(case):
    cin, cout, kernel, stride, pads, out_pad, group = case
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=list(stride), pads=list(pads),
                              output_padding=list(out_pad), group=group)]
    inits = [init("w", rand(cin, cout // group, *kernel)), init("b", rand(cout))]
    net = check(model(nodes, (cin, 4, 5), None, inits), (cin, 4, 5), rtol=1e-4, atol=1e-4)
    assert [layer.op for layer in net.layers] == ["convtranspose"]


def test_conv_transpose_folds_batch_norm_and_relu():
    c = 4
    inits = [init("w", rand(3, c, 2, 2)), init("g", rand(c) + 2), init("be", rand(c)), init("mu", rand(c)),
             init("var", np.abs(rand(c)) + 0.5)]
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["t"], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["t", "g", "be", "mu", "var"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    net = check(model(nodes, (3, 3, 3), None, inits), (3, 3, 3), rtol=1e-4, atol=1e-4)
    assert [layer.op for layer in net.layers] == ["convtranspose"] and net.layers[0].clip is not None


def test_dilated_conv_transpose_runs_on_the_host_or_is_refused():
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], dilations=[2, 2])]
    m = model(nodes, (3, 4, 4), None, [init("w", rand(3, 2, 2, 2))])
    with pytest.raises(FrontendError, match="dilation 1.*--engine-only"):
        load_onnx(m, engine_only=True)
    assert [layer.op for layer in load_onnx(m).layers] == ["host"]


# --- the golden model against references written from the definitions ---------------------------------------

def _quantized(m, in_shape, fmt="uint8"):
    net = load_onnx(m)
    x = np.random.default_rng(1).standard_normal((8, *in_shape)).astype(np.float32)
    q = quantize_network(net, act_format=fmt, weight_format="int8", acc_bits=32, samples=x)
    return q, q.tensors[q.input].quantize(x[:3])


def test_golden_resize_and_depth_to_space_move_codes():
    nodes = [helper.make_node("Resize", ["x", "", "sc"], ["u"], mode="nearest"),
             helper.make_node("DepthToSpace", ["u"], ["d"], blocksize=2, mode="CRD"),
             helper.make_node("DepthToSpace", ["d"], ["y"], blocksize=1)]
    q, codes = _quantized(model(nodes, (8, 2, 3), None, [init("sc", np.array([1, 1, 3, 2], np.float32))],
                                opset=13), (8, 2, 3))
    got = run_network(q, codes, keep=True)
    up = got[q.layers[0].output]
    np.testing.assert_array_equal(up, np.repeat(np.repeat(codes, 3, axis=2), 2, axis=3))
    d = got[q.layers[1].output]
    n, c, h, w = up.shape
    for co in range(c // 4):
        for oy in range(h * 2):
            for ox in range(w * 2):
                by, bx = oy % 2, ox % 2
                np.testing.assert_array_equal(d[:, co, oy, ox], up[:, co * 4 + by * 2 + bx, oy // 2, ox // 2])


@pytest.mark.parametrize("case", CONV_TRANSPOSES, ids=range(len(CONV_TRANSPOSES)))
@pytest.mark.parametrize("fmt", ["uint8", "minifloat6"])
def test_golden_conv_transpose_is_the_scatter_add_of_products(case, fmt):
    """acc[co, iy*s + ky - pad, ix*s + kx - pad] sums value(x) * value(w) over the input and kernel, plus the zero
    point's value times every weight that meets no input (the zero-inserted map holds zero points there)."""
    cin, cout, kernel, stride, pads, out_pad, group = case
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=list(stride), pads=list(pads),
                              output_padding=list(out_pad), group=group)]
    m = model(nodes, (cin, 4, 5), None, [init("w", rand(cin, cout // group, *kernel)), init("b", rand(cout))])
    q, codes = _quantized(m, (cin, 4, 5), fmt)
    layer = q.layers[0]
    from sw.ops import OPERATORS
    acc = OPERATORS["convtranspose"].golden(layer, [codes], q)
    af, wf = get_format(q.act_format), get_format(q.weight_format)

    def fixed(f, c):
        sig, shift, _ = f.exact(np.asarray(c))
        return sig.astype(object) << shift.astype(object)
    xv, wv = fixed(af, codes), fixed(wf, layer.weights[0])          # w: (cout, cin/g, kh, kw)
    zero = fixed(af, np.array(q.tensors[q.input].zero_code()))
    n, _, h, w = codes.shape
    _, ho, wo = q.shapes[layer.output]
    (kh, kw), (sh, sw), (t, left, _, _) = kernel, stride, pads
    cig, cog = cin // group, cout // group
    want = np.zeros((n, cout, ho, wo), dtype=object)
    met = np.zeros((cout, ho, wo, cig, kh, kw), dtype=bool)
    for co in range(cout):
        g = co // cog
        for ci in range(cig):
            for ky in range(kh):
                for kx in range(kw):
                    for iy in range(h):
                        for ix in range(w):
                            oy, ox = iy * sh + ky - t, ix * sw + kx - left
                            if 0 <= oy < ho and 0 <= ox < wo:
                                want[:, co, oy, ox] += xv[:, g * cig + ci, iy, ix] * wv[co, ci, ky, kx]
                                met[co, oy, ox, ci, ky, kx] = True
    unmet = np.array([[[sum(wv[co, ci, ky, kx] for ci in range(cig) for ky in range(kh) for kx in range(kw)
                        if not met[co, oy, ox, ci, ky, kx]) for ox in range(wo)] for oy in range(ho)]
                  for co in range(cout)], dtype=object)
    want = want + zero * unmet[None]
    shift = af.lsb_exponent + wf.lsb_exponent - acc.exponent
    np.testing.assert_array_equal(np.asarray(acc.value, dtype=object), want * (1 << shift))


# --- compiled networks on the emulator ------------------------------------------------------------------------

def _decoder(cin, mid, kernel, stride, pads, out_pad, scale, block, mode, relu=True):
    """conv -> ConvTranspose -> Resize (nearest) -> DepthToSpace -> conv."""
    inits = [init("w1", rand(mid, cin, 3, 3, scale=0.5)), init("wt", rand(mid, 4 * block * block, *kernel)),
             init("bt", rand(4 * block * block)), init("sc", np.array([1, 1, *scale], np.float32)),
             init("w2", rand(3, 4, 3, 3))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1])]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
    nodes += [helper.make_node("ConvTranspose", ["r" if relu else "c", "wt", "bt"], ["t"], strides=list(stride),
                               pads=list(pads), output_padding=list(out_pad)),
              helper.make_node("Resize", ["t", "", "sc"], ["u"], mode="nearest"),
              helper.make_node("DepthToSpace", ["u"], ["d"], blocksize=block, mode=mode),
              helper.make_node("Conv", ["d", "w2"], ["y"], pads=[1, 1, 1, 1])]
    return model(nodes, (cin, 5, 6), None, inits)


DECODERS = [  # (cin, mid, kernel, stride, pads, output_padding, scale, block, mode, relu, format)
    (3, 8, (2, 2), (2, 2), (0, 0, 0, 0), (0, 0), (2, 2), 2, "DCR", True, "int8"),
    (3, 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (1, 3), 1, "CRD", False, "uint8"),
    (2, 6, (3, 2), (3, 2), (0, 1, 2, 0), (2, 1), (2, 1), 2, "CRD", False, "uint8"),
    (3, 4, (1, 1), (2, 2), (0, 0, 0, 0), (1, 0), (1, 1), 3, "DCR", True, "minifloat6"),
    (4, 20, (4, 4), (2, 2), (1, 1, 1, 1), (0, 0), (2, 2), 1, "DCR", False, "int8"),
]


@pytest.mark.parametrize("n", ENGINES, ids=_engine_id)
@pytest.mark.parametrize("case", DECODERS, ids=range(len(DECODERS)))
def test_decoder_on_the_engine(case, n):
    *shape, relu, fmt = case
    m = _decoder(*shape, relu=relu)
    check(m, (shape[0], 5, 6), rtol=1e-4, atol=1e-3)
    q, compiled = _compiled_equals_golden(m, (shape[0], 5, 6), fmt, n)
    assert not compiled.host_layers
    # Resize and DepthToSpace ride on the transposed convolution's STOREs: nothing of theirs is a job.
    assert {e["name"] for e in compiled.layers} == {layer.name for layer in q.layers
                                                    if layer.op in ("conv", "convtranspose")}


@pytest.mark.parametrize("case", DECODERS, ids=range(len(DECODERS)))
def test_decoder_on_a_packed_int4_engine(case):
    """A 4x8 int4 engine packs two codes per lane: the scatters count its 8 reduction rows, not its 4 PE rows."""
    *shape, relu, _ = case
    q, compiled = _compiled_equals_golden(_decoder(*shape, relu=relu), (shape[0], 5, 6), "int4", (4, 8, 32))
    assert not compiled.host_layers and compiled.config.reduction_rows == 8


@pytest.mark.parametrize("n", ENGINES, ids=_engine_id)
@pytest.mark.parametrize("fmt", ["int8", "uint8"])
def test_rearranging_by_identity_jobs(fmt, n):
    """Resize of the network's input, a DepthToSpace whose input another layer reads too, both after a host
    layer: identity jobs do them; a max pool after a ConvTranspose is not fused into its phases."""
    inits = [init("sc", np.array([1, 1, 2, 3], np.float32)), init("w", rand(12, 5, 3, 3)),
             init("wt", rand(3, 5, 3, 3)), init("w2", rand(3, 3, 1, 1)), init("w3", rand(3, 12, 1, 1))]
    nodes = [helper.make_node("Resize", ["x", "", "sc"], ["u"], mode="nearest"),
             helper.make_node("Conv", ["u", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=2, mode="CRD"),
             helper.make_node("Conv", ["d", "w2"], ["e"]),
             helper.make_node("MaxPool", ["e"], ["ep"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["c", "w3"], ["f"]),
             helper.make_node("Add", ["f", "ep"], ["a"]),
             helper.make_node("Softmax", ["a"], ["s"], axis=1),
             helper.make_node("ConvTranspose", ["s", "wt"], ["t"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["t"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Resize", ["p", "", "sc"], ["y"], mode="nearest")]
    m = model(nodes, (5, 3, 2), None, inits)
    check(m, (5, 3, 2), rtol=1e-4, atol=1e-4)
    q, compiled = _compiled_equals_golden(m, (5, 3, 2), fmt, n)
    ops = [e["op"] for e in compiled.layers]
    assert ops.count("resize") == 1 and ops.count("depthtospace") == 1 and "maxpool" in ops


def test_data_free_through_conv_transpose_and_resize():
    """Data-free quantization reads a ConvTranspose's folded BatchNormalization statistics, as a Conv's, and
    passes a nearest Resize's input statistics through; the network then runs on the engine exactly."""
    from sw.quantize.data_free import DataFree

    def bn(name, c):
        return [init(f"{name}_g", np.abs(rand(c)) + 0.5), init(f"{name}_b", rand(c)), init(f"{name}_m", rand(c)),
                init(f"{name}_v", np.abs(rand(c)) + 0.5)]
    inits = [init("w1", rand(6, 2, 3, 3)), init("wt", rand(6, 4, 2, 2)), init("w2", rand(3, 4, 3, 3)),
             init("sc", np.array([1, 1, 2, 2], np.float32)), *bn("n1", 6), *bn("n2", 4), *bn("n3", 3)]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "n1_g", "n1_b", "n1_m", "n1_v"], ["b1"]),
             helper.make_node("Relu", ["b1"], ["r1"]),
             helper.make_node("ConvTranspose", ["r1", "wt"], ["t"], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["t", "n2_g", "n2_b", "n2_m", "n2_v"], ["b2"]),
             helper.make_node("Relu", ["b2"], ["r2"]),
             helper.make_node("Resize", ["r2", "", "sc"], ["u"], mode="nearest"),
             helper.make_node("Conv", ["u", "w2"], ["c3"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c3", "n3_g", "n3_b", "n3_m", "n3_v"], ["y"])]
    net = load_onnx(model(nodes, (2, 4, 4), None, inits))
    assert [layer.op for layer in net.layers] == ["conv", "convtranspose", "resize", "conv"]
    config = AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8")
    q = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=config.acc_bits, samples=None,
                         data_free=DataFree())
    up = q.layers[2]
    assert q.tensors[up.output] == q.tensors[up.inputs[0]]
    compiled = compile_network(q, config)
    codes = np.random.default_rng(3).integers(0, 256, (2, 2, 4, 4))
    golden = run_network(q, codes, keep=True)
    emulated = run_codes(compiled, codes, "emulator", keep=True)
    for i in range(2):
        for name in compiled.materialized:
            np.testing.assert_array_equal(emulated.tensors[i][name], golden[name][i], err_msg=name)


@pytest.mark.parametrize("op", ["ConvTranspose", "Resize", "DepthToSpace"])
def test_golden_model_is_onnxruntime_within_quantization(op):
    """The quantized layer alone, on int8: its golden output dequantized is onnxruntime's float output, up to the
    quantization (exactly the dequantized input moved, for the operators that only move codes)."""
    from test_frontend import ort_run
    inits = [init("wt", rand(8, 6, 3, 3)), init("bt", rand(6)), init("sc", np.array([1, 1, 2, 3], np.float32))]
    node = {"ConvTranspose": helper.make_node("ConvTranspose", ["x", "wt", "bt"], ["y"], strides=[2, 2],
                                              pads=[1, 0, 1, 1], output_padding=[1, 1]),
            "Resize": helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest"),
            "DepthToSpace": helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD")}[op]
    m = model([node], (8, 5, 4), None, inits)
    x = np.random.default_rng(5).standard_normal((8, 8, 5, 4)).astype(np.float32)
    q = quantize_network(load_onnx(m), act_format="int8", weight_format="int8", acc_bits=32, samples=x,
                         per_channel=True)
    x_in = q.tensors[q.input]
    codes = x_in.quantize(x)
    got = q.tensors[q.output].dequantize(run_network(q, codes))
    want = ort_run(m, x_in.dequantize(codes).astype(np.float32))
    assert got.shape == want.shape
    if op == "ConvTranspose":
        assert np.abs(got - want).max() <= 0.02 * np.abs(want).max(), np.abs(got - want).max() / np.abs(want).max()
    else:
        np.testing.assert_array_equal(got.astype(np.float32), want)


def _random_decoder(rng):
    kernel = tuple(int(k) for k in rng.integers(1, 5, 2))
    stride = tuple(int(s) for s in rng.integers(1, 4, 2))
    pads = tuple(int(rng.integers(0, kernel[i % 2])) for i in range(4))
    out_pad = tuple(int(rng.integers(0, s)) for s in stride)
    scale = tuple(int(s) for s in rng.integers(1, 4, 2))
    block, mode = int(rng.integers(1, 4)), str(rng.choice(["DCR", "CRD"]))
    return (int(rng.integers(1, 6)), int(rng.integers(2, 19)), kernel, stride, pads, out_pad, scale, block, mode,
            bool(rng.integers(0, 2)), str(rng.choice(["int8", "uint8", "minifloat6", "int4"])))


@pytest.mark.parametrize("n", ENGINES, ids=_engine_id)
@pytest.mark.parametrize("seed", range(6))
def test_random_decoders_on_the_engine(seed, n):
    """Seeded random strides, kernels, padding, output padding, scales, blocks, modes, channel counts (of the
    DepthToSpace's output: 4, of its input 4 * block**2) and formats."""
    case = _random_decoder(np.random.default_rng(100 + seed))
    *shape, relu, fmt = case
    m = _decoder(*shape, relu=relu)
    check(m, (shape[0], 5, 6), rtol=1e-4, atol=1e-3)
    _, compiled = _compiled_equals_golden(m, (shape[0], 5, 6), fmt, n, seed=seed)
    assert not compiled.host_layers, case


@pytest.mark.parametrize("n", ENGINES, ids=_engine_id)
def test_rearranging_chains(n):
    """DepthToSpace then Resize (both on the conv's STOREs), Resize then DepthToSpace (both too), and a
    DepthToSpace of a DepthToSpace (the second by an identity job: the first's channels are reordered)."""
    inits = [init("w1", rand(32, 3, 3, 3)), init("w2", rand(36, 3, 1, 1)), init("sc", np.array([1, 1, 2, 3], np.float32)),
             init("w3", rand(3, 8, 1, 1)), init("w4", rand(3, 4, 1, 1)), init("w5", rand(3, 2, 3, 3))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),              # 32 x 4 x 4
             helper.make_node("DepthToSpace", ["a"], ["a1"], blocksize=2, mode="CRD"),    # 8 x 8 x 8
             helper.make_node("Resize", ["a1", "", "sc"], ["a2"], mode="nearest"),        # 8 x 16 x 24
             helper.make_node("MaxPool", ["a2"], ["a3"], kernel_shape=[4, 6], strides=[4, 6]),  # 8 x 4 x 4
             helper.make_node("Conv", ["a3", "w3"], ["b"]),                                 # 3 x 4 x 4
             helper.make_node("Conv", ["b", "w2"], ["c"]),                                 # 36 x 4 x 4
             helper.make_node("Resize", ["c", "", "sc"], ["c1"], mode="nearest"),         # 36 x 8 x 12
             helper.make_node("DepthToSpace", ["c1"], ["c2"], blocksize=3, mode="DCR"),   # 4 x 24 x 36
             helper.make_node("MaxPool", ["c2"], ["c3"], kernel_shape=[6, 9], strides=[6, 9]),  # 4 x 4 x 4
             helper.make_node("Conv", ["c3", "w4"], ["d"]),                                 # 3 x 4 x 4
             helper.make_node("Conv", ["d", "w1"], ["e"], pads=[1, 1, 1, 1]),              # 32 x 4 x 4
             helper.make_node("DepthToSpace", ["e"], ["e1"], blocksize=2, mode="DCR"),    # 8 x 8 x 8
             helper.make_node("DepthToSpace", ["e1"], ["e2"], blocksize=2, mode="CRD"),   # 2 x 16 x 16
             helper.make_node("Conv", ["e2", "w5"], ["y"], strides=[2, 2])]
    m = model(nodes, (3, 4, 4), None, inits)
    check(m, (3, 4, 4), rtol=1e-3, atol=1e-2)       # float32 sums of three random layers reach 1e3
    q, compiled = _compiled_equals_golden(m, (3, 4, 4), "int8", n)
    jobs = [e["op"] for e in compiled.layers]
    assert jobs.count("depthtospace") == 1 and "resize" not in jobs, jobs


@pytest.mark.parametrize("n", ENGINES, ids=_engine_id)
@pytest.mark.parametrize("group, stride, pads", [(2, (2, 2), (1, 0, 0, 1)), (6, (3, 3), (2, 2, 1, 1))])
def test_grouped_conv_transpose_on_the_engine(group, stride, pads, n):
    """Groups (6: depthwise) as block-diagonal phase weights; the network's input read directly."""
    inits = [init("wt", rand(6, 12 // group, 3, 3)), init("bt", rand(12)), init("w2", rand(2, 12, 1, 1))]
    nodes = [helper.make_node("ConvTranspose", ["x", "wt", "bt"], ["t"], strides=list(stride), pads=list(pads),
                              group=group),
             helper.make_node("Relu", ["t"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"])]
    m = model(nodes, (6, 4, 3), None, inits)
    check(m, (6, 4, 3), rtol=1e-4, atol=1e-4)
    _, compiled = _compiled_equals_golden(m, (6, 4, 3), "uint8", n)
    assert [e["op"] for e in compiled.layers].count("convtranspose") == stride[0] * stride[1]
