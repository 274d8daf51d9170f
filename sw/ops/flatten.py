"""``flatten``: a feature map as a vector, ``x.reshape(-1)`` channel-major as ONNX (Flatten at axis 1, a Reshape
to (N, -1), a Squeeze of size-1 axes). ``unflatten``: a vector (C,) as a map (C, 1, 1) (a Reshape to
(N, C, 1, 1), an Unsqueeze of axes 2 and 3), as a squeeze-excite block built of linear layers writes its gate. The
encoding is unchanged.

On the engine both cost nothing: the flattened tensor is the map where it lies, and the linear layer that reads
it has its weights permuted to the map's memory order (``Placement.index``); a vector whose elements sit in memory
in their own order (a linear layer's output, the flatten of a 1x1 map) already is a (C, 1, 1) map.
"""

from __future__ import annotations

import numpy as np

from sw.frontend.onnx_common import FrontendError, NotOnEngine, _attrs, _describe

from .base import Operator, OperatorError


class Flatten(Operator):
    name = "flatten"
    onnx = ("Flatten", "Reshape", "Squeeze")
    ties = "through"
    commutes_with_clamp = True

    def import_node(self, imp, node) -> None:
        x = imp.act(node, node.input[0])
        if node.op_type == "Flatten":
            rank = len(imp.shapes[x]) + 1
            axis = int(_attrs(node).get("axis", 1))
            if (axis + rank if axis < 0 else axis) != 1:
                raise NotOnEngine(f"{_describe(node)}: axis {axis} is not supported; only axis=1 (keep the batch, "
                                    f"flatten the rest) is")
        elif node.op_type == "Reshape" and (kind := _reshape_kind(imp, node, x)) != "flatten":
            if kind == "same":
                imp.alias[node.output[0]] = x
            else:
                imp.add_layer(node, "unflatten", [x])
            return
        elif node.op_type == "Squeeze":
            _check_squeeze(imp, node, x)
        if len(imp.shapes[x]) == 1:
            imp.alias[node.output[0]] = x
        else:
            imp.add_layer(node, "flatten", [x])

    def shape(self, layer, in_shapes):
        return (int(np.prod(in_shapes[0])),)

    def run_float(self, layer, xs):
        return xs[0].reshape(xs[0].shape[0], -1)

    def golden(self, layer, inputs, net):
        x = np.asarray(inputs[0])
        return x.reshape(x.shape[0], -1)

    def lower(self, layer, ctx):
        from sw.compiler.lowering import Placement
        from hw.spec.layout import tensor_lanes
        m = tensor_lanes(ctx.config)              # channels per line of a map in external memory
        p = ctx.source(layer.inputs[0], layer)
        if p.index is not None:
            ctx.placements[layer.output] = p
            return
        pixels = p.height * p.width
        index = [(ch // m) * pixels * m + pix * m + ch % m for ch in range(p.channels) for pix in range(pixels)]
        blocks = -(-p.channels // m)
        ctx.placements[layer.output] = Placement(p.region, blocks * m * pixels, 1, 1, index)


class Unflatten(Operator):
    name = "unflatten"
    onnx = ("Unsqueeze",)
    ties = "through"
    commutes_with_clamp = True

    def import_node(self, imp, node) -> None:
        x = imp.act(node, node.input[0])
        axes = _attrs(node).get("axes") if imp.opset < 13 else imp.const(node, 1, "axes", required=False)
        axes = sorted(int(a) % 4 for a in np.asarray(axes if axes is not None else [], dtype=np.int64).ravel())
        if len(imp.shapes[x]) != 1 or axes != [2, 3]:
            raise NotOnEngine(f"{_describe(node)}: unsqueezing (N, {', '.join(map(str, imp.shapes[x]))}) at axes "
                              f"{axes} is not supported; only a vector (N, C) to (N, C, 1, 1) is")
        imp.add_layer(node, "unflatten", [x])

    def shape(self, layer, in_shapes):
        if len(in_shapes[0]) != 1:
            raise OperatorError(f"needs a vector, not {in_shapes[0]}")
        return (in_shapes[0][0], 1, 1)

    def run_float(self, layer, xs):
        return xs[0].reshape(xs[0].shape[0], -1, 1, 1)

    def golden(self, layer, inputs, net):
        x = np.asarray(inputs[0])
        return x.reshape(x.shape[0], -1, 1, 1)

    def lower(self, layer, ctx):
        from sw.compiler.lowering import CompileError, Placement
        p = ctx.source(layer.inputs[0], layer)
        n = ctx.net.shapes[layer.output][0]
        if p.index is not None and list(p.index[:n]) != list(range(n)):
            raise CompileError(f"layer {layer.name!r}: its vector's elements sit in memory in another order than "
                               f"their own (a flatten of a map larger than 1x1); it cannot be a (C, 1, 1) map")
        ctx.placements[layer.output] = Placement(p.region, n, 1, 1)


def _reshape_kind(imp, node, x: str) -> str:
    """"flatten", "same" (a reshape that changes nothing) or "unflatten" (a vector to (C, 1, 1)); anything else is
    refused."""
    if imp.opset < 5:
        target = list(_attrs(node).get("shape", []))
    else:
        if len(node.input) < 2 or imp.name(node.input[1]) not in imp.consts:
            raise FrontendError(f"{_describe(node)}: its shape must be a constant, not computed from the input")
        target = [int(v) for v in np.asarray(imp.consts[imp.name(node.input[1])]).reshape(-1)]
    allowzero = bool(_attrs(node).get("allowzero", 0))
    shape = imp.shapes[x]
    kind = None
    for batch in ([imp.batch] if imp.batch else [1, 7]):
        out = _resolve_reshape(target, (batch, *shape), allowzero)
        k = None if out is None else "flatten" if out == (batch, int(np.prod(shape))) else \
            "same" if out == (batch, *shape) else \
            "unflatten" if len(shape) == 1 and out == (batch, shape[0], 1, 1) else None
        if k is None or kind not in (None, k):
            raise NotOnEngine(f"{_describe(node)}: reshaping (N, {', '.join(map(str, shape))}) to {target} "
                                f"{'with a symbolic batch ' if not imp.batch else ''}is not supported; only "
                                f"(N, -1) (a flatten) and reshapes that change nothing are")
        kind = k
    return kind


def _resolve_reshape(target: list[int], full: tuple[int, ...], allowzero: bool) -> tuple[int, ...] | None:
    """ONNX Reshape's output shape (0 copies, -1 infers), or None if impossible."""
    out = [full[i] if v == 0 and not allowzero and i < len(full) else v for i, v in enumerate(target)]
    total = int(np.prod(full))
    if out.count(-1) > 1:
        return None
    if -1 in out:
        known = int(np.prod([v for v in out if v != -1]))
        if known <= 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    return tuple(out) if int(np.prod(out)) == total and min(out) >= 0 else None


def _check_squeeze(imp, node, x: str) -> None:
    shape = imp.shapes[x]
    rank = len(shape) + 1
    axes = _attrs(node).get("axes") if imp.opset < 13 else imp.const(node, 1, "axes", required=False)
    if axes is None:
        raise FrontendError(f"{_describe(node)}: Squeeze without axes could remove the batch; give axes")
    axes = sorted({int(a) + rank if int(a) < 0 else int(a) for a in np.asarray(axes).reshape(-1)})
    if 0 in axes or any(not 0 < a < rank or shape[a - 1] != 1 for a in axes):
        raise FrontendError(f"{_describe(node)}: axes {axes} must name size-1 axes other than the batch")
    kept = [d for i, d in enumerate(shape, start=1) if i not in axes]
    if len(kept) != 1:
        raise NotOnEngine(f"{_describe(node)}: squeezing (N, {', '.join(map(str, shape))}) to "
                            f"(N, {', '.join(map(str, kept))}) is not supported; only squeezes that flatten are")
