"""Float reference executor of a :class:`sw.ir.FloatNetwork`: the meaning of each float layer, in numpy.

It is the reference the quantizer calibrates on and measures its error against, and what the frontend's tests
compare with onnxruntime. Vectorised: convolutions and pools read strided windows of the padded input
(im2col as a view), and convolutions are one batched matrix product per group. numpy only (no ONNX).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from sw.ir import OPS, FloatLayer, FloatNetwork

__all__ = ["FloatModelError", "run_float", "layer_output_shape", "infer_shapes"]


class FloatModelError(ValueError):
    """A float network or an input that cannot be executed as given."""


def _window_attrs(layer: FloatLayer) -> tuple[tuple[int, int], tuple[int, int], tuple[int, ...], tuple[int, int]]:
    a = layer.attrs
    try:
        kernel = tuple(int(v) for v in a["kernel"])
    except KeyError:
        raise FloatModelError(f"Layer {layer.name!r} ({layer.op}) has no 'kernel' attribute; "
                              f"give attrs['kernel'] = (kh, kw)") from None
    stride = tuple(int(v) for v in a.get("stride", (1, 1)))
    padding = tuple(int(v) for v in a.get("padding", (0, 0, 0, 0)))
    dilation = tuple(int(v) for v in a.get("dilation", (1, 1)))
    if len(kernel) != 2 or len(stride) != 2 or len(padding) != 4 or len(dilation) != 2:
        raise FloatModelError(f"Layer {layer.name!r} ({layer.op}): kernel, stride and dilation take 2 values and "
                              f"padding 4 (top, left, bottom, right), not {kernel}, {stride}, {dilation}, {padding}")
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise FloatModelError(f"Layer {layer.name!r} ({layer.op}): kernel, stride and dilation must be positive "
                              f"and padding non-negative, not {kernel}, {stride}, {dilation}, {padding}")
    return kernel, stride, padding, dilation


def _window_out(layer: FloatLayer, h: int, w: int) -> tuple[int, int]:
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = _window_attrs(layer)
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise FloatModelError(f"Layer {layer.name!r} ({layer.op}): its window ({kh}x{kw}, dilation {dh}x{dw}) "
                              f"does not fit the padded {h}x{w} input")
    return ho, wo


def layer_output_shape(layer: FloatLayer, in_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Shape (without batch) of a layer's output given its inputs' shapes; raises on inconsistent shapes."""
    op = layer.op
    if op not in OPS:
        raise FloatModelError(f"Layer {layer.name!r} has unknown op {op!r}; the IR's ops are {', '.join(OPS)}")
    x = in_shapes[0]
    if op in ("conv", "maxpool", "avgpool", "global_avgpool") and len(x) != 3:
        raise FloatModelError(f"Layer {layer.name!r} ({op}) needs a (C, H, W) input, not {x}")
    if op == "conv":
        w = layer.weight
        groups = int(layer.attrs.get("groups", 1))
        if w is None or w.ndim != 4:
            raise FloatModelError(f"Conv layer {layer.name!r} needs a (Cout, Cin/groups, kh, kw) weight")
        if x[0] % groups or w.shape[0] % groups or w.shape[1] * groups != x[0]:
            raise FloatModelError(f"Conv layer {layer.name!r}: weight {w.shape} with {groups} groups does not fit "
                                  f"an input of {x[0]} channels")
        if tuple(w.shape[2:]) != tuple(layer.attrs.get("kernel", w.shape[2:])):
            raise FloatModelError(f"Conv layer {layer.name!r}: kernel {layer.attrs['kernel']} differs from the "
                                  f"weight's {w.shape[2:]}")
        return (w.shape[0], *_window_out(layer, x[1], x[2]))
    if op == "linear":
        w = layer.weight
        if w is None or w.ndim != 2 or len(x) != 1 or w.shape[1] != x[0]:
            raise FloatModelError(f"Linear layer {layer.name!r}: weight {None if w is None else w.shape} does not "
                                  f"fit an input of shape {x} (needs (N, K) and (K,))")
        return (w.shape[0],)
    if op in ("maxpool", "avgpool"):
        return (x[0], *_window_out(layer, x[1], x[2]))
    if op == "global_avgpool":
        return (x[0], 1, 1)
    if op == "add":
        if any(s != x for s in in_shapes):
            raise FloatModelError(f"Add layer {layer.name!r}: inputs of different shapes {in_shapes}")
        return x
    if op == "concat":
        if any(len(s) != len(x) or s[1:] != x[1:] for s in in_shapes):
            raise FloatModelError(f"Concat layer {layer.name!r}: inputs {in_shapes} differ beyond the channel axis")
        return (sum(s[0] for s in in_shapes), *x[1:])
    return (int(np.prod(x)),)  # flatten


