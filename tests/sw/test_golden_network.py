"""The network executor (sw/golden/network.py) against the naive layer references composed by hand.

The references are the Fraction loops of tests/sw/test_golden_layers.py; here a second, independent dispatch
runs them layer after layer. Each network is built together with its reference: every layer's multiplier
and shift are chosen from the reference accumulators (as a quantizer would) so that outputs spread over the
format instead of saturating, which would hide mistakes.
"""

from __future__ import annotations

import importlib.util
import math
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from hw.spec.formats import IntFormat, get_format
from sw.golden.network import NetworkError, dequantize_output, quantize_input, run_network
from sw.ir import QuantizedNetwork, QuantLayer, QuantTensor

_spec = importlib.util.spec_from_file_location("golden_layer_references",
                                               Path(__file__).with_name("test_golden_layers.py"))
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

ACC_BITS = 40


class Builder:
    """Builds a QuantizedNetwork layer by layer while computing the expected codes with the naive references."""

    def __init__(self, af, wf, zero_point, x_codes, input_shape, rng):
        self.af, self.wf, self.zp, self.rng = af, wf, zero_point, rng
        self.fmt, self.wfmt = get_format(af), get_format(wf)
        self.e = self.fmt.lsb_exponent + self.wfmt.lsb_exponent
        self.shapes = {"x": tuple(input_shape)}
        self.codes = {"x": x_codes}
        self.layers: list[QuantLayer] = []

    def pad_code(self) -> int:
        return int(self.fmt.quantize(self.zp)) if isinstance(self.fmt, IntFormat) else 0

    def weights(self, shape):
        return ref.random_codes(self.wf, shape, self.rng)

    def zero_value(self) -> int:
        """The value of the zero code: what each input term holds beyond its real number."""
        return self.zp if isinstance(self.fmt, IntFormat) else 0

    def _accumulating(self, name, op, inputs, acc, attrs=None, weights=(), relu=False, offset=None):
        """Pick per-channel parameters from the reference sums ``acc`` (N, C, ...), then post-process.

        ``offset`` (per channel) is what the input zero point adds to each sum; the bias takes it away, as a
        quantizer's would, so that outputs spread around the zero point.
        """
        channels = acc.shape[1]
        offset = np.zeros(channels, dtype=object) if offset is None else np.broadcast_to(offset, (channels,))
        centred = [abs(v - offset[idx[1]]) for idx, v in np.ndenumerate(acc) if v is not None]
        top = max(max(centred, default=Fraction(1)), Fraction(2) ** self.e)
        target = (self.fmt.max - self.zero_value()) / 2
        multiplier = self.rng.integers(64, 128, channels)
        shift = np.array([math.ceil(math.log2(float(top) * m / target)) for m in multiplier])
        unit = int(top / Fraction(2) ** self.e)
        bias = self.rng.integers(-(unit // 4) - 1, unit // 4 + 1, channels) \
            - np.array([round(o / Fraction(2) ** self.e) for o in offset], dtype=np.int64)
        lo = self.pad_code() if relu else int(self.fmt.quantize(self.fmt.min))
        layer = QuantLayer(name, op, list(inputs), name, dict(attrs or {}), list(weights), None, bias, multiplier,
                           shift, self.zp, lo, int(self.fmt.quantize(self.fmt.max)))
        out = ref.naive_postprocess(acc, self.e, layer, self.af, ACC_BITS)
        self._add(layer, out)
        # Enough distinct outputs that a mixed-up channel or position would show.
        assert len(np.unique(out)) >= min(3, out.size // 2), (name, np.unique(out))
        return name

    def _add(self, layer, out):
        dtype = np.uint8 if self.fmt.bits <= 8 else np.uint16
        self.layers.append(layer)
        self.codes[layer.output] = out.astype(dtype)
        self.shapes[layer.output] = tuple(out.shape[1:])

    def conv(self, name, src, cout, kernel, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
             tensors=1, relu=True):
        x = self.codes[src]
        weights = [self.weights((cout, x.shape[1] // groups, *kernel)) for _ in range(tensors)]
        attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
        acc = ref.naive_conv(x, weights, kernel, stride, padding, dilation, groups, self.pad_code(), self.af,
                             self.wf)
        return self._accumulating(name, "conv", [src], acc, attrs, weights, relu, self._weight_offset(weights))

    def _weight_offset(self, weights):
        table = ref.table(self.wf)
        return np.array([self.zero_value() * sum(table[int(c)] for w in weights for c in w[o].flat)
                         for o in range(weights[0].shape[0])], dtype=object)

    def linear(self, name, src, nout, relu=False):
        x = self.codes[src]
        weights = [self.weights((nout, x.shape[1]))]
        return self._accumulating(name, "linear", [src], ref.naive_linear(x, weights, self.af, self.wf), None,
                                  weights, relu, self._weight_offset(weights))

    def avgpool(self, name, src, kernel, stride, padding):
        acc = ref.naive_window_sum(self.codes[src], kernel, stride, padding, self.pad_code(), self.af)
        return self._accumulating(name, "avgpool", [src], acc, dict(kernel=kernel, stride=stride, padding=padding),
                                  offset=self.zero_value() * kernel[0] * kernel[1])

    def global_avgpool(self, name, src):
        x = self.codes[src]
        acc = ref.naive_window_sum(x, x.shape[2:], (1, 1), (0, 0, 0, 0), 0, self.af)
        return self._accumulating(name, "global_avgpool", [src], acc, offset=self.zero_value() * x[0, 0].size)

    def add(self, name, *srcs):
        table = ref.table(self.af)
        xs = [self.codes[s] for s in srcs]
        acc = np.empty(xs[0].shape, dtype=object)
        for idx in np.ndindex(*acc.shape):
            vals = [table[int(x[idx])] for x in xs]
            acc[idx] = None if None in vals else sum(vals)
        return self._accumulating(name, "add", srcs, acc, offset=self.zero_value() * len(srcs))

    def concat(self, name, *srcs):
        table = ref.table(self.af)
        joined = np.concatenate([self.codes[s] for s in srcs], axis=1)
        acc = np.vectorize(lambda c: table[c], otypes=[object])(joined)
        return self._accumulating(name, "concat", srcs, acc, offset=self.zero_value())

    def maxpool(self, name, src, kernel, stride, padding=(0, 0, 0, 0)):
        out = ref.naive_maxpool(self.codes[src], kernel, stride, padding, self.af)
        self._add(QuantLayer(name, "maxpool", [src], name, dict(kernel=kernel, stride=stride, padding=padding)), out)
        return name

    def flatten(self, name, src):
        x = self.codes[src]
        self._add(QuantLayer(name, "flatten", [src], name), x.reshape(x.shape[0], -1))
        return name

    def network(self, output) -> QuantizedNetwork:
        tensors = {k: QuantTensor(self.af, 0.125, self.zp) for k in self.shapes}
        return QuantizedNetwork(self.af, self.wf, ACC_BITS, "x", output, dict(self.shapes), tensors,
                                list(self.layers))


FORMATS = [("int8", "int8", 0), ("uint8", "int4", 128), ("int8", "int8", -20), ("minifloat6", "minifloat6", 0),
           ("fp8_e4m3", "fp8_e4m3", 0), ("minifloat4", "int4", 0)]


def input_codes(af, shape, rng):
    x = ref.random_codes(af, shape, rng)
    if get_format(af).has_nan:
        x[0, 0, 1, 1] = get_format(af).nan_code            # one NaN: it must reach the output of image 0
    return x


def chain(af, wf, zp, rng) -> Builder:
    """conv -> maxpool -> flatten -> linear (+ Relu) -> linear."""
    b = Builder(af, wf, zp, input_codes(af, (3, 2, 6, 6), rng), (2, 6, 6), rng)
    b.conv("conv", "x", 4, (3, 3), padding=(1, 1, 1, 1))
    b.maxpool("pool", "conv", (2, 2), (2, 2))
    b.flatten("flat", "pool")
    b.linear("fc1", "flat", 8, relu=True)
    b.linear("fc2", "fc1", 3)
    return b


def branches(af, wf, zp, rng) -> Builder:
    """Two convolutions of one input, added, concatenated with one of them, pooled, depthwise, global average,
    linear: every accumulating op, strides, asymmetric padding, groups and a two-tensor weight."""
    b = Builder(af, wf, zp, input_codes(af, (2, 3, 5, 5), rng), (3, 5, 5), rng)
    b.conv("a", "x", 4, (3, 3), padding=(1, 1, 1, 1))
    b.conv("b", "x", 4, (1, 1), tensors=2, relu=False)
    b.add("sum", "a", "b")
    b.concat("cat", "sum", "a")
    b.avgpool("avg", "cat", (3, 3), (2, 2), (1, 1, 1, 1))
    b.conv("dw", "avg", 8, (2, 2), padding=(0, 1, 1, 0), groups=8)
    b.maxpool("mp", "dw", (2, 2), (1, 1), (0, 0, 1, 1))
    b.global_avgpool("gap", "mp")
    b.flatten("flat", "gap")
    b.linear("fc", "flat", 3)
    return b


@pytest.mark.parametrize("build", [chain, branches])
@pytest.mark.parametrize("af, wf, zp", FORMATS)
def test_network_against_naive_layers(af, wf, zp, build):
    rng = np.random.default_rng(sum(map(ord, f"{af}{wf}{zp}{build.__name__}")))
    b = build(af, wf, zp, rng)
    net = b.network(b.layers[-1].output)
    out = run_network(net, b.codes["x"])
    assert out.shape == (len(b.codes["x"]), *net.output_shape)
    np.testing.assert_array_equal(out, b.codes[net.output])
    every = run_network(net, b.codes["x"], keep=True)
    assert set(every) == set(b.codes)
    for name, codes in b.codes.items():
        np.testing.assert_array_equal(every[name], codes, err_msg=name)
    if get_format(af).has_nan:                             # the NaN of image 0 reached its output, no other
        assert np.isnan(get_format(af).decode(out[0])).any()
        assert not np.isnan(get_format(af).decode(out[1:])).any()


@pytest.mark.parametrize("keep", [False, True])
def test_network_in_slices_of_the_batch(monkeypatch, keep):
    """A batch too big for one slice goes through in slices (here one image each) with the same result."""
    import importlib
    rng = np.random.default_rng(5)
    b = branches("int8", "int8", 3, rng)
    net = b.network(b.layers[-1].output)
    monkeypatch.setattr(importlib.import_module("sw.golden.network"), "_SLICE_ELEMENTS", 1)
    got = run_network(net, b.codes["x"], keep=keep)
    for name, codes in (b.codes.items() if keep else [(net.output, b.codes[net.output])]):
        np.testing.assert_array_equal(got[name] if keep else got, codes, err_msg=name)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    b = branches("uint8", "int4", 128, rng)
    net = b.network("fc")
    net.report = [{"layer": "a", "rmse": 0.5}]
    net.save(tmp_path)
    loaded = QuantizedNetwork.load(tmp_path)
    x = ref.random_codes("uint8", (5, 3, 5, 5), rng)
    np.testing.assert_array_equal(run_network(loaded, x), run_network(net, x))
    np.testing.assert_array_equal(run_network(loaded, b.codes["x"]), b.codes["fc"])


def test_input_checks():
    rng = np.random.default_rng(2)
    b = chain("int8", "int8", 0, rng)
    net = b.network("fc2")
    with pytest.raises(NetworkError, match=r"shaped \('N', 2, 6, 6\).*not \(2, 6, 6\)"):
        run_network(net, b.codes["x"][0])
    with pytest.raises(NetworkError, match=r"not \(3, 2, 6, 5\)"):
        run_network(net, b.codes["x"][..., :5])
    with pytest.raises(NetworkError, match="not float64 values; convert floats with quantize_input"):
        run_network(net, b.codes["x"].astype(np.float64))
    with pytest.raises(NetworkError, match=r"0\.\.255"):
        run_network(net, b.codes["x"].astype(np.int64) + 256)
    with pytest.raises(NetworkError, match="shaped"):
        quantize_input(net, np.zeros((2, 6, 6)))
    with pytest.raises(NetworkError, match="Output codes must be shaped"):
        dequantize_output(net, np.zeros((2, 4), np.uint8))
    # Any integer dtype with valid codes is accepted.
    np.testing.assert_array_equal(run_network(net, b.codes["x"].astype(np.int32)), b.codes["fc2"])


def test_output_before_the_last_layer():
    rng = np.random.default_rng(5)
    b = chain("int8", "int8", 0, rng)
    net = b.network("fc1")                                  # fc2 still runs, but fc1 is what the network gives
    np.testing.assert_array_equal(run_network(net, b.codes["x"]), b.codes["fc1"])


def test_network_checks():
    rng = np.random.default_rng(3)
    b = chain("int8", "int8", 0, rng)
    net = b.network("fc2")
    net.layers[3], net.layers[4] = net.layers[4], net.layers[3]
    with pytest.raises(NetworkError, match="reads tensor 'fc1' before any layer makes it"):
        run_network(net, b.codes["x"])
    net = b.network("fc2")
    net.tensors["pool"] = QuantTensor("int4", 1.0)
    with pytest.raises(NetworkError, match="'pool' is encoded in int4.*one activation format, int8"):
        run_network(net, b.codes["x"])
    net = b.network("fc2")
    net.shapes["pool"] = (4, 2, 2)
    with pytest.raises(NetworkError, match=r"makes 'pool' shaped \(4, 3, 3\), but the network says \(4, 2, 2\)"):
        run_network(net, b.codes["x"])
    net = b.network("nowhere")
    with pytest.raises(NetworkError, match="No layer makes the network output 'nowhere'"):
        run_network(net, b.codes["x"])
    net = b.network("fc2")
    net.layers[1].op = "sigmoid"
    with pytest.raises(NetworkError, match="unknown op 'sigmoid'"):
        run_network(net, b.codes["x"])


def test_quantize_input_and_dequantize_output():
    """real = scale * (value(code) - zero_point), worked by hand."""
    shapes = {"x": (1, 1, 3), "y": (1, 1, 3)}
    flat = QuantLayer("f", "maxpool", ["x"], "y", dict(kernel=(1, 1), stride=(1, 1)))
    net = QuantizedNetwork("uint8", "int8", 32, "x", "y", shapes,
                           {"x": QuantTensor("uint8", 0.5, 10), "y": QuantTensor("uint8", 0.25, 4)}, [flat])
    codes = quantize_input(net, np.array([[[[1.0, -5.5, 200.0]]]]))
    assert codes.tolist() == [[[[12, 0, 255]]]]            # 1/0.5 + 10; -11 + 10 saturates; 400 + 10 saturates
    out = dequantize_output(net, np.array([[[[4, 8, 255]]]], np.uint8))
    assert out.dtype == np.float32 and out.tolist() == [[[[0.0, 1.0, 62.75]]]]
    mf = QuantizedNetwork("minifloat4", "minifloat4", 32, "x", "y", shapes,
                          {"x": QuantTensor("minifloat4", 2.0), "y": QuantTensor("minifloat4", 2.0)}, [flat])
    assert quantize_input(mf, np.array([[[[3.0, -0.1, 100.0]]]])).tolist() == [[[[0b0011, 0, 0b0111]]]]


def test_digits_sized_network_is_fast():
    """360 images through the digits CNN shape (two 3x3 convs, two maxpools, 256->32->10) in a few seconds."""
    rng = np.random.default_rng(4)
    for af, wf in [("int8", "int8"), ("minifloat6", "minifloat6")]:
        fa = get_format(af)
        hi, lo = int(fa.quantize(fa.max)), int(fa.quantize(fa.min))

        def w(shape):
            return ref.random_codes(wf, shape, rng)

        def acc(name, op, src, weights, attrs, relu, c, shift):
            return QuantLayer(name, op, [src], name, attrs, weights, None, rng.integers(-50, 50, c),
                              rng.integers(64, 128, c), np.full(c, shift), 0, 0 if relu else lo, hi)

        conv = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
        pool = dict(kernel=(2, 2), stride=(2, 2), padding=(0, 0, 0, 0))
        s = 12 if isinstance(fa, IntFormat) else 6
        layers = [acc("c1", "conv", "x", [w((8, 1, 3, 3))], conv, True, 8, s),
                  QuantLayer("p1", "maxpool", ["c1"], "p1", pool),
                  acc("c2", "conv", "p1", [w((16, 8, 3, 3))], conv, True, 16, s + 2),
                  QuantLayer("p2", "maxpool", ["c2"], "p2", pool),
                  QuantLayer("f", "flatten", ["p2"], "f"),
                  acc("l1", "linear", "f", [w((32, 256))], {}, True, 32, s + 3),
                  acc("y", "linear", "l1", [w((10, 32))], {}, False, 10, s + 2)]
        shapes = {"x": (1, 16, 16), "c1": (8, 16, 16), "p1": (8, 8, 8), "c2": (16, 8, 8), "p2": (16, 4, 4),
                  "f": (256,), "l1": (32,), "y": (10,)}
        net = QuantizedNetwork(af, wf, 32, "x", "y", shapes, {k: QuantTensor(af, 0.1) for k in shapes}, layers)
        x = ref.random_codes(af, (360, 1, 16, 16), rng)
        start = time.perf_counter()
        out = run_network(net, x)
        elapsed = time.perf_counter() - start
        assert out.shape == (360, 10)
        assert elapsed < 10, f"{af}: {elapsed:.1f} s for 360 images"
