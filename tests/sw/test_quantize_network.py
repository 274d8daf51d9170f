"""quantize_network (sw/quantize/network.py): the integers of every layer reproduce the float layer.

Oracles: naive numpy loops for conv, pooling, add and concat written here (not the frontend's float model),
applied to the golden model's own dequantized inputs, so each layer is checked on its own with a tolerance
derived from its scales (output rounding, bias rounding, multiplier rounding); single-layer networks are
checked end to end against the float layer with a bound from the input, weight and output scales; the digits
CNN against its labels.
"""

from pathlib import Path

import numpy as np
import pytest

from hw.spec.formats import IntFormat, accumulator_bits, get_format
from sw.frontend.float_model import infer_shapes
from sw.golden.network import run_network
from sw.ir import FloatLayer, FloatNetwork, QuantizedNetwork, TensorQuant, WeightQuant
from sw.quantize import (QuantizationError, first_last_layers, format_report, multiplier_shift,
                         quantize_network)

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"


# --- naive float references ----------------------------------------------------------------------------------

def conv_ref(x, w, b, pad=(0, 0, 0, 0), stride=(1, 1)):
    n, c, h, wd = x.shape
    co, ci, kh, kw = w.shape
    xp = np.zeros((n, c, h + pad[0] + pad[2], wd + pad[1] + pad[3]))
    xp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    ho, wo = (xp.shape[2] - kh) // stride[0] + 1, (xp.shape[3] - kw) // stride[1] + 1
    y = np.zeros((n, co, ho, wo))
    for oy in range(ho):
        for ox in range(wo):
            patch = xp[:, :, oy * stride[0]:oy * stride[0] + kh, ox * stride[1]:ox * stride[1] + kw]
            y[:, :, oy, ox] = np.einsum("nckl,ockl->no", patch, w)
    return y + (0 if b is None else b[None, :, None, None])


def window_ref(x, k, stride, pad, reduce, fill):
    n, c, h, wd = x.shape
    xp = np.full((n, c, h + pad[0] + pad[2], wd + pad[1] + pad[3]), fill, dtype=np.float64)
    xp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    ho, wo = (xp.shape[2] - k[0]) // stride[0] + 1, (xp.shape[3] - k[1]) // stride[1] + 1
    y = np.zeros((n, c, ho, wo))
    for oy in range(ho):
        for ox in range(wo):
            y[:, :, oy, ox] = reduce(xp[:, :, oy * stride[0]:oy * stride[0] + k[0],
                                        ox * stride[1]:ox * stride[1] + k[1]].reshape(n, c, -1), axis=2)
    return y


def apply_clip(y, clip):
    return y if clip is None else np.clip(y, *clip)


# --- networks ------------------------------------------------------------------------------------------------

def make_net(layers, input_shape, output, inp="x") -> FloatNetwork:
    net = FloatNetwork(inp, output, {inp: tuple(input_shape)}, layers)
    net.shapes = infer_shapes(net)
    return net


def conv_net(seed=0, clip=(0.0, np.inf)):
    rng = np.random.default_rng(seed)
    conv = FloatLayer("conv", "conv", ["x"], "y", {"kernel": (3, 3), "stride": (1, 1), "padding": (1, 1, 1, 1),
                                                   "dilation": (1, 1), "groups": 1},
                      rng.normal(size=(4, 3, 3, 3)) * np.array([1, 0.1, 2, 0.5])[:, None, None, None],
                      rng.normal(size=4) * 0.5, clip)
    return make_net([conv], (3, 6, 6), "y")


def linear_net(seed=1):
    rng = np.random.default_rng(seed)
    fc = FloatLayer("fc", "linear", ["x"], "y", {}, rng.normal(size=(8, 20)) * 0.3, rng.normal(size=8),
                    (0.0, np.inf))
    return make_net([fc], (20,), "y")