def _inputs(layer: FloatLayer, known: dict) -> list:
    """What ``layer`` reads from ``known`` (shapes or values), or an error if an earlier layer did not write it."""
    missing = [t for t in layer.inputs if t not in known]
    if missing:
        raise FloatModelError(f"Layer {layer.name!r} reads {missing}, which no earlier layer writes; "
                              f"layers must be in topological order")
    return [known[t] for t in layer.inputs]


def infer_shapes(net: FloatNetwork) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, propagated from the input's through the layers (to check or fill ``shapes``)."""
    shapes = {net.input: tuple(net.input_shape)}
    for layer in net.layers:
        shapes[layer.output] = layer_output_shape(layer, _inputs(layer, shapes))
    return shapes


#: Largest im2col matrix a convolution builds at once (it goes through the batch in slices below this).
_IM2COL_BYTES = 64 << 20


def _windows(x: np.ndarray, layer: FloatLayer, pad_value: float) -> np.ndarray:
    """Read-only view (N, C, kh, kw, Ho, Wo) of every window of the padded input."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = _window_attrs(layer)
    n, c, h, w = x.shape
    ho, wo = _window_out(layer, h, w)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
    s = xp.strides
    return as_strided(xp, shape=(n, c, kh, kw, ho, wo),
                      strides=(s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw), writeable=False)


def _conv(x: np.ndarray, layer: FloatLayer) -> np.ndarray:
    w = layer.weight.astype(x.dtype)
    g = int(layer.attrs.get("groups", 1))
    cout, cg, kh, kw = w.shape
    win = _windows(x, layer, 0.0)
    n, _, _, _, ho, wo = win.shape
    wm = w.reshape(g, cout // g, cg * kh * kw).transpose(0, 2, 1)
    y = np.empty((n, cout, ho, wo), dtype=x.dtype)
    # im2col per group and per slice of the batch (each sample's products are the same BLAS calls either way):
    # (n, G, Ho*Wo, Cg*kh*kw) @ (G, Cg*kh*kw, Cout/G)
    step = max(1, _IM2COL_BYTES // max(1, ho * wo * g * cg * kh * kw * x.dtype.itemsize))
    for at in range(0, n, step):
        part = win[at:at + step]
        m = part.shape[0]
        cols = part.reshape(m, g, cg, kh, kw, ho, wo).transpose(0, 1, 5, 6, 2, 3, 4).reshape(m, g, ho * wo, -1)
        y[at:at + m] = np.matmul(cols, wm).transpose(0, 1, 3, 2).reshape(m, cout, ho, wo)
    if layer.bias is not None:
        y += layer.bias.astype(x.dtype).reshape(1, cout, 1, 1)
    return y


def _run_layer(layer: FloatLayer, xs: list[np.ndarray]) -> np.ndarray:
    op, x = layer.op, xs[0]
    if op == "conv":
        y = _conv(x, layer)
    elif op == "linear":
        y = x @ layer.weight.astype(x.dtype).T
        if layer.bias is not None:
            y = y + layer.bias.astype(x.dtype)
    elif op == "maxpool":
        y = _windows(x, layer, -np.inf).max(axis=(2, 3))
    elif op == "avgpool":
        # Padding counts as zeros in the window (ONNX count_include_pad=1): sum / window size.
        (kh, kw) = _window_attrs(layer)[0]
        y = _windows(x, layer, 0.0).sum(axis=(2, 3)) / (kh * kw)
    elif op == "global_avgpool":
        y = x.mean(axis=(2, 3), keepdims=True)
    elif op == "add":
        y = xs[0]
        for other in xs[1:]:
            y = y + other
    elif op == "concat":
        y = np.concatenate(xs, axis=1)
    elif op == "flatten":
        y = x.reshape(x.shape[0], -1)
    else:
        raise FloatModelError(f"Layer {layer.name!r} has unknown op {op!r}; the IR's ops are {', '.join(OPS)}")
    if layer.clip is not None:
        lo, hi = layer.clip
        y = np.clip(y, lo, hi)
    return np.ascontiguousarray(y)


def run_float(net: FloatNetwork, x: np.ndarray, *, keep: bool = False,
              dtype=np.float64) -> np.ndarray | dict[str, np.ndarray]:
    """Run the network on a batch ``x`` of shape ``(N, *net.input_shape)``.

    Returns the output ``(N, *net.output_shape)``, or with ``keep`` a dict of every tensor (input included).
    Computes in ``dtype`` (float64 by default, so that the reference is closer to exact than any runtime).
    """
    x = np.asarray(x)
    expected = tuple(net.input_shape)
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise FloatModelError(f"Input of shape {x.shape} does not fit the network's input {expected}; "
                              f"pass a batch of shape (N, {', '.join(map(str, expected))})")
    tensors = {net.input: x.astype(dtype)}
    for layer in net.layers:
        tensors[layer.output] = _run_layer(layer, _inputs(layer, tensors))
    if net.output not in tensors:
        raise FloatModelError(f"No layer writes the network's output {net.output!r}")
    return tensors if keep else tensors[net.output]
