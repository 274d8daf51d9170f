"""Data-free quantization (sw/quantize/data_free.py and quantize_network(data_free=...)).

Oracles: Monte-Carlo estimates of the clipped normal's moments and of a layer's output error through a
BatchNorm + ReLU input (sampled independently, as the model assumes); the convolution in the bias-correction
test is numpy's sliding windows, not the code under test; the compiled data-free network is checked golden
against emulator, and its accuracy against the labels of the digits test set.
"""

from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from sw.compiler.network import compile_network
from sw.frontend.onnx_import import load_onnx
from sw.ir import FloatLayer, FloatNetwork
from sw.quantize import Grid, QuantizationError, quantize_network, quantize_weight
from sw.quantize.data_free import (ChannelStats, DataFree, activation_ranges, clipped_normal_moments,
                                   correct_bias, tensor_stats)
from sw.runtime import run_codes

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"


@pytest.mark.parametrize("mean,std,lo,hi", [(0.3, 1.2, 0.0, np.inf), (-1.0, 0.5, 0.0, np.inf), (2.0, 3.0, 0.0, 6.0),
                                            (0.0, 1.0, -np.inf, np.inf), (1.0, 2.0, -1.0, 0.5)])
def test_clipped_normal_moments_match_monte_carlo(mean, std, lo, hi):
    x = np.clip(np.random.default_rng(0).normal(mean, std, size=2_000_000), lo, hi)
    e, v = clipped_normal_moments(mean, std, lo, hi)
    n = x.size
    assert abs(e - x.mean()) < 5 * x.std() / np.sqrt(n) + 1e-12
    assert abs(v - x.var()) < 5 * np.sqrt(np.mean((x - x.mean()) ** 4) / n) + 1e-12


def test_relu_mean_is_dfq_closed_form():
    from scipy.stats import norm
    mean, std = np.array([-0.5, 0.0, 1.5]), np.array([0.3, 1.0, 2.0])
    e, _ = clipped_normal_moments(mean, std, 0.0, np.inf)
    np.testing.assert_allclose(e, mean * norm.cdf(mean / std) + std * norm.pdf(mean / std), rtol=1e-12)


def conv_valid(x, w, groups):
    """(N, Cin, H, W) x (Cout, Cin/groups, kh, kw) -> (N, Cout, H-kh+1, W-kw+1), by sliding windows."""
    cout, cin_g = w.shape[:2]
    win = sliding_window_view(x, w.shape[2:], axis=(2, 3))            # N, Cin, Ho, Wo, kh, kw
    out = []
    for c in range(cout):
        g = c // (cout // groups)
        out.append(np.einsum("nkyxij,kij->nyx", win[:, g * cin_g:(g + 1) * cin_g], w[c]))
    return np.stack(out, axis=1)


@pytest.mark.parametrize("groups", [1, 3])
def test_bias_correction_cancels_the_expected_output_error(groups):
    rng = np.random.default_rng(1)
    beta, gamma = np.array([0.5, -0.2, 1.0]), np.array([1.0, 0.7, 0.4])
    cout = 6
    w = rng.normal(size=(cout, 3 // groups, 3, 3)) * 0.5
    bias = rng.normal(size=cout) * 0.1
    layer = FloatLayer("c", "conv", ["x"], "y", {"kernel": (3, 3), "stride": (1, 1), "padding": (0, 0, 0, 0),
                                                 "groups": groups}, w, bias)
    qw = quantize_weight(w, Grid.of("int3"), "mmse", per_channel=True)
    mean_in, _ = ChannelStats.of(beta, gamma, (0.0, np.inf)).moments()
    fixed = correct_bias(layer, qw, mean_in)
    assert np.array_equal(layer.bias, bias)                           # a copy: the float layer is unchanged
    x = np.maximum(rng.normal(beta[None, :, None, None], gamma[None, :, None, None], size=(20000, 3, 3, 3)), 0)
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), mean_in, atol=5e-3)
    ref = conv_valid(x, w, groups)[:, :, 0, 0] + bias
    plain = conv_valid(x, qw.dequantize(), groups)[:, :, 0, 0] + bias
    corrected = plain - bias + fixed.bias
    err_plain, err_fixed = (plain - ref).mean(axis=0), (corrected - ref).mean(axis=0)
    tol = 5 * (corrected - ref).std(axis=0) / np.sqrt(len(x))
    assert np.all(np.abs(err_fixed) < tol + 1e-9)
    assert np.abs(err_fixed).sum() < 0.5 * np.abs(err_plain).sum()


def bn_net():
    """conv (BN stats, ReLU) -> conv (BN stats, no clip) -> flatten -> linear (no stats)."""
    rng = np.random.default_rng(2)
    k3 = {"kernel": (3, 3), "stride": (1, 1), "padding": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1}
    layers = [
        FloatLayer("c1", "conv", ["x"], "a", k3, rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4) * 0.1,
                   (0.0, np.inf), output_stats=(np.array([0.1, -0.3, 0.5, 0.0]), np.array([1.0, 0.5, 2.0, 0.8]))),
        FloatLayer("c2", "conv", ["a"], "b", k3, rng.normal(size=(3, 4, 3, 3)) * 0.3, rng.normal(size=3) * 0.1,
                   output_stats=(np.array([0.2, -0.1, 0.0]), np.array([0.4, 1.5, 0.9]))),
        FloatLayer("fl", "flatten", ["b"], "f"),
        FloatLayer("fc", "linear", ["f"], "out", {}, rng.normal(size=(5, 48)) * 0.2, rng.normal(size=5)),
    ]
    return FloatNetwork("x", "out", {"x": (2, 4, 4)}, layers)


