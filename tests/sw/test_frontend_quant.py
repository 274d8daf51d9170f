"""Quantized ONNX models in the frontend: QDQ (onnxruntime) and QONNX (Quant, FloatQuant).

Oracles: the initializers read straight from the ONNX file, quantization formulas written out here (integers)
or ml_dtypes' casts (minifloats), and onnxruntime on equivalent float graphs.
"""

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hw.spec.formats import get_format
from sw.frontend import FrontendError, load_onnx, run_float
from sw.ir import TensorQuant

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"
RNG = np.random.default_rng(11)
QONNX = "qonnx.custom_op.general"


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def model(nodes, in_shape, out_shape, inits, opset=13, domains=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
                              initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                *(helper.make_opsetid(d, 1) for d in domains)])
    m.ir_version = 8
    return m


def ort_run(m, x):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]


def fake_quant(x, scale, zp, lo, hi):
    return ((np.clip(np.rint(x / scale) + zp, lo, hi) - zp) * scale).astype(np.float32)


# --- QDQ ----------------------------------------------------------------------------------------------------

def test_digits_qdq_has_every_encoding():
    path = DIGITS / "digits_cnn_qdq.onnx"
    net = load_onnx(path)
    assert set(net.tensor_quant) == set(net.shapes)  # every activation tensor, input and output included
    assert all(e.format == "int8" for e in net.tensor_quant.values())
    assert (net.input, net.output) == ("input", "logits")
    for layer in net.layers:
        if layer.op in ("maxpool", "flatten"):
            assert net.tensor_quant[layer.inputs[0]] == net.tensor_quant[layer.output]
    # Weights: the int8 initializers behind each Conv/Gemm's DequantizeLinear, read here directly.
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    dq = {n.output[0]: n for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    weighted = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
    assert sorted(net.weight_quant) == sorted(n.name for n in weighted)
    for node in weighted:
        wq = net.weight_quant[node.name]
        q = dq[node.input[1]]
        codes, scale = inits[q.input[0]], inits[q.input[1]]
        assert wq.format == "int8" and wq.zero_point == 0 and wq.scale.shape == ()
        np.testing.assert_array_equal(get_format("int8").decode(wq.codes), codes.astype(np.float64))
        assert float(wq.scale) == float(scale)
        layer = next(la for la in net.layers if la.name == node.name)
        np.testing.assert_allclose(layer.weight, codes * np.float64(scale), rtol=1e-12)
        bq = dq[node.input[2]]
        np.testing.assert_allclose(layer.bias, inits[bq.input[0]] * inits[bq.input[1]].astype(np.float64),
                                   rtol=1e-6)
    # ORT dropped the Relus (its zero points sit at -128): their clamps come back from the encodings.
    assert [la.clip[0] for la in net.layers if la.op in ("conv", "linear")][:3] == [0.0, 0.0, 0.0]
    with np.load(DIGITS / "test_set.npz") as data:
        images, labels = data["images"], data["labels"]
    got = run_float(net, images).argmax(1)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]
    assert (got == labels).mean() >= 0.97
    assert (got == want.argmax(1)).mean() >= 0.97


