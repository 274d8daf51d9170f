"""load_onnx (sw/frontend/onnx_import.py) on small models built with onnx.helper, against onnxruntime.

Each model is imported and run with run_float; onnxruntime runs the original ONNX graph (with its graph
optimizations off, so that it executes the operators as written) on the same random input.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sw.frontend import FrontendError, SUPPORTED_OPS, load_onnx, run_float

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"
RNG = np.random.default_rng(7)
F = TensorProto.FLOAT


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def model(nodes, in_shape, out_shape, inits=(), opset=13, batch="N", extra_inputs=()):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", F, [batch, *in_shape]), *extra_inputs],
        [helper.make_tensor_value_info("y", F, [batch, "C", "H", "W"] if out_shape is None else [batch, *out_shape])],
        initializer=list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset <= 16 else 9
    return m


def ort_run(m, x):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def check(m, in_shape, batch=3, rtol=1e-5, atol=1e-5):
    """Import, run both, compare; returns the network."""
    onnx.checker.check_model(m)
    x = rand(batch, *in_shape)
    net = load_onnx(m)
    got = run_float(net, x)
    want = ort_run(m, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    assert net.shapes[net.output] == want.shape[1:]
    return net


def clip_node(inp, out, lo, hi, opset, inits):
    """Clip(lo, hi) in the form of the opset: attributes before 11, constant inputs from 11."""
    if opset < 11:
        return helper.make_node("Clip", [inp], [out], min=lo, max=hi)
    inits += [init(out + "_lo", np.float32(lo)), init(out + "_hi", np.float32(hi))]
    return helper.make_node("Clip", [inp, out + "_lo", out + "_hi"], [out])


OPSETS = [8, 11, 13, 17]


# --- convolution --------------------------------------------------------------------------------------------

CONV = [
    # cin, cout, group, kernel, attrs
    (3, 4, 1, (3, 3), dict(pads=[1, 1, 1, 1])),
    (4, 6, 2, (3, 2), dict(pads=[0, 1, 2, 0], strides=[2, 1], dilations=[1, 2])),
    (4, 4, 4, (3, 3), dict(pads=[2, 0, 1, 1], strides=[1, 2])),  # depthwise
    (3, 5, 1, (3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    (3, 5, 1, (2, 4), dict(auto_pad="SAME_LOWER", strides=[1, 3])),
    (3, 2, 1, (3, 3), dict(auto_pad="VALID", dilations=[2, 1])),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("cin, cout, group, kernel, attrs", CONV)
def test_conv(opset, cin, cout, group, kernel, attrs):
    inits = [init("w", rand(cout, cin // group, *kernel)), init("b", rand(cout))]
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=group, kernel_shape=list(kernel), **attrs)
    net = check(model([node], (cin, 9, 10), None, inits, opset), (cin, 9, 10))
    assert [layer.op for layer in net.layers] == ["conv"]
    assert net.layers[0].attrs["groups"] == group


@pytest.mark.parametrize("opset", OPSETS)
def test_conv_bn_relu_and_clip(opset):
    inits = [init("w", rand(6, 3, 3, 3)), init("b", rand(6)), init("g", rand(6)), init("beta", rand(6)),
             init("mean", rand(6)), init("var", np.abs(rand(6)) + 0.1),
             init("w2", rand(4, 6, 1, 1)), init("g2", rand(4)), init("beta2", rand(4)), init("mean2", rand(4)),
             init("var2", np.abs(rand(4)) + 0.1)]
    bn = dict(epsilon=1e-3)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["n"], **bn),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"]),  # no bias: BN creates one
             helper.make_node("BatchNormalization", ["c2", "g2", "beta2", "mean2", "var2"], ["n2"]),
             clip_node("n2", "y", -0.3, 0.4, opset, inits)]
    net = check(model(nodes, (3, 6, 6), None, inits, opset), (3, 6, 6))
    assert [(layer.op, layer.clip) for layer in net.layers] == [("conv", (0.0, np.inf)),
                                                                ("conv", (pytest.approx(-0.3), pytest.approx(0.4)))]
    assert net.layers[0].output == "r" and net.output == "y"


@pytest.mark.parametrize("opset", [8, 13])
def test_relu6_and_relu_after_maxpool(opset):
    """Clip(0, 6) after a conv; a Relu after MaxPool and Flatten moves before them (they commute)."""
    inits = [init("w", rand(4, 2, 3, 3, scale=3)), init("fc", rand(16, 5))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             clip_node("c", "r6", 0.0, 6.0, opset, inits),
             helper.make_node("Conv", ["r6", init_name(inits, "w2", rand(4, 4, 1, 1))], ["c2"]),
             helper.make_node("MaxPool", ["c2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Relu", ["f"], ["r"]),
             helper.make_node("MatMul", ["r", "fc"], ["y"])]
    net = check(model(nodes, (2, 6, 6), None, inits, opset), (2, 6, 6))
    assert [(layer.op, layer.clip) for layer in net.layers] == [
        ("conv", (0.0, 6.0)), ("conv", (0.0, np.inf)), ("maxpool", None), ("flatten", None), ("linear", None)]


def init_name(inits, name, array):
    inits.append(init(name, array))
    return name


# --- matrix products ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [8, 11, 13])
@pytest.mark.parametrize("trans_b, alpha, beta, c_shape", [(1, 1.0, 1.0, (5,)), (0, 0.5, 2.0, (1, 5)),
                                                          (1, -1.5, 0.0, (5,)), (0, 1.0, 1.0, None)])
def test_gemm(opset, trans_b, alpha, beta, c_shape):
    b = rand(5, 7) if trans_b else rand(7, 5)
    inits = [init("b", b)]
    inputs = ["x", "b"]
    if c_shape is not None:
        inits.append(init("c", rand(*c_shape)))
        inputs.append("c")
    elif opset < 11:
        inits.append(init("c", np.zeros(5, np.float32)))  # C is required before opset 11
        inputs.append("c")
    node = helper.make_node("Gemm", inputs, ["y"], transB=trans_b, alpha=alpha, beta=beta)
    net = check(model([node], (7,), (5,), inits, opset), (7,))
    if opset < 11 and c_shape is None:
        assert not net.layers[0].bias.any()
    assert net.layers[0].weight.shape == (5, 7)


@pytest.mark.parametrize("opset", [8, 13])
def test_matmul_add_equals_gemm(opset):
    w, b = rand(6, 4), rand(4)
    mm = model([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["bias", "m"], ["y"])],
               (6,), (4,), [init("w", w), init("bias", b)], opset)
    gemm = model([helper.make_node("Gemm", ["x", "wt", "bias"], ["y"], transB=1)], (6,), (4,),
                 [init("wt", w.T.copy()), init("bias", b)], opset)
    a, g = check(mm, (6,)), check(gemm, (6,))
    np.testing.assert_allclose(a.layers[0].weight, g.layers[0].weight)
    np.testing.assert_allclose(a.layers[0].bias, g.layers[0].bias)
    alone = check(model([helper.make_node("MatMul", ["x", "w"], ["y"])], (6,), (4,), [init("w", w)], opset), (6,))
    assert alone.layers[0].bias is None


def test_bn_statistics_kept_on_the_layer():
    """The folded BatchNormalization's beta and |gamma| stay on the layer as its output's mean and spread (what
    data-free quantization reads); a bias Add after it shifts the mean, a second BatchNormalization maps both."""
    g, beta, cb = rand(4), rand(4), rand(1, 4, 1, 1)
    g2, beta2, mean2, var2 = rand(4), rand(4), rand(4), np.abs(rand(4)) + 0.5
    inits = [init("w", rand(4, 2, 1, 1)), init("g", g), init("beta", beta), init("mean", rand(4)),
             init("var", np.abs(rand(4)) + 0.5), init("cb", cb),
             init("g2", g2), init("beta2", beta2), init("mean2", mean2), init("var2", var2),
             init("w3", rand(3, 4, 1, 1))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["n"]),
             helper.make_node("Add", ["n", "cb"], ["a"]),
             helper.make_node("BatchNormalization", ["a", "g2", "beta2", "mean2", "var2"], ["n2"]),
             helper.make_node("Relu", ["n2"], ["r"]), helper.make_node("Conv", ["r", "w3"], ["y"])]
    net = check(model(nodes, (2, 4, 4), (3, 4, 4), inits), (2, 4, 4))
    first, last = net.layers
    k2 = g2 / np.sqrt(var2 + 1e-5)
    np.testing.assert_allclose(first.output_stats[0], (beta + cb.ravel() - mean2) * k2 + beta2, rtol=1e-5)
    np.testing.assert_allclose(first.output_stats[1], np.abs(g * k2), rtol=1e-5)
    assert last.output_stats is None


def test_linear_bn_and_conv_bias_add():
    """BN folds into a Gemm; an Add of a per-channel constant is a conv's bias."""
    inits = [init("w", rand(3, 2, 1, 1)), init("cb", rand(1, 3, 1, 1)), init("fc", rand(4, 48)),
             init("g", rand(4)), init("beta", rand(4)), init("mean", rand(4)), init("var", np.abs(rand(4)) + 0.5)]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "cb"], ["a"]),
             helper.make_node("Flatten", ["a"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["m"], transB=1),
             helper.make_node("BatchNormalization", ["m", "g", "beta", "mean", "var"], ["y"])]
    net = check(model(nodes, (2, 4, 4), (4,), inits), (2, 4, 4))
    assert [layer.op for layer in net.layers] == ["conv", "flatten", "linear"]


