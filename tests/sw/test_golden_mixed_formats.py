"""A mixed-format network's golden model across format boundaries, against a reference written from the definitions.

conv in minifloat6 -> conv in int8 -> conv in int4 (weights and outputs in each layer's own format, one network):
every layer's output codes must be what the ISA's arithmetic gives on exact rationals (``Fraction``) of the values
the codes stand for (minifloat6 decoded by ml_dtypes' float6_e3m2fn, integers as two's complement), with the
accumulator's exponent that of the format set (the finest pair) and rounding to nearest even into each output format.
"""

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import IntFormat, get_format
from sw.golden.layers import run_layer
from sw.golden.network import NetworkError, run_network
from sw.ir import FloatLayer, FloatNetwork, QuantizedNetwork
from sw.quantize import quantize_network

FORMATS = ["int4", "int8", "minifloat6"]
CHAIN = [("c1", "minifloat6"), ("c2", "int8"), ("c3", "int4")]


def _value(fmt_name: str, code: int) -> Fraction:
    """The number a code stands for, from the format's definition."""
    if fmt_name == "minifloat6":
        return Fraction(float(np.array([code], np.uint8).view(ml_dtypes.float6_e3m2fn)[0]))
    bits = int(fmt_name[3:])
    return Fraction(code - (1 << bits) if code >> (bits - 1) else code)


def _all_values(fmt_name: str) -> list[tuple[Fraction, int]]:
    bits = 6 if fmt_name == "minifloat6" else int(fmt_name[3:])
    return [(_value(fmt_name, c), c) for c in range(1 << bits)]


def _round_to(fmt_name: str, v: Fraction, zero_point: int) -> Fraction:
    """Integer: round half to even, add the zero point, saturate. Minifloat: the nearest value, ties to the even
    code (even mantissa), saturating at the largest finite magnitude."""
    if fmt_name.startswith("int"):
        bits = int(fmt_name[3:])
        return Fraction(min(max(round(v) + zero_point, -(1 << (bits - 1))), (1 << (bits - 1)) - 1))
    values = _all_values(fmt_name)
    best = min(values, key=lambda vc: (abs(vc[0] - v), vc[1] & 1))
    return best[0]


def _code(fmt_name: str, value: Fraction) -> int:
    matches = [c for v, c in _all_values(fmt_name) if v == value]
    return min(matches)          # +0 (code 0) before -0


def _reference_conv(x_codes, layer, in_fmt: str, in_zero_code: int, out_fmt: str, e: int) -> np.ndarray:
    """Output codes of a conv layer: v = (acc + B) * M * 2**(e - S) with acc the exact sum in units of 2**e."""
    w_fmt = layer.weight_format
    w = layer.weights[0]
    cout, cin, kh, kw = w.shape
    (pt, pl, pb, pr) = layer.attrs["padding"]
    n, _, h, wd = x_codes.shape
    padded = np.full((n, cin, h + pt + pb, wd + pl + pr), in_zero_code, dtype=np.int64)
    padded[:, :, pt:pt + h, pl:pl + wd] = x_codes
    ho, wo = h + pt + pb - kh + 1, wd + pl + pr - kw + 1
    wv = [[[[_value(w_fmt, int(w[o, c, i, j])) for j in range(kw)] for i in range(kh)] for c in range(cin)]
          for o in range(cout)]
    lo, hi = _value(out_fmt, layer.clamp_lo), _value(out_fmt, layer.clamp_hi)
    out = np.zeros((n, cout, ho, wo), dtype=np.int64)
    for b in range(n):
        xv = [[[_value(in_fmt, int(padded[b, c, y, x])) for x in range(padded.shape[3])]
               for y in range(padded.shape[2])] for c in range(cin)]
        for o in range(cout):
            bias = Fraction(int(layer.bias[o])) * Fraction(2) ** e
            scale = Fraction(int(layer.multiplier[o]), 1 << int(layer.shift[o]))
            for y in range(ho):
                for x in range(wo):
                    acc = sum(xv[c][y + i][x + j] * wv[o][c][i][j]
                              for c in range(cin) for i in range(kh) for j in range(kw))
                    out[b, o, y, x] = _output_code(acc + bias, scale, layer, out_fmt, lo, hi)
    return out


def _output_code(total: Fraction, scale: Fraction, layer, out_fmt: str, lo: Fraction, hi: Fraction) -> int:
    """The post-processing of one exact sum (bias included, as a number): scale, round into the output format,
    clamp by value."""
    q = _round_to(out_fmt, total * scale, layer.zero_point)
    return _code(out_fmt, min(max(q, lo), hi))


