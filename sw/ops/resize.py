"""``resize``: nearest-neighbour upsampling by whole factors (ONNX Resize and Upsample whose nearest indices are
``floor(out / k)``: pure replication).

Quantized meaning: ``y[c, oy, ox] = x[c, oy // ky, ox // kx]`` of the codes; the encoding is the input's. On
the engine: no arithmetic at all. The input's lines are stored ``ky * kx`` times, at rows ``oy*ky + ry`` and
columns ``ox*kx + rx`` (a :class:`~sw.compiler.tiling.Scatter`), by the STOREs of the jobs that write the input
when nothing else reads it, else by an identity job of its own (see :meth:`Lowering.rearrange`). Other modes
(linear, cubic), fractional factors and coordinate modes that do not replicate run on the host.
"""

from __future__ import annotations

import math

import numpy as np

from sw.frontend.onnx_common import NotOnEngine, _attrs, _describe, _text

from .base import Operator, OperatorError, pair


class Resize(Operator):
    name = "resize"
    onnx = ("Resize", "Upsample")
    ties = "through"

    def import_node(self, imp, node) -> None:
        x = imp.act(node, node.input[0])
        shape = imp.shapes[x]
        if len(shape) != 3:
            raise NotOnEngine(f"{_describe(node)}: only feature maps (N, C, H, W) are resized on the engine")
        a = _attrs(node)
        mode = _text(a.get("mode", "nearest"))
        if mode != "nearest":
            raise NotOnEngine(f"{_describe(node)}: mode {mode!r}; the engine resizes by nearest replication only")
        out = _out_size(imp, node, shape)
        factors = []
        for n, m in zip(shape, out):
            if m % n or m < n:
                raise NotOnEngine(f"{_describe(node)}: {n} -> {m} is no whole factor; the engine replicates only")
            factors.append(m // n)
        if factors[0] != 1:
            raise NotOnEngine(f"{_describe(node)}: resizes the channels; the engine resizes rows and columns only")
        if node.op_type == "Resize" and imp.opset >= 11:      # Resize-10 replicates as Upsample does (floor)
            coordinate = _text(a.get("coordinate_transformation_mode", "half_pixel"))
            nearest = _text(a.get("nearest_mode", "round_prefer_floor"))
            for n, k in zip(shape[1:], factors[1:]):
                if [_nearest(j, n, n * k, coordinate, nearest, node) for j in range(n * k)] != \
                        [j // k for j in range(n * k)]:
                    raise NotOnEngine(f"{_describe(node)}: coordinate mode {coordinate!r} with nearest mode "
                                      f"{nearest!r} does not replicate (out // {k}); the host runs it")
        if factors == [1, 1, 1]:
            imp.alias[node.output[0]] = x
            return
        imp.add_layer(node, "resize", [x], {"scale": tuple(factors[1:])})

    def shape(self, layer, in_shapes):
        c, h, w = in_shapes[0]
        ky, kx = pair(layer, "scale", (1, 1))
        if ky < 1 or kx < 1:
            raise OperatorError(f"scale {(ky, kx)} must be whole factors >= 1")
        return (c, h * ky, w * kx)

    def run_float(self, layer, xs):
        ky, kx = pair(layer, "scale", (1, 1))
        return np.repeat(np.repeat(xs[0], ky, axis=2), kx, axis=3)

    def golden(self, layer, inputs, net):
        ky, kx = pair(layer, "scale", (1, 1))
        return np.repeat(np.repeat(np.asarray(inputs[0]), ky, axis=2), kx, axis=3)

    def lower(self, layer, ctx):
        from sw.compiler.tiling import Scatter
        c, h, w = ctx.net.shapes[layer.output]
        ky, kx = pair(layer, "scale", (1, 1))
        replicas = tuple((ry, rx) for ry in range(ky) for rx in range(kx))
        blocks = ctx.out_blocks(c)
        ctx.rearrange(layer, Scatter((ky, kx), h, w, tuple(tuple((nb, ry, rx) for ry, rx in replicas)
                                                              for nb in range(blocks))))


def _out_size(imp, node, shape) -> list[int]:
    """The output's (C, H, W) from the node's scales or sizes (the batch must stay)."""
    rank = len(shape) + 1
    if node.op_type == "Upsample":
        scales = _attrs(node).get("scales") if imp.opset < 9 else imp.const(node, 1, "scales")
        sizes = None
    else:
        index = 1 if imp.opset < 11 else 2
        scales = imp.const(node, index, "scales", required=False)
        sizes = imp.const(node, 3, "sizes", required=False) if imp.opset >= 11 else None
        if scales is not None and np.asarray(scales).size == 0:
            scales = None
        axes = _attrs(node).get("axes")
        if axes is not None:
            full = [1.0] * rank if sizes is None else [1, *shape]
            given = np.asarray(sizes if sizes is not None else scales).reshape(-1)
            for axis, v in zip(axes, given):
                full[int(axis) % rank] = v
            sizes, scales = (full, None) if sizes is not None else (None, full)
        if sizes is not None and _text(_attrs(node).get("keep_aspect_ratio_policy", "stretch")) != "stretch":
            raise NotOnEngine(f"{_describe(node)}: keep_aspect_ratio_policy other than 'stretch'")
    if sizes is not None:
        sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if len(sizes) != rank or sizes[0] != 1 and sizes[0] != (imp.batch or 1):
            raise NotOnEngine(f"{_describe(node)}: sizes {sizes} do not keep the batch of an (N, C, H, W) map")
        return sizes[1:]
    if scales is None:
        raise NotOnEngine(f"{_describe(node)}: neither scales nor sizes given")
    scales = [float(v) for v in np.asarray(scales).reshape(-1)]
    if len(scales) != rank or scales[0] != 1.0:
        raise NotOnEngine(f"{_describe(node)}: scales {scales} do not keep the batch of an (N, C, H, W) map")
    return [int(math.floor(n * s)) for n, s in zip(shape, scales[1:])]


def _nearest(j: int, n: int, m: int, coordinate: str, nearest: str, node) -> int:
    """The input index ONNX Resize reads for output index ``j`` of ``m`` (input length ``n``), nearest mode."""
    scale = m / n
    if coordinate == "half_pixel":
        x = (j + 0.5) / scale - 0.5
    elif coordinate == "pytorch_half_pixel":
        x = (j + 0.5) / scale - 0.5 if m > 1 else 0.0
    elif coordinate == "asymmetric":
        x = j / scale
    elif coordinate == "align_corners":
        x = 0.0 if m == 1 else j * (n - 1) / (m - 1)
    elif coordinate == "tf_half_pixel_for_nn":
        x = (j + 0.5) / scale
    else:
        raise NotOnEngine(f"{_describe(node)}: coordinate mode {coordinate!r} is not one the engine replicates")
    if nearest == "round_prefer_floor":
        i = math.ceil(x - 0.5)
    elif nearest == "round_prefer_ceil":
        i = math.floor(x + 0.5)
    elif nearest == "floor":
        i = math.floor(x)
    elif nearest == "ceil":
        i = math.ceil(x)
    else:
        raise NotOnEngine(f"{_describe(node)}: nearest mode {nearest!r} is not one the engine knows")
    return min(max(i, 0), n - 1)