def mixed_net(seed=2):
    """Every accumulating op and the ties: conv, add, maxpool, concat, avgpool, global_avgpool, flatten, linear."""
    rng = np.random.default_rng(seed)
    k3 = {"kernel": (3, 3), "stride": (1, 1), "padding": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1}
    k1 = {"kernel": (1, 1), "stride": (1, 1), "padding": (0, 0, 0, 0), "dilation": (1, 1), "groups": 1}
    layers = [
        FloatLayer("c1", "conv", ["x"], "a", k3, rng.normal(size=(4, 3, 3, 3)) * 0.4, rng.normal(size=4) * 0.3,
                   (0.0, np.inf)),
        FloatLayer("c2", "conv", ["x"], "b", k1, rng.normal(size=(4, 3, 1, 1)), rng.normal(size=4) * 0.3),
        FloatLayer("add", "add", ["a", "b"], "s", clip=(0.0, np.inf)),
        FloatLayer("mp", "maxpool", ["s"], "m", {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0, 0, 0),
                                                 "dilation": (1, 1)}),
        FloatLayer("c3", "conv", ["m"], "c", k3, rng.normal(size=(4, 4, 3, 3)) * 0.3, rng.normal(size=4) * 0.2,
                   (0.0, 6.0)),
        FloatLayer("cat", "concat", ["m", "c"], "k"),
        FloatLayer("ap", "avgpool", ["k"], "p", {"kernel": (3, 3), "stride": (1, 1), "padding": (1, 1, 1, 1),
                                                 "dilation": (1, 1)}),
        FloatLayer("gap", "global_avgpool", ["p"], "g"),
        FloatLayer("fl", "flatten", ["g"], "f"),
        FloatLayer("fc", "linear", ["f"], "out", {}, rng.normal(size=(5, 8)), rng.normal(size=5) * 0.1),
    ]
    return make_net(layers, (3, 8, 8), "out")


def samples(net, n=12, seed=3):
    return np.random.default_rng(seed).normal(size=(n, *net.input_shape)).astype(np.float32)


def quantize(net, act, weight, x, **kw):
    acc = accumulator_bits(get_format(act), get_format(weight), 4096)
    return quantize_network(net, act_format=act, weight_format=weight, acc_bits=acc, samples=x, **kw)


def golden(qnet, x):
    codes = run_network(qnet, qnet.tensors[qnet.input].quantize(x), keep=True)
    return codes, {t: qnet.tensors[t].dequantize(c) for t, c in codes.items()}


def weights_of(qnet, layer):
    fmt = get_format(qnet.weight_format)
    total = sum(fmt.decode(w) for w in layer.weights)
    return total * layer.weight_scale.reshape((-1,) + (1,) * (total.ndim - 1))


def rounding(enc, y):
    """Largest error of rounding the values ``y`` to the encoding ``enc`` (inside its range)."""
    fmt = get_format(enc.format)
    if isinstance(fmt, IntFormat):
        return enc.scale / 2
    return np.abs(y) * 2.0 ** -(fmt.man_bits + 1) + enc.scale * 2.0 ** (fmt.lsb_exponent - 1)


def clamp_range(qnet, layer):
    enc, fmt = qnet.tensors[layer.output], get_format(qnet.act_format)
    lo, hi = fmt.decode(np.array([layer.clamp_lo, layer.clamp_hi]))
    return (lo - enc.zero_point) * enc.scale, (hi - enc.zero_point) * enc.scale


FORMATS = [("int8", "int8"), ("int4", "int4"), ("minifloat6", "minifloat6"), ("fp8_e4m3", "fp8_e4m3"),
           ("uint8", "int8"), ("int8", "fp8_e4m3"), ("fp8_e4m3", "int4")]


# --- every layer on its own ----------------------------------------------------------------------------------

