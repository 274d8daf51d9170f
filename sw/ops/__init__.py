"""The operators of the IR, one module each, and the registry every stage dispatches through.

``OPERATORS`` maps an IR op name to its :class:`~sw.ops.base.Operator`; ``onnx_operator`` finds the operator that
imports an ONNX node type. Adding an operator: write ``sw/ops/NAME.py`` with one subclass, add it to the tuple
below, and test it (docs/operators.md walks through an example).
"""

from __future__ import annotations

from .activations import Activation, HardSigmoid, HardSwish, LeakyRelu, PRelu, Sigmoid, SiLU, Tanh
from .add import Add
from .base import Operator, OperatorError
from .concat import Concat
from .conv import Conv
from .conv_transpose import ConvTranspose
from .depth_to_space import DepthToSpace
from .flatten import Flatten, Unflatten
from .host import Host
from .linear import Linear
from .mul import Mul
from .pad import Pad
from .pool import AvgPool, GlobalAvgPool, MaxPool
from .resize import Resize
from .slice import Slice

__all__ = ["Operator", "OperatorError", "OPERATORS", "ACTIVATIONS", "operator", "onnx_operator", "ONNX_TYPES"]

OPERATORS: dict[str, Operator] = {op.name: op for op in (
    Conv(), Linear(), MaxPool(), AvgPool(), GlobalAvgPool(), Add(), Mul(), Concat(), Flatten(), Unflatten(), Slice(),
    Pad(), Host(), ConvTranspose(), Resize(), DepthToSpace(),
)}

#: The nonlinear activations (``sw/ops/activations.py``): not layers of the IR but ``FloatLayer.activation`` of the
#: accumulating layer they fuse into, run by its post-processing unit's lookup table (or, for a per-channel PRelu, by
#: the negative side of its requantization).
ACTIVATIONS: dict[str, Activation] = {op.name: op for op in (
    Sigmoid(), SiLU(), HardSigmoid(), HardSwish(), LeakyRelu(), PRelu(), Tanh(),
)}

_BY_ONNX: dict[str, Operator] = {t: op for op in (*OPERATORS.values(), *ACTIVATIONS.values()) for t in op.onnx}
#: ONNX operator types (default domain) some operator imports.
ONNX_TYPES: tuple[str, ...] = tuple(_BY_ONNX)


def operator(name: str) -> Operator:
    """The operator called ``name`` (KeyError naming the known ones otherwise)."""
    try:
        return OPERATORS[name]
    except KeyError:
        raise KeyError(f"unknown operator {name!r}; the IR has {', '.join(OPERATORS)}") from None


def onnx_operator(op_type: str) -> Operator | None:
    """The operator that imports ONNX nodes of ``op_type`` (default domain), if any."""
    return _BY_ONNX.get(op_type)
