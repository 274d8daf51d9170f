"""The numpy golden model: the meaning of every computation, written from the format definitions alone."""

from .gemm import Accumulation, gemm, matvec, multiply

__all__ = ["Accumulation", "gemm", "matvec", "multiply"]