def check_layers(net, qnet, x):
    codes, deq = golden(qnet, x)
    e = qnet.acc_exponent
    for fl, ql in zip(net.layers, qnet.layers):
        ins = [deq[t] for t in fl.inputs]
        got = deq[fl.output]
        extra = 0.0
        if fl.op == "maxpool":
            assert qnet.tensors[fl.output] == qnet.tensors[fl.inputs[0]]
            ref = window_ref(ins[0], fl.attrs["kernel"], fl.attrs["stride"], fl.attrs["padding"], np.max, -np.inf)
            assert np.array_equal(got, ref)
            continue
        if fl.op == "flatten":
            assert np.array_equal(codes[fl.output], codes[fl.inputs[0]].reshape(len(x), -1))
            continue
        if fl.op == "concat":
            # The identity on values; codes too, except that a -0 input (a tiny negative rounded by a
            # minifloat layer) leaves as +0: the accumulator has no negative zero.
            fmt = get_format(qnet.act_format)
            joined = np.concatenate([codes[t] for t in fl.inputs], axis=1)
            assert np.array_equal(fmt.decode(codes[fl.output]), fmt.decode(joined))
            nonzero = fmt.decode(joined) != 0
            assert np.array_equal(codes[fl.output][nonzero], joined[nonzero])
            continue
        if fl.op == "conv":
            w = weights_of(qnet, ql)
            ref = conv_ref(ins[0], w, fl.bias, fl.attrs["padding"], fl.attrs["stride"])
            s_in = qnet.tensors[fl.inputs[0]].scale
            extra = (s_in * ql.weight_scale * 2.0 ** e / 2)[None, :, None, None]
        elif fl.op == "linear":
            ref = ins[0] @ weights_of(qnet, ql).T + fl.bias
            extra = (qnet.tensors[fl.inputs[0]].scale * ql.weight_scale * 2.0 ** e / 2)[None, :]
        elif fl.op == "add":
            ref = sum(ins)
        elif fl.op == "avgpool":
            kh, kw = fl.attrs["kernel"]
            ref = window_ref(ins[0], fl.attrs["kernel"], fl.attrs["stride"], fl.attrs["padding"], np.sum, 0.0)
            ref = ref / (kh * kw)
        elif fl.op == "global_avgpool":
            ref = ins[0].mean(axis=(2, 3), keepdims=True)
        ref = np.clip(apply_clip(ref, fl.clip), *clamp_range(qnet, ql))
        tol = rounding(qnet.tensors[fl.output], ref) + extra + np.abs(ref) * 2.0 ** -28 + 1e-12
        assert np.all(np.abs(got - ref) <= tol), (fl.name, np.max(np.abs(got - ref) - tol))


@pytest.mark.parametrize("act,weight", FORMATS)
@pytest.mark.parametrize("options", [{}, {"method": "mmse", "per_channel": True, "multi_tensor": True}],
                         ids=["minmax", "mmse-pc-mt"])
def test_every_layer_reproduces_its_float_op(act, weight, options):
    net = mixed_net()
    x = samples(net)
    qnet = quantize(net, act, weight, x, **options)
    check_layers(net, qnet, x)


def test_percentile_network_layers():
    net = mixed_net(5)
    x = samples(net, 16, 6)
    check_layers(net, quantize(net, "int8", "int8", x, method="percentile", percentile=99.0), x)


# --- single layers end to end --------------------------------------------------------------------------------

#: Output SQNR a single layer must reach (about 6 dB per bit of the act format, less for its input's rounding).
MIN_SQNR_DB = {"int8": 30.0, "fp8_e4m3": 20.0, "minifloat6": 14.0, "int4": 8.0}


def elementwise_bound(fmt_name, scale, v):
    """Largest rounding error of each value of ``v`` (inside the range) on the grid of ``fmt`` scaled by ``scale``."""
    fmt = get_format(fmt_name)
    if isinstance(fmt, IntFormat):
        return np.full(np.shape(v), scale / 2)
    return np.abs(v) * 2.0 ** -(fmt.man_bits + 1) + scale * 2.0 ** (fmt.lsb_exponent - 1)


