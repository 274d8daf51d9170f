"""ONNX models for tests that need more than the digits CNN: host layers, global pools of large maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sw.evaluate import DIGITS



def _save(graph, path: Path, opset: int) -> Path:
    """The model of ``graph`` at ``opset`` (IR version 8), checked in full and saved at ``path``."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _weights_and_biases(rng, shapes: dict) -> list:
    """Initializers ``wK`` of the given shapes (He-like scale, fan-in from the trailing dims) and biases ``bK`` of
    their first dimension."""
    inits = []
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:]))
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 1.5 / np.sqrt(fan_in))
                                             .astype(np.float32), name))
        inits.append(numpy_helper.from_array((rng.standard_normal(shape[0]) * 0.2).astype(np.float32),
                                             "b" + name[1:]))
    return inits

def softmax_digits(path: Path) -> Path:
    """The trained digits CNN with a Softmax after its logits: the engine's program, then the host's."""
    model = onnx.load(DIGITS / "digits_cnn.onnx")
    model.graph.node.append(helper.make_node("Softmax", ["logits"], ["probs"], name="final_softmax", axis=1))
    model.graph.output[0].name = "probs"
    onnx.save(model, path)
    return path


def lstm_digits(path: Path, seed: int = 0) -> Path:
    """Digits images (1 x 16 x 16) through a conv, a max pool, an LSTM over the 4 channels as a sequence of
    8 x 8 = 64 features, a Gemm and a Relu: an engine program, the host's LSTM, another engine program."""
    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    hidden = 8
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p1", "seq_shape"], ["seq"]),               # (N, 4, 64)
        helper.make_node("Transpose", ["seq"], ["tnf"], perm=[1, 0, 2]),          # (4, N, 64)
        helper.make_node("LSTM", ["tnf", "W", "R", "B"], ["h"], hidden_size=hidden, name="lstm"),
        helper.make_node("Squeeze", ["h", "axis1"], ["hs"]),                      # (4, N, 8)
        helper.make_node("Transpose", ["hs"], ["nth"], perm=[1, 0, 2]),           # (N, 4, 8)
        helper.make_node("Flatten", ["nth"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["g"], transB=1),
        helper.make_node("Relu", ["g"], ["y"]),
    ]
    inits = [init("w1", 4, 1, 3, 3), init("b1", 4, scale=0.1),
             numpy_helper.from_array(np.array([0, 4, -1], np.int64), "seq_shape"),
             init("W", 1, 4 * hidden, 64), init("R", 1, 4 * hidden, hidden), init("B", 1, 8 * hidden, scale=0.1),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             init("w2", 10, 4 * hidden), init("b2", 10, scale=0.1)]
    graph = helper.make_graph(nodes, "lstm_digits", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                   ["N", 1, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    return _save(graph, path, opset=17)


def global_pools_digits(path: Path, seed: int = 0) -> Path:
    """Digits images through a conv, then a global average pool and a global max pool of its 16 x 16 map side by
    side, concatenated, and a Gemm: on a small engine each pool's window is larger than the accumulators hold,
    so the compiler pools it in bands of rows."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["avg"]),
        helper.make_node("GlobalMaxPool", ["r1"], ["max"]),
        helper.make_node("Concat", ["avg", "max"], ["both"], axis=1),
        helper.make_node("Flatten", ["both"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["y"], transB=1),
    ]
    inits = [numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)
             for name, shape, scale in (("w1", (8, 1, 3, 3), 0.5), ("b1", (8,), 0.1), ("w2", (10, 16), 0.3),
                                        ("b2", (10,), 0.1))]
    graph = helper.make_graph(nodes, "global_pools", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                    ["N", 1, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    return _save(graph, path, opset=13)


def activations_resnet(path: Path, seed: int = 0) -> Path:
    """Digits images through residual blocks with nonlinear activations on the engine's lookup table: HardSwish
    after a conv and after a residual Add, LeakyRelu, SiLU (Mul(x, Sigmoid(x))), HardSigmoid before a max pool
    (monotone: pooled on the accumulators), HardSwish before another (not monotone: pooled on its own), Tanh,
    a global average pool and a Sigmoid after the final Gemm."""
    rng = np.random.default_rng(seed)
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        node("HardSwish", ["c1"], ["a1"]),
        node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        node("LeakyRelu", ["c2"], ["a2"], alpha=0.1),
        node("Conv", ["a2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1]),
        node("Add", ["a1", "c3"], ["s1"]),
        node("HardSwish", ["s1"], ["a3"]),
        node("Conv", ["a3", "w4", "b4"], ["c4"], pads=[1, 1, 1, 1]),
        node("HardSigmoid", ["c4"], ["a4"], alpha=0.25, beta=0.5),
        node("MaxPool", ["a4"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["p1", "w5", "b5"], ["c5"], pads=[1, 1, 1, 1]),
        node("Sigmoid", ["c5"], ["g5"]),
        node("Mul", ["c5", "g5"], ["a5"]),
        node("Conv", ["a5", "w6", "b6"], ["c6"], pads=[1, 1, 1, 1]),
        node("Add", ["a5", "c6"], ["s2"]),
        node("HardSwish", ["s2"], ["a6"]),
        node("MaxPool", ["a6"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["p2", "w7", "b7"], ["c7"]),
        node("Tanh", ["c7"], ["a7"]),
        node("GlobalAveragePool", ["a7"], ["gap"]),
        node("Flatten", ["gap"], ["flat"]),
        node("Gemm", ["flat", "w8", "b8"], ["logits"], transB=1),
        node("Sigmoid", ["logits"], ["y"]),
    ]
    shapes = {"w1": (8, 1, 3, 3), "w2": (8, 8, 3, 3), "w3": (8, 8, 3, 3), "w4": (8, 8, 3, 3), "w5": (16, 8, 3, 3),
              "w6": (16, 16, 3, 3), "w7": (16, 16, 1, 1), "w8": (10, 16)}
    inits = _weights_and_biases(rng, shapes)
    graph = helper.make_graph(nodes, "activations_resnet", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 1, 16, 16])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=inits)
    return _save(graph, path, opset=14)


def decoder_digits(path: Path, seed: int = 0) -> Path:
    """Digits images through a tiny encoder/decoder: two strided convs down, a ConvTranspose (3x3, stride 2,
    output_padding) up, a Concat with the skip, a nearest Resize (x2), a conv whose 24 channels a DepthToSpace
    (CRD, block 2) turns into 6 at twice the size, and a strided conv: the rearranging layers ride on the STOREs
    of the layers before them."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["e1"]),
        helper.make_node("Conv", ["e1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["b"]),
        helper.make_node("ConvTranspose", ["b", "wt", "bt"], ["ct"], strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1]),
        helper.make_node("Relu", ["ct"], ["t"]),
        helper.make_node("Concat", ["t", "e1"], ["cat"], axis=1),
        helper.make_node("Resize", ["cat", "", "sc"], ["up"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Conv", ["up", "w3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["c3"], ["d"], blocksize=2, mode="CRD"),
        helper.make_node("Conv", ["d", "w4"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2]),
    ]
    inits = [numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)
             for name, shape, scale in (("w1", (8, 1, 3, 3), 0.5), ("w2", (16, 8, 3, 3), 0.2),
                                        ("wt", (16, 10, 3, 3), 0.2), ("bt", (10,), 0.1),
                                        ("w3", (24, 18, 3, 3), 0.15), ("w4", (3, 6, 3, 3), 0.3))]
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc"))
    graph = helper.make_graph(nodes, "decoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               ["N", 1, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              initializer=inits)
    return _save(graph, path, opset=13)


def mlp(path: Path, sizes: tuple[int, ...] = (784, 512, 512, 10), seed: int = 0) -> Path:
    """A multilayer perceptron of Gemm + Relu layers (``sizes``: the input width, then each layer's outputs) on a
    flat input: the linear-heavy network of the batching tests and benchmark (random weights)."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array((rng.standard_normal(n) * 0.1).astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"g{i}"], transB=1))
        x = f"g{i}"
        if i + 2 < len(sizes):
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                           ["N", sizes[0]])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", sizes[-1]])],
                              initializer=inits)
    return _save(graph, path, opset=17)


def conv_head(path: Path, seed: int = 0) -> Path:
    """Digits images through a conv, a global average pool and a classifier head of 1x1 convolutions on the 1x1
    map (with a residual Add of two of them), then a Flatten: layers on vectors that are not linear layers."""
    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["g"]),
        helper.make_node("Conv", ["g", "wa", "ba"], ["a"]),
        helper.make_node("Relu", ["a"], ["ra"]),
        helper.make_node("Conv", ["ra", "wb", "bb"], ["b"]),
        helper.make_node("Add", ["ra", "b"], ["s"]),
        helper.make_node("Conv", ["s", "wc", "bc"], ["c"]),
        helper.make_node("Flatten", ["c"], ["y"]),
    ]
    inits = [init("w1", 20, 1, 3, 3), init("b1", 20, scale=0.1), init("wa", 24, 20, 1, 1), init("ba", 24, scale=0.1),
             init("wb", 24, 24, 1, 1), init("bb", 24, scale=0.1), init("wc", 10, 24, 1, 1), init("bc", 10, scale=0.1)]
    graph = helper.make_graph(nodes, "conv_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 ["N", 1, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    return _save(graph, path, opset=17)


def prelu_net(path: Path, seed: int = 0) -> Path:
    """Digits images through conv -> PRelu -> conv -> PRelu -> Gemm -> PRelu, every PRelu with one slope per
    channel (negative, zero and positive slopes among them): slopes shaped (C, 1, 1) after the convs, (C,) after
    the Gemm (its output is (N, C), so (C,) broadcasts per channel). Each runs in its producer's requantization."""
    rng = np.random.default_rng(seed)
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        node("PRelu", ["c1", "slope1"], ["a1"]),
        node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        node("PRelu", ["c2", "slope2"], ["a2"]),
        node("Flatten", ["a2"], ["flat"]),
        node("Gemm", ["flat", "w3", "b3"], ["logits"], transB=1),
        node("PRelu", ["logits", "slope3"], ["y"]),
    ]
    shapes = {"w1": (8, 1, 3, 3), "w2": (8, 8, 3, 3), "w3": (10, 128)}
    inits = _weights_and_biases(rng, shapes)
    slopes = {"slope1": np.array([0.25, -0.5, 0.0, 0.1, 1.5, 0.02, -0.1, 0.7]).reshape(8, 1, 1),
              "slope2": rng.uniform(0.0, 0.6, 8).reshape(8, 1, 1),
              "slope3": np.array([0.3, -0.2, 0.0, 0.05, 0.9, 0.4, 0.1, 0.2, 0.6, 0.15])}
    inits += [numpy_helper.from_array(v.astype(np.float32), k) for k, v in slopes.items()]
    graph = helper.make_graph(nodes, "prelu_net", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 1, 16, 16])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=inits)
    return _save(graph, path, opset=14)


