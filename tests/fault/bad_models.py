"""Malformed ONNX models, each the digits CNN with one fault, by the class of fault it stands for."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

DIGITS_MODEL = Path(__file__).resolve().parents[2] / "models" / "digits" / "digits_cnn.onnx"


def _set_attribute(m, op, key, value):
    for n in m.graph.node:
        if n.op_type == op:
            for a in n.attribute:
                if a.name == key:
                    n.attribute.remove(a)
                    break
            n.attribute.append(helper.make_attribute(key, value))
            return


def _no_inputs(m):
    del m.graph.node[1].input[:]


def _truncated_initializer(m):
    init = m.graph.initializer[0]
    init.raw_data = init.raw_data[:-4]


def _wrong_dims(m):
    m.graph.initializer[0].dims[0] += 1


def _nan_weight(m):
    init = m.graph.initializer[0]
    a = numpy_helper.to_array(init).copy()
    a.flat[0] = np.nan
    init.CopyFrom(numpy_helper.from_array(a, init.name))


def _inf_bias(m):
    init = m.graph.initializer[1]
    a = numpy_helper.to_array(init).copy()
    a.flat[-1] = -np.inf
    init.CopyFrom(numpy_helper.from_array(a, init.name))


def _cycle(m):
    m.graph.node[0].input[0] = m.graph.node[2].output[0]


def _reused_output(m):
    m.graph.node[1].output[0] = m.graph.node[0].output[0]


def _string_input(m):
    m.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.STRING


def _dim(value):
    def f(m):
        m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = value
    return f


def _opset(version):
    def f(m):
        m.opset_import[0].version = version
    return f


def _domain(m):
    m.graph.node[0].domain = "foo.bar"


def _no_output(m):
    del m.graph.output[:]


def _dangling_input(m):
    m.graph.node[3].input[0] = "nobody_writes_this"


def _nan_constant(m):
    """A Constant node (how some exporters write QDQ scales) holding NaN, feeding a Mul."""
    node = helper.make_node("Constant", [], ["nan_scale"], name="nan_scale",
                            value=numpy_helper.from_array(np.array(np.nan, np.float32)))
    mul = helper.make_node("Mul", [m.graph.node[0].output[0], "nan_scale"], ["scaled"], name="scale_it")
    m.graph.node[1].input[0] = "scaled"
    m.graph.node.insert(1, mul)
    m.graph.node.insert(0, node)


def _unknown_op(m):
    m.graph.node[2].op_type = "NoSuchOp"


#: name -> mutation of a copy of the digits CNN
MUTATIONS: dict[str, Callable] = {
    "group=0": lambda m: _set_attribute(m, "Conv", "group", 0),
    "group=3": lambda m: _set_attribute(m, "Conv", "group", 3),
    "stride 0": lambda m: _set_attribute(m, "Conv", "strides", [0, 0]),
    "negative stride": lambda m: _set_attribute(m, "Conv", "strides", [-1, 1]),
    "negative pads": lambda m: _set_attribute(m, "Conv", "pads", [-1, 0, 0, 0]),
    "kernel_shape differs": lambda m: _set_attribute(m, "Conv", "kernel_shape", [5, 5]),
    "dilation 0": lambda m: _set_attribute(m, "Conv", "dilations", [0, 1]),
    "pool kernel 0": lambda m: _set_attribute(m, "MaxPool", "kernel_shape", [0, 0]),
    "pool stride 0": lambda m: _set_attribute(m, "MaxPool", "strides", [0, 0]),
    "node without inputs": _no_inputs,
    "initializer data too short": _truncated_initializer,
    "initializer dims too large": _wrong_dims,
    "NaN weight": _nan_weight,
    "infinite bias": _inf_bias,
    "cycle": _cycle,
    "output written twice": _reused_output,
    "string input": _string_input,
    "zero-sized input": _dim(0),
    "huge input": _dim(10 ** 9),
    "opset 99": _opset(99),
    "opset 0": _opset(0),
    "unknown domain": _domain,
    "no graph output": _no_output,
    "dangling input": _dangling_input,
    "NaN in a Constant": _nan_constant,
    "unknown operator": _unknown_op,
}


def write_bad_models(folder: Path) -> dict[str, Path]:
    """Every mutation written as ``folder/<n>.onnx``, plus files that are no model at all."""
    base = onnx.load(str(DIGITS_MODEL))
    paths = {}
    for i, (name, mutate) in enumerate(MUTATIONS.items()):
        m = copy.deepcopy(base)
        mutate(m)
        path = folder / f"{i:02d}.onnx"
        path.write_bytes(m.SerializeToString())
        paths[name] = path
    raw = DIGITS_MODEL.read_bytes()
    for name, data in (("truncated file", raw[:len(raw) // 2]), ("empty file", b""),
                       ("random bytes", np.random.default_rng(3).bytes(4096)),
                       ("text", b"this is not a model\n"), ("npy file", b"\x93NUMPY\x01\x00" + b" " * 118)):
        path = folder / f"{name.replace(' ', '_')}.onnx"
        path.write_bytes(data)
        paths[name] = path
    return paths