def _reference_add(xs, layer, in_fmt: str, out_fmt: str, e: int) -> np.ndarray:
    """Output codes of an add: the exact sum of the inputs' values, post-processed like any accumulation."""
    lo, hi = _value(out_fmt, layer.clamp_lo), _value(out_fmt, layer.clamp_hi)
    out = np.zeros(xs[0].shape, dtype=np.int64)
    for idx in np.ndindex(*xs[0].shape):
        c = idx[1]
        total = sum(_value(in_fmt, int(x[idx])) for x in xs) + Fraction(int(layer.bias[c])) * Fraction(2) ** e
        out[idx] = _output_code(total, Fraction(int(layer.multiplier[c]), 1 << int(layer.shift[c])), layer,
                                out_fmt, lo, hi)
    return out


@pytest.fixture(scope="module")
def mixed_chain():
    rng = np.random.default_rng(7)
    shapes = {"x": (3, 5, 5), "t1": (4, 5, 5), "t2": (4, 5, 5), "t3": (3, 3, 3)}
    attrs = {"kernel": (3, 3), "stride": (1, 1), "dilation": (1, 1), "groups": 1}
    layers = [FloatLayer("c1", "conv", ["x"], "t1", {**attrs, "padding": (1, 1, 1, 1)},
                         rng.normal(0, 0.4, (4, 3, 3, 3)), rng.normal(0, 0.2, 4), clip=(0.0, np.inf)),
              FloatLayer("c2", "conv", ["t1"], "t2", {**attrs, "padding": (1, 1, 1, 1)},
                         rng.normal(0, 0.3, (4, 4, 3, 3)), rng.normal(0, 0.2, 4)),
              FloatLayer("c3", "conv", ["t2"], "t3", {**attrs, "padding": (0, 0, 0, 0)},
                         rng.normal(0, 0.3, (3, 4, 3, 3)), rng.normal(0, 0.2, 3), clip=(-1.0, 2.0))]
    net = FloatNetwork("x", "t3", shapes, layers)
    samples = rng.normal(0, 1, (16, 3, 5, 5))
    qnet = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=32, samples=samples,
                            method="mmse", per_channel=True, layer_formats={n: (f, f) for n, f in CHAIN},
                            formats=FORMATS)
    return qnet, qnet.tensors["x"].quantize(samples[:2])


def test_each_layer_in_its_own_format(mixed_chain):
    qnet, _ = mixed_chain
    assert qnet.formats == FORMATS and qnet.acc_exponent == 2 * get_format("minifloat6").lsb_exponent
    for name, fmt in CHAIN:
        layer = next(la for la in qnet.layers if la.name == name)
        assert layer.weight_format == fmt and qnet.tensors[layer.output].format == fmt
        assert all(0 <= int(c) < 1 << get_format(fmt).bits for c in layer.weights[0].ravel())
    assert isinstance(get_format(qnet.tensors["t2"].format), IntFormat) and qnet.tensors["t2"].zero_point != 0


def test_golden_across_format_boundaries_matches_the_definitions(mixed_chain):
    qnet, x = mixed_chain
    golden = run_network(qnet, x, keep=True)
    reference = x.astype(np.int64)
    for layer in qnet.layers:
        src = qnet.tensors[layer.inputs[0]]
        # One layer from the golden model's own input codes, and the reference chained from the network input.
        alone = _reference_conv(golden[layer.inputs[0]].astype(np.int64), layer, src.format, src.zero_code(),
                                qnet.tensors[layer.output].format, qnet.acc_exponent)
        np.testing.assert_array_equal(golden[layer.output], alone, err_msg=layer.name)
        reference = _reference_conv(reference, layer, src.format, src.zero_code(),
                                    qnet.tensors[layer.output].format, qnet.acc_exponent)
        np.testing.assert_array_equal(golden[layer.output], reference, err_msg=layer.name)
        assert len(np.unique(golden[layer.output])) > 3, f"{layer.name}: too few distinct codes to test"


def test_saved_and_loaded_mixed_network_runs_the_same(mixed_chain, tmp_path):
    qnet, x = mixed_chain
    qnet.save(tmp_path)
    loaded = QuantizedNetwork.load(tmp_path)
    assert loaded.formats == FORMATS and [la.weight_format for la in loaded.layers] == [f for _, f in CHAIN]
    np.testing.assert_array_equal(run_network(loaded, x), run_network(qnet, x))


