"""``linear``: a matrix product of a vector, ``y = W @ x + b`` (ONNX Gemm, MatMul; a sum of weight tensors).

Quantized meaning: ``acc[n] = sum over tensors t, k of value(x[k]) * value(w_t[n, k]) / 2**e``, then the layer's
post-processing. On the engine: a job on a 1x1 map whose "channels" are the input's memory positions, the
weights permuted at compile time to the order in which a flattened map already sits in memory.
"""

from __future__ import annotations

import numpy as np

from sw.frontend.onnx_common import FrontendError, _attrs, _describe
from sw.golden.layers import linear

from .base import Operator, OperatorError


class Linear(Operator):
    name = "linear"
    onnx = ("Gemm", "MatMul")
    accumulating = True
    weighted = True

    def import_node(self, imp, node) -> None:
        if node.op_type == "Gemm":
            return self._gemm(imp, node)
        x = imp.act(node, node.input[0])
        b = imp.const(node, 1, "right operand (the weight)")
        if b.ndim != 2:
            raise FrontendError(f"{_describe(node)}: the weight must be 2-D (K, N), not {b.shape}")
        w = np.asarray(b, dtype=np.float64).T
        self._layer(imp, node, x, w, None, imp.weight_quant_for(node, node.input[1], lambda t: t.T))

    def _gemm(self, imp, node) -> None:
        a = _attrs(node)
        if a.get("transA", 0):
            raise FrontendError(f"{_describe(node)}: transA=1 is not supported (the activation must be the left "
                                f"operand, untransposed)")
        x = imp.act(node, node.input[0])
        b = imp.const(node, 1, "weight B")
        if b.ndim != 2:
            raise FrontendError(f"{_describe(node)}: weight B must be 2-D, not {b.shape}")
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        trans = bool(a.get("transB", 0))
        layout = (lambda t: t) if trans else (lambda t: t.T)
        w = layout(np.asarray(b, dtype=np.float64)) * alpha
        c = imp.const(node, 2, "bias C", required=False)
        bias = None if c is None else _vector_bias(node, c, w.shape[0]) * beta
        wq = imp.weight_quant_for(node, node.input[1], layout)
        if wq is not None and alpha != 1.0:
            if alpha <= 0:
                raise FrontendError(f"{_describe(node)}: alpha {alpha} with a quantized weight must be positive")
            wq.scale = wq.scale * alpha
        self._layer(imp, node, x, w, bias, wq)

    def _layer(self, imp, node, x: str, w: np.ndarray, bias, wq) -> None:
        if len(imp.shapes[x]) != 1:
            raise FrontendError(f"{_describe(node)}: its input {x!r} has shape {imp.shapes[x]}; a matrix product "
                                f"needs a flat (N, K) input (Flatten first)")
        layer = imp.add_layer(node, "linear", [x], {}, w, bias)
        if wq is not None:
            imp.weight_quant[layer.name] = wq

    def shape(self, layer, in_shapes):
        x, w = in_shapes[0], layer.weight
        if w is None or w.ndim != 2 or len(x) != 1 or w.shape[1] != x[0]:
            raise OperatorError(f"weight {None if w is None else w.shape} does not fit an input of shape {x} "
                                f"(needs (N, K) and (K,))")
        return (w.shape[0],)

    def run_float(self, layer, xs):
        y = xs[0] @ layer.weight.astype(xs[0].dtype).T
        return y if layer.bias is None else y + layer.bias.astype(xs[0].dtype)

    def golden(self, layer, inputs, net):
        return linear(inputs[0], layer.weights, net.act_format_of(layer.inputs[0]), net.weight_format_of(layer))

    def lower(self, layer, ctx):
        from sw.compiler.lowering import CompileError
        x = ctx.source(layer.inputs[0], layer)
        if x.index is None and (x.height, x.width) != (1, 1):
            raise CompileError(f"layer {layer.name!r}: a linear layer needs a vector input (flatten first)")
        index = x.index if x.index is not None else list(range(x.channels))
        stacked = np.stack([np.asarray(w, dtype=np.int64) for w in layer.weights])       # (T, N, K)
        weights = np.zeros((stacked.shape[0], 1, 1, x.channels, stacked.shape[1]), dtype=np.int64)
        weights[:, 0, 0, np.asarray(index), :] = stacked.transpose(0, 2, 1)
        ctx.add_job(layer, [(x, weights)], stacked.shape[1],
                    macs=int(layer.weights[0].size * len(layer.weights)))


def _vector_bias(node, c: np.ndarray, n: int) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    if c.ndim == 2 and c.shape[0] == 1:
        c = c[0]
    try:
        return np.broadcast_to(c, (n,)).copy()
    except ValueError:
        raise FrontendError(f"{_describe(node)}: bias of shape {c.shape} is not one value per output "
                            f"feature ({n})") from None
