"""The frontend: ONNX models (float, QDQ, QONNX) to the network IR (sw/ir.py), and a float reference executor.

``run_float`` needs numpy only; ``load_onnx`` imports ``onnx`` on first use, so the rest of ``sw`` stays usable
without it.
"""

from .float_model import FloatModelError, infer_shapes, layer_output_shape, run_float

__all__ = ["FloatModelError", "FrontendError", "infer_shapes", "layer_output_shape", "load_onnx", "run_float",
           "SUPPORTED_OPS"]


def __getattr__(name):
    if name in ("load_onnx", "FrontendError", "SUPPORTED_OPS"):
        from . import onnx_import
        return getattr(onnx_import, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