def test_mixed_layer_formats_must_be_in_the_set():
    rng = np.random.default_rng(0)
    net = FloatNetwork("x", "y", {"x": (2,), "y": (2,)},
                       [FloatLayer("fc", "linear", ["x"], "y", {}, rng.normal(0, 1, (2, 2)), None)])
    with pytest.raises(Exception, match="not one of the network's formats"):
        quantize_network(net, act_format="int8", weight_format="int8", acc_bits=32,
                         samples=rng.normal(0, 1, (4, 2)), layer_formats={"fc": ("fp8_e4m3", "int8")},
                         formats=["int8", "int4"])


def test_a_layer_alone_uses_the_set_exponent(mixed_chain):
    """The int8 layer of the set accumulates in the set's finest unit: its bias is scaled to it."""
    qnet, x = mixed_chain
    golden = run_network(qnet, x, keep=True)
    c2 = qnet.layers[1]
    assert np.array_equal(run_layer(c2, [golden["t1"]], qnet), golden["t2"])


#: The branches of the residual block: c2 int4, c3 int8 (weights and asked-for outputs); both store int8.
MIXED_BRANCHES = (("int4", "int4"), ("int8", "int8"))


def _residual(samples_seed: int = 3, branches=(("int8", "int8"), ("int8", "int8"))):
    """c1 (minifloat6) -> c2, c3 (``branches``: int8 each by default) -> add (minifloat6 out) -> c4 (int4): an add
    across a boundary."""
    net, samples = residual_float(samples_seed)
    formats = {"c1": ("minifloat6", "minifloat6"), "c2": branches[0], "c3": branches[1],
               "add": (None, "minifloat6"), "c4": ("int4", "int4")}
    acc_bits = AcceleratorConfig(rows=4, cols=4, formats=tuple(FORMATS)).acc_bits       # the engine's, below
    qnet = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=acc_bits, samples=samples,
                            method="mmse", per_channel=True, layer_formats=formats, formats=FORMATS)
    return qnet, qnet.tensors["x"].quantize(samples[:2])


def residual_float(seed: int = 3) -> tuple[FloatNetwork, np.ndarray]:
    """The float residual network c1 -> (c2 | c3) -> add -> c4 and 16 calibration samples."""
    rng = np.random.default_rng(seed)
    shapes = {"x": (3, 6, 6), "t1": (4, 6, 6), "t2": (4, 6, 6), "t3": (4, 6, 6), "t4": (4, 6, 6), "t5": (4, 6, 6)}
    conv = {"stride": (1, 1), "dilation": (1, 1), "groups": 1}
    k3, k1 = {**conv, "kernel": (3, 3), "padding": (1, 1, 1, 1)}, {**conv, "kernel": (1, 1), "padding": (0, 0, 0, 0)}
    layers = [FloatLayer("c1", "conv", ["x"], "t1", k3, rng.normal(0, 0.4, (4, 3, 3, 3)), rng.normal(0, .2, 4),
                         clip=(0.0, np.inf)),
              FloatLayer("c2", "conv", ["t1"], "t2", k1, rng.normal(0, 0.5, (4, 4, 1, 1)), rng.normal(0, .2, 4)),
              FloatLayer("c3", "conv", ["t1"], "t3", k3, rng.normal(0, 0.3, (4, 4, 3, 3)), rng.normal(0, .2, 4)),
              FloatLayer("add", "add", ["t2", "t3"], "t4", {}, clip=(0.0, np.inf)),
              FloatLayer("c4", "conv", ["t4"], "t5", k1, rng.normal(0, 0.5, (4, 4, 1, 1)), rng.normal(0, .2, 4))]
    return FloatNetwork("x", "t5", shapes, layers), rng.normal(0, 1, (16, 3, 6, 6))


def test_residual_add_across_a_format_boundary_matches_the_definitions():
    qnet, x = _residual()
    assert [qnet.tensors[t].format for t in ("t1", "t2", "t3", "t4", "t5")] == \
        ["minifloat6", "int8", "int8", "minifloat6", "int4"]
    golden = run_network(qnet, x, keep=True)
    add = next(la for la in qnet.layers if la.op == "add")
    expected = _reference_add([golden["t2"], golden["t3"]], add, "int8", "minifloat6", qnet.acc_exponent)
    np.testing.assert_array_equal(golden["t4"], expected)
    c4 = qnet.layers[-1]
    np.testing.assert_array_equal(golden["t5"], _reference_conv(golden["t4"].astype(np.int64), c4, "minifloat6", 0,
                                                                "int4", qnet.acc_exponent))