# --- pools, flatten, reshape ------------------------------------------------------------------------------

POOLS = [
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 0, 1, 2], strides=[1, 2])),
    ("MaxPool", dict(kernel_shape=[3, 2], auto_pad="SAME_UPPER", strides=[2, 2])),
    ("MaxPool", dict(kernel_shape=[2, 2], auto_pad="SAME_LOWER")),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),  # 8x8: both modes agree
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),  # a partial window: padding, ignored
    ("MaxPool", dict(kernel_shape=[2, 3], strides=[3, 2], pads=[1, 0, 0, 1], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[2, 2], dilations=[2, 1], storage_order=1)),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 0, 2], count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[3, 2], auto_pad="VALID", strides=[2, 3])),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("op, attrs", POOLS)
def test_pools(opset, op, attrs):
    if opset < 10 and ({"ceil_mode", "dilations"} & set(attrs)):
        pytest.skip("ceil_mode and dilations arrived in opset 10")
    net = check(model([helper.make_node(op, ["x"], ["y"], **attrs)], (3, 8, 8), None, (), opset), (3, 8, 8))
    assert net.layers[0].op == {"MaxPool": "maxpool", "AveragePool": "avgpool"}[op]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("tail", ["flatten", "reshape0", "reshape-1", "squeeze"])
