"""Nonlinear activations in the post-processing unit's lookup table (sw/ops/activations.py).

The float reference against onnxruntime; each table against onnxruntime's activation on the dequantized codes
(every entry the output code nearest to it); what fuses and what the host keeps; the quantizer's two encodings;
a network with residual blocks, global pooling and six activations golden == emulator, within the quantization
error of onnxruntime.
"""

from __future__ import annotations


import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from sw.compile import compile_model
from sw.compiler.network import CompiledNetwork, compile_network
from sw.evaluate import DIGITS
from sw.frontend.float_model import run_float
from sw.frontend.onnx_import import load_onnx
from sw.golden.activation import activation_table, table_monotone
from sw.ir import QuantizedNetwork, QuantTensor
from sw.ops import ACTIVATIONS as ACTIVATION_OPS
from sw.quantize.network import quantize_network
from sw.runtime import run_codes
from tests.onnx_models import activations_resnet

#: (ONNX node type, attributes, IR activation): every activation the engine's table runs.
ACTIVATIONS = [("Sigmoid", {}, "sigmoid"), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, "hardsigmoid"),
               ("HardSigmoid", {}, "hardsigmoid"), ("HardSwish", {}, "hardswish"),
               ("LeakyRelu", {"alpha": 0.2}, "leakyrelu"), ("LeakyRelu", {}, "leakyrelu"), ("Tanh", {}, "tanh"),
               ("PRelu", {}, "leakyrelu"), ("SiLU", {}, "silu")]


def _model(nodes, inits, out="y", opset=14, channels=4) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", channels, 6, 6])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _conv_inits(rng, channels=4):
    return [numpy_helper.from_array(rng.standard_normal((channels, 2, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b")]


def _activation_nodes(op: str, attrs: dict, x: str, y: str, rng) -> tuple[list, list]:
    """Nodes (and constants) computing the activation ``op`` of ``x`` into ``y``."""
    if op == "SiLU":
        return [helper.make_node("Sigmoid", [x], [y + "_s"]), helper.make_node("Mul", [x, y + "_s"], [y])], []
    if op == "PRelu":
        slope = numpy_helper.from_array(np.array([0.15], np.float32).reshape(1, 1, 1), y + "_slope")
        return [helper.make_node("PRelu", [x, y + "_slope"], [y])], [slope]
    return [helper.make_node(op, [x], [y], **attrs)], []


def conv_activation(op: str, attrs: dict, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, consts = _activation_nodes(op, attrs, "c", "y", rng)
    return _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), *nodes],
                  _conv_inits(rng) + consts)


@pytest.mark.parametrize("op,attrs,name", ACTIVATIONS, ids=[f"{a[0]}{'-' if a[1] else ''}"
                                                           f"{'-'.join(map(str, a[1].values()))}" for a in ACTIVATIONS])
def test_fused_and_float_reference_equals_onnxruntime(op, attrs, name):
    model = conv_activation(op, attrs)
    net = load_onnx(model, engine_only=True)
    assert [(layer.op, (layer.activation or {}).get("op")) for layer in net.layers] == [("conv", name)]
    x = np.random.default_rng(1).standard_normal((5, 2, 6, 6)).astype(np.float32) * 2
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(run_float(net, x), ref, rtol=1e-5, atol=1e-5)


# --- the tables ---------------------------------------------------------------------------------------------

def _onnx_activation(op: str, attrs: dict, x: np.ndarray) -> np.ndarray:
    """onnx's reference evaluator's activation of float32 values ``x`` (one node, or the Sigmoid and Mul of a
    SiLU). Not onnxruntime here: its vectorised logistic is off by several per cent far in the tails (-1.08e-5
    for SiLU(-14), against -1.16e-5), where a minifloat still resolves the difference."""
    nodes, consts = _activation_nodes(op, attrs, "x", "y", None)
    graph = helper.make_graph(nodes, "a", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, x.size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, x.size])],
                              initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    out = ReferenceEvaluator(model).run(None, {"x": x.reshape(1, 1, -1)})[0]
    return out.reshape(-1).astype(np.float64)


def _function(op: str, attrs: dict):
    name = {"SiLU": "silu", "PRelu": "leakyrelu"}.get(op, op.lower())
    params = {"alpha": 0.15} if op == "PRelu" else {k: float(np.float32(v)) for k, v in attrs.items()}
    defaults = getattr(ACTIVATION_OPS[name], "defaults", {})
    return lambda v: ACTIVATION_OPS[name].function(v, {**defaults, **params})


