"""Nonlinear activations, fused into the layer before them and run by the post-processing unit's lookup table:
``sigmoid``, ``hardsigmoid``, ``hardswish``, ``leakyrelu`` (and PRelu with one slope), ``tanh``, and ``silu``
(ONNX ``Mul(x, Sigmoid(x))``, as torch exports SiLU).

Float meaning: the function of each class below, element by element, after the producer's clip
(``FloatLayer.activation``).

Quantized meaning: the producer (conv, linear, add, a pooling: any accumulating layer) rescales its accumulators to
codes ``q`` of a *pre-activation* encoding (its own scale and zero point, calibrated on the float model's
pre-activation values; ``attrs["pre_scale"]``, ``attrs["pre_zero_point"]``), clamps included; each ``q`` then
becomes ``table[q]`` with ``table[c] = quantize_out(f(dequantize_pre(c)))`` computed in float64 by the quantizer
(:func:`sw.golden.activation.activation_table`); the golden model, the emulator and the RTL apply that table.

Not on the engine (the node goes to the host, ``sw/ops/host.py``): an activation whose input is not the output of
an accumulating layer, is read by another node too, is the graph's input, carries its own quantization (QDQ), or
already went through an activation; a PRelu with one slope per channel (one table serves every channel of a
layer; per-channel tables would need a table per column).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sw.frontend.onnx_common import FrontendError, NotOnEngine, _attrs, _describe

from .base import Operator

__all__ = ["Activation", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "SiLU"]


class Activation(Operator):
    """An element-wise function of one tensor that fuses into its producer as ``FloatLayer.activation``: it never
    stands as a layer of its own (unfusable nodes go to the host), so it is registered in ``sw.ops.ACTIVATIONS``,
    not among the IR's operators; the ONNX import finds it like any operator."""

    #: Attribute names and ONNX defaults.
    defaults: ClassVar[dict[str, float]] = {}

    def function(self, x: np.ndarray, attrs: dict) -> np.ndarray:
        """``f(x)`` element by element, in ``x``'s dtype (float64 for the tables)."""
        raise NotImplementedError

    def attributes(self, imp, node) -> dict:
        """The activation's attributes from the ONNX node (``defaults`` filled in)."""
        a = _attrs(node)
        return {k: float(a.get(k, v)) for k, v in self.defaults.items()}

    def import_node(self, imp, node) -> None:
        imp.fuse_activation(node, node.input[0], {"op": self.name, **self.attributes(imp, node)})



def _sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow warnings for large ``|x|``."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Sigmoid(Activation):
    """``1 / (1 + exp(-x))``; ``Mul(x, Sigmoid(x))`` becomes :class:`SiLU`."""

    name = "sigmoid"
    onnx = ("Sigmoid",)

    def function(self, x, attrs):
        return _sigmoid(x)

    def import_node(self, imp, node) -> None:
        mul = imp.silu_pattern(node)
        if mul is None:
            return super().import_node(imp, node)
        imp.fuse_activation(node, node.input[0], {"op": "silu"}, absorbs=mul)


class SiLU(Activation):
    """``x * sigmoid(x)``: no ONNX node of its own, the Sigmoid recognises ``Mul(x, Sigmoid(x))``."""

    name = "silu"

    def function(self, x, attrs):
        return x * _sigmoid(x)


class HardSigmoid(Activation):
    """``max(0, min(1, alpha * x + beta))``."""

    name = "hardsigmoid"
    onnx = ("HardSigmoid",)
    defaults = {"alpha": 0.2, "beta": 0.5}

    def function(self, x, attrs):
        return np.clip(x * attrs["alpha"] + attrs["beta"], 0, 1).astype(x.dtype, copy=False)


class HardSwish(Activation):
    """``x * max(0, min(1, x / 6 + 1/2))``."""

    name = "hardswish"
    onnx = ("HardSwish",)

    def function(self, x, attrs):
        return (x * np.clip(x / 6 + 0.5, 0, 1)).astype(x.dtype, copy=False)


class LeakyRelu(Activation):
    """``x`` for ``x >= 0``, else ``alpha * x``; a PRelu whose slope is one number is the same."""

    name = "leakyrelu"
    onnx = ("LeakyRelu", "PRelu")
    defaults = {"alpha": 0.01}

    def attributes(self, imp, node) -> dict:
        if node.op_type != "PRelu":
            return super().attributes(imp, node)
        try:
            slope = imp.const(node, 1, "slope")
        except FrontendError as e:
            raise NotOnEngine(str(e)) from None
        slope = np.asarray(slope, dtype=np.float64)
        if slope.size != 1 and np.ptp(slope) != 0:
            raise NotOnEngine(f"{_describe(node)}: a slope per channel needs a table per channel; the "
                              f"post-processing unit has one table, so the host runs it")
        return {"alpha": float(slope.flat[0])}

    def function(self, x, attrs):
        return np.where(x >= 0, x, x * attrs["alpha"]).astype(x.dtype, copy=False)


class Tanh(Activation):
    """``tanh(x)``."""

    name = "tanh"
    onnx = ("Tanh",)

    def function(self, x, attrs):
        return np.tanh(x)