def test_global_pools_and_flatten_equivalents(opset, tail):
    inits = [init("fc", rand(4, 3))]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["ga"]), helper.make_node("GlobalMaxPool", ["x"], ["gm"]),
             helper.make_node("Sum" if opset < 11 else "Add", ["ga", "gm"], ["g"])]
    if opset < 11:
        inits.append(init("zero", np.zeros(4, np.float32)))  # Gemm's C is required before opset 11
    if tail == "flatten":
        nodes.append(helper.make_node("Flatten", ["g"], ["f"]))
    elif tail.startswith("reshape"):
        inits.append(init("shape", np.array([0, -1] if tail == "reshape0" else [-1, 3], np.int64)))
        nodes.append(helper.make_node("Reshape", ["g", "shape"], ["f"]))
    elif opset < 13:
        nodes.append(helper.make_node("Squeeze", ["g"], ["f"], axes=[2, 3]))
    else:
        inits.append(init("axes", np.array([-1, 2], np.int64)))
        nodes.append(helper.make_node("Squeeze", ["g", "axes"], ["f"]))
    nodes.append(helper.make_node("Gemm", ["f", "fc", "zero"] if opset < 11 else ["f", "fc"], ["y"], transB=1))
    net = check(model(nodes, (3, 5, 4), (4,), inits, opset), (3, 5, 4))
    assert [layer.op for layer in net.layers] == ["global_avgpool", "maxpool", "add", "flatten", "linear"]


