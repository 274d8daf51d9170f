"""The golden layers (sw/golden/layers.py) against naive loops over decoded values and against ONNX operators.

The naive references below index the padded map by hand, one output at a time, and add exact
``fractions.Fraction`` of ``fmt.decode()`` values (itself checked against ml_dtypes in tests/spec); they use
neither im2col nor the integer decomposition of the formats. The post-processing reference rounds a Fraction
with Python's round-half-even and picks minifloat codes by exhaustive search. tests/sw/test_golden_network.py
composes these same references into whole networks.
"""

from __future__ import annotations

import itertools
import zlib
from fractions import Fraction

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from hw.spec.formats import FormatError, IntFormat, get_format
from sw.golden import Accumulation
from sw.golden.layers import (LayerError, concat_values, conv2d, elementwise_sum, global_sum, linear, maxpool,
                              postprocess, run_layer, window_sum)
from sw.ir import QuantizedNetwork, QuantLayer, QuantTensor

# --- naive references --------------------------------------------------------------------------------------

_TABLES: dict[str, list] = {}


def table(name: str) -> list[Fraction | None]:
    """Exact value of every code of a format, None for NaN and Inf."""
    if name not in _TABLES:
        fmt = get_format(name)
        _TABLES[name] = [Fraction(float(v)) if np.isfinite(v) else None
                         for v in fmt.decode(np.arange(1 << fmt.bits))]
    return _TABLES[name]


def finite_codes(name: str) -> np.ndarray:
    fmt = get_format(name)
    codes = np.arange(1 << fmt.bits)
    return codes[np.isfinite(fmt.decode(codes))]


def random_codes(name: str, shape, rng, nonfinite: float = 0.0) -> np.ndarray:
    """Random finite codes; a fraction ``nonfinite`` of them replaced by NaN/Inf codes of the format."""
    fmt = get_format(name)
    dtype = np.uint8 if fmt.bits <= 8 else np.uint16
    codes = rng.choice(finite_codes(name), size=shape)
    if nonfinite:
        bad = np.setdiff1d(np.arange(1 << fmt.bits), finite_codes(name))
        mask = rng.random(shape) < nonfinite
        codes = np.where(mask, rng.choice(bad, size=shape), codes)
    return codes.astype(dtype)


def pixel(x, n, c, y, xx, padding, pad_code):
    """Code at row ``y``, column ``xx`` of the padded map (coordinates in the padded frame)."""
    iy, ix = y - padding[0], xx - padding[1]
    if 0 <= iy < x.shape[2] and 0 <= ix < x.shape[3]:
        return int(x[n, c, iy, ix])
    return pad_code


def out_size(size, k, s, p0, p1, d):
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def naive_conv(x, weights, kernel, stride, padding, dilation, groups, pad_code, af, wf):
    """Object array of Fraction sums (None where an operand was NaN/Inf), shape (N, Cout, Ho, Wo)."""
    ta, tw = table(af), table(wf)
    n_, c_, h_, w_ = x.shape
    cout, cin_g = weights[0].shape[:2]
    ho = out_size(h_, kernel[0], stride[0], padding[0], padding[2], dilation[0])
    wo = out_size(w_, kernel[1], stride[1], padding[1], padding[3], dilation[1])
    out = np.empty((n_, cout, ho, wo), dtype=object)
    for n, co, oy, ox in itertools.product(range(n_), range(cout), range(ho), range(wo)):
        g = co // (cout // groups)
        total, ok = Fraction(0), True
        for w in weights:
            for ci, ky, kx in itertools.product(range(cin_g), range(kernel[0]), range(kernel[1])):
                a = ta[pixel(x, n, g * cin_g + ci, oy * stride[0] + ky * dilation[0],
                             ox * stride[1] + kx * dilation[1], padding, pad_code)]
                b = tw[int(w[co, ci, ky, kx])]
                if a is None or b is None:
                    ok = False
                else:
                    total += a * b
        out[n, co, oy, ox] = total if ok else None
    return out


def naive_linear(x, weights, af, wf):
    ta, tw = table(af), table(wf)
    out = np.empty((x.shape[0], weights[0].shape[0]), dtype=object)
    for n, o in np.ndindex(*out.shape):
        terms = [(ta[int(x[n, k])], tw[int(w[o, k])]) for w in weights for k in range(x.shape[1])]
        out[n, o] = None if any(a is None or b is None for a, b in terms) else sum(a * b for a, b in terms)
    return out


