"""``conv``: a 2-D convolution (groups, depthwise, dilation, asymmetric padding; a sum of weight tensors).

Quantized meaning: ``acc[co, oy, ox] = sum over tensors t, input channels ci of co's group, ky, kx of
value(x[ci, oy*sh + ky*dh - pad_top, ox*sw + kx*dw - pad_left]) * value(w_t[co, ci', ky, kx]) / 2**e``; input
positions outside the map hold the input tensor's zero-point code; then the layer's post-processing.
On the engine: one job whose weights are dense (zero across groups), tiled by the compiler.
"""

from __future__ import annotations

import numpy as np

from sw.frontend.float_model import IM2COL_BYTES, window_out, windows_channels_last
from sw.frontend.onnx_common import FrontendError, _attrs, _describe
from sw.golden.layers import conv2d

from .base import Operator, OperatorError


class Conv(Operator):
    name = "conv"
    onnx = ("Conv",)
    accumulating = True
    weighted = True

    def import_node(self, imp, node) -> None:
        x = imp.act(node, node.input[0])
        imp.spatial(node, x)
        w = imp.const(node, 1, "weight")
        if w.ndim != 4:
            raise FrontendError(f"{_describe(node)}: only 2-D convolutions (4-D weights) are supported, not a "
                                f"weight of shape {w.shape}")
        kernel = tuple(int(k) for k in w.shape[2:])
        if tuple(_attrs(node).get("kernel_shape", kernel)) != kernel:
            raise FrontendError(f"{_describe(node)}: kernel_shape {_attrs(node)['kernel_shape']} differs from the "
                                f"weight's {kernel}")
        attrs = imp.window(node, x, kernel)
        attrs["groups"] = int(_attrs(node).get("group", 1))
        channels = imp.shapes[x][0]
        if attrs["groups"] < 1 or channels % attrs["groups"] or w.shape[0] % attrs["groups"]:
            raise FrontendError(f"{_describe(node)}: group={attrs['groups']} must be a positive divisor of its "
                                f"{channels} input and {w.shape[0]} output channels")
        bias = imp.const(node, 2, "bias", required=False)
        layer = imp.add_layer(node, "conv", [x], attrs, w, bias)
        wq = imp.weight_quant_for(node, node.input[1], lambda a: a)
        if wq is not None:
            imp.weight_quant[layer.name] = wq

    def shape(self, layer, in_shapes):
        x, w = in_shapes[0], layer.weight
        groups = int(layer.attrs.get("groups", 1))
        if len(x) != 3:
            raise OperatorError(f"needs a (C, H, W) input, not {x}")
        if w is None or w.ndim != 4:
            raise OperatorError("needs a (Cout, Cin/groups, kh, kw) weight")
        if x[0] % groups or w.shape[0] % groups or w.shape[1] * groups != x[0]:
            raise OperatorError(f"weight {w.shape} with {groups} groups does not fit an input of {x[0]} channels")
        if tuple(w.shape[2:]) != tuple(layer.attrs.get("kernel", w.shape[2:])):
            raise OperatorError(f"kernel {layer.attrs['kernel']} differs from the weight's {w.shape[2:]}")
        return (w.shape[0], *window_out(layer, x[1], x[2]))

    def run_float(self, layer, xs):
        x = xs[0]
        w = layer.weight.astype(x.dtype)
        g = int(layer.attrs.get("groups", 1))
        cout, cg, kh, kw = w.shape
        win = windows_channels_last(x, layer, 0.0)
        n, ho, wo = win.shape[:3]
        wm = w.reshape(g, cout // g, cg * kh * kw).transpose(0, 2, 1)
        y = np.empty((n, cout, ho, wo), dtype=x.dtype)
        # im2col per group and per slice of the batch: (G, n*Ho*Wo, Cg*kh*kw) @ (G, Cg*kh*kw, Cout/G)
        step = max(1, IM2COL_BYTES // max(1, ho * wo * g * cg * kh * kw * x.dtype.itemsize))
        for at in range(0, n, step):
            part = win[at:at + step]
            m = part.shape[0]
            cols = part.reshape(m, ho, wo, g, cg, kh, kw).transpose(3, 0, 1, 2, 4, 5, 6).reshape(g, m * ho * wo, -1)
            # one product per group over the whole slice: a per-sample product of a small map (7x7: 49 rows) keeps
            # BLAS far from its peak
            y[at:at + m] = np.matmul(cols, wm).reshape(g, m, ho * wo, cout // g).transpose(1, 0, 3, 2).reshape(
                m, cout, ho, wo)
        if layer.bias is not None:
            y += layer.bias.astype(x.dtype).reshape(1, cout, 1, 1)
        return y

    def golden(self, layer, inputs, net):
        return conv2d(inputs[0], layer.weights, layer.attrs, net.tensors[layer.inputs[0]].zero_code(),
                      net.act_format_of(layer.inputs[0]), net.weight_format_of(layer))

    def lower(self, layer, ctx):
        from sw.compiler.lowering import dense_weights, equal_pair
        (x,) = ctx.feature_maps(layer)
        if x.fold is not None:
            return self._lower_folded(layer, ctx, x)
        weights = dense_weights(layer, x.channels)
        attrs = layer.attrs
        job = ctx.add_job(layer, [(x, weights)], weights.shape[-1], kernel=weights.shape[1:3],
                          stride=equal_pair(attrs.get("stride", 1), "stride", layer),
                          dilation=equal_pair(attrs.get("dilation", 1), "dilation", layer),
                          padding=tuple(attrs.get("padding", (0, 0, 0, 0))))
        ho, wo = job.conv_out
        job.macs = int(ho * wo * layer.weights[0].size * len(layer.weights))

    def _lower_folded(self, layer, ctx, x) -> None:
        """On an input the host wrote im2col'd (sw/compiler/fold.py): a 1x1 convolution whose input channel
        ``(c * kh + ky) * kw + kx`` is channel ``c`` at tap ``(ky, kx)``."""
        from sw.compiler.lowering import dense_weights
        weights = dense_weights(layer, x.fold.channels)                  # (T, kh, kw, C, Cout)
        t, kh, kw, c, cout = weights.shape
        folded = weights.transpose(0, 3, 1, 2, 4).reshape(t, 1, 1, c * kh * kw, cout)
        job = ctx.add_job(layer, [(x, folded)], cout)
        ho, wo = job.conv_out
        job.macs = int(ho * wo * layer.weights[0].size * len(layer.weights))
