"""What every part of the ONNX frontend shares: its error, the operators it reads, and node helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

__all__ = ["FrontendError", "NotOnEngine", "QONNX_DOMAINS", "supported_ops"]


class FrontendError(ValueError):
    """An ONNX model (or part of one) that the frontend cannot turn into the IR exactly."""


class NotOnEngine(FrontendError):
    """A well-formed node the engine cannot run as it is (a reshape to 3-D, broadcasting, a Relu the layer before
    cannot take): the importer gives it to the host, or refuses it with ``--engine-only``. Raised before the
    importer changed anything."""


#: QONNX operators, as QONNX itself, FINN and Brevitas (its exporter writes "onnx.brevitas") declare them.
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")

#: ONNX operators the importer rewrites itself: they fold into the layer before them or are no-ops.
REWRITE_OPS = ("BatchNormalization", "Relu", "Clip", "Identity", "Dropout", "Constant")
#: Quantization nodes, read as encodings and weight codes (QONNX's in the domains above).
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "Quant", "IntQuant", "FloatQuant")


def supported_ops() -> tuple[str, ...]:
    """Every ONNX operator the frontend reads: the operators' (``sw.ops``), the rewrites and the quantizers."""
    from sw.ops import ONNX_TYPES
    return (*ONNX_TYPES, *REWRITE_OPS, *QUANT_OPS)
_MIN_OPSET = 7
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16)


@dataclass
class _ConstQuant:
    """How a constant was quantized: codes of ``format`` and scale/zero point broadcast to its shape."""

    format: str
    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray


def _describe(node: onnx.NodeProto) -> str:
    who = repr(node.name) if node.name else f"writing {node.output[0]!r}" if node.output else "(unnamed)"
    return f"node {who} ({node.op_type})"


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