def test_reshape_with_fixed_batch_and_identity_reshape():
    inits = [init("w", rand(3, 3, 1, 1)), init("s1", np.array([0, 3, -1, 4], np.int64)),
             init("s2", np.array([2, 48], np.int64)), init("fc", rand(48, 2))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Reshape", ["c", "s1"], ["r"]),
             helper.make_node("Relu", ["r"], ["q"]), helper.make_node("Reshape", ["q", "s2"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["y"])]
    net = check(model(nodes, (3, 4, 4), (2,), inits, batch=2), (3, 4, 4), batch=2)
    assert [(layer.op, layer.clip) for layer in net.layers] == [("conv", (0, np.inf)), ("flatten", None),
                                                                ("linear", None)]
    # The IR runs one sample at a time (a symbolic batch is 1): [2, 48] reshapes across samples.
    with pytest.raises(FrontendError, match=r"Reshape.*to \[2, 48\] is not supported; only \(N, -1\)"):
        load_onnx(model(nodes, (3, 4, 4), (2,), inits))


# --- graphs -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [8, 13])
def test_residual_concat_identity_dropout(opset):
    inits = [init("w1", rand(4, 3, 3, 3)), init("w2", rand(4, 4, 3, 3)), init("w3", rand(2, 8, 1, 1)),
             init("b1", rand(4))]
    dropout_inputs = ["a"] if opset < 12 else ["a", init_name(inits, "ratio", np.float32(0.5))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["a"]),
             helper.make_node("Dropout", dropout_inputs, ["d"]),
             helper.make_node("Identity", ["d"], ["i"]),
             helper.make_node("Relu", ["i"], ["r2"]),
             helper.make_node("Concat", ["r2", "r1"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w3"], ["y"])]
    net = check(model(nodes, (3, 5, 5), None, inits, opset), (3, 5, 5))
    assert [(layer.op, layer.clip) for layer in net.layers] == [
        ("conv", (0, np.inf)), ("conv", None), ("add", (0, np.inf)), ("concat", None), ("conv", None)]


def test_digits_float_model_equals_onnxruntime():
    net = load_onnx(DIGITS / "digits_cnn.onnx")
    assert [layer.op for layer in net.layers] == ["conv", "maxpool", "conv", "maxpool", "flatten", "linear",
                                                  "linear"]
    assert (net.input, net.output, net.input_shape, net.output_shape) == ("input", "logits", (1, 16, 16), (10,))
    with np.load(DIGITS / "test_set.npz") as data:
        images, labels = data["images"], data["labels"]
    got = run_float(net, images)
    want = ort.InferenceSession(str(DIGITS / "digits_cnn.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": images})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).all()
    assert (got.argmax(1) == labels).mean() == pytest.approx(0.98, abs=0.01)


# --- errors -------------------------------------------------------------------------------------------------

def conv_then(node, inits=()):
    return model([helper.make_node("Conv", ["x", "w"], ["c"]), node], (2, 4, 4), None,
                 [init("w", rand(2, 2, 1, 1)), *inits])


def test_unsupported_operator():
    m = conv_then(helper.make_node("Softmax", ["c"], ["y"], name="my_softmax"))
    with pytest.raises(FrontendError) as error:
        load_onnx(m, engine_only=True)
    message = str(error.value)
    assert "'my_softmax'" in message and "'Softmax'" in message and "--engine-only" in message
    assert all(op in message for op in SUPPORTED_OPS)
    m = conv_then(helper.make_node("SpaceToDepth", ["c"], ["y"], blocksize=2))
    with pytest.raises(FrontendError, match=r"node writing 'y' \(SpaceToDepth\).*not one the engine runs \(it runs Conv"):
        load_onnx(m, engine_only=True)


@pytest.mark.parametrize("case, match", [
    ("bn_on_input", r"BatchNormalization.*only right after conv or linear or convtranspose layers.*graph input"),
    ("bn_after_relu", r"BatchNormalization after a Relu/Clip cannot be folded"),
    ("bn_shared", r"also read elsewhere"),
    ("relu_on_input", r"Relu.*only right after.*graph input"),
    ("relu_shared", r"also read elsewhere"),
])
def test_unfoldable(case, match):
    stats = [init(k, np.ones(2, np.float32)) for k in ("g", "b", "m", "v")]
    bn = lambda src, dst: helper.make_node("BatchNormalization", [src, "g", "b", "m", "v"], [dst])  # noqa: E731
    nodes = {
        "bn_on_input": [bn("x", "n"), helper.make_node("Conv", ["n", "w"], ["y"])],
        "bn_after_relu": [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
                          bn("r", "y")],
        "bn_shared": [helper.make_node("Conv", ["x", "w"], ["c"]), bn("c", "n"),
                      helper.make_node("Add", ["c", "n"], ["y"])],
        "relu_on_input": [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"])],
        "relu_shared": [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
                        helper.make_node("Add", ["c", "r"], ["y"])],
    }[case]
    with pytest.raises(FrontendError, match=match):
        load_onnx(model(nodes, (2, 4, 4), None, [init("w", rand(2, 2, 1, 1)), *stats]), engine_only=True)


@pytest.mark.parametrize("node, match", [
    (helper.make_node("AveragePool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1,
                      count_include_pad=1), r"ceil_mode=1 adds a partial window here, which only a max pool supports"),
    (helper.make_node("AveragePool", ["c"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
     r"count_include_pad=0.*only count_include_pad=1 \(or no padding\)"),
    (helper.make_node("Flatten", ["c"], ["y"], axis=2), r"only axis=1"),
    (helper.make_node("Concat", ["c", "c"], ["y"], axis=2), r"only the channel axis"),
    (helper.make_node("Add", ["c", "k"], ["y"]), r"varies within a channel"),
    (helper.make_node("Conv", ["c", "c"], ["y"]), r"weight \('c'\) must be a constant"),
])
def test_unsupported_attributes(node, match):
    with pytest.raises(FrontendError, match=match):
        load_onnx(conv_then(node, [init("k", rand(1, 2, 4, 4))]), engine_only=True)


def test_bad_graphs():
    two = model([helper.make_node("Add", ["x", "x2"], ["y"])], (2,), (2,),
                extra_inputs=[helper.make_tensor_value_info("x2", F, ["N", 2])])
    with pytest.raises(FrontendError, match=r"2 graph inputs \(\['x', 'x2'\]\).*exactly one"):
        load_onnx(two)
    with pytest.raises(FrontendError, match=r"shape \[None, 3, None, 4\]"):
        load_onnx(model([helper.make_node("Relu", ["x"], ["y"])], (3, "H", 4), None))
    with pytest.raises(FrontendError, match="MaxPool.*at least 3 dimensions"):      # onnx's checks come first
        load_onnx(model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2])], (3,), None))
    with pytest.raises(FrontendError, match=r"reshaping \(N, 3, 4, 4\) to \[0, 3, 16\]"):
        load_onnx(model([helper.make_node("Reshape", ["x", "s"], ["y"])], (3, 4, 4), None,
                        [init("s", np.array([0, 3, 16], np.int64))]))
    with pytest.raises(FrontendError, match="No ONNX file"):
        load_onnx(ROOT / "no_such_model.onnx")
