"""A PRelu with one slope per channel, folded into the requantization (STORE negative_param, sw/ops/activations.py).

The golden rescale with a negative side against an independent reference written from the definition (Python ints
and fractions: ``s = acc + sat(B)``, ``(M, S)`` by the sign of ``s``, the value ``s * M * 2**(e - S)``, then the
nearest code); the ISA's range check in the emulator; the frontend's fusion and its host fallbacks; the quantizer's
negative multipliers; a conv -> PRelu -> conv -> PRelu -> Gemm -> PRelu network golden == emulator and within the
quantization error of onnxruntime, for int8 and minifloat outputs.
"""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import IntFormat, get_format
from hw.spec.isa import ErrorCode, Opcode, encode
from sw.compile import compile_model
from sw.emulator.checks import decode_checked
from sw.evaluate import DIGITS
from sw.frontend.float_model import run_float
from sw.frontend.onnx_import import load_onnx
from sw.golden.postprocess import rescale
from sw.quantize.network import multiplier_shift, quantize_network
from sw.runtime import run_codes
from tests.onnx_models import prelu_net


# --- an independent reference of the rescale with a negative side ---------------------------------------------

def _nearest_code(fmt, v: Fraction) -> int:
    """The code of ``fmt`` nearest to ``v`` (ties to the even code, saturating at the largest finite magnitude;
    zero is +0): every finite code's value compared exactly."""
    codes = [int(c) for c in fmt.codes]
    values = fmt.decode(np.array(codes))
    finite = [(Fraction(float(x)), c) for x, c in zip(values, codes) if np.isfinite(x) and not (x == 0 and c)]
    best = min(abs(x - v) for x, _ in finite)
    ties = [(x, c) for x, c in finite if abs(x - v) == best]
    if len(ties) > 1:
        ties = [t for t in ties if t[1] % 2 == 0]
    return ties[0][1]


def reference(acc: int, bias: int, m: int, s: int, m_neg: int, s_neg: int, e: int, fmt, zero_point: int,
              acc_bits: int) -> int:
    """One output code from the definition (no clamp beyond the format's range)."""
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    total = acc + min(max(bias, lo), hi)
    mult, shift = (m_neg, s_neg) if total < 0 else (m, s)
    v = Fraction(total * mult) * Fraction(2) ** (e - shift)
    if isinstance(fmt, IntFormat):
        q = v.numerator // v.denominator
        rest = v - q
        if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and q % 2):
            q += 1
        q = min(max(q + zero_point, int(fmt.min)), int(fmt.max))
        return q & ((1 << fmt.bits) - 1)
    return _nearest_code(fmt, v)


@pytest.mark.parametrize("fmt_name", ["int8", "uint8", "int4", "minifloat6", "fp8_e4m3"])
def test_rescale_with_negative_side_equals_the_definition(fmt_name):
    fmt = get_format(fmt_name)
    rng = random.Random(len(fmt_name))
    acc_bits, e = 24, -3 if isinstance(fmt, IntFormat) else -9
    cols = 6
    n = 400
    bias = [rng.randint(-3000, 3000) for _ in range(cols)]
    bias[0] = 1 << 30                                  # saturates to the accumulator's range
    slopes = [0.25, -0.5, 0.0, 1.7, 0.01, -2.0]
    m, s, m_neg, s_neg = [], [], [], []
    for c in range(cols):
        mc, sc = multiplier_shift(rng.uniform(0.001, 0.05) * 2.0 ** -e)
        m.append(mc)
        s.append(sc)
        if slopes[c] == 0:
            m_neg.append(0)
            s_neg.append(rng.randint(0, 40))
        else:
            mn, sn = multiplier_shift(abs(slopes[c]) * mc * 2.0 ** -sc)
            m_neg.append(mn if slopes[c] > 0 else -mn)
            s_neg.append(sn)
    acc = np.array([[rng.randint(-4000, 4000) for _ in range(cols)] for _ in range(n)], dtype=np.int64)
    acc[:, 0] = rng.choice([-(1 << 23), (1 << 23) - 1])   # extremes of the accumulator, with the saturated bias
    acc[:5, 1] = -np.array(bias)[1]                       # acc + B == 0: the positive side
    zero_point = 3 if isinstance(fmt, IntFormat) and fmt.signed else 0
    got = rescale(acc, np.zeros_like(acc, dtype=bool), e, np.array(bias), np.array(m), np.array(s), fmt, zero_point,
                  acc_bits=acc_bits, multiplier_neg=np.array(m_neg), shift_neg=np.array(s_neg))
    want = np.array([[reference(int(acc[i, c]), bias[c], m[c], s[c], m_neg[c], s_neg[c], e, fmt, zero_point,
                                acc_bits) for c in range(cols)] for i in range(n)])
    np.testing.assert_array_equal(got, want)
    # Without the negative side, the negative elements of the non-identity slopes differ: the test can fail.
    plain = rescale(acc, np.zeros_like(acc, dtype=bool), e, np.array(bias), np.array(m), np.array(s), fmt, zero_point,
                    acc_bits=acc_bits)
    assert (plain != want).sum() > n // 2