def naive_window_values(x, kernel, stride, padding, dilation, pad_code):
    """For each output position, the list of codes in its window (None for a padding position)."""
    n_, c_, h_, w_ = x.shape
    ho = out_size(h_, kernel[0], stride[0], padding[0], padding[2], dilation[0])
    wo = out_size(w_, kernel[1], stride[1], padding[1], padding[3], dilation[1])
    out = np.empty((n_, c_, ho, wo), dtype=object)
    for n, c, oy, ox in itertools.product(range(n_), range(c_), range(ho), range(wo)):
        out[n, c, oy, ox] = [pixel(x, n, c, oy * stride[0] + ky * dilation[0], ox * stride[1] + kx * dilation[1],
                                   padding, pad_code)
                             for ky in range(kernel[0]) for kx in range(kernel[1])]
    return out


def naive_window_sum(x, kernel, stride, padding, pad_code, af, dilation=(1, 1)):
    ta = table(af)
    windows = naive_window_values(x, kernel, stride, padding, dilation, pad_code)
    return np.vectorize(lambda codes: None if any(ta[c] is None for c in codes) else sum(ta[c] for c in codes),
                        otypes=[object])(windows)


def naive_maxpool(x, kernel, stride, padding, af, dilation=(1, 1)):
    """IEEE maximum by hand: NaN anywhere gives the canonical NaN code; -0 < +0; padding is skipped."""
    fmt = get_format(af)
    values = fmt.decode(np.arange(1 << fmt.bits))
    windows = naive_window_values(x, kernel, stride, padding, dilation, None)

    def pick(codes):
        codes = [c for c in codes if c is not None]
        assert codes, "a window of padding only"
        if any(np.isnan(values[c]) for c in codes):
            return fmt.nan_code
        return max(codes, key=lambda c: (values[c], not np.signbit(values[c])))

    return np.vectorize(pick, otypes=[np.int64])(windows)


def naive_rescale(acc: Fraction | None, e: int, bias, multiplier, shift, out, zero_point, clamp_lo, clamp_hi,
                  acc_bits) -> int:
    """One output code from an exact accumulator value ``acc`` (a Fraction, None when non-finite) whose
    least significant bit weighs ``2**e``: ``(acc / 2**e + bias) * multiplier * 2**(e - shift)``."""
    fmt = get_format(out)
    values = table(out)
    if acc is None:
        if isinstance(fmt, IntFormat):
            y = min(max(zero_point, int(fmt.min)), int(fmt.max))
            q = y & ((1 << fmt.bits) - 1)
        else:
            q = fmt.nan_code if fmt.has_nan else 0
    else:
        b = min(max(bias, -(1 << (acc_bits - 1))), (1 << (acc_bits - 1)) - 1)
        v = (acc + b * Fraction(2) ** e) * multiplier * Fraction(2) ** -shift
        if isinstance(fmt, IntFormat):
            y = min(max(round(v) + zero_point, int(fmt.min)), int(fmt.max))     # round(): half to even
            q = y & ((1 << fmt.bits) - 1)
        else:
            mag = min(abs(v), Fraction(fmt.max))
            best = min((c for c in range(1 << (fmt.bits - 1)) if values[c] is not None and values[c] >= 0),
                       key=lambda c: (abs(values[c] - mag), c & 1))
            q = best | ((v < 0 and best != 0) << (fmt.bits - 1))     # zero is +0, never -0
    if values[q] is None and not isinstance(fmt, IntFormat):
        return q
    if values[q] >= values[clamp_hi]:          # at or beyond a bound: the bound's code (ReLU turns -0 into +0)
        return clamp_hi
    if values[q] <= values[clamp_lo]:
        return clamp_lo
    return q


def naive_postprocess(ref, e, layer, out, acc_bits):
    """Per element, with the parameters of its channel (axis 1)."""
    out_codes = np.empty(ref.shape, dtype=np.int64)
    for idx in np.ndindex(*ref.shape):
        c = idx[1]
        bias = 0 if layer.bias is None else int(layer.bias[c])
        out_codes[idx] = naive_rescale(ref[idx], e, bias, int(layer.multiplier[c]), int(layer.shift[c]), out,
                                       layer.zero_point, layer.clamp_lo, layer.clamp_hi, acc_bits)
    return out_codes


def assert_acc(acc: Accumulation, reference, af, wf) -> None:
    """``acc`` is exact: right exponent, non-finite exactly where the reference is None, equal elsewhere."""
    assert acc.exponent == get_format(af).lsb_exponent + get_format(wf).lsb_exponent
    reference = np.asarray(reference, dtype=object)
    assert acc.value.shape == reference.shape and acc.nonfinite.shape == reference.shape
    expected_nf = np.vectorize(lambda r: r is None, otypes=[bool])(reference)
    np.testing.assert_array_equal(acc.nonfinite, expected_nf)
    scale = Fraction(2) ** acc.exponent
    for idx in zip(*np.nonzero(~expected_nf)):
        assert Fraction(int(acc.value[idx])) * scale == reference[idx], idx


