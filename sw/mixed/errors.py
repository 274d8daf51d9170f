"""The mixed-precision selection's error type."""

from __future__ import annotations

__all__ = ["MixedError"]


class MixedError(ValueError):
    """A menu, budget or network the mixed-precision selection cannot serve (a usage error at the command line)."""