def squeeze_excite_digits(path: Path, seed: int = 0) -> Path:
    """Digits images through a conv, a squeeze-excite block (global average pool, 1x1 conv, Relu, 1x1 conv,
    Sigmoid: a per-channel gate (N, C, 1, 1), then Mul with the conv's map), a conv, an attention gate of the
    map's own shape (Mul of the map and a HardSigmoid of a conv of it), a spatial gate (N, 1, H, W) (a Sigmoid of a
    conv to one channel), a global average pool and a Gemm."""
    rng = np.random.default_rng(seed)
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        node("Relu", ["c1"], ["r1"]),
        node("GlobalAveragePool", ["r1"], ["s"]),
        node("Conv", ["s", "w2", "b2"], ["f1"]),
        node("Relu", ["f1"], ["f1r"]),
        node("Conv", ["f1r", "w3", "b3"], ["f2"]),
        node("Sigmoid", ["f2"], ["gate"]),
        node("Mul", ["r1", "gate"], ["se"]),
        node("Conv", ["se", "w4", "b4"], ["c4"], pads=[1, 1, 1, 1], strides=[2, 2]),
        node("Conv", ["c4", "w5", "b5"], ["c5"], pads=[1, 1, 1, 1]),
        node("HardSigmoid", ["c5"], ["attention"]),
        node("Mul", ["attention", "c4"], ["gated"]),
        node("Conv", ["gated", "w7", "b7"], ["c7"], pads=[1, 1, 1, 1]),
        node("Sigmoid", ["c7"], ["spatial"]),
        node("Mul", ["gated", "spatial"], ["gated2"]),
        node("GlobalAveragePool", ["gated2"], ["gap"]),
        node("Flatten", ["gap"], ["flat"]),
        node("Gemm", ["flat", "w6", "b6"], ["y"], transB=1),
    ]
    shapes = {"w1": (8, 1, 3, 3), "w2": (4, 8, 1, 1), "w3": (8, 4, 1, 1), "w4": (8, 8, 3, 3), "w5": (8, 8, 3, 3),
              "w6": (10, 8), "w7": (1, 8, 3, 3)}
    inits = _weights_and_biases(rng, shapes)
    graph = helper.make_graph(nodes, "squeeze_excite", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 1, 16, 16])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=inits)
    return _save(graph, path, opset=14)