@pytest.mark.parametrize("fmt", ["int8", "int4", "uint8", "minifloat6", "fp8_e4m3"])
@pytest.mark.parametrize("op,attrs,name", ACTIVATIONS[:2] + ACTIVATIONS[3:5] + ACTIVATIONS[6:])
def test_every_entry_is_the_nearest_code_to_onnx(fmt, op, attrs, name):
    """Every code c: the entry is an output code nearest to onnx's activation of dequantize_pre(c), i.e.
    within half an output step of it (float32 evaluation aside), saturated at the ends; NaN codes map to NaN."""
    f = get_format(fmt)
    integer = fmt.startswith(("int", "uint"))
    rng = np.random.default_rng(len(fmt) + len(op))
    for _ in range(3):
        zp_pre = int(rng.integers(f.min, f.max + 1)) if integer else 0
        zp_out = int(rng.integers(f.min, f.max + 1)) if integer else 0
        pre = QuantTensor(fmt, float(rng.uniform(0.002, 0.2)) if integer else float(2.0 ** rng.integers(-7, -1)),
                          zp_pre)
        out = QuantTensor(fmt, float(rng.uniform(0.002, 0.05)) if integer else float(2.0 ** rng.integers(-9, -4)),
                          zp_out)
        table = activation_table(_function(op, attrs), pre, out)
        codes = np.arange(1 << f.bits)
        values = (f.decode(codes).astype(np.float64) - pre.zero_point) * pre.scale
        finite = np.isfinite(values)
        y = np.full(codes.size, np.nan)
        y[finite] = _onnx_activation(op, attrs, values[finite].astype(np.float32))
        candidates = out.dequantize(codes)
        candidates = candidates[np.isfinite(candidates)]
        got = out.dequantize(table)
        for c in np.flatnonzero(finite):
            best = np.abs(candidates - y[c]).min()
            assert abs(got[c] - y[c]) <= best + 1e-6 * max(1.0, abs(y[c])), (fmt, op, c, got[c], y[c])
        assert np.isnan(got[~np.isnan(values)]).sum() == 0
        if f.has_nan:
            assert np.isnan(got[np.isnan(values)]).all()


def test_table_clamps_and_monotonicity():
    pre, out = QuantTensor("int8", 0.05, -3), QuantTensor("int8", 0.01, 0)
    sig = activation_table(_function("Sigmoid", {}), pre, out, lo=0, hi=50)
    assert sig.min() >= 0 and sig.max() == 50 and table_monotone(sig, "int8")
    swish = activation_table(_function("HardSwish", {}), pre, out)
    assert not table_monotone(swish, "int8")
    with pytest.raises(ValueError, match="share one format"):
        activation_table(np.tanh, pre, QuantTensor("int4", 0.1, 0))


# --- what runs where ----------------------------------------------------------------------------------------

def _ops(net) -> list[str]:
    return [layer.op if layer.activation is None else f"{layer.op}+{layer.activation['op']}" for layer in net.layers]


def test_unfusable_activations_go_to_the_host():
    rng = np.random.default_rng(3)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])
    cases = {
        # The conv's output is also read by the Add: the Sigmoid cannot fold into it.
        "two readers": ([conv, helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Add", ["c", "s"], ["y"])],
                        [], ["conv", "host", "add"]),
        # An activation after an activation: the second one runs on the host.
        "after an activation": ([conv, helper.make_node("Tanh", ["c"], ["t"]), helper.make_node("HardSwish", ["t"],
                                                                                                   ["y"])],
                                [], ["conv+tanh", "host"]),
        # A Relu after an activation would clamp before it: the host runs the Relu.
        "relu after": ([conv, helper.make_node("Sigmoid", ["c"], ["t"]), helper.make_node("Relu", ["t"], ["y"])],
                       [], ["conv+sigmoid", "host"]),
        # One slope per channel: no table, the requantization's negative side (tests/sw/test_prelu.py).
        "prelu per channel": ([conv, helper.make_node("PRelu", ["c", "slope"], ["y"])],
                              [numpy_helper.from_array(np.array([0.1, 0.2, 0.3, 0.4], np.float32).reshape(4, 1, 1),
                                                       "slope")], ["conv+prelu"]),
        # The graph input: no layer before it.
        "graph input": ([helper.make_node("HardSwish", ["x"], ["h"]),
                         helper.make_node("Conv", ["h", "w", "b"], ["y"], pads=[1, 1, 1, 1])], [], ["host", "conv"]),
        # Sigmoid(x) * x where x is read a third time: not a SiLU of its own (the Sigmoid runs on the host, the Mul
        # of two maps on the engine).
        "silu with a third reader": ([conv, helper.make_node("Sigmoid", ["c"], ["s"]),
                                      helper.make_node("Mul", ["c", "s"], ["m"]),
                                      helper.make_node("Add", ["m", "c"], ["y"])], [], ["conv", "host", "mul", "add"]),
    }
    for what, (nodes, consts, expected) in cases.items():
        model = _model(nodes, _conv_inits(rng) + consts)
        assert _ops(load_onnx(model)) == expected, what
        x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
        ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        np.testing.assert_allclose(run_float(load_onnx(model), x), ref, rtol=1e-5, atol=1e-5, err_msg=what)


def test_quantizer_calibrates_both_ranges(tmp_path):
    """The rescale aims at the pre-activation range, the table at the output's: a Sigmoid's output encoding
    spans [0, 1], its pre-activation encoding the conv's range; the table is the one their encodings give."""
    model = conv_activation("Sigmoid", {}, seed=4)
    net = load_onnx(model)
    x = np.random.default_rng(5).standard_normal((16, 2, 6, 6)) * 2
    q = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=32, samples=x)
    layer = q.layers[0]
    pre_values = run_float(net, x, keep=True)["y#pre"]
    out = q.tensors[layer.output]
    assert out.scale == pytest.approx(1 / 255, rel=0.02)
    assert layer.attrs["pre_scale"] == pytest.approx(np.ptp(pre_values) / 255, rel=1e-6)
    pre = QuantTensor("int8", layer.attrs["pre_scale"], layer.attrs["pre_zero_point"])
    assert layer.zero_point == pre.zero_point
    np.testing.assert_array_equal(layer.table, activation_table(_function("Sigmoid", {}), pre, out, 128, 127))
    q.save(tmp_path)
    again = QuantizedNetwork.load(tmp_path)
    np.testing.assert_array_equal(again.layers[0].table, layer.table)
    assert again.layers[0].attrs["activation"] == "sigmoid"