@pytest.mark.parametrize("opset", [10, 13])
def test_qdq_weights_per_channel_and_input_encoding(opset):
    """Only the input and the weights are quantized: run_float on the fake-quantized input equals ORT."""
    per_channel = opset >= 13
    wc = RNG.integers(-128, 128, (4, 3, 3, 3), dtype=np.int8)
    wc_scale = (RNG.random(4) * 0.01 + 0.001).astype(np.float32) if per_channel else np.float32(0.004)
    bc = RNG.integers(-500, 500, 4, dtype=np.int32)
    in_scale, in_zp = np.float32(0.02), np.uint8(128)
    bc_scale = (in_scale * wc_scale).astype(np.float32)
    wm = RNG.integers(-128, 128, (64, 5), dtype=np.int8)
    wm_scale = (RNG.random(5) * 0.01 + 0.001).astype(np.float32) if per_channel else np.float32(0.003)
    axis = {"axis": 0} if per_channel else {}
    inits = [init("wc", wc), init("wc_s", wc_scale), init("wc_z", np.zeros_like(wc_scale, np.int8)),
             init("bc", bc), init("bc_s", bc_scale), init("bc_z", np.zeros_like(bc_scale, np.int32)),
             init("in_s", in_scale), init("in_z", in_zp), init("wm", wm), init("wm_s", wm_scale),
             init("shape", np.array([0, -1], np.int64))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "in_s", "in_z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "in_s", "in_z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wc", "wc_s", "wc_z"], ["wcd"], **axis),
             helper.make_node("DequantizeLinear", ["bc", "bc_s", "bc_z"], ["bcd"], **axis),
             helper.make_node("DequantizeLinear", ["wm", "wm_s"], ["wmd"], **({"axis": 1} if per_channel else {})),
             helper.make_node("Conv", ["xd", "wcd", "bcd"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "wmd"], ["y"], name="fc")]
    m = model(nodes, (3, 8, 8), (5,), inits, opset)
    onnx.checker.check_model(m)
    net = load_onnx(m)
    assert net.tensor_quant == {"x": TensorQuant("uint8", float(in_scale), 128)}
    conv, fc = net.weight_quant["conv"], net.weight_quant["fc"]
    assert conv.format == fc.format == "int8"
    assert (conv.scale.shape, fc.scale.shape) == (((4,), (5,)) if per_channel else ((), ()))
    np.testing.assert_array_equal(get_format("int8").decode(conv.codes), wc)
    np.testing.assert_array_equal(get_format("int8").decode(fc.codes), wm.T)  # the IR's (N, K) layout
    np.testing.assert_array_equal(fc.scale, wm_scale)
    x = (RNG.random((2, 3, 8, 8)) * 4 - 1.5).astype(np.float32)
    got = run_float(net, fake_quant(x, in_scale, 128, 0, 255))
    np.testing.assert_allclose(got, ort_run(m, x), rtol=1e-5, atol=1e-5)