@pytest.mark.parametrize("act,weight", [("int8", "int8"), ("int4", "int4"), ("minifloat6", "minifloat6"),
                                        ("fp8_e4m3", "fp8_e4m3")])
@pytest.mark.parametrize("options", [{}, {"per_channel": True}, {"per_channel": True, "multi_tensor": True}],
                         ids=["tensor", "channel", "multi"])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_single_layer_matches_float_within_the_scales(act, weight, options, kind):
    """|golden - float| <= sum |w| err_x + sum |x| err_w + sum err_x err_w + bias and output rounding."""
    net = conv_net() if kind == "conv" else linear_net()
    x = samples(net, 16, 7).astype(np.float64)
    qnet = quantize(net, act, weight, x, **options)
    ql, fl = qnet.layers[0], net.layers[0]
    if options.get("multi_tensor") and get_format(weight).bits == 4:
        assert len(ql.weights) == 2
    got = golden(qnet, x)[1]["y"]
    s_x = qnet.tensors["x"].scale
    err_x = elementwise_bound(act, s_x, x)
    w, s_w = fl.weight, ql.weight_scale
    err_w = np.stack([elementwise_bound(weight, s_w[c], w[c]) for c in range(len(w))])
    if options.get("multi_tensor"):      # the residual tensors only shrink the error of the first
        err_w = np.minimum(err_w, np.abs(w - weights_of(qnet, ql)) + 1e-15)
    if kind == "conv":
        pad = fl.attrs["padding"]
        ref = conv_ref(x, w, fl.bias, pad)
        spread = (conv_ref(err_x, np.abs(w), None, pad) + conv_ref(np.abs(x), err_w, None, pad)
                  + conv_ref(err_x, err_w, None, pad))
        bias_err = (s_x * s_w * 2.0 ** qnet.acc_exponent / 2)[None, :, None, None]
    else:
        ref = x @ w.T + fl.bias
        spread = err_x @ np.abs(w).T + np.abs(x) @ err_w.T + err_x @ err_w.T
        bias_err = (s_x * s_w * 2.0 ** qnet.acc_exponent / 2)[None, :]
    ref = apply_clip(ref, fl.clip)
    pre = np.abs(ref) + spread + bias_err
    tol = spread + bias_err + elementwise_bound(act, qnet.tensors["y"].scale, pre) + pre * 2.0 ** -28
    assert np.all(np.abs(got - ref) <= tol + 1e-12), np.max(np.abs(got - ref) - tol)
    # The worst-case bound is loose for 4-bit formats (no cancellation assumed); the typical error is small.
    sqnr = 10 * np.log10(np.sum(ref ** 2) / np.sum((got - ref) ** 2))
    assert sqnr >= MIN_SQNR_DB[act], sqnr