def squeeze_excite_linear_digits(path: Path, seed: int = 0) -> Path:
    """The squeeze-excite block as torch's nn.Linear writes it: conv -> global average pool -> Flatten -> Gemm ->
    Relu -> Gemm -> Sigmoid -> Reshape to (N, C, 1, 1) -> Mul with the conv's map -> conv (the gate's second half
    through an Unsqueeze in a second block), then a global average pool and a Gemm."""
    rng = np.random.default_rng(seed)
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        node("Relu", ["c1"], ["r1"]),
        node("GlobalAveragePool", ["r1"], ["s"]),
        node("Flatten", ["s"], ["sf"]),
        node("Gemm", ["sf", "w2", "b2"], ["f1"], transB=1),
        node("Relu", ["f1"], ["f1r"]),
        node("Gemm", ["f1r", "w3", "b3"], ["f2"], transB=1),
        node("Sigmoid", ["f2"], ["gate"]),
        node("Reshape", ["gate", "gate_shape"], ["gate4"]),
        node("Mul", ["r1", "gate4"], ["se"]),
        node("Conv", ["se", "w4", "b4"], ["c4"], pads=[1, 1, 1, 1], strides=[2, 2]),
        node("GlobalAveragePool", ["c4"], ["s2"]),
        node("Flatten", ["s2"], ["s2f"]),
        node("Gemm", ["s2f", "w5", "b5"], ["f5"], transB=1),
        node("HardSigmoid", ["f5"], ["gate5"]),
        node("Unsqueeze", ["gate5", "axes"], ["gate5u"]),
        node("Mul", ["gate5u", "c4"], ["se2"]),
        node("GlobalAveragePool", ["se2"], ["gap"]),
        node("Flatten", ["gap"], ["flat"]),
        node("Gemm", ["flat", "w6", "b6"], ["y"], transB=1),
    ]
    shapes = {"w1": (8, 1, 3, 3), "w2": (4, 8), "w3": (8, 4), "w4": (8, 8, 3, 3), "w5": (8, 8), "w6": (10, 8)}
    inits = [numpy_helper.from_array(np.array([-1, 8, 1, 1], np.int64), "gate_shape"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes"), *_weights_and_biases(rng, shapes)]
    graph = helper.make_graph(nodes, "squeeze_excite_linear", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 1, 16, 16])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=inits)
    return _save(graph, path, opset=14)


