"""``mul`` (sw/ops/mul.py): the product of two feature maps, from the ONNX import to the engine.

The golden meaning is checked against exact rational arithmetic on the formats' decoded values and against
onnxruntime on float (within the output's rounding); the compiled program against the golden model on the
emulator (the RTL: tests/sim/test_networks_rtl.py, squeeze-excite networks)."""

from fractions import Fraction

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from sw.compile import compile_model
from sw.evaluate import DIGITS
from sw.frontend import load_onnx
from sw.golden.layers import elementwise_product, run_layer
from sw.golden.network import run_network
from sw.frontend.float_model import run_float
from sw.ir import QuantLayer, acc_exponent, set_acc_exponent
from sw.quantize import quantize_network
from sw.quantize.network import multiplier_shift
from sw.runtime import run_codes
from tests.onnx_models import squeeze_excite_digits


def _reference(x, g, zx, zg, fmt, e, g_fmt=None):
    """``(value(x) - zx) * (value(g) - zg) / 2**(2e)`` with Fractions (exact), and the non-finite flags; ``g`` in
    ``g_fmt`` when given (a mixed-format network)."""
    vx, vg = fmt.decode(x).astype(np.float64), (g_fmt or fmt).decode(g).astype(np.float64)
    vg = np.broadcast_to(vg, vx.shape)
    value = np.empty(vx.shape, dtype=object)
    bad = ~np.isfinite(vx) | ~np.isfinite(vg)
    for i in np.ndindex(vx.shape):
        value[i] = 0 if bad[i] else (Fraction(vx[i]) - zx) * (Fraction(vg[i]) - zg) / Fraction(2) ** (2 * e)
    return value, bad


@pytest.mark.parametrize("fmt_name", ["int8", "int4", "uint8", "minifloat6", "fp8_e4m3", "fp8_e5m2"])
@pytest.mark.parametrize("gate", ["same", "channel"])
def test_golden_product_is_exact(fmt_name, gate):
    fmt = get_format(fmt_name)
    rng = np.random.default_rng(len(fmt_name) + len(gate))
    x = rng.integers(0, 1 << fmt.bits, (2, 3, 4, 5))
    g = rng.integers(0, 1 << fmt.bits, (2, 3, 4, 5) if gate == "same" else (2, 3, 1, 1))
    weight = "int8" if fmt_name == "uint8" else fmt_name
    e = acc_exponent(fmt_name, weight)
    zx, zg = (int(rng.integers(fmt.min, fmt.max + 1)), int(rng.integers(fmt.min, fmt.max + 1))) \
        if hasattr(fmt, "signed") else (0, 0)
    acc = elementwise_product(x, g, zx, zg, fmt_name, fmt_name, e)
    value, bad = _reference(x, g, zx, zg, fmt, e)
    assert acc.exponent == e
    np.testing.assert_array_equal(acc.nonfinite, bad)
    assert all(Fraction(int(a)) == b for a, b in zip(np.asarray(acc.value).ravel(), value.ravel()))
    if bad.any():
        assert not np.asarray(acc.value)[bad].any()


@pytest.mark.parametrize("x_name, g_name", [("int4", "minifloat6"), ("minifloat6", "int8"), ("int8", "int4")])
def test_golden_product_of_two_formats_is_exact(x_name, g_name):
    """A mixed-format network's mul: each operand decoded in its own format, in units of the set's accumulator
    exponent (both operands' least significant bits are whole multiples of it)."""
    fx, fg = get_format(x_name), get_format(g_name)
    rng = np.random.default_rng(len(x_name) * 7 + len(g_name))
    x, g = rng.integers(0, 1 << fx.bits, (2, 3, 4, 5)), rng.integers(0, 1 << fg.bits, (2, 3, 1, 1))
    e = set_acc_exponent(["int4", "int8", "minifloat6"])
    acc = elementwise_product(x, g, 0, 0, x_name, g_name, e)
    value, bad = _reference(x, g, 0, 0, fx, e, fg)
    assert acc.exponent == e
    np.testing.assert_array_equal(acc.nonfinite, bad)
    assert all(Fraction(int(a)) == b for a, b in zip(np.asarray(acc.value).ravel(), value.ravel()))


