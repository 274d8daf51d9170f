"""``add``: the element-wise sum of same-shaped tensors (ONNX Add and Sum of two activations; residual
connections). An Add of a constant is not this operator: it folds into the layer before as its bias.

Quantized meaning: ``acc = sum over the inputs of value(x_i) / 2**e`` (every input has the same encoding), then
the layer's post-processing (a Relu after the add fuses into its clamp). On the engine: one job with an identity
tile per input, summed in the accumulators.
"""

from __future__ import annotations

from sw.frontend.onnx_common import FrontendError, NotOnEngine, _describe
from sw.golden.layers import elementwise_sum

from .base import Operator, OperatorError


class Add(Operator):
    arity = None
    name = "add"
    onnx = ("Add", "Sum")
    accumulating = True
    ties = "inputs"

    def import_node(self, imp, node) -> None:
        consts = [i for i in node.input if imp.name(i) in imp.consts]
        if consts:
            acts = [imp.act(node, i) for i in node.input if imp.name(i) not in imp.consts]
            if len(acts) != 1:
                raise FrontendError(f"{_describe(node)}: adds constants only; nothing to compute")
            return imp.fold_bias(node, acts[0], imp.consts[imp.name(consts[0])])
        xs = [imp.act(node, i) for i in node.input]
        if len(xs) == 1:
            imp.alias[node.output[0]] = xs[0]
            return
        if any(imp.shapes[t] != imp.shapes[xs[0]] for t in xs):
            raise NotOnEngine(f"{_describe(node)}: inputs of shapes {[imp.shapes[t] for t in xs]}; only "
                                f"same-shape additions are supported (no broadcasting)")
        imp.add_layer(node, "add", xs)

    def shape(self, layer, in_shapes):
        if any(s != in_shapes[0] for s in in_shapes):
            raise OperatorError(f"inputs of different shapes {in_shapes}")
        return in_shapes[0]

    def run_float(self, layer, xs):
        y = xs[0]
        for other in xs[1:]:
            y = y + other
        return y

    def window(self, layer, in_shapes):
        return 1, len(layer.inputs)

    def golden(self, layer, inputs, net):
        return elementwise_sum(inputs, net.act_format_of(layer.inputs[0]), net.weight_format)

    def lower(self, layer, ctx):
        from sw.compiler.lowering import CompileError
        ins = ctx.feature_maps(layer)
        p0 = ins[0]
        if any((p.channels, p.height, p.width) != (p0.channels, p0.height, p0.width) for p in ins[1:]):
            raise CompileError(f"layer {layer.name!r}: add inputs differ in shape")
        eye = ctx.identity(p0.channels)
        ctx.add_job(layer, [(p, eye) for p in ins], p0.channels)