# --- integers and ties ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("act,weight", FORMATS)
def test_integers_in_range_relu_clamps_and_ties(act, weight):
    net = mixed_net()
    qnet = quantize(net, act, weight, samples(net), method="mmse", per_channel=True)
    fmt = get_format(act)
    t = qnet.tensors
    for layer in qnet.layers:
        if layer.multiplier is not None:
            assert np.all((layer.multiplier >= 2 ** 30) & (layer.multiplier < 2 ** 31))
            assert np.all((layer.shift >= 0) & (layer.shift <= 255))
            assert layer.bias.dtype == np.int64 and len(layer.bias) == qnet.shapes[layer.output][0]
        assert layer.zero_point == t[layer.output].zero_point
    by = {layer.name: layer for layer in qnet.layers}
    zero_code = lambda name: int(get_format(act).quantize(t[name].zero_point)) if isinstance(fmt, IntFormat) \
        else 0
    for name, out in (("c1", "a"), ("add", "s"), ("c3", "c")):       # ReLU: clamp at the code of zero
        assert by[name].clamp_lo == zero_code(out)
    assert fmt.decode(np.array([by["c2"].clamp_lo]))[0] == fmt.min   # no clip: the format's range
    assert fmt.decode(np.array([by["c2"].clamp_hi]))[0] == fmt.max
    six = fmt.decode(np.array([by["c3"].clamp_hi]))[0]               # Clip(0, 6)
    assert abs((six - t["c"].zero_point) * t["c"].scale - 6.0) <= rounding(t["c"], 6.0)
    assert t["a"] == t["b"]                                          # add inputs
    assert t["s"] == t["m"] == t["c"] == t["k"]                      # maxpool, concat
    assert t["g"] == t["f"]                                          # flatten
    assert t["s"] != t["a"] and t["p"] != t["k"]
    cat = by["cat"]                                                  # identity
    assert np.all(cat.multiplier * 2.0 ** -cat.shift == 1.0)
    if isinstance(fmt, IntFormat) and not fmt.signed:
        assert t["a"].zero_point > 0                                 # uint8: the zero point moves up
    if isinstance(fmt, IntFormat):
        assert all(fmt.min <= q.zero_point <= fmt.max for q in t.values())
    else:
        assert all(q.zero_point == 0 for q in t.values())


def test_relu_int8_zero_point_is_the_minimum_and_its_code():
    net = conv_net()
    qnet = quantize(net, "int8", "int8", samples(net))
    assert qnet.tensors["y"].zero_point == -128
    assert qnet.layers[0].clamp_lo == 0x80 and qnet.layers[0].clamp_hi == 0x7F


@pytest.mark.parametrize("ratio", [1.0, 0.75, 3.0, 2.0 ** -40, 1 - 2.0 ** -40, 12345.678, 2.0 ** 20 * 1.9999999999])
def test_multiplier_shift(ratio):
    m, s = multiplier_shift(ratio)
    assert 2 ** 30 <= m < 2 ** 31 and 0 <= s <= 255
    assert abs(m * 2.0 ** -s - ratio) <= ratio * 2.0 ** -31


def test_multiplier_shift_out_of_range_names_the_layer():
    for ratio in (2.0 ** 40, 2.0 ** -240, 0.0):
        with pytest.raises(QuantizationError, match="conv7"):
            multiplier_shift(ratio, "conv7")


def test_zero_point_correction_sums_every_tensor():
    """int8 acts with a zero point, two int4 tensors: B = rne(b / (s_x s_w)) - z_x * sum over both tensors."""
    net = linear_net()
    x = samples(net) + 1.0
    qnet = quantize(net, "int8", "int4", x, per_channel=True, multi_tensor=True, multi_tensor_sqnr_db=100)
    ql, fl = qnet.layers[0], net.layers[0]
    assert len(ql.weights) == 2
    z, s_x = qnet.tensors["x"].zero_point, qnet.tensors["x"].scale
    values = [get_format("int4").decode(w) for w in ql.weights]
    expected = np.rint(fl.bias / (s_x * ql.weight_scale)) - z * (values[0] + values[1]).sum(axis=1)
    assert z != 0 and np.array_equal(ql.bias, expected.astype(np.int64))


# --- QDQ / QONNX models --------------------------------------------------------------------------------------

def qdq_net(act="uint8", weight="int8"):
    net = conv_net(4)
    rng = np.random.default_rng(8)
    wfmt = get_format(weight)
    values = rng.integers(-100, 100, size=net.layers[0].weight.shape) if isinstance(wfmt, IntFormat) else \
        wfmt.decode(wfmt.quantize(rng.normal(size=net.layers[0].weight.shape)))
    codes = wfmt.quantize(values)
    scale = np.array([0.01, 0.02, 0.005, 0.01])
    net.layers[0].weight = wfmt.decode(codes) * scale[:, None, None, None]
    net.weight_quant = {"conv": WeightQuant(weight, codes, scale)}
    zx = 128 if act == "uint8" else 0
    net.tensor_quant = {"x": TensorQuant(act, 0.02, zx), "y": TensorQuant(act, 0.05, 0)}
    return net


