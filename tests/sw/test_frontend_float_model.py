"""run_float (sw/frontend/float_model.py) against naive loops over each output element.

The oracles below index the unpadded input directly (out-of-range reads are padding), so they share no
padding, striding or im2col code with the executor.
"""

import numpy as np
import pytest

from sw.frontend import FloatModelError, infer_shapes, run_float
from sw.ir import FloatLayer, FloatNetwork

RNG = np.random.default_rng(1)


def net_of(layers, input_shape, inp="x"):
    net = FloatNetwork(inp, layers[-1].output, {inp: tuple(input_shape)}, layers)
    net.shapes = infer_shapes(net)
    return net


def naive_window(x, kernel, stride, padding, dilation, reduce, pad_value):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = kernel, stride, padding, dilation
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, c, ho, wo))
    for b in range(n):
        for ch in range(c):
            for oy in range(ho):
                for ox in range(wo):
                    vals = []
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = oy * sh + ky * dh - pt, ox * sw + kx * dw - pl
                            inside = 0 <= iy < h and 0 <= ix < w
                            vals.append(x[b, ch, iy, ix] if inside else pad_value)
                    out[b, ch, oy, ox] = reduce(vals)
    return out


def naive_conv(x, w, b, stride, padding, dilation, groups):
    n, cin, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = stride, padding, dilation
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, cout, ho, wo))
    per_group = cout // groups
    for bb in range(n):
        for co in range(cout):
            g = co // per_group
            for oy in range(ho):
                for ox in range(wo):
                    acc = 0.0 if b is None else b[co]
                    for ci in range(cg):
                        for ky in range(kh):
                            for kx in range(kw):
                                iy, ix = oy * sh + ky * dh - pt, ox * sw + kx * dw - pl
                                if 0 <= iy < h and 0 <= ix < wd:
                                    acc += x[bb, g * cg + ci, iy, ix] * w[co, ci, ky, kx]
                    out[bb, co, oy, ox] = acc
    return out


CONV_CASES = [
    # cin, cout, groups, kernel, stride, padding, dilation
    (3, 4, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (4, 6, 2, (3, 2), (2, 1), (0, 1, 2, 0), (1, 2)),
    (4, 4, 4, (3, 3), (1, 2), (2, 0, 1, 1), (2, 1)),  # depthwise
    (2, 3, 1, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
]


@pytest.mark.parametrize("cin, cout, groups, kernel, stride, padding, dilation", CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv(cin, cout, groups, kernel, stride, padding, dilation, bias):
    x = RNG.standard_normal((2, cin, 7, 6))
    w = RNG.standard_normal((cout, cin // groups, *kernel))
    b = RNG.standard_normal(cout) if bias else None
    layer = FloatLayer("c", "conv", ["x"], "y", dict(kernel=kernel, stride=stride, padding=padding,
                                                     dilation=dilation, groups=groups), w, b)
    got = run_float(net_of([layer], x.shape[1:]), x)
    np.testing.assert_allclose(got, naive_conv(x, w, b, stride, padding, dilation, groups), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1)),
    ((3, 3), (1, 2), (1, 0, 1, 2), (1, 1)),
    ((2, 3), (2, 1), (1, 1, 0, 0), (2, 1)),
])
def test_pools(kernel, stride, padding, dilation):
    x = RNG.standard_normal((2, 3, 7, 8))
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    got_max = run_float(net_of([FloatLayer("p", "maxpool", ["x"], "y", attrs)], x.shape[1:]), x)
    got_avg = run_float(net_of([FloatLayer("p", "avgpool", ["x"], "y", attrs)], x.shape[1:]), x)
    np.testing.assert_array_equal(got_max, naive_window(x, kernel, stride, padding, dilation, max, -np.inf))
    window = kernel[0] * kernel[1]
    np.testing.assert_allclose(got_avg, naive_window(x, kernel, stride, padding, dilation,
                                                     lambda v: sum(v) / window, 0.0), rtol=1e-12)


def test_linear_global_add_concat_flatten_clip_and_keep():
    x = RNG.standard_normal((3, 2, 4, 5))
    w = RNG.standard_normal((3, 2, 1, 1))
    fc = RNG.standard_normal((4, 5 * 1 * 1))
    fb = RNG.standard_normal(4)
    layers = [
        FloatLayer("a", "conv", ["x"], "a", dict(kernel=(1, 1)), w, None, (-0.5, 0.5)),
        FloatLayer("b", "global_avgpool", ["x"], "b"),
        FloatLayer("cat", "concat", ["a", "x"], "cat"),
        FloatLayer("g", "global_avgpool", ["cat"], "g"),
        FloatLayer("f", "flatten", ["g"], "f"),
        FloatLayer("l", "linear", ["f"], "l", {}, fc, fb, (0.0, np.inf)),
        FloatLayer("s", "add", ["l", "l"], "s"),
    ]
    net = net_of(layers, x.shape[1:])
    assert net.shapes == {"x": (2, 4, 5), "a": (3, 4, 5), "b": (2, 1, 1), "cat": (5, 4, 5), "g": (5, 1, 1),
                          "f": (5,), "l": (4,), "s": (4,)}
    got = run_float(net, x, keep=True)
    a = np.zeros((3, 3, 4, 5))
    for n in range(3):
        for co in range(3):
            a[n, co] = sum(w[co, ci, 0, 0] * x[n, ci] for ci in range(2))
    a = np.minimum(np.maximum(a, -0.5), 0.5)
    g = np.array([[[[np.mean(np.concatenate([a, x], axis=1)[n, c])]] for c in range(5)] for n in range(3)])
    lin = np.array([[max(0.0, sum(fc[o, k] * g[n, k, 0, 0] for k in range(5)) + fb[o]) for o in range(4)]
                    for n in range(3)])
    assert set(got) == {"x", "a", "b", "cat", "g", "f", "l", "s"}
    np.testing.assert_allclose(got["a"], a, rtol=1e-12)
    np.testing.assert_allclose(got["b"][:, :, 0, 0], x.mean(axis=(2, 3)), rtol=1e-12)
    np.testing.assert_allclose(got["g"], g, rtol=1e-12)
    np.testing.assert_allclose(got["l"], lin, rtol=1e-12)
    np.testing.assert_allclose(got["s"], 2 * lin, rtol=1e-12)
    np.testing.assert_allclose(run_float(net, x), 2 * lin, rtol=1e-12)


def test_flatten_is_channel_major():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
    got = run_float(net_of([FloatLayer("f", "flatten", ["x"], "y")], x.shape[1:]), x)
    assert got.tolist() == [list(range(12)), list(range(12, 24))]


def test_bad_input_shape_and_order():
    net = net_of([FloatLayer("f", "flatten", ["x"], "y")], (3, 2, 2))
    with pytest.raises(FloatModelError, match=r"does not fit the network's input \(3, 2, 2\)"):
        run_float(net, np.zeros((1, 3, 2, 3)))
    net.layers = [FloatLayer("f", "flatten", ["z"], "y")]
    with pytest.raises(FloatModelError, match="topological order"):
        run_float(net, np.zeros((1, 3, 2, 2)))
