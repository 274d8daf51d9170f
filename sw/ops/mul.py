"""``mul``: the element-wise product of two feature maps (ONNX Mul of two activations): same shapes, or a map
(C, H, W) times a gate that broadcasts over it: per channel (C, 1, 1), as a squeeze-excite block writes it, spatial
(1, H, W), as an attention gate may, or one value (1, 1, 1).

A Mul by a constant is not this operator (the host runs one that no constant folding removed), and SiLU's
``Mul(x, Sigmoid(x))`` is taken by the Sigmoid (``sw/ops/activations.py``) before this operator sees it.
Other broadcasts (over the batch, or of rank other than 3) go to the host with the reason.

Float meaning: ``y = x * g`` (numpy broadcasting).

Quantized meaning, from the definition: with encodings ``real = s * (value(code) - z)`` of each input and ``e``
the accumulators' exponent, ``acc = (value(x) - z_x) * (value(g) - z_g) / 2**(2e)`` exactly, then the layer's
post-processing with bias 0, reading ``acc`` as units of ``2**e`` like every layer: the quantizer chooses
``M * 2**-S ~ s_x * s_g / s_y * 2**e`` (:func:`sw.golden.layers.elementwise_product`). A Relu or Clip after it
fuses into its clamp, a nonlinear activation into its lookup table.

On the engine (:mod:`sw.compiler.elementwise`): per output tile, identity tiles bring both inputs into two
accumulator regions, a COMPUTE of the zero point's padding line with a -1 tile subtracts each zero point, ALU
MUL multiplies them (a gate's one line by ``x_size = 1, src_stride = 0``; a gate of one channel reaches every lane
through a tile whose first row is ones) and the STOREs requantize.
"""

from __future__ import annotations

import numpy as np

from sw.frontend.onnx_common import NotOnEngine, _describe
from sw.golden.layers import elementwise_product

from .base import Operator, OperatorError


def _broadcast(x: tuple[int, ...], g: tuple[int, ...]) -> str | None:
    """How a second input of shape ``g`` meets a map of shape ``x``: "same", "channel" (one value per channel),
    "spatial" (one channel of the map's size), "scalar" (one value), or None (a broadcast the engine does not run)."""
    if g == x:
        return "same"
    if len(x) != 3 or len(g) != 3:
        return None
    return {(x[0], 1, 1): "channel", (1, x[1], x[2]): "spatial", (1, 1, 1): "scalar"}.get(tuple(g))


class Mul(Operator):
    name = "mul"
    onnx = ("Mul",)
    arity = 2
    accumulating = True

    def import_node(self, imp, node) -> None:
        if any(imp.name(i) in imp.consts for i in node.input):
            raise NotOnEngine(f"{_describe(node)}: a Mul by a constant that does not fold into the layer before; "
                              f"the engine multiplies two feature maps only")
        a, b = (imp.act(node, i) for i in node.input)
        sa, sb = imp.shapes[a], imp.shapes[b]
        if _broadcast(sa, sb) is None and _broadcast(sb, sa) is not None:
            a, b, sa, sb = b, a, sb, sa               # the map first, the gate second
        kind = _broadcast(sa, sb)
        if kind is None:
            raise NotOnEngine(f"{_describe(node)}: inputs of shapes {sa} and {sb}; the engine multiplies maps of "
                              f"one shape, or a map (C, H, W) by a gate (C, 1, 1), (1, H, W) or (1, 1, 1)")
        imp.add_layer(node, "mul", [a, b], {"broadcast": kind})

    def shape(self, layer, in_shapes):
        x, g = in_shapes
        if _broadcast(tuple(x), tuple(g)) is None:
            raise OperatorError(f"inputs of shapes {x} and {g}: the second must have the first's shape or be "
                                f"(C, 1, 1), (1, H, W) or (1, 1, 1)")
        return tuple(x)

    def run_float(self, layer, xs):
        return xs[0] * xs[1]

    def rescale(self, layer, encodings, out_scale, e, channels):
        """Bias 0 (the zero points are subtracted in the accumulators) and ``s_x * s_g / s_y * 2**e``."""
        x, g = encodings
        return [0] * channels, np.full(channels, x.scale * g.scale / out_scale * 2.0 ** e)

    def golden(self, layer, inputs, net):
        x, g = layer.inputs
        return elementwise_product(inputs[0], inputs[1], net.tensors[x].zero_point, net.tensors[g].zero_point,
                                   net.act_format_of(x), net.act_format_of(g), net.acc_exponent)

    def lower(self, layer, ctx):
        from sw.compiler.elementwise import lower_mul
        lower_mul(layer, ctx)