# --- conv --------------------------------------------------------------------------------------------------

FORMATS = [("int8", "int8"), ("int4", "int8"), ("uint8", "int8"), ("minifloat6", "minifloat6"),
           ("minifloat4", "minifloat4"), ("fp8_e4m3", "fp8_e4m3"), ("uint8", "fp8_e4m3"),
           ("minifloat6_e2m3", "int4")]

#: (C, Cout, H, W, kernel, stride, padding, dilation, groups, tensors)
GEOMETRIES = {
    "plain": (3, 4, 5, 6, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, 1),
    "stride-asym-pad": (2, 3, 7, 6, (3, 2), (2, 1), (1, 0, 2, 1), (1, 1), 1, 1),
    "dilation": (2, 2, 7, 7, (3, 2), (1, 2), (2, 1, 0, 2), (2, 1), 1, 1),
    "groups": (4, 6, 5, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, 1),
    "depthwise": (3, 3, 6, 5, (3, 3), (2, 2), (1, 2, 1, 0), (1, 1), 3, 1),
    "multi-tensor": (4, 4, 5, 4, (2, 2), (1, 2), (0, 1, 1, 0), (1, 1), 2, 2),
    "pointwise": (5, 3, 3, 4, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, 3),
}


def pad_code_for(af: str) -> int:
    """A non-zero padding code (as a zero point makes it): value 3 for integers, code of 1.0 for minifloats."""
    fmt = get_format(af)
    return int(fmt.quantize(3 if isinstance(fmt, IntFormat) else 1.0))