def test_qdq_encodings_and_codes_are_used_as_given():
    net = qdq_net()
    qnet = quantize(net, "int8", "int8", None)
    assert qnet.tensors["x"].scale == 0.02 and qnet.tensors["x"].zero_point == 0
    assert qnet.tensors["y"].zero_point == -128
    # every uint8 code stands for the same number as its int8 image (code - 128)
    u = np.arange(256)
    i8 = get_format("int8").quantize(u - 128)
    assert np.array_equal(qnet.tensors["x"].dequantize(i8), 0.02 * (u - 128.0))
    assert np.array_equal(qnet.layers[0].weights[0], net.weight_quant["conv"].codes)
    assert np.array_equal(qnet.layers[0].weight_scale, net.weight_quant["conv"].scale)
    check_layers(net, qnet, samples(net))
    assert all(r["out_sqnr_db"] is None for r in qnet.report)        # nothing to measure without samples


def test_qdq_format_mismatch_is_an_error():
    with pytest.raises(QuantizationError, match=r"cannot hold.*\(--acts or --pe\)"):
        quantize(qdq_net(), "fp8_e4m3", "int8", None)
    with pytest.raises(QuantizationError, match="weight format fp8_e4m3"):
        quantize(qdq_net("int8", "fp8_e4m3"), "int8", "int8", None)
    with pytest.raises(QuantizationError, match="cannot hold"):
        quantize(qdq_net("int16"), "int8", "int8", None)
    net = qdq_net()
    del net.tensor_quant["y"]
    with pytest.raises(QuantizationError, match="no encoding for tensors y.*--calibrate"):
        quantize(net, "int8", "int8", None)
    net = qdq_net()
    net.weight_quant["conv"] = WeightQuant("int8", net.weight_quant["conv"].codes, np.ones(4), zero_point=3)
    with pytest.raises(QuantizationError, match="symmetric"):
        quantize(net, "int8", "int8", None)


# --- errors and overrides ------------------------------------------------------------------------------------

def test_float_model_without_samples():
    with pytest.raises(QuantizationError, match="calibration samples.*--calibrate SAMPLES.npy"):
        quantize(conv_net(), "int8", "int8", None)


def test_bad_options():
    net = conv_net()
    with pytest.raises(QuantizationError, match="method"):
        quantize(net, "int8", "int8", samples(net), method="kl")
    with pytest.raises(QuantizationError, match=r"shaped \(N, 3, 6, 6\)"):
        quantize(net, "int8", "int8", np.zeros((4, 3, 5, 5)))
    with pytest.raises(QuantizationError, match="act_format"):
        quantize_network(net, act_format="int9x", weight_format="int8", acc_bits=32, samples=samples(net))
    with pytest.raises(QuantizationError, match="signed"):
        quantize(net, "int8", "uint8", samples(net))
    with pytest.raises(QuantizationError, match="acc_bits"):
        quantize_network(net, act_format="int8", weight_format="int8", acc_bits=0, samples=samples(net))
    with pytest.raises(QuantizationError, match="does not have"):
        quantize(net, "int8", "int8", samples(net), layer_formats={"nope": ("int4", "int4")})


def test_unrepresentable_overrides():
    net = conv_net()
    x = samples(net)
    with pytest.raises(QuantizationError, match="weight format int16.*cannot represent"):
        quantize(net, "int8", "int8", x, layer_formats={"conv": ("int16", "int8")})
    with pytest.raises(QuantizationError, match="act format int16.*cannot represent"):
        quantize(net, "int8", "int8", x, layer_formats={"conv": ("int4", "int16")})
    with pytest.raises(QuantizationError, match="rounds to the engine's act format"):
        quantize(net, "fp8_e4m3", "fp8_e4m3", x, layer_formats={"conv": ("minifloat4", "minifloat6")})
    with pytest.raises(QuantizationError, match="rounds to the engine's act format"):
        quantize(net, "int8", "int8", x, layer_formats={"conv": ("int4", "fp8_e4m3")})
    with pytest.raises(QuantizationError, match="weight format fp8_e5m2.*cannot represent"):
        quantize(net, "fp8_e4m3", "fp8_e4m3", x, layer_formats={"conv": ("fp8_e5m2", None)})


