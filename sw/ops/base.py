"""What an operator of the IR is: one class that knows its ONNX import, its shape, its float meaning, how it is
quantized, its exact quantized meaning and how it runs on the engine.

The stages (frontend, float reference, quantizer, golden model, compiler) look an operator up in
:data:`sw.ops.OPERATORS` and call it; none of them tests an operator's name. A new operator is a module of
``sw/ops`` with one subclass, registered in ``sw/ops/__init__.py`` (see docs/operators.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from sw.compiler.lowering import Lowering
    from sw.frontend.onnx_import import Importer
    from sw.golden.gemm import Accumulation
    from sw.ir import FloatLayer, QuantizedNetwork, QuantLayer

__all__ = ["Operator", "OperatorError"]


class OperatorError(ValueError):
    """A layer an operator cannot take as given (shapes, attributes); the stage adds its own context."""


class Operator:
    """One operator of the IR. Subclasses set the class attributes and implement the methods that apply."""

    #: The IR name of the operator (``QuantLayer.op``, ``FloatLayer.op``).
    name: ClassVar[str] = ""
    #: ONNX operator types (default domain) this operator imports: such a node goes to :meth:`import_node`.
    onnx: ClassVar[tuple[str, ...]] = ()
    #: Sums into the accumulators and leaves through the post-processing unit (bias, rescale, zero point,
    #: clamp): its golden meaning is an :class:`~sw.golden.gemm.Accumulation`, and a Relu/Clip fuses into it.
    accumulating: ClassVar[bool] = False
    #: Has a weight tensor, quantized with one scale per output channel.
    weighted: ClassVar[bool] = False
    #: Which tensors share one encoding: "inputs" (every input), "all" (inputs and output), "through" (the
    #: first input and the output: the operator moves codes without changing them).
    ties: ClassVar[str] = ""
    #: A Relu/Clip right after it may move to the layer before it (max pooling and flatten commute with it).
    commutes_with_clamp: ClassVar[bool] = False
    #: Runs on the host, between engine programs (see the compiler's partition).
    host: ClassVar[bool] = False
    #: A max pool right after it may run on its accumulators (it lowers to jobs whose outputs are the map's).
    fuses_pool: ClassVar[bool] = True
    #: How many inputs it takes (None: one or more).
    arity: ClassVar[int | None] = 1

    # --- frontend -----------------------------------------------------------------------------------------
    def import_node(self, imp: "Importer", node) -> None:
        """Read one ONNX node of a type in :attr:`onnx` into the importer's network."""
        raise NotImplementedError(f"{type(self).__name__} imports no ONNX node")

    # --- shapes and the float reference -------------------------------------------------------------------
    def shape(self, layer: "FloatLayer", in_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        """The output shape (no batch); raises :class:`OperatorError` for inputs it cannot take."""
        raise NotImplementedError

    def run_float(self, layer: "FloatLayer", xs: list[np.ndarray]) -> np.ndarray:
        """The float output (batch first) before the layer's clip, in the inputs' dtype."""
        raise NotImplementedError

    # --- quantization ---------------------------------------------------------------------------------------
    def window(self, layer: "FloatLayer", in_shapes: list[tuple[int, ...]]) -> tuple[int, int]:
        """For an accumulating operator without weights: ``(n, zeros)``, the sum's divisor (the window size of an
        average) and how many input zero points each output sums (corrected by the bias)."""
        raise NotImplementedError

    def rescale(self, layer: "FloatLayer", encodings: list, out_scale: float, e: int, channels: int
                ) -> tuple[list[int], np.ndarray] | None:
        """For an accumulating operator without weights whose inputs keep encodings of their own: the bias (in
        accumulator units) and the rescale ratio ``M * 2**-S`` of each output channel, from the inputs' encodings,
        the output scale and the accumulators' exponent ``e``. None: the inputs share one encoding and
        :meth:`window` gives the rule."""
        return None

    # --- the golden model -----------------------------------------------------------------------------------
    def golden(self, layer: "QuantLayer", inputs: list[np.ndarray], net: "QuantizedNetwork"
               ) -> "Accumulation | np.ndarray":
        """The exact meaning of the layer on input codes (batch first): an Accumulation (accumulating operators,
        post-processed by the caller) or the output codes."""
        raise NotImplementedError

    # --- the compiler -----------------------------------------------------------------------------------------
    def lower(self, layer: "QuantLayer", ctx: "Lowering") -> None:
        """Add the layer's engine jobs (or placements) to the program being compiled."""
        raise NotImplementedError(f"the compiler cannot lower operator {self.name!r}")


def pair(layer, key: str, default: tuple[int, int]) -> tuple[int, int]:
    """Attribute ``key`` of a layer as two integers."""
    return tuple(int(v) for v in layer.attrs.get(key, default))