# --- a network ------------------------------------------------------------------------------------------------

def _golden_equals_emulator(compiled, codes):
    golden = run_codes(compiled, codes, "golden", keep=True)
    emulated = run_codes(compiled, codes, "emulator", keep=True)
    for i in range(len(codes)):
        for tensor in compiled.materialized:
            np.testing.assert_array_equal(emulated.tensors[i][tensor], golden.tensors[i][tensor], err_msg=tensor)
    return golden


ENGINE = AcceleratorConfig(rows=8, cols=8, weight_format="int8", act_format="int8", act_buffer_depth=1024,
                           weight_buffer_depth=256, acc_buffer_depth=512, param_buffer_depth=16, dma_bits=64)


@pytest.mark.parametrize("fmt, min_sqnr_db", [("int8", 30.0), ("minifloat6", 14.0)])
def test_network_golden_equals_emulator_and_onnxruntime(fmt, min_sqnr_db, tmp_path):
    """activations_resnet: every activation fused (no host layer), golden == emulator on every stored tensor, a max
    pool fused behind a monotone table (a HardSigmoid's), and the output within the quantization error of
    onnxruntime. Then the same network with a table that decreases before the other max pool: the pool runs on
    its own (on codes), still golden == emulator."""
    path = activations_resnet(tmp_path / "m.onnx")
    config = AcceleratorConfig(**{**ENGINE.to_dict(), "weight_format": fmt, "act_format": fmt, "acc_bits": None})
    calibration = np.load(DIGITS / "calibration.npy")
    compiled = compile_model(path, config, calibration, log=lambda *_: None, method="mmse", per_channel=True)
    assert compiled.host_layers == []
    fused = {e["name"]: e["fused"] for e in compiled.manifest()["layers"] if "fused" in e}
    assert fused["c4"] == ["p1"]
    with np.load(DIGITS / "test_set.npz") as data:
        x = data["images"][:24]
    net = compiled.network
    codes = net.tensors[net.input].quantize(x)
    golden = _golden_equals_emulator(compiled, codes)
    # Saved and loaded (the folder's schema, the network file with its tables and signed pre-activation zero
    # points), it runs the same.
    compiled.save(tmp_path / "folder")
    loaded = CompiledNetwork.load(tmp_path / "folder")
    assert fmt != "int8" or any(layer.attrs.get("pre_zero_point", 0) < 0 for layer in loaded.network.layers)
    np.testing.assert_array_equal(run_codes(loaded, codes, "emulator").codes, golden.codes)
    # A table that goes down (reversed) before the second max pool: not fused any more.
    s2 = next(layer for layer in net.layers if layer.name == "s2")
    s2.table = s2.table[::-1].copy()
    assert not table_monotone(s2.table, fmt)
    again = compile_network(net, config)
    assert {e["name"]: e["fused"] for e in again.manifest()["layers"] if "fused" in e}["s2"] == []
    _golden_equals_emulator(again, codes)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x.astype(np.float32)})[0]
    got = net.tensors[net.output].dequantize(golden.codes)
    sqnr = 10 * np.log10(np.mean(ref ** 2) / np.mean((got - ref) ** 2))
    assert sqnr >= min_sqnr_db, sqnr
