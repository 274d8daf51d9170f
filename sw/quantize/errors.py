"""The quantizer's error type."""

from __future__ import annotations

__all__ = ["QuantizationError"]


class QuantizationError(ValueError):
    """A network, option or model encoding the quantizer cannot turn into a correct quantized network."""
