"""Constant subgraphs and shape arithmetic, folded before import by onnx's own reference evaluator.

Exporters compute shapes and constants inside the graph: torch writes ``Shape -> Gather -> Unsqueeze -> Concat
-> Reshape`` for a flatten, ``ConstantOfShape``/``Slice``/``Cast`` chains for a channel padding, a ``Reshape`` of
an initializer for a weight. The importer wants constants and the few operators the IR has, so every node whose
inputs are all known is evaluated here and replaced by an initializer, and ``Shape``/``Size`` of a tensor whose
shape is static become constants (the batch is fixed to 1 first: the IR has no batch dimension).

Why onnx.reference: it is onnx's executable specification of every standard operator in numpy, exact for the
integer shape arithmetic and the float constants folded here, it needs nothing beyond the onnx package the
frontend already requires, and it runs on models with QONNX or other custom-domain nodes (onnxruntime's
optimizer and onnxslim, which folds through onnxruntime, refuse to load those). Only constant subgraphs are
evaluated, so its speed does not matter.

Quantization nodes (QuantizeLinear, DequantizeLinear, QONNX's) are never folded: the importer reads them as
encodings and weight codes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from .onnx_common import FrontendError, QONNX_DOMAINS

__all__ = ["fold_constants"]

#: Read by the importer as encodings: never folded.
_KEEP = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
#: Not functions of their inputs.
_RANDOM = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` (nodes in topological order) with its batch fixed to 1 and its constant parts folded."""
    model = _with_batch_one(model)
    opsets = {o.domain or "": o.version for o in model.opset_import if o.domain in ("", "ai.onnx")}
    opsets = {"": opsets.get("", opsets.get("ai.onnx", 13))}
    shapes = _static_shapes(model)
    known = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        value = _fold(node, known, shapes, opsets)
        if value is None:
            kept.append(node)
        else:
            known.update(value)
    return _rebuilt(model, kept, known)


def _fold(node: onnx.NodeProto, known: dict, shapes: dict, opsets: dict) -> dict | None:
    """The node's outputs if they are constants, else None."""
    if node.domain not in ("", "ai.onnx") or node.domain in QONNX_DOMAINS or node.op_type in _KEEP | _RANDOM:
        return None
    if node.op_type in ("Shape", "Size") and node.input[0] not in known:
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        if node.op_type == "Size":
            return {node.output[0]: np.array(int(np.prod(shape)), np.int64)}
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", len(shape))
        return {node.output[0]: np.array(shape, np.int64)[start:end]}
    if not all(i == "" or i in known for i in node.input):
        return None
    try:
        results = ReferenceEvaluator(node, opsets=opsets).run(None, {i: known[i] for i in node.input if i})
    except Exception as e:         # noqa: BLE001 - the evaluator's own errors name what is wrong
        who = node.name or node.output[0]
        raise FrontendError(f"node {who!r} ({node.op_type}) on constant inputs cannot be evaluated: "
                            f"{' '.join(str(e).split())[:200]}") from None
    return {name: np.asarray(v) for name, v in zip(node.output, results) if name}


def _with_batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    initializers = {i.name for i in copy.graph.initializer}
    for value in copy.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value") and all(d.HasField("dim_value") for d in dims[1:]):
            dims[0].Clear()
            dims[0].dim_value = 1
    return copy


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shapes onnx's inference knows completely (intermediate tensors included)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:              # noqa: BLE001 - without inference only constants fold
        return {}
    shapes = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        tt = value.type.tensor_type
        if value.type.HasField("tensor_type") and tt.HasField("shape") and all(
                d.HasField("dim_value") for d in tt.shape.dim):
            shapes[value.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
    return shapes


def _rebuilt(model: onnx.ModelProto, nodes: list, known: dict) -> onnx.ModelProto:
    g = model.graph
    used = {i for n in nodes for i in n.input} | {o.name for o in g.output}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    del out.graph.initializer[:]
    out.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name) for name, v in known.items()
                                 if name in used)
    inputs = [i for i in out.graph.input if i.name in used or i.name not in known]
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    return out