def test_mixed_format_squeeze_excite_follows_the_float_model():
    """A squeeze-excite network whose map is int4 and whose gate is minifloat6 (the host runs the product in a
    mixed network): the golden output stays within the quantization error of the float model, as the same network
    in uniform int8 does (decoding the minifloat6 gate as int8 codes, as the mul once did, misses by far more)."""
    net = load_onnx(_se_model("same", seed=5, channels=8))
    x = np.random.default_rng(7).standard_normal((16, 2, 6, 6)).astype(np.float32)
    want = run_float(net, x[:4])
    errors = {}
    for name, formats in (("int8", {"c": "int8", "f": "int8", "y": "int8"}),
                          ("mixed", {"c": "int4", "f": "minifloat6", "y": "int8"})):
        q = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=32, samples=x, method="mmse",
                             per_channel=True, layer_formats={n: (f, f) for n, f in formats.items()},
                             formats=["int4", "int8", "minifloat6"])
        mul = next(layer for layer in q.layers if layer.op == "mul")
        if name == "mixed":
            assert {q.tensors[t].format for t in mul.inputs} == {"int4", "minifloat6"}
        out = q.tensors[q.output].dequantize(run_network(q, q.tensors[q.input].quantize(x[:4])))
        errors[name] = float(np.sqrt(np.mean((out - want) ** 2)) / np.sqrt(np.mean(want ** 2)))
    assert errors["int8"] < 0.05 and errors["mixed"] < 0.25, errors


def test_golden_requantizes_the_product():
    """The whole layer on int8 codes: ``q = clamp(rne(P * M * 2**(e - S)) + z_y)``, P the exact product."""
    rng = np.random.default_rng(4)
    x, g = rng.integers(0, 256, (2, 4, 3, 3)), rng.integers(0, 256, (2, 4, 1, 1))
    layer = QuantLayer("m", "mul", ["x", "g"], "y", {"broadcast": "channel"}, zero_point=5, clamp_lo=0x80,
                       clamp_hi=0x7F, bias=np.zeros(4, np.int64), multiplier=np.full(4, 1_500_000_000),
                       shift=np.full(4, 42))

    class Net:
        act_format = weight_format = "int8"
        acc_bits = 28
        acc_exponent = 0
        tensors = {"x": type("T", (), {"zero_point": -3})(), "g": type("T", (), {"zero_point": 100})()}

        @staticmethod
        def act_format_of(tensor: str):
            return get_format("int8")
    got = run_layer(layer, [x, g], Net)
    p = (((x + 128) % 256 - 128) + 3) * (((g + 128) % 256 - 128) - 100)
    want = np.empty(p.shape, np.int64)
    for i in np.ndindex(p.shape):
        v = Fraction(int(p[i]) * 1_500_000_000, 2 ** 42)
        want[i] = min(max(round(v) + 5, -128), 127) & 0xFF        # Python's round: half to even
    np.testing.assert_array_equal(got, want)


def _se_model(gate_shape: str, seed: int = 0, after: str | None = None, channels: int = 4) -> onnx.ModelProto:
    """x -> conv -> relu (r); a gate of r: per channel (global pool, 1x1 conv, Sigmoid), of r's shape (conv,
    HardSigmoid), spatial (a conv to one channel, Sigmoid) or scalar (that, globally pooled); Mul(gate, r) (the gate
    first: the importer puts the map first); ``after``: an activation of the product; ``channels``: r's."""
    rng = np.random.default_rng(seed)
    node = helper.make_node
    nodes = [node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["r"])]
    if gate_shape == "channel":
        nodes += [node("GlobalAveragePool", ["r"], ["s"]), node("Conv", ["s", "w2", "b2"], ["f"]),
                  node("Sigmoid", ["f"], ["gate"])]
        w2 = (channels, channels, 1, 1)
    elif gate_shape == "same":
        nodes += [node("Conv", ["r", "w2", "b2"], ["f"], pads=[1, 1, 1, 1]), node("HardSigmoid", ["f"], ["gate"])]
        w2 = (channels, channels, 3, 3)
    else:
        nodes += [node("Conv", ["r", "w2", "b2"], ["f"], pads=[1, 1, 1, 1]), node("Sigmoid", ["f"], ["sg"])]
        nodes.append(node("GlobalAveragePool", ["sg"], ["gate"]) if gate_shape == "scalar" else
                     node("Identity", ["sg"], ["gate"]))
        w2 = (1, channels, 3, 3)
    nodes.append(node("Mul", ["gate", "r"], ["y"] if after is None else ["m"]))
    if after is not None:
        nodes.append(node(after, ["m"], ["y"]))
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.5, n)
             for n, s in (("w1", (channels, 2, 3, 3)), ("b1", (channels,)), ("w2", w2), ("b2", (w2[0],)))]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 6, 6])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("gate", ["channel", "same", "spatial", "scalar"])