@pytest.mark.parametrize("branches, stored", [(MIXED_BRANCHES, "int8"),
                                               ((("int4", "int4"), ("minifloat6", "minifloat6")), "minifloat6"),
                                               ((("minifloat6", "int4"), ("int4", "int4")), "int4")])
def test_branches_in_different_formats_store_the_widest(branches, stored):
    """The branches of a residual block keep their own weight formats; the add's inputs are stored in the widest
    format the branches ask for (each producer's requantizing store writes it), and every code is what the
    definitions give."""
    qnet, x = _residual(branches=branches)
    layer = {la.name: la for la in qnet.layers}
    assert (layer["c2"].weight_format, layer["c3"].weight_format) == (branches[0][0], branches[1][0])
    assert qnet.tensors["t2"].format == qnet.tensors["t3"].format == stored
    assert qnet.tensors["t2"] == qnet.tensors["t3"]                         # one encoding
    golden = run_network(qnet, x, keep=True)
    t1 = qnet.tensors["t1"]
    for name in ("c2", "c3"):
        expected = _reference_conv(golden["t1"].astype(np.int64), layer[name], t1.format, t1.zero_code(), stored,
                                   qnet.acc_exponent)
        np.testing.assert_array_equal(golden[layer[name].output], expected, err_msg=name)
        assert len(np.unique(expected)) > 3, f"{name}: too few distinct codes to test"
    expected = _reference_add([golden["t2"], golden["t3"]], layer["add"], stored, "minifloat6", qnet.acc_exponent)
    np.testing.assert_array_equal(golden["t4"], expected)


def test_a_tensor_an_add_reads_in_another_format_is_refused():
    qnet, x = _residual()
    t3 = qnet.tensors["t3"]
    qnet.tensors["t3"] = type(t3)("int4", t3.scale, 0)           # an IR edited by hand
    with pytest.raises(NetworkError, match="joins tensors in different formats"):
        run_network(qnet, x)


@pytest.mark.parametrize("branches", [(("int8", "int8"), ("int8", "int8")), MIXED_BRANCHES,
                                      (("int4", "int4"), ("minifloat6", "minifloat6"))])
def test_residual_add_across_formats_compiles_golden_equals_emulator(branches):
    from tests.sw.test_compiler_network import assert_every_tensor_matches_golden

    qnet, x = _residual(branches=branches)
    config = AcceleratorConfig(rows=4, cols=4, formats=tuple(FORMATS))
    assert_every_tensor_matches_golden(qnet, config, x)


def test_a_network_file_with_an_unknown_format_is_refused(mixed_chain, tmp_path):
    import json

    from sw.ir import NetworkFileError
    qnet, _ = mixed_chain
    qnet.save(tmp_path)
    doc = json.loads((tmp_path / "network.json").read_text())
    doc["formats"] = ["int4", "nofloat9"]
    (tmp_path / "network.json").write_text(json.dumps(doc))
    with pytest.raises(NetworkFileError, match="unknown format 'nofloat9'"):
        QuantizedNetwork.load(tmp_path)


def test_residual_add_across_formats_on_rtl(tmp_path):
    """The residual network (branches in int4 and int8, the add's inputs stored in int8, its sum in minifloat6) on
    the 4x4 int4+int8+minifloat6 build's Verilog: golden == emulator == RTL on every stored tensor."""
    from sw.compiler.network import compile_network
    from sw.runtime import run_codes

    qnet, x = _residual(branches=MIXED_BRANCHES)
    assert {la.weight_format for la in qnet.layers if la.weights} == set(FORMATS)
    compiled = compile_network(qnet, AcceleratorConfig(rows=4, cols=4, formats=tuple(FORMATS)))
    runs = {backend: run_codes(compiled, x, backend, keep=True, work_dir=tmp_path)
            for backend in ("golden", "emulator", "rtl")}
    for i in range(len(x)):
        assert runs["golden"].tensors[i]
        for tensor, codes in runs["golden"].tensors[i].items():
            for backend in ("emulator", "rtl"):
                np.testing.assert_array_equal(runs[backend].tensors[i][tensor], codes,
                                              err_msg=f"{backend}, tensor {tensor}, image {i}")
