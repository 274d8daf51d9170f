"""Pooling: ``maxpool``, ``avgpool`` and ``global_avgpool`` (ONNX MaxPool, GlobalMaxPool, AveragePool,
GlobalAveragePool).

Quantized meaning:
- ``maxpool``: the code of largest value in each window (IEEE ``maximum``: -0 < +0; a NaN in the window gives the
  format's NaN code); the output has the input's encoding; padding never wins.
- ``avgpool`` / ``global_avgpool``: ``acc = sum over the window of value(x) / 2**e`` (padding holds the zero-point
  code, as ONNX's count_include_pad=1); the division by the window size is part of the multiplier.

On the engine: an identity tile brings the map into the accumulators (padded with the smallest code for a max),
and the window is taken there by ALU instructions (see :class:`sw.compiler.tiling.Pool`); a max pool right
after an accumulating layer is fused into it instead (the compiler's partition of jobs decides).
"""

from __future__ import annotations

import numpy as np

from sw.frontend.float_model import window_attrs, window_out, windows
from sw.frontend.onnx_common import FrontendError, _attrs, _describe
from sw.golden.layers import global_sum, maxpool, window_sum

from .base import Operator, OperatorError, pair


def _pool_input(imp, node) -> tuple[str, tuple[int, int]]:
    if len(node.output) > 1 and node.output[1]:
        raise FrontendError(f"{_describe(node)}: the Indices output is not supported")
    x = imp.act(node, node.input[0])
    imp.spatial(node, x)
    if "kernel_shape" not in _attrs(node):
        raise FrontendError(f"{_describe(node)} has no kernel_shape")
    return x, imp.ints(node, "kernel_shape", [], 2)


def _map(in_shapes) -> tuple[int, int, int]:
    x = in_shapes[0]
    if len(x) != 3:
        raise OperatorError(f"needs a (C, H, W) input, not {x}")
    return x


def _lower_window(op: Operator, layer, ctx, kind: str, kernel, stride, dilation, padding) -> None:
    from sw.compiler.tiling import Pool
    (x,) = ctx.feature_maps(layer)
    pad_value = None
    requant = None
    if kind == "max":
        fmt = ctx.net.act_format_of(layer.inputs[0])
        pad_value = int(fmt.quantize(fmt.min))            # padding never wins
        requant = ctx.copy_requant(layer.inputs[0], x.channels)
    ctx.add_job(layer, [(x, ctx.identity(x.channels))], x.channels, padding=padding, pad_value=pad_value,
                requant=requant, pool=Pool(kind, tuple(kernel), tuple(stride), tuple(dilation)))


class MaxPool(Operator):
    name = "maxpool"
    onnx = ("MaxPool", "GlobalMaxPool")
    ties = "through"
    commutes_with_clamp = True

    def import_node(self, imp, node) -> None:
        if node.op_type == "GlobalMaxPool":
            x = imp.act(node, node.input[0])
            imp.spatial(node, x)
            h, w = imp.shapes[x][1:]
            imp.add_layer(node, "maxpool", [x], {"kernel": (h, w), "stride": (1, 1), "padding": (0, 0, 0, 0),
                                                 "dilation": (1, 1)})
            return
        x, kernel = _pool_input(imp, node)
        # ceil_mode's partial windows are padding: it never wins a max.
        imp.add_layer(node, "maxpool", [x], imp.window(node, x, kernel, ceil_pads=True))

    def shape(self, layer, in_shapes):
        c, h, w = _map(in_shapes)
        return (c, *window_out(layer, h, w))

    def run_float(self, layer, xs):
        return windows(xs[0], layer, -np.inf).max(axis=(2, 3))

    def golden(self, layer, inputs, net):
        a = layer.attrs
        return maxpool(inputs[0], a.get("kernel"), a.get("stride"), a.get("padding"), net.act_format_of(layer.inputs[0]),
                       a.get("dilation", (1, 1)))

    def lower(self, layer, ctx):
        _lower_window(self, layer, ctx, "max", pair(layer, "kernel", None), pair(layer, "stride", (1, 1)),
                      pair(layer, "dilation", (1, 1)), tuple(layer.attrs.get("padding", (0, 0, 0, 0))))


class AvgPool(Operator):
    name = "avgpool"
    onnx = ("AveragePool",)
    accumulating = True

    def import_node(self, imp, node) -> None:
        x, kernel = _pool_input(imp, node)
        attrs = imp.window(node, x, kernel)
        if any(attrs["padding"]) and not _attrs(node).get("count_include_pad", 0):
            raise FrontendError(f"{_describe(node)}: padding {attrs['padding']} with count_include_pad=0 (the "
                                f"default) divides border windows by fewer elements; only count_include_pad=1 (or "
                                f"no padding) is supported")
        imp.add_layer(node, "avgpool", [x], attrs)

    def shape(self, layer, in_shapes):
        c, h, w = _map(in_shapes)
        return (c, *window_out(layer, h, w))

    def run_float(self, layer, xs):
        kh, kw = window_attrs(layer)[0]
        return windows(xs[0], layer, 0.0).sum(axis=(2, 3)) / (kh * kw)

    def window(self, layer, in_shapes):
        kh, kw = layer.attrs["kernel"]
        return kh * kw, kh * kw

    def golden(self, layer, inputs, net):
        a = layer.attrs
        return window_sum(inputs[0], a.get("kernel"), a.get("stride"), a.get("padding"),
                          net.tensors[layer.inputs[0]].zero_code(), net.act_format_of(layer.inputs[0]), net.weight_format,
                          a.get("dilation", (1, 1)))

    def lower(self, layer, ctx):
        _lower_window(self, layer, ctx, "sum", pair(layer, "kernel", None), pair(layer, "stride", (1, 1)),
                      pair(layer, "dilation", (1, 1)), tuple(layer.attrs.get("padding", (0, 0, 0, 0))))


class GlobalAvgPool(Operator):
    name = "global_avgpool"
    onnx = ("GlobalAveragePool",)
    accumulating = True

    def import_node(self, imp, node) -> None:
        x = imp.act(node, node.input[0])
        imp.spatial(node, x)
        imp.add_layer(node, "global_avgpool", [x])

    def shape(self, layer, in_shapes):
        return (_map(in_shapes)[0], 1, 1)

    def run_float(self, layer, xs):
        return xs[0].mean(axis=(2, 3), keepdims=True)

    def window(self, layer, in_shapes):
        _, h, w = in_shapes[0]
        return h * w, h * w

    def golden(self, layer, inputs, net):
        return global_sum(inputs[0], net.act_format_of(layer.inputs[0]), net.weight_format)

    def lower(self, layer, ctx):
        (x,) = ctx.feature_maps(layer)
        shape = (x.height, x.width)
        _lower_window(self, layer, ctx, "sum", shape, shape, (1, 1), (0, 0, 0, 0))