@pytest.mark.parametrize("fmt", ["int8", "int4", "minifloat6"])
def test_golden_mul_against_onnxruntime(gate, fmt):
    """The quantized layer on its dequantized inputs is onnxruntime's Mul of them, rounded to the output grid."""
    model = _se_model(gate)
    net = load_onnx(model)
    assert [layer.op for layer in net.layers][-1] == "mul"
    x = np.random.default_rng(1).standard_normal((16, 2, 6, 6))
    q = quantize_network(net, act_format=fmt, weight_format=fmt, acc_bits=32, samples=x)
    mul = q.layers[-1]
    assert mul.inputs[1] == "gate" if gate == "channel" else True     # the map first
    codes = run_network(q, q.tensors[q.input].quantize(x), keep=True)
    a, b = (q.tensors[t].dequantize(codes[t]).astype(np.float32) for t in mul.inputs)
    mul_only = helper.make_model(helper.make_graph(
        [helper.make_node("Mul", ["a", "b"], ["y"])], "mul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a.shape)),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, list(b.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 14)])
    mul_only.ir_version = 8
    ref = ort.InferenceSession(mul_only.SerializeToString()).run(None, {"a": a, "b": b})[0].astype(np.float64)
    out = q.tensors[mul.output]
    got = out.dequantize(codes[mul.output])
    inside = (ref >= out.dequantize(np.array(mul.clamp_lo))) & (ref <= out.dequantize(np.array(mul.clamp_hi)))
    err = np.abs(got - ref)[inside]
    if fmt.startswith("int"):
        assert err.max() <= out.scale * (0.5 + 1e-6)
    else:              # a minifloat with 2 mantissa bits: half a step of the value's binade
        assert (err <= np.abs(ref[inside]) * 0.125 + out.scale * 2.0 ** -3).all()
    assert inside.mean() > 0.9


def test_import_takes_maps_and_gates_and_leaves_the_rest_to_the_host():
    rng = np.random.default_rng(2)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])
    one_channel = helper.make_node("Conv", ["x", "w1", "b1"], ["s"], pads=[1, 1, 1, 1])
    inits = [numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((1, 2, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(1).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((4, 1, 1)).astype(np.float32), "k")]
    cases = {
        "same shape": ([conv, helper.make_node("Conv", ["x", "w", "b"], ["d"], pads=[1, 1, 1, 1]),
                        helper.make_node("Mul", ["c", "d"], ["y"])], ["conv", "conv", "mul"]),
        "square": ([conv, helper.make_node("Mul", ["c", "c"], ["y"])], ["conv", "mul"]),
        # A spatial gate (1, H, W) broadcasts across channels, a scalar (1, 1, 1) across everything.
        "spatial gate": ([conv, one_channel, helper.make_node("Mul", ["s", "c"], ["y"])], ["conv", "conv", "mul"]),
        "scalar gate": ([conv, one_channel, helper.make_node("GlobalAveragePool", ["s"], ["p"]),
                         helper.make_node("Mul", ["c", "p"], ["y"])], ["conv", "conv", "global_avgpool", "mul"]),
        # A constant that nothing folded: the host.
        "constant": ([conv, helper.make_node("Mul", ["c", "k"], ["y"])], ["conv", "host"]),
        # SiLU stays the Sigmoid's.
        "silu": ([conv, helper.make_node("Sigmoid", ["c"], ["g"]), helper.make_node("Mul", ["c", "g"], ["y"])],
                 ["conv+silu"]),
    }
    for what, (nodes, expected) in cases.items():
        graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])],
                                  initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        model.ir_version = 8
        net = load_onnx(model)
        ops = [layer.op if layer.activation is None else f"{layer.op}+{layer.activation['op']}"
               for layer in net.layers]
        assert ops == expected, what


@pytest.mark.parametrize("fmt", ["minifloat4", "minifloat6", "minifloat6_e2m3", "fp8_e4m3", "fp8_e5m2", "int8"])
def test_post_processing_shift_holds_the_products_scale(fmt):
    """``M * 2**-S = ratio * 2**e``: the 8-bit shift field holds it over twelve decades of scale ratios."""
    e = acc_exponent(fmt, fmt)
    for ratio in 10.0 ** np.linspace(-6, 6, 25):
        m, s = multiplier_shift(ratio * 2.0 ** e)
        assert 0 <= s <= 255 and m * 2.0 ** -s == pytest.approx(ratio * 2.0 ** e, rel=1e-9)


