"""``concat``: tensors joined along the channel axis (ONNX Concat, axis 1).

Quantized meaning: ``acc = value(x) / 2**e`` of the input that holds the channel, with a multiplier of exactly 1
(inputs and output share one encoding): output codes equal input codes. On the engine: one job whose inputs
each pass through a shifted identity tile.
"""

from __future__ import annotations

import numpy as np

from sw.frontend.onnx_common import NotOnEngine, _attrs, _describe
from sw.golden.layers import concat_values

from .base import Operator, OperatorError


class Concat(Operator):
    arity = None
    name = "concat"
    onnx = ("Concat",)
    accumulating = True
    ties = "all"

    def import_node(self, imp, node) -> None:
        xs = [imp.act(node, i) for i in node.input]
        rank = len(imp.shapes[xs[0]]) + 1
        axis = int(_attrs(node).get("axis", 1))
        if (axis + rank if axis < 0 else axis) != 1:
            raise NotOnEngine(f"{_describe(node)}: axis {axis} is not supported; only the channel axis (1) is")
        if len(xs) == 1:
            imp.alias[node.output[0]] = xs[0]
            return
        imp.add_layer(node, "concat", xs)

    def shape(self, layer, in_shapes):
        x = in_shapes[0]
        if any(len(s) != len(x) or s[1:] != x[1:] for s in in_shapes):
            raise OperatorError(f"inputs {in_shapes} differ beyond the channel axis")
        return (sum(s[0] for s in in_shapes), *x[1:])

    def run_float(self, layer, xs):
        return np.concatenate(xs, axis=1)

    def window(self, layer, in_shapes):
        return 1, 1

    def golden(self, layer, inputs, net):
        return concat_values(inputs, net.act_format_of(layer.inputs[0]), net.weight_format)

    def lower(self, layer, ctx):
        from sw.compiler.lowering import CompileError
        ins = ctx.feature_maps(layer)
        cout = sum(p.channels for p in ins)
        sources, offset = [], 0
        for p in ins:
            if (p.height, p.width) != (ins[0].height, ins[0].width):
                raise CompileError(f"layer {layer.name!r}: concat inputs differ in height or width")
            sources.append((p, ctx.identity(p.channels, cout, offset)))
            offset += p.channels
        ctx.add_job(layer, sources, cout)
