"""``depthtospace``: blocks of channels moved to spatial positions (ONNX DepthToSpace, modes DCR and CRD).

Quantized meaning, block ``b``, ``C = b*b*C'`` input channels: ``y[c, oy*b + by, ox*b + bx] = x[k, oy, ox]`` of
the codes, with ``k = (by*b + bx)*C' + c`` (DCR) or ``k = c*b*b + by*b + bx`` (CRD); the encoding is the
input's. On the engine: no arithmetic. The jobs that write the input compute its channels in the order
(by, bx, block of ``cols`` output channels), each such block padded to whole lanes, so that each accumulator
line holds one output line (on a rectangular array, the output's virtual blocks of spread channels,
``sw/compiler/lowering.py``); its STOREs write it at row ``oy*b + by``, column ``ox*b + bx`` of its output block (a
:class:`~sw.compiler.tiling.Scatter`). Fused into those STOREs when nothing else reads the input, else an
identity job of its own does it (see :meth:`Lowering.rearrange`).
"""

from __future__ import annotations

import numpy as np

from sw.frontend.onnx_common import NotOnEngine, _attrs, _describe, _text

from .base import Operator, OperatorError


class DepthToSpace(Operator):
    name = "depthtospace"
    onnx = ("DepthToSpace",)
    ties = "through"

    def import_node(self, imp, node) -> None:
        x = imp.act(node, node.input[0])
        a = _attrs(node)
        mode = _text(a.get("mode", "DCR"))
        if len(imp.shapes[x]) != 3 or mode not in ("DCR", "CRD") or "blocksize" not in a:
            raise NotOnEngine(f"{_describe(node)}: needs an (N, C, H, W) map, a blocksize and mode DCR or CRD")
        imp.add_layer(node, "depthtospace", [x], {"block": int(a["blocksize"]), "mode": mode})

    def shape(self, layer, in_shapes):
        c, h, w = in_shapes[0]
        b = int(layer.attrs["block"])
        if b < 1 or c % (b * b):
            raise OperatorError(f"{c} channels are no multiple of blocksize {b} squared")
        return (c // (b * b), h * b, w * b)

    def run_float(self, layer, xs):
        return _rearrange(layer, xs[0])

    def golden(self, layer, inputs, net):
        return np.ascontiguousarray(_rearrange(layer, np.asarray(inputs[0])))

    def lower(self, layer, ctx):
        from sw.compiler.tiling import Scatter
        c, h, w = ctx.net.shapes[layer.output]
        b, cols = int(layer.attrs["block"]), ctx.config.cols
        blocks = ctx.out_blocks(c)
        real = np.full(blocks * cols, -1)            # the output's channel at each virtual lane (-1: none)
        real[ctx.out_lane(c)] = np.arange(c)
        lane_in = ctx.out_lane(c * b * b)            # the input's channels as the writing job computes them
        order, targets = [], []
        for by in range(b):
            for bx in range(b):
                for cb in range(blocks):
                    targets.append(((cb, by, bx),))
                    order += [int(lane_in[source_channel(layer, int(ch), by, bx, c)]) if ch >= 0 else -1
                              for ch in real[cb * cols:(cb + 1) * cols]]
        ctx.rearrange(layer, Scatter((b, b), h, w, tuple(targets)), order)


def source_channel(layer, c: int, by: int, bx: int, channels: int) -> int:
    """The input channel that output channel ``c`` takes at offset (by, bx) of its block (``channels``: C')."""
    b = int(layer.attrs["block"])
    return (by * b + bx) * channels + c if layer.attrs["mode"] == "DCR" else (c * b + by) * b + bx


def _rearrange(layer, x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    b = int(layer.attrs["block"])
    if layer.attrs["mode"] == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)
