"""``slice``: a strided window of a tensor's channels, rows and columns (ONNX Slice with positive steps, Split).

Quantized meaning: ``x[c0:c1:cs, h0:h1:hs, w0:w1:ws]`` of the codes (a vector: ``x[f0:f1:fs]``); the encoding is
the input's. On the engine: a vector's slice costs nothing (its elements are memory positions); a map's is one
job that reads the window of the map (rows and columns strided alike, the COMPUTE's one stride) through an
identity tile that keeps the chosen channels, and gives the codes back unchanged.
"""

from __future__ import annotations

import numpy as np

from sw.frontend.onnx_common import FrontendError, _attrs, _describe

from .base import Operator, OperatorError


class Slice(Operator):
    name = "slice"
    onnx = ("Slice", "Split")
    ties = "through"

    def import_node(self, imp, node) -> None:
        x = imp.act(node, node.input[0])
        shape = imp.shapes[x]
        if node.op_type == "Split":
            return _split(imp, node, x, shape)
        if imp.opset < 10:
            a = _attrs(node)
            starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
        else:
            starts, ends = imp.const(node, 1, "starts"), imp.const(node, 2, "ends")
            axes = imp.const(node, 3, "axes", required=False)
            steps = imp.const(node, 4, "steps", required=False)
        starts, ends = np.asarray(starts).reshape(-1), np.asarray(ends).reshape(-1)
        axes = np.arange(len(starts)) if axes is None else np.asarray(axes).reshape(-1)
        steps = np.ones(len(starts), np.int64) if steps is None else np.asarray(steps).reshape(-1)
        ranges = [(0, n, 1) for n in shape]
        for start, end, axis, step in zip(starts, ends, axes, steps):
            axis = int(axis) + len(shape) + 1 if int(axis) < 0 else int(axis)
            n = (imp.batch or 1) if axis == 0 else shape[axis - 1] if axis <= len(shape) else None
            if n is None:
                raise FrontendError(f"{_describe(node)}: axis {axis} is beyond the input's rank")
            if int(step) <= 0:
                raise FrontendError(f"{_describe(node)}: step {int(step)}: only forward slices (steps > 0) are "
                                    f"supported")
            lo, hi, st = slice(int(start), int(min(end, 1 << 62)), int(step)).indices(n)
            if axis == 0:
                if (lo, hi, st) != (0, n, 1):
                    raise FrontendError(f"{_describe(node)}: slicing the batch is not supported")
                continue
            ranges[axis - 1] = (lo, hi, st)
        _add(imp, node, x, node.output[0], ranges)

    def shape(self, layer, in_shapes):
        x = in_shapes[0]
        ranges = _ranges(layer, x)
        out = tuple(len(range(*r)) for r in ranges)
        if min(out) < 1:
            raise OperatorError(f"slice {ranges} of {x} is empty")
        return out

    def run_float(self, layer, xs):
        return xs[0][(slice(None), *(slice(*r) for r in _ranges(layer, xs[0].shape[1:])))]

    def golden(self, layer, inputs, net):
        return np.ascontiguousarray(inputs[0][(slice(None), *(slice(*r) for r in _ranges(layer, inputs[0].shape[1:])))])

    def lower(self, layer, ctx):
        from sw.compiler.lowering import CompileError, Placement
        p = ctx.source(layer.inputs[0], layer)
        ranges = _ranges(layer, ctx.net.shapes[layer.inputs[0]])
        if p.index is not None:                 # a vector: the elements are memory positions
            ctx.placements[layer.output] = Placement(p.region, p.channels, 1, 1, p.index[slice(*ranges[0])])
            return
        (c0, c1, cs), (h0, h1, hs), (w0, w1, ws) = ranges
        step = hs if len(range(h0, h1, hs)) > 1 else ws
        if len(range(w0, w1, ws)) > 1 and ws != step:
            raise CompileError(f"layer {layer.name!r}: row step {hs} and column step {ws} differ; the engine "
                               f"strides rows and columns alike")
        keep = list(range(c0, c1, cs))
        weights = np.zeros((1, 1, 1, p.channels, len(keep)), dtype=np.int64)
        weights[0, 0, 0, keep, np.arange(len(keep))] = ctx.one()
        ctx.add_job(layer, [(p, weights)], len(keep), stride=step, requant=ctx.copy_requant(layer.inputs[0],
                                                                                             len(keep)),
                    view=(h0, w0, h1 - h0, w1 - w0))


def _ranges(layer, shape) -> list[tuple[int, int, int]]:
    """(start, stop, step) per axis of the input (no batch); the attribute holds them flat."""
    flat = [int(v) for v in layer.attrs["ranges"]]
    return [tuple(flat[i:i + 3]) for i in range(0, 3 * len(shape), 3)]


def _add(imp, node, x: str, output: str, ranges) -> None:
    """A slice layer writing ``output`` (which is ``node``'s output), or an alias if it keeps everything; a
    slice of a slice read nowhere else becomes one (exporters slice one axis per node)."""
    if all(r == (0, n, 1) for r, n in zip(ranges, imp.shapes[x])):
        imp.alias[output] = x
        return
    before = imp.producer.get(x)
    if before is not None and before.op == "slice" and imp.consumers.get(x, 0) == 1:
        outer = _ranges(before, imp.shapes[before.inputs[0]])
        composed = [(s0 + s1 * t0, min(e0, s0 + e1 * t0), t0 * t1) for (s0, e0, t0), (s1, e1, t1) in zip(outer, ranges)]
        before.attrs["ranges"] = tuple(v for r in composed for v in r)
        imp.shapes[x] = tuple(len(range(*r)) for r in composed)
        imp.rename_output(before, output)
        return
    imp.add_layer(node, "slice", [x], {"ranges": tuple(v for r in ranges for v in r)})


def _split(imp, node, x: str, shape) -> None:
    axis = int(_attrs(node).get("axis", 0))
    axis = axis + len(shape) + 1 if axis < 0 else axis
    if axis == 0 or axis > len(shape):
        raise FrontendError(f"{_describe(node)}: splitting axis {axis} is not supported (the batch or beyond)")
    n = shape[axis - 1]
    sizes = _attrs(node).get("split") if imp.opset < 13 else imp.const(node, 1, "split", required=False)
    outputs = [o for o in node.output]
    if sizes is None:
        sizes = [-(-n // len(outputs))] * (len(outputs) - 1)
        sizes.append(n - sum(sizes))
    sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
    if sum(sizes) != n or len(sizes) != len(outputs) or min(sizes) < 0:
        raise FrontendError(f"{_describe(node)}: split sizes {sizes} do not cut an axis of {n} into "
                            f"{len(outputs)} parts")
    at = 0
    for output, size in zip(outputs, sizes):
        ranges = [(0, d, 1) for d in shape]
        ranges[axis - 1] = (at, at + size, 1)
        at += size
        if output:
            part = _copy_node(node, output)
            _add(imp, part, x, output, ranges)


def _copy_node(node, output: str):
    """A node like ``node`` with one output (Split makes one layer per part)."""
    import onnx
    part = onnx.NodeProto()
    part.CopyFrom(node)
    del part.output[:]
    part.output.append(output)
    part.name = f"{node.name or node.output[0]}:{output}"
    return part