@pytest.mark.parametrize("engine,override", [("int8", ("int4", "int4")), ("int8", ("int4", "uint4")),
                                             ("fp8_e4m3", ("minifloat4", None)), ("fp8_e4m3", ("int4", None))])
def test_narrow_override_on_a_wider_engine(engine, override):
    net = mixed_net()
    x = samples(net)
    plain = quantize(net, engine, engine, x)
    qnet = quantize(net, engine, engine, x, layer_formats={"c1": override, "fc": override})
    check_layers(net, qnet, x)
    wfmt, sub = get_format(engine), get_format(override[0])
    allowed = sub.decode(sub.codes)
    for name in ("c1", "fc"):
        layer = next(q for q in qnet.layers if q.name == name)
        assert np.isin(wfmt.decode(layer.weights[0]), allowed).all()
        assert np.allclose(layer.weight_scale, np.abs(net.layers[0 if name == "c1" else -1].weight).max() / sub.max)
    if override[1] is not None:
        a = get_format(override[1])
        c1 = qnet.layers[0]
        lo, hi = wfmt.decode(np.array([c1.clamp_lo, c1.clamp_hi]))
        assert a.min <= qnet.tensors["a"].zero_point <= a.max and lo >= a.min and hi == a.max
        assert qnet.tensors["a"].scale > 10 * plain.tensors["a"].scale        # a 4-bit grid is coarser
        codes = golden(qnet, x)[0]
        assert set(np.unique(wfmt.decode(codes["a"]))) <= set(a.decode(a.codes))
        assert next(r for r in qnet.report if r["name"] == "c1")["act_format"] == override[1]


def test_first_last_layers():
    assert first_last_layers(mixed_net()) == ["c1", "fc"]
    assert first_last_layers(conv_net()) == ["conv"]


def test_clip_on_maxpool_is_refused():
    net = mixed_net()
    net.layers[3].clip = (0.0, np.inf)
    with pytest.raises(QuantizationError, match="mp.*clamp"):
        quantize(net, "int8", "int8", samples(net))


# --- report --------------------------------------------------------------------------------------------------

def test_report_and_files(tmp_path):
    net = mixed_net()
    x = samples(net)
    qnet = quantize(net, "int4", "int4", x, per_channel=True, multi_tensor=True)
    names = [r["name"] for r in qnet.report]
    assert names == ["c1", "c2", "add", "c3", "cat", "ap", "gap", "fc"]
    by = {r["name"]: r for r in qnet.report}
    assert by["c1"]["tensors"] == 2 and by["add"]["tensors"] == 0 and by["add"]["weight_sqnr_db"] is None
    single = {r["name"]: r for r in quantize(net, "int4", "int4", x, per_channel=True).report}
    assert by["c3"]["weight_sqnr_db"] > single["c3"]["weight_sqnr_db"] + 3
    assert all(r["out_sqnr_db"] is not None and r["out_mse"] >= 0 for r in qnet.report)
    # output error measured against an independent float reference (naive conv) for the first layer
    _, deq = golden(qnet, x)
    ref = np.maximum(conv_ref(x.astype(np.float64), net.layers[0].weight, net.layers[0].bias, (1, 1, 1, 1)), 0)
    assert by["c1"]["out_mse"] == pytest.approx(np.mean((deq["a"] - ref) ** 2), rel=1e-6)
    text = format_report(qnet)
    assert all(n in text for n in names) and "int4" in text
    qnet.save(tmp_path)
    assert QuantizedNetwork.load(tmp_path).report == qnet.report


