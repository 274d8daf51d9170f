"""Float reference executor of a :class:`sw.ir.FloatNetwork`: the meaning of each float layer, in numpy.

It is the reference the quantizer calibrates on and measures its error against, and what the frontend's tests
compare with onnxruntime. Vectorised: convolutions and pools read strided windows of the padded input
(im2col as a view), and convolutions are one batched matrix product per group. numpy only (no ONNX).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from sw.ir import FloatLayer, FloatNetwork

__all__ = ["FloatModelError", "run_float", "layer_output_shape", "infer_shapes", "window_attrs", "window_out",
           "windows", "IM2COL_BYTES"]


class FloatModelError(ValueError):
    """A float network or an input that cannot be executed as given."""


def window_attrs(layer: FloatLayer) -> tuple[tuple[int, int], tuple[int, int], tuple[int, ...], tuple[int, int]]:
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


def window_out(layer: FloatLayer, h: int, w: int) -> tuple[int, int]:
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = window_attrs(layer)
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise FloatModelError(f"Layer {layer.name!r} ({layer.op}): its window ({kh}x{kw}, dilation {dh}x{dw}) "
                              f"does not fit the padded {h}x{w} input")
    return ho, wo


def layer_output_shape(layer: FloatLayer, in_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Shape (without batch) of a layer's output given its inputs' shapes; raises on inconsistent shapes."""
    from sw.ops import OPERATORS, OperatorError
    op = OPERATORS.get(layer.op)
    if op is None:
        raise FloatModelError(f"Layer {layer.name!r} has unknown op {layer.op!r}; the IR's ops are "
                              f"{', '.join(OPERATORS)}")
    try:
        return tuple(op.shape(layer, in_shapes))
    except OperatorError as e:
        raise FloatModelError(f"Layer {layer.name!r} ({layer.op}): {e}") from None


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
IM2COL_BYTES = 64 << 20


def windows(x: np.ndarray, layer: FloatLayer, pad_value: float) -> np.ndarray:
    """Read-only view (N, C, kh, kw, Ho, Wo) of every window of the padded input."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = window_attrs(layer)
    n, c, h, w = x.shape
    ho, wo = window_out(layer, h, w)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
    s = xp.strides
    return as_strided(xp, shape=(n, c, kh, kw, ho, wo),
                      strides=(s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw), writeable=False)


def windows_channels_last(x: np.ndarray, layer: FloatLayer, pad_value: float) -> np.ndarray:
    """Read-only view (N, Ho, Wo, C, kh, kw) of every window of the padded input, over a channels-last copy: the
    same values as :func:`windows`, laid out so that copying them (im2col) reads runs of channels."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = window_attrs(layer)
    n, c, h, w = x.shape
    ho, wo = window_out(layer, h, w)
    xp = np.ascontiguousarray(np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
                              .transpose(0, 2, 3, 1))
    s = xp.strides
    return as_strided(xp, shape=(n, ho, wo, c, kh, kw),
                      strides=(s[0], s[1] * sh, s[2] * sw, s[3], s[1] * dh, s[2] * dw), writeable=False)


def _run_layer(layer: FloatLayer, xs: list[np.ndarray]) -> np.ndarray:
    from sw.ops import OPERATORS
    op = OPERATORS.get(layer.op)
    if op is None:
        raise FloatModelError(f"Layer {layer.name!r} has unknown op {layer.op!r}; the IR's ops are "
                              f"{', '.join(OPERATORS)}")
    y = op.run_float(layer, xs)
    if layer.clip is not None:
        lo, hi = layer.clip
        y = np.clip(y, lo, hi)
    return np.ascontiguousarray(y)


def pre_activation(tensor: str) -> str:
    """The key under which ``run_float(..., keep=True)`` keeps a layer's values before its activation."""
    return f"{tensor}#pre"


def _activate(layer: FloatLayer, y: np.ndarray) -> np.ndarray:
    """The layer's fused activation (``FloatLayer.activation``) applied to its clipped output."""
    from sw.ops import ACTIVATIONS
    a = layer.activation
    if a is None:
        return y
    op = ACTIVATIONS.get(a.get("op"))
    if op is None:
        raise FloatModelError(f"Layer {layer.name!r} has unknown activation {a.get('op')!r}")
    return np.ascontiguousarray(op.function(y, a))


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
        y = _run_layer(layer, _inputs(layer, tensors))
        if layer.activation is not None and keep:
            tensors[pre_activation(layer.output)] = y
        tensors[layer.output] = _activate(layer, y)
    if net.output not in tensors:
        raise FloatModelError(f"No layer writes the network's output {net.output!r}")
    return tensors if keep else tensors[net.output]
