"""The quantizer: a float network and calibration samples in, a quantized network (codes and integers) out.

Methods after Choukroun et al. 2019: min-max, percentile or MMSE clipping, per-tensor or per-channel
(kernel-wise) weight scales, multiple low-precision weight tensors, minifloat scaling by MSE.
"""

from .calibrate import METHODS, Grid, calibrate_activation, qdq, sqnr_db
from .errors import QuantizationError
from .network import (DEFAULT_MULTI_TENSOR_SQNR_DB, first_last_layers, multiplier_shift, quantize_network,
                      representable)
from .report import format_report
from .weights import QuantizedWeight, quantize_weight, residual_round

__all__ = ["METHODS", "DEFAULT_MULTI_TENSOR_SQNR_DB", "Grid", "QuantizationError", "QuantizedWeight",
           "calibrate_activation", "first_last_layers", "format_report", "multiplier_shift", "qdq",
           "quantize_network", "quantize_weight", "representable", "residual_round", "sqnr_db"]