def stem_shortcut_digits(path: Path, seed: int = 0) -> Path:
    """Digits images through a ResNet-like stem and block: a 7x7 convolution of the one input channel (folded: 49
    channels, several activation blocks of a 1x1 job), a 3x3 one, a strided 1x1 shortcut beside a strided 3x3
    one, their Add, a global average pool and a Gemm: the stem and the shortcut are the 1x1 jobs the ``stack``
    loop order serves (sw/compiler/stacking.py)."""
    rng = np.random.default_rng(seed)
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], pads=[3, 3, 3, 3]),
        node("Relu", ["c1"], ["a1"]),
        node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        node("Relu", ["c2"], ["a2"]),
        node("Conv", ["a2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2]),
        node("Conv", ["a2", "w4", "b4"], ["c4"], strides=[2, 2]),
        node("Add", ["c3", "c4"], ["s"]),
        node("Relu", ["s"], ["a3"]),
        node("GlobalAveragePool", ["a3"], ["gap"]),
        node("Flatten", ["gap"], ["flat"]),
        node("Gemm", ["flat", "w5", "b5"], ["y"], transB=1),
    ]
    shapes = {"w1": (32, 1, 7, 7), "w2": (32, 32, 3, 3), "w3": (64, 32, 3, 3), "w4": (64, 32, 1, 1), "w5": (10, 64)}
    graph = helper.make_graph(nodes, "stem_shortcut_digits", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 1, 16, 16])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=_weights_and_biases(rng, shapes))
    return _save(graph, path, opset=13)