@pytest.mark.parametrize("fmt, on_engine, params", [("int8", True, 64), ("minifloat6", True, 64),
                                                    ("fp8_e4m3", False, 64), ("int8", True, 2)])
def test_compiled_squeeze_excite_equals_golden(fmt, on_engine, params, tmp_path):
    """On the engine where the accumulators hold every product (ALU MUL in the program), on the host otherwise
    (fp8_e4m3's products need more than its 49-bit accumulators); golden == emulator either way. With two PARAM
    lines a mul of two channel blocks runs as two groups."""
    samples = np.load(DIGITS / "calibration.npy")
    config = AcceleratorConfig(rows=4, cols=4, weight_format=fmt, act_format=fmt, param_buffer_depth=params)
    compiled = compile_model(squeeze_excite_digits(tmp_path / "se.onnx"), config, samples, method="mmse",
                             per_channel=True, log=lambda *_: None)
    muls = [layer.name for layer in compiled.network.layers if layer.op == "mul"]
    assert len(muls) == 3
    assert (compiled.host_layers == []) == on_engine
    assert ("ALU op=MUL" in compiled.program.listing()) == on_engine
    if not on_engine:
        assert compiled.host_layers == muls and compiled.host_macs()[muls[0]] == ("mul", 0)
    net = compiled.network
    codes = net.tensors[net.input].quantize(samples[:3])
    golden = run_codes(compiled, codes, "golden", keep=True)
    emulated = run_codes(compiled, codes, "emulator", keep=True)
    for i in range(3):
        for tensor in compiled.materialized:
            np.testing.assert_array_equal(emulated.tensors[i][tensor], golden.tensors[i][tensor])


def test_a_gate_of_linear_layers_unflattens_for_free(tmp_path):
    """Reshape (N, C) -> (N, C, 1, 1) and Unsqueeze at axes 2, 3 import as ``unflatten``, which the compiler places
    where the vector lies (no instruction); float model == onnxruntime."""
    from tests.onnx_models import squeeze_excite_linear_digits
    path = squeeze_excite_linear_digits(tmp_path / "se.onnx")
    net = load_onnx(str(path))
    assert [layer.op for layer in net.layers].count("unflatten") == 2
    assert "host" not in [layer.op for layer in net.layers]
    x = np.load(DIGITS / "calibration.npy")[:8]
    from sw.frontend.float_model import run_float
    ref = ort.InferenceSession(str(path)).run(None, {"x": x.astype(np.float32)})[0]
    np.testing.assert_allclose(run_float(net, x), ref, rtol=1e-4, atol=1e-5)
    compiled = compile_model(path, AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8"),
                             np.load(DIGITS / "calibration.npy"), log=lambda *_: None)
    places = compiled.placements
    gates = [layer for layer in compiled.network.layers if layer.op == "unflatten"]
    for layer in gates:
        assert places[layer.output].region == places[layer.inputs[0]].region
        assert (places[layer.output].channels, places[layer.output].height, places[layer.output].width) == (8, 1, 1)


@pytest.mark.parametrize("after, fused", [("Relu", "mul"), ("HardSwish", "mul+hardswish")])
def test_activation_after_a_mul_fuses_and_runs_on_the_engine(after, fused):
    """A Relu becomes the mul's clamp, a nonlinear activation its lookup table; golden == emulator."""
    model = _se_model("same", seed=3, after=after)
    net = load_onnx(model)
    last = net.layers[-1]
    assert (last.op if last.activation is None else f"{last.op}+{last.activation['op']}") == fused
    assert (last.clip is not None) == (after == "Relu")
    x = np.random.default_rng(6).standard_normal((16, 2, 6, 6))
    compiled = compile_model(model, AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8"), x,
                             log=lambda *_: None)
    assert compiled.host_layers == [] and "ALU op=MUL" in compiled.program.listing()
    codes = compiled.network.tensors[compiled.network.input].quantize(x[:3])
    golden, emulated = (run_codes(compiled, codes, b).codes for b in ("golden", "emulator"))
    np.testing.assert_array_equal(emulated, golden)


@pytest.mark.parametrize("gate", ["spatial", "scalar", "channel", "same"])
@pytest.mark.parametrize("fmt, n, params", [("int8", 4, 64), ("minifloat6", 4, 64), ("int8", 8, 64),
                                            ("int8", 2, 2)])