def test_negative_side_needs_both():
    with pytest.raises(ValueError, match="multiplier_neg and shift_neg go together"):
        rescale(np.zeros((1, 1), np.int64), np.zeros((1, 1), bool), 0, 0, 1 << 30, 30, "int8", multiplier_neg=1)


# --- the ISA: the second PARAM line must exist ----------------------------------------------------------------

def test_emulator_refuses_a_negative_side_past_the_param_buffer():
    config = AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8", param_buffer_depth=8)
    store = dict(acc_addr=0, dram_addr=0, y_size=1, x_size=1)
    last = config.param_buffer_depth - 1
    assert decode_checked(encode(Opcode.STORE, **store, param_addr=last), config, 4096)[2] is ErrorCode.NONE
    assert decode_checked(encode(Opcode.STORE, **store, param_addr=last - 1, negative_param=1), config,
                          4096)[2] is ErrorCode.NONE
    assert decode_checked(encode(Opcode.STORE, **store, param_addr=last, negative_param=1), config,
                          4096)[2] is ErrorCode.SRAM_RANGE


# --- the frontend and the quantizer -------------------------------------------------------------------------------

def _conv_prelu(slope: np.ndarray, extra=None, relu: bool = False):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
    nodes.append(helper.make_node("PRelu", ["r" if relu else "c", "slope"], ["y"]))
    nodes += extra or []
    out = "z" if extra else "y"
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 4, 6, 6])],
        initializer=[numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
                     numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
                     numpy_helper.from_array(slope.astype(np.float32), "slope")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def _ops(net) -> list[str]:
    return [layer.op if layer.activation is None else f"{layer.op}+{layer.activation['op']}" for layer in net.layers]


def test_fusion_and_host_fallbacks():
    per_channel = np.array([0.1, -0.2, 0.0, 0.4]).reshape(4, 1, 1)
    cases = {
        "per channel (C,1,1)": (_conv_prelu(per_channel), ["conv+prelu"]),
        "one slope: the table": (_conv_prelu(np.full((4, 1, 1), 0.3)), ["conv+leakyrelu"]),
        # (4,) broadcasts along the width of (N, 4, 6, 6)... of 6: it does not broadcast; (6,) varies along W.
        "varies along the width": (_conv_prelu(np.linspace(0.1, 0.6, 6)), ["conv", "host"]),
        "after a Relu": (_conv_prelu(per_channel, relu=True), ["conv", "host"]),
        "its input read twice": (_conv_prelu(per_channel, [helper.make_node("Add", ["c", "y"], ["z"])]),
                                 ["conv", "host", "add"]),
    }
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 6)).astype(np.float32)
    for what, (model, expected) in cases.items():
        net = load_onnx(model)
        assert _ops(net) == expected, what
        ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        np.testing.assert_allclose(run_float(net, x), ref, rtol=1e-5, atol=1e-5, err_msg=what)
    fused = load_onnx(cases["per channel (C,1,1)"][0])
    assert fused.layers[0].activation["slope"] == pytest.approx([0.1, -0.2, 0.0, 0.4])


def test_fallback_reason_is_named():
    from sw.frontend.onnx_common import FrontendError
    with pytest.raises(FrontendError, match="varies along an axis other than the channels"):
        load_onnx(_conv_prelu(np.linspace(0.1, 0.6, 6)), engine_only=True)
    with pytest.raises(FrontendError, match="clamps its output already"):
        load_onnx(_conv_prelu(np.array([0.1, -0.2, 0.0, 0.4]).reshape(4, 1, 1), relu=True), engine_only=True)


def test_quantizer_derives_the_negative_side():
    """M_neg * 2**-S_neg is slope * M * 2**-S to the multiplier's precision, negated for a negative slope, 0 for
    a zero slope; no pre-activation encoding, no table; the output encoding spans the PRelu's output."""
    slope = np.array([0.1, -0.2, 0.0, 0.4])
    net = load_onnx(_conv_prelu(slope.reshape(4, 1, 1)))
    x = np.random.default_rng(2).standard_normal((16, 2, 6, 6))
    q = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=32, samples=x, per_channel=True)
    layer = q.layers[0]
    assert layer.table is None and "pre_scale" not in layer.attrs and layer.attrs["activation"] == "prelu"
    ratio = layer.multiplier * 2.0 ** -layer.shift
    ratio_neg = layer.multiplier_neg * 2.0 ** -layer.shift_neg
    # The model holds float32 slopes; both multipliers round to 31 bits.
    np.testing.assert_allclose(ratio_neg, slope.astype(np.float32) * ratio, rtol=2 ** -29)
    assert layer.multiplier_neg[2] == 0 and layer.multiplier_neg[1] < 0
    out = q.tensors[layer.output]
    y = run_float(net, x)
    assert out.scale == pytest.approx(np.ptp(y) / 255, rel=1e-6)