# --- the digits CNN ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    from sw.frontend.onnx_import import load_onnx
    data = np.load(DIGITS / "test_set.npz")
    return load_onnx(DIGITS / "digits_cnn.onnx"), data["images"], data["labels"]


def accuracy(qnet, images, labels):
    out = run_network(qnet, qnet.tensors[qnet.input].quantize(images))
    return float((qnet.tensors[qnet.output].dequantize(out).argmax(axis=1) == labels).mean())


def test_digits_int8_accuracy(digits):
    net, images, labels = digits
    qnet = quantize(net, "int8", "int8", images[:64])
    acc = accuracy(qnet, images, labels)
    print(f"\nint8 minmax: {acc:.4f}\n{format_report(qnet)}")
    assert acc >= 0.97


def test_digits_int4_methods(digits):
    """Printed, not asserted tightly: int4 min-max, MMSE, MMSE + per-channel + multi-tensor, and int4 inside
    an int8 engine with the first and last layers kept at int8."""
    net, images, labels = digits
    middle = [l.name for l in net.layers if l.op in ("conv", "linear") and l.name not in first_last_layers(net)]
    runs = [("int4", {}), ("int4", {"method": "mmse"}),
            ("int4", {"method": "mmse", "per_channel": True, "multi_tensor": True}),
            ("int8", {"method": "mmse", "per_channel": True, "layer_formats": {n: ("int4", "int4") for n in middle}})]
    for engine, options in runs:
        qnet = quantize(net, engine, engine, images[:64], **options)
        acc = accuracy(qnet, images, labels)
        print(f"\n{engine} engine {options}: accuracy {acc:.4f}")
        assert acc > 0.5


def test_digits_qdq_model_matches_onnxruntime(digits, tmp_path):
    """A QDQ model made by onnxruntime's own quantizer (uint8 activations, per-channel int8 weights): no samples
    needed, and the golden model on an int8 engine gives onnxruntime's outputs (to within one output code)."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from sw.frontend.onnx_import import load_onnx
    _, images, labels = digits

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": images[:32]}])

        def get_next(self):
            return next(self.batches, None)
    pre, qdq = tmp_path / "pre.onnx", tmp_path / "qdq.onnx"
    quant_pre_process(str(DIGITS / "digits_cnn.onnx"), str(pre), skip_symbolic_shape=True)   # folds BatchNorm
    quantization.quantize_static(str(pre), str(qdq), Reader(), quant_format=quantization.QuantFormat.QDQ,
                                 per_channel=True, activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8)
    net = load_onnx(qdq)
    assert net.tensor_quant and net.weight_quant
    qnet = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=32, samples=None)
    x = images[:120]
    ours = qnet.tensors[qnet.output].dequantize(run_network(qnet, qnet.tensors[qnet.input].quantize(x)))
    ref = ort.InferenceSession(str(qdq)).run(None, {"input": x})[0]
    step = qnet.tensors[qnet.output].scale
    assert np.all(np.abs(ours - ref) <= step * 1.001)
    assert np.mean(np.abs(ours - ref) < step / 2) > 0.99
    assert np.mean(ours.argmax(1) == labels[:120]) >= 0.95


def test_prescribed_encodings_that_must_be_tied_use_the_widest():
    net = mixed_net()
    net.tensor_quant = {"m": TensorQuant("int8", 0.01, -128), "c": TensorQuant("int8", 0.05, -128)}
    with pytest.warns(UserWarning, match="widest"):
        qnet = quantize(net, "int8", "int8", samples(net))
    assert qnet.tensors["m"] == qnet.tensors["c"] == qnet.tensors["s"] == qnet.tensors["k"]
    assert qnet.tensors["c"].scale == 0.05 and qnet.tensors["c"].zero_point == -128
    check_layers(net, qnet, samples(net))