def test_every_gate_runs_on_the_engine(gate, fmt, n, params):
    """Each broadcast compiles to ALU MUL (a gate of one channel through a tile of ones in its first row), and the
    emulator gives the golden model's codes; on a 2x2 engine with two PARAM lines, in two channel groups."""
    model = _se_model(gate, seed=5)
    x = np.random.default_rng(7).standard_normal((16, 2, 6, 6))
    config = AcceleratorConfig(rows=n, cols=n, weight_format=fmt, act_format=fmt, param_buffer_depth=params)
    compiled = compile_model(model, config, x, log=lambda *_: None)
    assert compiled.host_layers == []
    assert compiled.program.listing().count("ALU op=MUL") >= (2 if params == 2 else 1)
    assert compiled.network.layers[-1].attrs["broadcast"] == gate
    codes = compiled.network.tensors[compiled.network.input].quantize(x[:3])
    golden, emulated = (run_codes(compiled, codes, b, keep=True) for b in ("golden", "emulator"))
    for i in range(3):
        for tensor in compiled.materialized:
            np.testing.assert_array_equal(emulated.tensors[i][tensor], golden.tensors[i][tensor])


#: Rectangular engines (rows, cols, bus bits, PARAM lines, batch): tall and wide, dense tensor lines (8x4 and 4x8 on
#: 32 bits, 16x8 and 8x16 on 64: a wide array's identity tiles accumulate two activation lines into one output
#: line, a tall one's make two output lines of one activation line) and min(rows, cols) ones (4x16 on 64, 16x8 on
#: 128); channel groups (two and four PARAM lines); batches.
RECT = [(8, 4, 32, 64, 1), (4, 8, 32, 64, 1), (16, 8, 64, 64, 1), (8, 16, 64, 64, 2), (4, 16, 64, 64, 1),
        (16, 8, 128, 64, 1), (4, 8, 32, 2, 1), (8, 4, 32, 4, 3), (4, 4, 32, 64, 2)]


@pytest.mark.parametrize("gate", ["spatial", "scalar", "channel", "same"])
@pytest.mark.parametrize("fmt", ["int8", "uint8"])
@pytest.mark.parametrize("rows, cols, dma, params, batch", RECT, ids=[f"{r}x{c}@{d}-p{p}-b{n}"
                                                                     for r, c, d, p, n in RECT])
def test_every_gate_on_rectangular_arrays_and_in_batches(gate, fmt, rows, cols, dma, params, batch):
    """ALU MUL on rectangular arrays (the spread channels' identity tiles) and in batched programs (a sample's maps
    after the other's); 20 channels: several tensor lines, uint8: zero points; golden == emulator on every tensor."""
    model = _se_model(gate, seed=5, channels=20)
    x = np.random.default_rng(7).standard_normal((16, 2, 6, 6))
    config = AcceleratorConfig(rows=rows, cols=cols, dma_bits=dma, weight_format="int8", act_format=fmt,
                               param_buffer_depth=params)
    compiled = compile_model(model, config, x, log=lambda *_: None, batch=batch)
    assert compiled.host_layers == [] and "ALU op=MUL" in compiled.program.listing()
    codes = compiled.network.tensors[compiled.network.input].quantize(x[:2 * batch])
    golden, emulated = (run_codes(compiled, codes, b, keep=True) for b in ("golden", "emulator"))
    for i in range(len(codes)):
        for tensor in compiled.materialized:
            np.testing.assert_array_equal(emulated.tensors[i][tensor], golden.tensors[i][tensor],
                                          err_msg=f"{tensor}, sample {i}")


@pytest.mark.parametrize("gate", ["spatial", "scalar", "channel", "same"])
def test_every_gate_on_a_packed_int4_engine(gate):
    """A 4x8 int4 engine packs two codes per lane (8 reduction rows): the identity tiles span the reduction rows,
    not the PE rows; two samples in one program; golden == emulator on every tensor."""
    model = _se_model(gate, seed=5, channels=20)
    x = np.random.default_rng(7).standard_normal((16, 2, 6, 6))
    config = AcceleratorConfig(rows=4, cols=8, dma_bits=32, weight_format="int4", act_format="int4")
    assert config.reduction_rows == 8
    compiled = compile_model(model, config, x, log=lambda *_: None, batch=2)
    assert compiled.host_layers == [] and "ALU op=MUL" in compiled.program.listing()
    codes = compiled.network.tensors[compiled.network.input].quantize(x[:4])
    golden, emulated = (run_codes(compiled, codes, b, keep=True) for b in ("golden", "emulator"))
    for i in range(len(codes)):
        for tensor in compiled.materialized:
            np.testing.assert_array_equal(emulated.tensors[i][tensor], golden.tensors[i][tensor],
                                          err_msg=f"{tensor}, sample {i}")