def conv_case(af, wf, geometry, rng, nonfinite=0.0):
    c, cout, h, w, kernel, stride, padding, dilation, groups, tensors = GEOMETRIES[geometry]
    x = random_codes(af, (2, c, h, w), rng, nonfinite)
    weights = [random_codes(wf, (cout, c // groups, *kernel), rng) for _ in range(tensors)]
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, weights, attrs


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("af, wf", FORMATS)
def test_conv_naive(af, wf, geometry):
    rng = np.random.default_rng(zlib.crc32(f"{af} {wf} {geometry}".encode()))
    x, weights, attrs = conv_case(af, wf, geometry, rng)
    pad = pad_code_for(af)
    acc = conv2d(x, weights, attrs, pad, af, wf)
    assert acc.value.dtype == np.int64
    assert_acc(acc, naive_conv(x, weights, attrs["kernel"], attrs["stride"], attrs["padding"], attrs["dilation"],
                               attrs["groups"], pad, af, wf), af, wf)


@pytest.mark.parametrize("geometry", ["stride-asym-pad", "groups", "multi-tensor"])
def test_conv_fp8_e5m2_wide(geometry):
    """fp8_e5m2 products span 2**63 in accumulator units: Python ints, still exact."""
    rng = np.random.default_rng(7)
    x, weights, attrs = conv_case("fp8_e5m2", "fp8_e5m2", geometry, rng)
    # Push some operands to the extremes so the int64 path would overflow.
    x.flat[::5] = 0x7B                                   # 57344, the largest finite value
    weights[0].flat[::3] = 0x7B
    acc = conv2d(x, weights, attrs, 0, "fp8_e5m2", "fp8_e5m2")
    assert acc.value.dtype == object
    assert_acc(acc, naive_conv(x, weights, attrs["kernel"], attrs["stride"], attrs["padding"], attrs["dilation"],
                               attrs["groups"], 0, "fp8_e5m2", "fp8_e5m2"), "fp8_e5m2", "fp8_e5m2")


@pytest.mark.parametrize("af, wf", [("fp8_e4m3", "fp8_e4m3"), ("fp8_e5m2", "fp8_e5m2"), ("fp8_e5m2", "int8")])
@pytest.mark.parametrize("geometry", ["groups", "depthwise"])
def test_conv_nonfinite_operands(af, wf, geometry):
    """NaN/Inf activations flag exactly the outputs whose window (in their group) touches them."""
    rng = np.random.default_rng(3)
    x, weights, attrs = conv_case(af, wf, geometry, rng, nonfinite=0.04)
    assert not np.isfinite(get_format(af).decode(x)).all()
    acc = conv2d(x, weights, attrs, 0, af, wf)
    ref = naive_conv(x, weights, attrs["kernel"], attrs["stride"], attrs["padding"], attrs["dilation"],
                     attrs["groups"], 0, af, wf)
    assert any(r is None for r in ref.flat) and any(r is not None for r in ref.flat)
    assert_acc(acc, ref, af, wf)


def _onnx_model(op: str, inputs: list[tuple[str, int]], out_type: int, **attrs):
    graph = helper.make_graph([helper.make_node(op, [n for n, _ in inputs], ["y"], **attrs)], op,
                              [helper.make_tensor_value_info(n, t, None) for n, t in inputs],
                              [helper.make_tensor_value_info("y", out_type, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _ort(model, **feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _onnx_geometry(attrs):
    pt, pl, pb, pr = attrs["padding"]
    return dict(kernel_shape=list(attrs["kernel"]), strides=list(attrs["stride"]), pads=[pt, pl, pb, pr],
                dilations=list(attrs["dilation"]))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_conv_against_onnx_convinteger(geometry):
    """uint8 x int8 with a zero point: ConvInteger sums (x - zp) * w with zp padding, so ours (padding holds the
    zero-point code, values taken as they are) is ConvInteger + zp * sum(w) over each output's kernel."""
    rng = np.random.default_rng(11)
    x, weights, attrs = conv_case("uint8", "int8", geometry, rng)
    zp = 100
    acc = conv2d(x, weights, attrs, zp, "uint8", "int8")
    expected = np.zeros(acc.value.shape, dtype=np.int64)
    for w in weights:
        w_int = get_format("int8").decode(w).astype(np.int8)
        model = _onnx_model("ConvInteger", [("x", TensorProto.UINT8), ("w", TensorProto.INT8),
                                            ("xz", TensorProto.UINT8)], TensorProto.INT32,
                            group=attrs["groups"], **_onnx_geometry(attrs))
        y = _ort(model, x=x.astype(np.uint8), w=w_int, xz=np.array(zp, np.uint8)).astype(np.int64)
        expected += y + zp * w_int.astype(np.int64).sum(axis=(1, 2, 3))[None, :, None, None]
    np.testing.assert_array_equal(acc.value, expected)
    assert not acc.nonfinite.any()


@pytest.mark.parametrize("af, wf", [("int8", "int8"), ("int8", "int4"), ("minifloat4", "minifloat4"),
                                    ("minifloat6", "int4")])
@pytest.mark.parametrize("geometry", ["stride-asym-pad", "dilation", "groups", "depthwise"])
def test_conv_against_onnxruntime_float(af, wf, geometry):
    """Conv (float32) of decoded values: exact here, since every sum is a short dyadic number."""
    rng = np.random.default_rng(5)
    x, weights, attrs = conv_case(af, wf, geometry, rng)
    acc = conv2d(x, weights, attrs, 0, af, wf)
    model = _onnx_model("Conv", [("x", TensorProto.FLOAT), ("w", TensorProto.FLOAT)], TensorProto.FLOAT,
                        group=attrs["groups"], **_onnx_geometry(attrs))
    y = _ort(model, x=get_format(af).decode(x).astype(np.float32), w=get_format(wf).decode(weights[0]).astype(np.float32))
    np.testing.assert_array_equal(acc.to_float(), y.astype(np.float64))


def test_conv_errors():
    x = np.zeros((1, 4, 5, 5), np.uint8)
    w = np.zeros((4, 2, 3, 3), np.uint8)
    with pytest.raises(LayerError, match="groups=1"):
        conv2d(x, [w], {}, 0, "int8", "int8")
    with pytest.raises(LayerError, match="kernel"):
        conv2d(x, [w], dict(groups=2, kernel=(2, 2)), 0, "int8", "int8")
    with pytest.raises(LayerError, match="padding"):
        conv2d(x, [w], dict(groups=2, padding=(1, 1)), 0, "int8", "int8")
    with pytest.raises(LayerError, match="larger than the padded"):
        conv2d(x[:, :, :2], [w], dict(groups=2), 0, "int8", "int8")
    with pytest.raises(LayerError, match="shaped .* alike"):
        conv2d(x, [w, w[:2]], dict(groups=2), 0, "int8", "int8")
    with pytest.raises(LayerError, match="integer codes"):
        conv2d(x.astype(np.float32), [w], dict(groups=2), 0, "int8", "int8")
    with pytest.raises(LayerError, match="pad code 300"):
        conv2d(x, [w], dict(groups=2), 300, "int8", "int8")


# --- linear ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("af, wf", [*FORMATS, ("fp8_e5m2", "fp8_e5m2")])
@pytest.mark.parametrize("tensors", [1, 2])
def test_linear_naive(af, wf, tensors):
    rng = np.random.default_rng(17 * tensors)
    nonfinite = 0.03 if get_format(af).has_nan else 0.0
    x = random_codes(af, (3, 20), rng, nonfinite)
    weights = [random_codes(wf, (5, 20), rng) for _ in range(tensors)]
    assert_acc(linear(x, weights, af, wf), naive_linear(x, weights, af, wf), af, wf)


def test_linear_against_onnxruntime_matmul():
    rng = np.random.default_rng(2)
    x, w = random_codes("int8", (4, 64), rng), random_codes("int4", (10, 64), rng)
    xv, wv = get_format("int8").decode(x), get_format("int4").decode(w)
    model = _onnx_model("MatMul", [("x", TensorProto.FLOAT), ("w", TensorProto.FLOAT)], TensorProto.FLOAT)
    y = _ort(model, x=xv.astype(np.float32), w=wv.T.astype(np.float32).copy())
    np.testing.assert_array_equal(linear(x, [w], "int8", "int4").value, y.astype(np.int64))


def test_linear_errors():
    with pytest.raises(LayerError, match="flatten first"):
        linear(np.zeros((1, 2, 3), np.uint8), [np.zeros((4, 6), np.uint8)], "int8", "int8")
    with pytest.raises(LayerError, match=r"\(Nout, 6\)"):
        linear(np.zeros((1, 6), np.uint8), [np.zeros((4, 5), np.uint8)], "int8", "int8")


# --- pooling sums, add, concat -----------------------------------------------------------------------------

POOLS = [((2, 2), (2, 2), (0, 0, 0, 0), (1, 1)), ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
         ((3, 2), (2, 1), (0, 1, 2, 0), (1, 2)), ((2, 3), (1, 2), (1, 0, 0, 2), (2, 1))]


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("af, wf", [("int8", "int8"), ("uint8", "int4"), ("minifloat6", "minifloat6"),
                                    ("fp8_e4m3", "fp8_e4m3"), ("fp8_e5m2", "fp8_e5m2"), ("int8", "fp8_e4m3")])
def test_window_sum_naive(af, wf, pool):
    kernel, stride, padding, dilation = pool
    rng = np.random.default_rng(23)
    x = random_codes(af, (2, 3, 6, 7), rng, 0.03 if get_format(af).has_nan else 0.0)
    pad = pad_code_for(af)
    acc = window_sum(x, kernel, stride, padding, pad, af, wf, dilation)
    assert_acc(acc, naive_window_sum(x, kernel, stride, padding, pad, af, dilation), af, wf)


@pytest.mark.parametrize("pool", POOLS[:3])
@pytest.mark.parametrize("af, wf", [("int8", "int8"), ("minifloat6", "minifloat4"), ("fp8_e4m3", "fp8_e4m3")])
def test_window_sum_against_onnx_averagepool(af, wf, pool):
    """AveragePool (count_include_pad, zero padding) times the window size is the sum; float64 error is far
    below half an accumulator unit, so rounding to units recovers it exactly."""
    kernel, stride, padding, _ = pool
    rng = np.random.default_rng(29)
    x = random_codes(af, (2, 3, 6, 7), rng)
    acc = window_sum(x, kernel, stride, padding, 0, af, wf)
    model = _onnx_model("AveragePool", [("x", TensorProto.DOUBLE)], TensorProto.DOUBLE, kernel_shape=list(kernel),
                        strides=list(stride), pads=list(padding), count_include_pad=1)
    avg = ReferenceEvaluator(model).run(None, {"x": get_format(af).decode(x)})[0]
    units = np.rint(avg * (kernel[0] * kernel[1]) / 2.0 ** acc.exponent).astype(np.int64)
    np.testing.assert_array_equal(acc.value, units)


@pytest.mark.parametrize("af, wf", [("int8", "int8"), ("minifloat4", "minifloat6"), ("fp8_e5m2", "fp8_e5m2")])
def test_global_sum_naive(af, wf):
    rng = np.random.default_rng(31)
    x = random_codes(af, (2, 4, 5, 3), rng, 0.02 if get_format(af).has_nan else 0.0)
    ref = naive_window_sum(x, (5, 3), (1, 1), (0, 0, 0, 0), 0, af)
    assert ref.shape == (2, 4, 1, 1)
    assert_acc(global_sum(x, af, wf), ref, af, wf)


@pytest.mark.parametrize("af, wf", [("int8", "int8"), ("uint8", "int4"), ("minifloat6", "minifloat6"),
                                    ("fp8_e4m3", "fp8_e4m3"), ("fp8_e5m2", "fp8_e5m2")])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_elementwise_sum_and_concat_naive(af, wf, count):
    rng = np.random.default_rng(37 * count)
    nonfinite = 0.05 if get_format(af).has_nan else 0.0
    xs = [random_codes(af, (2, 3, 4, 2), rng, nonfinite) for _ in range(count)]
    ta = table(af)
    summed = np.empty(xs[0].shape, dtype=object)
    for idx in np.ndindex(*summed.shape):
        vals = [ta[int(x[idx])] for x in xs]
        summed[idx] = None if None in vals else sum(vals)
    assert_acc(elementwise_sum(xs, af, wf), summed, af, wf)
    ys = [random_codes(af, (2, c, 4, 2), rng, nonfinite) for c in (2, 1, 3)[:count]]
    joined = np.empty((2, sum(y.shape[1] for y in ys), 4, 2), dtype=object)
    channel = 0
    for y in ys:                                          # channel by channel, from the input that holds it
        for c in range(y.shape[1]):
            for n, i, j in np.ndindex(2, 4, 2):
                joined[n, channel, i, j] = ta[int(y[n, c, i, j])]
            channel += 1
    assert_acc(concat_values(ys, af, wf), joined, af, wf)


def test_sums_of_wide_values_are_python_ints():
    """Half-precision values in half-precision-product units need more than 63 bits: exact Python ints."""
    af = wf = "e5m10ieee"
    rng = np.random.default_rng(61)
    x = random_codes(af, (1, 2, 3, 3), rng)
    x[0, 0] = 0x7BFF                                     # 65504, the largest finite value
    for acc, ref in [(global_sum(x, af, wf), naive_window_sum(x, (3, 3), (1, 1), (0, 0, 0, 0), 0, af)),
                     (window_sum(x, (2, 2), (1, 1), (0, 0, 1, 1), 0, af, wf),
                      naive_window_sum(x, (2, 2), (1, 1), (0, 0, 1, 1), 0, af)),
                     (elementwise_sum([x, x], af, wf), np.vectorize(lambda c: 2 * table(af)[c], otypes=[object])(x))]:
        assert acc.value.dtype == object
        assert_acc(acc, ref, af, wf)


def test_sum_errors():
    x = np.zeros((1, 2, 3, 3), np.uint8)
    with pytest.raises(LayerError, match="one shape"):
        elementwise_sum([x, x[:, :1]], "int8", "int8")
    with pytest.raises(LayerError, match="channel count"):
        concat_values([x, x[:, :, :2]], "int8", "int8")
    with pytest.raises(LayerError, match="kernel"):
        window_sum(x, None, None, None, 0, "int8", "int8")
    with pytest.raises(FormatError, match="bias must lie in 0..3"):   # lsb > 1 is refused at the format
        global_sum(x, "int8", "e2m1b-3")


# --- maxpool -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("af", ["int8", "uint8", "minifloat4", "minifloat6", "fp8_e4m3", "fp8_e5m2"])
def test_maxpool_naive(af, pool):
    kernel, stride, padding, dilation = pool
    rng = np.random.default_rng(41)
    fmt = get_format(af)
    # Every code, specials included, drawn often enough that windows meet zeros of both signs and NaNs.
    x = rng.choice(np.arange(1 << fmt.bits), size=(3, 2, 6, 7)).astype(np.uint8)
    if fmt.bits > 4:
        x[0] = rng.choice([0, 1 << (fmt.bits - 1), 1, (1 << (fmt.bits - 1)) + 1], size=x[0].shape)
    got = maxpool(x, kernel, stride, padding, af, dilation)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, naive_maxpool(x, kernel, stride, padding, af, dilation))


@pytest.mark.parametrize("af, codes, expected", [
    ("fp8_e4m3", [0x80, 0x00], 0x00),          # -0 < +0, whichever comes first
    ("fp8_e4m3", [0x00, 0x80], 0x00),
    ("fp8_e4m3", [0x80, 0x80], 0x80),          # all -0 stays -0
    ("minifloat4", [0x8, 0x8], 0x8),
    ("minifloat4", [0x8, 0x0], 0x0),
    ("fp8_e4m3", [0x38, 0xFF], 0x7F),          # a negative NaN gives the canonical NaN
    ("fp8_e4m3", [0x7F, 0x7E], 0x7F),          # NaN beats the largest finite value
    ("fp8_e5m2", [0x7C, 0xFE], 0x7F),          # NaN beats +Inf
    ("fp8_e5m2", [0xFC, 0xBC], 0xBC),          # -Inf loses to -1
    ("fp8_e5m2", [0xFC, 0xFC], 0xFC),          # -Inf alone stays (padding never wins)
    ("int8", [0x80, 0xFF], 0xFF),              # -128 < -1
])
def test_maxpool_edge_cases(af, codes, expected):
    """A 1x2 map pooled with a 2x2 window and padding around it: padding must never win."""
    x = np.array(codes, dtype=np.uint8).reshape(1, 1, 1, 2)
    got = maxpool(x, (2, 2), (1, 1), (1, 0, 0, 0), af)
    assert got.shape == (1, 1, 1, 1) and int(got[0, 0, 0, 0]) == expected


def test_maxpool_padding_never_wins_over_negatives():
    x = get_format("int8").quantize(-np.arange(1, 17).reshape(1, 1, 4, 4)).astype(np.uint8)
    got = get_format("int8").decode(maxpool(x, (3, 3), (2, 2), (1, 1, 1, 1), "int8"))
    assert got.tolist() == [[[[-1.0, -2.0], [-5.0, -6.0]]]]


@pytest.mark.parametrize("af", ["int8", "minifloat6", "fp8_e4m3"])
def test_maxpool_against_onnxruntime(af):
    pool = dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2])
    rng = np.random.default_rng(43)
    x = random_codes(af, (2, 3, 7, 6), rng)
    got = maxpool(x, (3, 2), (2, 1), (1, 0, 2, 1), af, (1, 2))
    model = _onnx_model("MaxPool", [("x", TensorProto.FLOAT)], TensorProto.FLOAT, **pool)
    y = _ort(model, x=get_format(af).decode(x).astype(np.float32))
    np.testing.assert_array_equal(get_format(af).decode(got), y.astype(np.float64))


def test_maxpool_only_padding():
    with pytest.raises(LayerError, match="only padding"):
        maxpool(np.zeros((1, 1, 2, 2), np.uint8), (2, 2), (2, 2), (2, 0, 0, 0), "int8")
    with pytest.raises(LayerError, match=r"0\.\.15 \(minifloat4\), not 0\.\.16"):
        maxpool(np.array([[[[0, 16]]]]), (1, 1), None, None, "minifloat4")


# --- postprocess and dispatch ------------------------------------------------------------------------------

def _layer(op, channels, rng, out, shift=(10, 14), **kw):
    """A layer with random per-channel parameters; ``shift`` (a range) sets how far outputs spread."""
    fmt = get_format(out)
    return QuantLayer("l", op, ["x"], "y", kw.pop("attrs", {}), kw.pop("weights", []),
                      bias=rng.integers(-2000, 2000, channels), multiplier=rng.integers(16, 64, channels),
                      shift=rng.integers(*shift, channels), zero_point=kw.pop("zero_point", 0),
                      clamp_lo=int(fmt.quantize(kw.pop("lo", fmt.min))), clamp_hi=int(fmt.quantize(kw.pop("hi", fmt.max))))


@pytest.mark.parametrize("af, wf, zero_point", [("int8", "int8", -5), ("uint8", "int4", 120),
                                                ("minifloat6", "minifloat6", 0), ("fp8_e4m3", "fp8_e4m3", 0)])
def test_postprocess_per_channel(af, wf, zero_point):
    """Each channel (axis 1) gets its own bias, multiplier and shift; a clamp from 0 (a fused Relu)."""
    rng = np.random.default_rng(47)
    x = random_codes(af, (2, 3, 4, 4), rng, 0.03 if get_format(af).has_nan else 0.0)
    w = random_codes(wf, (4, 3, 3, 3), rng)
    attrs = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    lo = 0 if isinstance(get_format(af), IntFormat) and zero_point == 0 else None
    layer = _layer("conv", 4, rng, af, zero_point=zero_point, **({} if lo is None else {"lo": lo}))
    acc = conv2d(x, [w], attrs, 0, af, wf)
    ref = naive_conv(x, [w], (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 0, af, wf)
    got = postprocess(acc, layer, af, 20)
    expected = naive_postprocess(ref, acc.exponent, layer, af, 20)
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(got)) > 4, "a degenerate case would not show a mixed-up channel"


def test_postprocess_vectors_and_errors():
    rng = np.random.default_rng(53)
    x, w = random_codes("int8", (3, 12), rng), random_codes("int8", (5, 12), rng)
    layer = _layer("linear", 5, rng, "int8")
    acc = linear(x, [w], "int8", "int8")
    np.testing.assert_array_equal(postprocess(acc, layer, "int8", 32),
                                  naive_postprocess(naive_linear(x, [w], "int8", "int8"), 0, layer, "int8", 32))
    small_x = get_format("int8").quantize(rng.integers(-3, 4, (3, 12))).astype(np.uint8)
    small_w = get_format("int8").quantize(rng.integers(-3, 4, (5, 12))).astype(np.uint8)
    bare = QuantLayer("b", "linear", ["x"], "y", multiplier=np.ones(5, np.int64), shift=np.zeros(5, np.int64),
                      clamp_lo=0x80, clamp_hi=0x7F)              # no bias: zero; outputs are the sums themselves
    expected = get_format("int8").decode(small_x) @ get_format("int8").decode(small_w).T
    got = postprocess(linear(small_x, [small_w], "int8", "int8"), bare, "int8", 32)
    np.testing.assert_array_equal(get_format("int8").decode(got), expected)
    layer.multiplier = layer.multiplier[:4]
    with pytest.raises(LayerError, match="4 entries for 5"):
        postprocess(acc, layer, "int8", 32)
    layer.multiplier = None
    with pytest.raises(LayerError, match="no multiplier"):
        postprocess(acc, layer, "int8", 32)
    layer.multiplier, layer.shift = np.ones(5, np.int64), np.full(5, 0.5)
    with pytest.raises(LayerError, match="shift must be integers"):
        postprocess(acc, layer, "int8", 32)


def _net(af, wf, layer, shapes, zero_point=0):
    tensors = {k: QuantTensor(af, 0.25, zero_point) for k in shapes}
    return QuantizedNetwork(af, wf, 24, "x", layer.output, shapes, tensors, [layer])


def test_run_layer_pads_with_the_input_zero_point():
    """uint8 with zero point 128: conv and avgpool pad with code 128, maxpool ignores padding."""
    rng = np.random.default_rng(59)
    x = random_codes("uint8", (2, 2, 4, 4), rng)
    attrs = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    w = random_codes("int8", (3, 2, 3, 3), rng)
    conv = _layer("conv", 3, rng, "uint8", attrs=attrs, weights=[w], zero_point=128)
    net = _net("uint8", "int8", conv, {"x": (2, 4, 4), "y": (3, 4, 4)}, zero_point=128)
    ref = naive_conv(x, [w], (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 128, "uint8", "int8")
    np.testing.assert_array_equal(run_layer(conv, [x], net), naive_postprocess(ref, 0, conv, "uint8", 24))

    pool = _layer("avgpool", 2, rng, "uint8", attrs=dict(kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1)),
                  zero_point=128)
    net = _net("uint8", "int8", pool, {"x": (2, 4, 4), "y": (2, 2, 2)}, zero_point=128)
    ref = naive_window_sum(x, (3, 3), (2, 2), (1, 1, 1, 1), 128, "uint8")
    np.testing.assert_array_equal(run_layer(pool, [x], net), naive_postprocess(ref, 0, pool, "uint8", 24))

    mp = QuantLayer("m", "maxpool", ["x"], "y", dict(kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1)))
    net = _net("uint8", "int8", mp, {"x": (2, 4, 4), "y": (2, 2, 2)}, zero_point=128)
    np.testing.assert_array_equal(run_layer(mp, [x], net), naive_maxpool(x, (3, 3), (2, 2), (1, 1, 1, 1), "uint8"))


def test_run_layer_saturates_the_bias_to_the_network_accumulator():
    """A bias beyond an acc_bits-wide accumulator is clamped to it before the sum (net.acc_bits = 16 here)."""
    rng = np.random.default_rng(67)
    x, w = random_codes("int8", (2, 6), rng), random_codes("int8", (3, 6), rng)
    layer = QuantLayer("l", "linear", ["x"], "y", {}, [w], bias=np.array([10**6, -10**6, 100]),
                       multiplier=np.ones(3, np.int64), shift=np.full(3, 10), clamp_lo=0x80, clamp_hi=0x7F)
    net = QuantizedNetwork("int8", "int8", 16, "x", "y", {"x": (6,), "y": (3,)},
                           {"x": QuantTensor("int8", 1.0), "y": QuantTensor("int8", 1.0)}, [layer])
    got = run_layer(layer, [x], net)
    np.testing.assert_array_equal(got, naive_postprocess(naive_linear(x, [w], "int8", "int8"), 0, layer, "int8", 16))
    assert get_format("int8").decode(got[:, :2]).tolist() != [[127, -128]] * 2    # unsaturated: clamped to +-127


def test_pooling_defaults_are_onnx_defaults():
    """Only a kernel given: stride 1, no padding, no dilation (as ONNX and the frontend), not stride = kernel."""
    rng = np.random.default_rng(71)
    x = random_codes("int8", (1, 2, 4, 5), rng)
    np.testing.assert_array_equal(maxpool(x, (2, 2), None, None, "int8"),
                                  naive_maxpool(x, (2, 2), (1, 1), (0, 0, 0, 0), "int8"))
    assert_acc(window_sum(x, (2, 3), None, None, 0, "int8", "int8"),
               naive_window_sum(x, (2, 3), (1, 1), (0, 0, 0, 0), 0, "int8"), "int8", "int8")


def test_run_layer_errors():
    x = np.zeros((1, 2, 2, 2), np.uint8)
    net = _net("int8", "int8", QuantLayer("f", "flatten", ["x"], "y"), {"x": (2, 2, 2), "y": (8,)})
    assert run_layer(net.layers[0], [x], net).shape == (1, 8)
    with pytest.raises(LayerError, match="takes one input"):
        run_layer(net.layers[0], [x, x], net)
    with pytest.raises(LayerError, match="unknown op 'relu'"):
        run_layer(QuantLayer("r", "relu", ["x"], "y"), [x], net)