def test_ranges_come_from_the_statistics_and_the_input_range():
    net = bn_net()
    options = DataFree(input_range=(-1.0, 2.0), sigmas=4.0)
    from sw.frontend.float_model import infer_shapes
    stats = tensor_stats(net, {**infer_shapes(net), **net.shapes}, options)
    ranges = activation_ranges(net, stats, options)
    np.testing.assert_allclose(ranges["x"], [-1.0, 2.0])
    np.testing.assert_allclose(ranges["a"], [0.0, 0.5 + 4 * 2.0])                         # ReLU: never below 0
    np.testing.assert_allclose(ranges["b"], [-0.1 - 4 * 1.5, -0.1 + 4 * 1.5])
    np.testing.assert_allclose(ranges["f"], ranges["b"])
    # The linear layer has no statistics: its mean from its input's (checked by sampling that input), its spread
    # the largest any correlation of the inputs gives: above independent inputs', reached by inputs that move
    # together (each with the sign of its weight).
    rng = np.random.default_rng(3)
    mu, sd = np.repeat(stats["b"].mean, 16), np.repeat(stats["b"].std, 16)
    w, b = net.layers[3].weight, net.layers[3].bias
    y = rng.normal(mu, sd, size=(200000, 48)) @ w.T + b                            # independent features
    np.testing.assert_allclose(stats["out"].mean, y.mean(axis=0), atol=5 * y.std(axis=0).max() / np.sqrt(len(y)))
    assert np.all(stats["out"].std > 1.5 * y.std(axis=0))
    z = rng.normal(size=(200000, 1))
    for c in range(w.shape[0]):
        together = (mu + np.sign(w[c]) * sd * z) @ w[c] + b[c]
        np.testing.assert_allclose(stats["out"].std[c], together.std(), rtol=0.01)
        np.testing.assert_allclose(stats["out"].mean[c], together.mean(), atol=5 * together.std() / np.sqrt(len(z)))


def test_quantize_network_data_free_options():
    net = bn_net()
    kw = dict(act_format="int8", weight_format="int4", acc_bits=32, samples=None, method="mmse", per_channel=True)
    with_bc = quantize_network(net, data_free=DataFree(), **kw)
    without = quantize_network(net, data_free=DataFree(bias_correction=False), **kw)
    assert with_bc.tensors["x"].scale == pytest.approx(1 / 255)                          # [0, 1] on 256 codes
    for a, b in zip(with_bc.layers, without.layers):
        if a.weight_scale is not None:
            assert all(np.array_equal(p, q) for p, q in zip(a.weights, b.weights))       # the same weights
            # other biases, except on the first layer: its input's mean is not known
            assert np.array_equal(a.bias, b.bias) == (a.name == "c1"), a.name
    with pytest.raises(QuantizationError, match="no calibration samples"):
        quantize_network(net, data_free=DataFree(), **{**kw, "samples": np.zeros((1, 2, 4, 4))})
    bare = bn_net()
    for layer in bare.layers:
        layer.output_stats = None
    with pytest.raises(QuantizationError, match="needs BatchNormalization statistics"):
        quantize_network(bare, data_free=DataFree(), **kw)
    net.layers[1].activation = {"op": "sigmoid"}
    with pytest.raises(QuantizationError, match="sigmoid.*calibrate"):
        quantize_network(net, data_free=DataFree(), **kw)
    with pytest.raises(QuantizationError, match="input_range"):
        DataFree(input_range=(1.0, 0.0))
    with pytest.raises(QuantizationError, match="sigmas"):
        DataFree(sigmas=0.0)


def test_qdq_model_refused():
    net = load_onnx(DIGITS / "digits_cnn_qdq.onnx")
    with pytest.raises(QuantizationError, match="already carries encodings"):
        quantize_network(net, act_format="int8", weight_format="int8", acc_bits=32, samples=None,
                         data_free=DataFree())


@pytest.mark.parametrize("engine,weights", [("int3", "int3"), ("int4", "int4"), ("int8", "int3")],
                         ids=["int3-engine", "int4-engine", "int3-on-int8-engine"])
def test_compiled_data_free_network_golden_equals_emulator(engine, weights):
    net = load_onnx(DIGITS / "digits_cnn.onnx")
    config = AcceleratorConfig(rows=8, cols=8, weight_format=engine, act_format="int8")
    narrower = None if engine == weights else {layer.name: (weights, None) for layer in net.layers if
                                               layer.weight is not None}
    qnet = quantize_network(net, act_format="int8", weight_format=engine, acc_bits=config.acc_bits, samples=None,
                            method="mmse", per_channel=True, data_free=DataFree(), layer_formats=narrower)
    fmt, narrow = get_format(engine), get_format(weights)
    for q in qnet.layers:
        if q.weight_scale is not None:                 # values of the weight format, whatever the engine's
            values = fmt.decode(q.weights[0])
            assert values.min() >= narrow.min and values.max() <= narrow.max and values.max() > 0, q.name
    compiled = compile_network(qnet, config)
    with np.load(DIGITS / "test_set.npz") as data:
        x, labels = data["images"], data["labels"]
    codes = qnet.tensors[qnet.input].quantize(x)
    golden = run_codes(compiled, codes, "golden").codes
    np.testing.assert_array_equal(golden[:24], run_codes(compiled, codes[:24], "emulator").codes)
    logits = qnet.tensors[qnet.output].dequantize(golden).reshape(len(x), -1)
    assert (logits.argmax(axis=1) == labels).mean() > 0.85           # float: 98 %; chance: 10 %
