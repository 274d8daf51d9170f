"""The numpy golden model: the meaning of every computation, written from the format definitions alone."""

from .gemm import Accumulation, gemm, matvec, multiply
from .layers import (LayerError, concat_values, conv2d, elementwise_sum, global_sum, linear, maxpool, postprocess,
                     run_layer, window_sum)
from .network import NetworkError, check_network, dequantize_output, quantize_input, run_network

__all__ = ["Accumulation", "gemm", "matvec", "multiply",
           "LayerError", "conv2d", "linear", "window_sum", "global_sum", "elementwise_sum", "concat_values",
           "maxpool", "postprocess", "run_layer",
           "NetworkError", "check_network", "run_network", "quantize_input", "dequantize_output"]
