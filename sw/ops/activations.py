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

A PRelu with one slope per channel (:class:`PRelu`, ``prelu``) takes no table: it is folded into the producer's
requantization, exactly. PRelu is ``x`` where ``x >= 0`` and ``slope_c * x`` below, so the rescale of channel ``c``
has two multipliers: ``M * 2**-S ~ s_acc / s_out`` as for any layer, and ``M_neg * 2**-S_neg ~ slope_c * s_acc /
s_out`` (:func:`sw.quantize.network.multiplier_shift` of that ratio, negated for a negative slope; 0 for a zero
slope) for the elements whose ``acc + B`` is negative (STORE ``negative_param``, the post-processing unit's second
PARAM line). The output encoding is calibrated on the float model's output after the PRelu; no pre-activation
encoding exists. Exact, like any rescale; the only error is the rounding of ``M_neg``. On an activation format
without a table (above ``LUT_MAX_BITS`` bits) the quantizer runs a ``leakyrelu`` the same way, its one slope for
every channel.

Not on the engine (the node goes to the host, ``sw/ops/host.py``): an activation whose input is not the output of
an accumulating layer, is read by another node too, is the graph's input, carries its own quantization (QDQ), or
already went through an activation; a per-channel PRelu after a layer with a clip (Relu/Clip) of its own, or
whose slope varies along an axis other than the channels.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sw.frontend.onnx_common import FrontendError, NotOnEngine, _attrs, _describe

from .base import Operator

__all__ = ["Activation", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "PRelu", "Tanh", "SiLU"]


class Activation(Operator):
    """An element-wise function of one tensor that fuses into its producer as ``FloatLayer.activation``: it never
    stands as a layer of its own (unfusable nodes go to the host), so it is registered in ``sw.ops.ACTIVATIONS``,
    not among the IR's operators; the ONNX import finds it like any operator."""

    #: Attribute names and ONNX defaults.
    defaults: ClassVar[dict[str, float]] = {}
    #: Runs in the producer's requantization (its negative side), not in the lookup table: no pre-activation
    #: encoding, no table (:class:`PRelu`).
    requantized: ClassVar[bool] = False

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

    def import_node(self, imp, node) -> None:
        if node.op_type != "PRelu":
            return super().import_node(imp, node)
        try:
            slope = np.asarray(imp.const(node, 1, "slope"), dtype=np.float64)
        except FrontendError as e:
            raise NotOnEngine(str(e)) from None
        if slope.size == 1 or np.ptp(slope) == 0:
            return imp.fuse_activation(node, node.input[0], {"op": self.name, "alpha": float(slope.flat[0])})
        x = imp.act(node, node.input[0])
        channels = _channel_slopes(node, slope, imp.shapes[x])
        layer = imp.producer.get(x)
        if layer is not None and layer.clip is not None:
            raise NotOnEngine(f"{_describe(node)}: the layer writing {x!r} clamps its output already (a Relu or "
                              f"Clip); a per-channel PRelu after a clamp runs on the host")
        imp.fuse_activation(node, node.input[0], {"op": "prelu", "slope": channels},
                            what=f"{node.op_type} (one slope per channel, fused into the requantization of the "
                                 f"layer before it)")

    def function(self, x, attrs):
        return np.where(x >= 0, x, x * attrs["alpha"]).astype(x.dtype, copy=False)


def _channel_slopes(node, slope: np.ndarray, shape: tuple[int, ...]) -> list[float]:
    """The slope of each channel (axis 1 of ``(1, *shape)``), as ONNX broadcasts it; NotOnEngine where it varies
    along another axis (or does not broadcast)."""
    full = (1, *shape)
    try:
        spread = np.broadcast_to(slope, full)
    except ValueError:
        raise FrontendError(f"{_describe(node)}: slope of shape {slope.shape} does not broadcast to its input "
                            f"{full}") from None
    per_channel = spread[(0, slice(None)) + (0,) * (len(full) - 2)]
    if not np.array_equal(spread, np.broadcast_to(per_channel.reshape((1, -1) + (1,) * (len(full) - 2)), full)):
        raise NotOnEngine(f"{_describe(node)}: slope of shape {slope.shape} varies along an axis other than the "
                          f"channels of its input {full}; the engine has one slope per channel, so the host runs it")
    return [float(v) for v in per_channel]


class PRelu(Activation):
    """A PRelu with one slope per channel: ``x`` for ``x >= 0``, else ``slope[c] * x`` (``attrs["slope"]``, one
    number per channel, axis 1). No ONNX node of its own: :class:`LeakyRelu` imports PRelu and gives it the
    per-channel case. Runs in the producer's requantization (module docstring), not in a table."""

    name = "prelu"
    requantized = True

    def function(self, x, attrs):
        slope = np.asarray(attrs["slope"], dtype=x.dtype).reshape((-1,) + (1,) * (x.ndim - 2))
        return np.where(x >= 0, x, x * slope).astype(x.dtype, copy=False)


class Tanh(Activation):
    """``tanh(x)``."""

    name = "tanh"
    onnx = ("Tanh",)

    def function(self, x, attrs):
        return np.tanh(x)