# --- a network -------------------------------------------------------------------------------------------------

ENGINE = AcceleratorConfig(rows=8, cols=8, weight_format="int8", act_format="int8", act_buffer_depth=1024,
                           weight_buffer_depth=256, acc_buffer_depth=512, param_buffer_depth=16, dma_bits=64)


@pytest.mark.parametrize("fmt, min_sqnr_db", [("int8", 28.0), ("minifloat6", 14.0), ("fp8_e4m3", 18.0)])
def test_network_golden_equals_emulator_and_onnxruntime(fmt, min_sqnr_db, tmp_path):
    path = prelu_net(tmp_path / "m.onnx")
    config = AcceleratorConfig(**{**ENGINE.to_dict(), "weight_format": fmt, "act_format": fmt, "acc_bits": None})
    compiled = compile_model(path, config, np.load(DIGITS / "calibration.npy"), log=lambda *_: None)
    net = compiled.network
    assert compiled.host_layers == []
    assert [layer.attrs.get("activation") for layer in net.layers] == ["prelu", "prelu", None, "prelu"]
    with np.load(DIGITS / "test_set.npz") as data:
        x = data["images"][:24]
    codes = net.tensors[net.input].quantize(x)
    golden = run_codes(compiled, codes, "golden", keep=True)
    emulated = run_codes(compiled, codes, "emulator", keep=True)
    for i in range(len(codes)):
        for tensor in compiled.materialized:
            np.testing.assert_array_equal(emulated.tensors[i][tensor], golden.tensors[i][tensor], err_msg=tensor)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x.astype(np.float32)})[0]
    got = net.tensors[net.output].dequantize(golden.codes)
    sqnr = 10 * np.log10(np.mean(ref ** 2) / np.mean((got - ref) ** 2))
    assert sqnr >= min_sqnr_db, sqnr
    # Saved and loaded, the negative sides come back.
    net.save(tmp_path)
    from sw.ir import QuantizedNetwork
    again = QuantizedNetwork.load(tmp_path)
    np.testing.assert_array_equal(again.layers[0].multiplier_neg, net.layers[0].multiplier_neg)
    np.testing.assert_array_equal(again.layers[0].shift_neg, net.layers[0].shift_neg)


@pytest.mark.parametrize("slopes, fuses", [((0.1, 0.3, 0.0, 0.5), True), ((0.1, -0.3, 0.0, 0.5), False)])
def test_max_pool_fuses_only_behind_a_monotone_prelu(slopes, fuses, tmp_path):
    """conv -> PRelu -> MaxPool: the pool runs on the accumulators only when no slope is negative (the piecewise
    rescale is then monotone); golden == emulator either way."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c", "slope"], ["a"]),
             helper.make_node("MaxPool", ["a"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        initializer=[numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
                     numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
                     numpy_helper.from_array(np.array(slopes, np.float32).reshape(4, 1, 1), "slope")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    compiled = compile_model(path, ENGINE, np.load(DIGITS / "calibration.npy"), log=lambda *_: None)
    fused = {e["name"]: e["fused"] for e in compiled.manifest()["layers"] if "fused" in e}
    assert bool(fused[compiled.network.layers[0].name]) == fuses
    net = compiled.network
    codes = net.tensors[net.input].quantize(np.load(DIGITS / "calibration.npy")[:6])
    golden = run_codes(compiled, codes, "golden")
    np.testing.assert_array_equal(run_codes(compiled, codes, "emulator").codes, golden.codes)


def test_leakyrelu_without_a_table_on_a_16_bit_engine(tmp_path):
    """An int16 engine has no lookup table: a LeakyRelu there runs in the negative side (one slope for every
    channel), golden == emulator, within the quantization error of onnxruntime; on int8 it keeps its table."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("LeakyRelu", ["c"], ["y"], alpha=0.2)]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 16, 16])],
        initializer=[numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
                     numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    x = np.load(DIGITS / "calibration.npy")[:8]
    ref = ort.InferenceSession(str(path)).run(None, {"x": x.astype(np.float32)})[0]
    for fmt, table in (("int16", False), ("int8", True)):
        config = AcceleratorConfig(**{**ENGINE.to_dict(), "weight_format": "int8", "act_format": fmt,
                                      "acc_bits": None})
        compiled = compile_model(path, config, np.load(DIGITS / "calibration.npy"), log=lambda *_: None)
        layer = compiled.network.layers[0]
        assert (layer.table is not None) == table and (layer.multiplier_neg is None) == table
        net = compiled.network
        codes = net.tensors[net.input].quantize(x)
        golden = run_codes(compiled, codes, "golden")
        np.testing.assert_array_equal(run_codes(compiled, codes, "emulator").codes, golden.codes)
        got = net.tensors[net.output].dequantize(golden.codes)
        sqnr = 10 * np.log10(np.mean(ref ** 2) / np.mean((got - ref) ** 2))
        assert sqnr >= (38.0 if fmt == "int16" else 28.0), (fmt, sqnr)       # int8 weights bound both