def test_bn_after_quantized_weights_is_refused():
    stats = [init(k, np.ones(2, np.float32)) for k in ("g", "b", "m", "v")]
    inits = [init("w", np.ones((2, 2, 1, 1), np.int8)), init("s", np.float32(0.1)), *stats]
    nodes = [helper.make_node("DequantizeLinear", ["w", "s"], ["wd"]), helper.make_node("Conv", ["x", "wd"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"])]
    with pytest.raises(FrontendError, match=r"already quantized.*quant_pre_process"):
        load_onnx(model(nodes, (2, 3, 3), (2, 3, 3), inits))


# --- QONNX --------------------------------------------------------------------------------------------------

def quant(x, scale, zp, bits, out, signed=1, narrow=0, domain=QONNX):
    return helper.make_node("Quant", [x, scale, zp, bits], [out], domain=domain, signed=signed, narrow=narrow,
                            rounding_mode="ROUND")


def float_quant(x, scale, e, m, b, max_val, out, **attrs):
    return helper.make_node("FloatQuant", [x, scale, e, m, b, max_val], [out], domain=QONNX, **attrs)


@pytest.mark.parametrize("domain", [QONNX, "finn.custom_op.general", "onnx.brevitas"])
def test_qonnx_int_and_float_quant(domain):
    w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    w_scale = (RNG.random((4, 1, 1, 1)) * 0.2 + 0.05).astype(np.float32)
    fc = (RNG.standard_normal((5, 36)) * 3).astype(np.float32)
    fc_scale = np.float32(0.5)
    inits = [init("w", w), init("ws", w_scale), init("z", np.float32(0)), init("b4", np.float32(4)),
             init("b8", np.float32(8)), init("xs", np.float32(0.05)), init("rs", np.float32(0.1)),
             init("fc", fc), init("fs", fc_scale), init("e", np.float32(4)), init("m", np.float32(3)),
             init("bias7", np.float32(7)), init("mx", np.float32(448))]
    nodes = [quant("x", "xs", "z", "b8", "xq", domain=domain),
             quant("w", "ws", "z", "b4", "wq", narrow=1, domain=domain),
             helper.make_node("Conv", ["xq", "wq"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"]),
             quant("r", "rs", "z", "b8", "rq", signed=0, domain=domain),
             helper.make_node("Flatten", ["rq"], ["f"]),
             float_quant("fc", "fs", "e", "m", "bias7", "mx", "fcq", has_nan=1),
             helper.make_node("Gemm", ["f", "fcq"], ["y"], name="fc", transB=1)]
    net = load_onnx(model(nodes, (2, 5, 5), (5,), inits, domains=sorted({domain, QONNX})))
    assert net.tensor_quant["x"] == TensorQuant("int8", float(np.float32(0.05)), 0)
    assert net.tensor_quant["r"] == net.tensor_quant["f"] == TensorQuant("uint8", float(np.float32(0.1)), 0)
    conv, lin = net.weight_quant["conv"], net.weight_quant["fc"]
    # int4, narrow: codes in -7..7
    want_codes = np.clip(np.rint(w / w_scale), -7, 7)
    assert conv.format == "int4" and conv.scale.shape == (4,)
    np.testing.assert_array_equal(get_format("int4").decode(conv.codes), want_codes)
    np.testing.assert_allclose(net.layers[0].weight, want_codes * w_scale, rtol=1e-6)
    # fp8 e4m3 (bias 7, one NaN code, max 448) = ml_dtypes' float8_e4m3fn, saturating
    want = np.clip(fc / fc_scale, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    assert lin.format == "fp8_e4m3" and lin.scale.shape == ()
    np.testing.assert_array_equal(get_format("fp8_e4m3").decode(lin.codes), want)
    np.testing.assert_allclose(net.layers[-1].weight, want * fc_scale, rtol=1e-7)
    # Float semantics without the activation quantizers = a plain graph with the quantized weights.
    plain = model([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
                   helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)],
                  (2, 5, 5), (5,), [init("w", (want_codes * w_scale).astype(np.float32)),
                                    init("fc", (want * fc_scale).astype(np.float32))])
    x = RNG.standard_normal((3, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(run_float(net, x), ort_run(plain, x), rtol=1e-5, atol=1e-4)


def test_float_quant_minifloat6_activation():
    inits = [init("s", np.float32(0.25)), init("e", np.float32(3)), init("m", np.float32(2)),
             init("b", np.float32(3)), init("mx", np.float32(28)), init("w", np.ones((2, 2, 1, 1), np.float32))]
    nodes = [float_quant("x", "s", "e", "m", "b", "mx", "xq"), helper.make_node("Conv", ["xq", "w"], ["y"])]
    net = load_onnx(model(nodes, (2, 3, 3), (2, 3, 3), inits, domains=[QONNX]))
    assert net.tensor_quant == {"x": TensorQuant("minifloat6", 0.25, 0)}
    inits[4] = init("mx", np.float32(24))
    with pytest.raises(FrontendError, match=r"max_val \[24\.\] differs from the largest value 28 of minifloat6"):
        load_onnx(model(nodes, (2, 3, 3), (2, 3, 3), inits, domains=[QONNX]))


def test_qonnx_errors():
    inits = [init("s", np.float32(0.1)), init("z", np.float32(0)), init("b1", np.float32(1)),
             init("w", np.ones((2, 2, 1, 1), np.float32))]
    nodes = [quant("x", "s", "z", "b1", "xq"), helper.make_node("Conv", ["xq", "w"], ["y"])]
    with pytest.raises(FrontendError, match=r"bit width 1 is not supported; integers of 2\.\.16 bits"):
        load_onnx(model(nodes, (2, 3, 3), (2, 3, 3), inits, domains=[QONNX]))
    nodes = [helper.make_node("MultiThreshold", ["x", "s"], ["xq"], domain=QONNX),
             helper.make_node("Conv", ["xq", "w"], ["y"])]
    with pytest.raises(FrontendError, match=r"QONNX operator 'MultiThreshold' is not supported"):
        load_onnx(model(nodes, (2, 3, 3), (2, 3, 3), inits, domains=[QONNX]))
