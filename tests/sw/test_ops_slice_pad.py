"""Slice, Split and Pad (sw/ops/slice.py, sw/ops/pad.py): the float import against onnxruntime, and compiled
networks that use them against the golden model on the emulator, tensor by tensor."""

import numpy as np
import pytest
from onnx import helper

from hw.spec.config import AcceleratorConfig
from sw.compiler.network import compile_network
from sw.frontend import load_onnx
from sw.golden.network import run_network
from sw.quantize import quantize_network
from sw.runtime import run_codes
from test_frontend import check, init, model, rand  # noqa: E402 - tests/sw is on sys.path

SLICES = [
    # starts, ends, axes, steps: torch's x[:, :, ::2, ::2] is two nodes, composed into one slice
    ([[0], [2 ** 62]], [[2], [3]], None),
    ([1, 0], [5, 8], [1, 2], [2, 1]),
    ([0, 1, 1], [4, 7, 7], [1, 2, 3], [1, 2, 2]),
    ([-3], [-1], [3], [1]),
]


@pytest.mark.parametrize("spec", SLICES, ids=range(len(SLICES)))
def test_slice_imports_as_onnx_computes_it(spec):
    inits, nodes, x = [init("w", rand(6, 3, 1, 1))], [helper.make_node("Conv", ["x", "w"], ["c"])], "c"
    parts = [spec] if spec[2] is not None else [([0], [2 ** 62], [2], [2]), ([0], [2 ** 62], [3], [2])]
    for i, (starts, ends, axes, steps) in enumerate(parts):
        names = [f"s{i}", f"e{i}", f"a{i}", f"t{i}"]
        inits += [init(n, np.array(v, np.int64)) for n, v in zip(names, (starts, ends, axes, steps))]
        out = "y" if i == len(parts) - 1 else f"part{i}"
        nodes.append(helper.make_node("Slice", [x, *names], [out]))
        x = out
    net = check(model(nodes, (3, 8, 8), None, inits), (3, 8, 8))
    assert sum(layer.op == "slice" for layer in net.layers) == 1


def test_split_and_pad_import_as_onnx_computes_them():
    inits = [init("w", rand(6, 3, 1, 1)), init("sizes", np.array([2, 4], np.int64)),
             init("pads", np.array([0, 1, 2, 0, 0, 3, 0, 1], np.int64)), init("v", np.float32(0.0))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Split", ["c", "sizes"], ["a", "b"], axis=1),
             helper.make_node("Pad", ["a", "pads", "v"], ["p"]),
             helper.make_node("Concat", ["p", "b"], ["y"], axis=1)]
    # Concat needs equal maps: pad b's rows and columns as well.
    nodes[3] = helper.make_node("Concat", ["p", "bp"], ["y"], axis=1)
    inits.append(init("pads_b", np.array([0, 0, 2, 0, 0, 0, 0, 1], np.int64)))
    nodes.insert(3, helper.make_node("Pad", ["b", "pads_b", "v"], ["bp"]))
    net = check(model(nodes, (3, 5, 5), None, inits), (3, 5, 5))
    assert [layer.op for layer in net.layers].count("slice") == 2
    assert [layer.op for layer in net.layers].count("pad") == 2


def test_reflect_padding_runs_on_the_host_or_is_refused():
    from sw.frontend import FrontendError
    inits = [init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")]
    with pytest.raises(FrontendError, match="only constant padding.*--engine-only"):
        load_onnx(model(nodes, (3, 4, 4), None, inits), engine_only=True)
    assert [layer.op for layer in load_onnx(model(nodes, (3, 4, 4), None, inits)).layers] == ["host"]


@pytest.mark.parametrize("constant", [0.0, 0.75])
@pytest.mark.parametrize("fmt", ["int8", "minifloat6", "uint8"])
def test_option_a_shortcut_on_the_engine(fmt, constant):
    """ResNet's option-A shortcut (subsample by 2, pad the channels with zeros) next to a strided conv, added:
    every tensor of the compiled network is the golden model's."""
    inits = [init("w1", rand(8, 4, 3, 3)), init("s", np.array([0, 0], np.int64)),
             init("e", np.array([2 ** 62, 2 ** 62], np.int64)), init("a", np.array([2, 3], np.int64)),
             init("t", np.array([2, 2], np.int64)), init("pads", np.array([0, 2, 0, 0, 0, 2, 0, 0], np.int64)),
             init("value", np.float32(constant))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["sub"]),
             helper.make_node("Pad", ["sub", "pads", "value"], ["short"]),
             helper.make_node("Add", ["c", "short"], ["sum"]), helper.make_node("Relu", ["sum"], ["y"])]
    m = model(nodes, (4, 10, 10), None, inits)
    net = load_onnx(m)
    config = AcceleratorConfig(rows=4, cols=4, weight_format="int8" if fmt == "uint8" else fmt, act_format=fmt)
    samples = np.random.default_rng(0).standard_normal((8, 4, 10, 10)).astype(np.float32)
    q = quantize_network(net, act_format=config.acts.name, weight_format=config.weights.name,
                         acc_bits=config.acc_bits, samples=samples)
    compiled = compile_network(q, config)
    codes = q.tensors[q.input].quantize(samples[:2])
    golden = run_network(q, codes, keep=True)
    emulated = run_codes(compiled, codes, "emulator", keep=True)
    for i in range(2):
        for name in compiled.materialized:
            np.testing.assert_array_equal(emulated.tensors[i][name], golden[name][i], err_msg=name)
