"""The first stage of the frontend: is this a well-formed ONNX model at all?

onnx's own checker and strict shape inference are the judges (they know every operator's schema: input counts,
attribute ranges, initializers whose data does not fill their shape, types, shapes that do not unify); their
multi-line messages become one :class:`FrontendError` line naming the node. What they let through and the
IR cannot take is checked here: non-finite weights and opsets newer than this onnx knows.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import numpy_helper

from .onnx_common import FrontendError

__all__ = ["check_model"]


def check_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its nodes in topological order, or a :class:`FrontendError` saying what is malformed."""
    newest = onnx.defs.onnx_opset_version()
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and not 1 <= o.version <= newest:
            raise FrontendError(f"The model imports opset {o.version}; this onnx knows opsets 1..{newest} (convert "
                                f"it with onnx.version_converter or upgrade onnx)")
    model = _sorted(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise FrontendError(f"The model is not valid ONNX: {_one_line(e)}") from None
    for init in model.graph.initializer:
        _check_initializer(init)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    _check_initializer(a.t, f"Constant node {node.name or node.output[0]!r}")
    custom = any(n.domain not in ("", "ai.onnx") for n in model.graph.node)
    try:
        # Strict inference knows no schema for QONNX's nodes: with them, errors elsewhere still surface later.
        onnx.shape_inference.infer_shapes(_without_declared_shapes(model), check_type=True, strict_mode=not custom)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        raise FrontendError(f"The model's shapes or types are inconsistent: {_one_line(e)}") from None
    return model


def _without_declared_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without the shapes exporters declare for intermediate and output tensors: they are hints (often
    stale), and the frontend infers its own; what must be consistent is the computation itself."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    for output in copy.graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    return copy


def _check_initializer(init: onnx.TensorProto, what: str | None = None) -> None:
    """A constant whose data fills its shape and is finite (NaN weights or QDQ scales are named as such)."""
    what = what or f"Initializer {init.name!r}"
    try:
        value = numpy_helper.to_array(init)
    except Exception as e:          # noqa: BLE001 - any undecodable tensor is the model's fault
        raise FrontendError(f"{what} cannot be read ({_one_line(e)})") from None
    if tuple(value.shape) != tuple(init.dims):
        raise FrontendError(f"{what} holds data shaped {value.shape}, not its declared {tuple(init.dims)}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise FrontendError(f"{what} contains NaN or infinity; weights, biases and quantization scales must be "
                            f"finite")


def _sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with the graph's nodes in topological order (the checker requires it; some tools do not write it)."""
    g = model.graph
    ready = {i.name for i in g.initializer} | {i.name for i in g.input} | {""}
    pending, order = list(g.node), []
    while pending:
        progress = [n for n in pending if all(i in ready for i in n.input)]
        if not progress:
            n = pending[0]
            missing = [i for i in n.input if i not in ready]
            who = repr(n.name) if n.name else f"writing {list(n.output)[:1]}"
            raise FrontendError(f"node {who} ({n.op_type}) reads {missing[:3]}, which no node, initializer or input "
                                f"writes (or the graph has a cycle)")
        for n in progress:
            ready.update(n.output)
        order += progress
        chosen = {id(n) for n in progress}
        pending = [n for n in pending if id(n) not in chosen]
    if [id(n) for n in order] == [id(n) for n in g.node]:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.node[:]
    copy.graph.node.extend(order)
    return copy


_BRACKETS = re.compile(r"\[[A-Za-z]*(Inference)?Error\]\s*")


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    text = _BRACKETS.sub("", text).replace("Inference error(s): ", "")
    text = re.sub(r"==> Context:.*", "", text).strip()
    return text if len(text) <= 300 else text[:297] + "..."

