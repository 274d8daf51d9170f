"""``pad``: a constant border around a tensor's channels, rows and columns (ONNX Pad, mode "constant").

Quantized meaning: the input's codes surrounded by the code of the constant in the input's encoding (the
constant 0 gives the zero point's code); the encoding is the input's. On the engine: one job through an
identity tile whose output has the extra channels; the row and column border comes from the LOAD's padding
(at most 7 a side), the extra channels from their bias alone (their weights are zero).
"""

from __future__ import annotations

import numpy as np

from hw.spec.formats import IntFormat
from sw.frontend.onnx_common import NotOnEngine, _attrs, _describe, _text

from .base import Operator


class Pad(Operator):
    name = "pad"
    onnx = ("Pad",)
    ties = "through"

    def import_node(self, imp, node) -> None:
        x = imp.act(node, node.input[0])
        shape = imp.shapes[x]
        a = _attrs(node)
        if _text(a.get("mode", "constant")) != "constant":
            raise NotOnEngine(f"{_describe(node)}: mode {_text(a['mode'])!r}: only constant padding is supported")
        if imp.opset < 11:
            pads, value = list(a.get("pads", [])), float(a.get("value", 0.0))
        else:
            pads = [int(v) for v in np.asarray(imp.const(node, 1, "pads")).reshape(-1)]
            v = imp.const(node, 2, "constant_value", required=False)
            value = 0.0 if v is None else float(np.asarray(v).reshape(-1)[0])
            axes = imp.const(node, 3, "axes", required=False)
            if axes is not None:
                full = [0] * (2 * (len(shape) + 1))
                rank = len(shape) + 1
                for i, axis in enumerate(int(a) + rank if int(a) < 0 else int(a) for a in np.asarray(axes)):
                    full[axis], full[axis + rank] = pads[i], pads[i + len(pads) // 2]
                pads = full
        rank = len(shape) + 1
        if len(pads) != 2 * rank or min(pads) < 0 or pads[0] or pads[rank]:
            raise NotOnEngine(f"{_describe(node)}: pads {pads}: only non-negative padding of the channels, rows "
                                f"and columns (not the batch) is supported")
        if len(shape) != 3:
            raise NotOnEngine(f"{_describe(node)}: only feature maps (N, C, H, W) are padded here")
        begin, end = pads[1:rank], pads[rank + 1:]
        imp.add_layer(node, "pad", [x], {"pads": tuple(begin) + tuple(end), "value": value})

    def shape(self, layer, in_shapes):
        c, h, w = in_shapes[0]
        (cb, hb, wb), (ce, he, we) = _pads(layer)
        return (c + cb + ce, h + hb + he, w + wb + we)

    def run_float(self, layer, xs):
        (cb, hb, wb), (ce, he, we) = _pads(layer)
        return np.pad(xs[0], ((0, 0), (cb, ce), (hb, he), (wb, we)), constant_values=float(layer.attrs["value"]))

    def golden(self, layer, inputs, net):
        (cb, hb, wb), (ce, he, we) = _pads(layer)
        code = pad_code(net, layer)
        return np.pad(inputs[0], ((0, 0), (cb, ce), (hb, he), (wb, we)), constant_values=code)

    def lower(self, layer, ctx):
        from sw.compiler.lowering import CompileError
        (x,) = ctx.feature_maps(layer)
        (cb, hb, wb), (ce, he, we) = _pads(layer)
        if max(hb, wb, he, we) > 7:
            raise CompileError(f"layer {layer.name!r}: a border of more than 7 rows or columns")
        cout = cb + x.channels + ce
        requant = ctx.copy_requant(layer.inputs[0], cout)
        # The extra channels hold no sum: their bias alone gives the constant's code.
        net, code = ctx.net, pad_code(ctx.net, layer)
        fmt, t = net.act_format_of(layer.inputs[0]), net.tensors[layer.inputs[0]]
        value = int(fmt.exact(np.array([code]))[0][0]) << int(fmt.exact(np.array([code]))[1][0])
        units = (value - (t.zero_point if isinstance(fmt, IntFormat) else 0)) << (fmt.lsb_exponent - net.acc_exponent)
        extra = np.r_[0:cb, cb + x.channels:cout]
        requant.bias[extra] = units
        ctx.add_job(layer, [(x, ctx.identity(x.channels, cout, cb))], cout, padding=(hb, wb, he, we),
                    pad_value=code, requant=requant)


def _pads(layer) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    p = [int(v) for v in layer.attrs["pads"]]
    return tuple(p[:3]), tuple(p[3:])


def pad_code(net, layer) -> int:
    """The code of the padding constant in the input's encoding."""
    return int(np.asarray(net.tensors[layer.inputs[0]].quantize(np.array(float(layer.attrs["value"])))))


