"""Data-free quantization: activation ranges and a weight bias correction from BatchNormalization statistics alone.

After Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction" (ICCV 2019). A layer
with a folded BatchNormalization produces, per output channel, values distributed about ``N(beta, gamma^2)``
before its clip (``FloatLayer.output_stats``). Every tensor gets such a per-channel normal model plus the clip
it passes through (a ReLU is the clip ``[0, inf)``); tensors without a BatchNormalization of their own get theirs
propagated through the layers: means exactly (``E[Wx + b] = W E[x] + b``), spreads by their upper bound
``std(sum_k w_k x_k) <= sum_k |w_k| std(x_k)``, which holds whatever the inputs' correlations (neighbouring
pixels and features are strongly correlated: assuming them independent, as a variance sum would, under-estimated
the range of the digits CNN's last two layers by 2-4x and saturated its logits). The network input is taken as
uniform over a range the user states (``input_range``, default [0, 1], the images of models/digits and
models/mnist).

- Activation ranges: ``[max(lo, min(mean - n std)), min(hi, max(mean + n std))]`` over the channels of a tensor,
  ``n`` = ``sigmas`` (DFQ's ``beta +- n gamma``; 6 by default, our choice, not tuned); the input's range is
  ``input_range`` itself.
- Bias correction: a weighted layer's quantization error ``eps = W_q - W`` shifts its expected output by
  ``eps E[x]``, where ``E[x]`` is the mean of the clipped normal of its input (closed form,
  :func:`clipped_normal_moments`); the bias gets ``- eps E[x]``. Only where ``E[x]`` derives from
  BatchNormalization statistics (``ChannelStats.informed``): the input's mean is unknown (the middle of
  ``input_range`` is no estimate of it; on MNIST, mean 0.13 in [0, 1], correcting the first layer with 0.5 cost
  more than it gained). Zero padding and max pooling are ignored in ``E[x]`` (the mean of a window's max lies
  between the mean of one value and the max of independent ones; neither bound did better on the digits CNN).
- A model without any BatchNormalization statistics is refused: its ranges would be guesses from the input range.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import norm

from sw.ir import FloatLayer, FloatNetwork

from .errors import QuantizationError
from .weights import QuantizedWeight

__all__ = ["DataFree", "ChannelStats", "clipped_normal_moments", "tensor_stats", "activation_ranges",
           "expected_input", "correct_bias"]

#: Smallest standard deviation a channel model keeps (a constant channel is a very narrow normal).
_MIN_STD = 1e-12


@dataclass(frozen=True)
class DataFree:
    """The options of data-free quantization (what stands in for calibration samples)."""

    #: The range of the network's input values (no data tells it); its encoding spans exactly this.
    input_range: tuple[float, float] = (0.0, 1.0)
    #: Activation ranges span ``mean +- sigmas * std`` of each channel (then the clip).
    sigmas: float = 6.0
    #: Correct each weighted layer's bias for the expected error of its quantized weights.
    bias_correction: bool = True

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.input_range)
        if not (np.isfinite([lo, hi]).all() and lo < hi):
            raise QuantizationError(f"input_range must be two finite numbers lo < hi, not {self.input_range!r}")
        if not (np.isfinite(self.sigmas) and self.sigmas > 0):
            raise QuantizationError(f"sigmas must be a positive number, not {self.sigmas!r}")


@dataclass(frozen=True)
class ChannelStats:
    """Per channel: a normal ``N(mean, std^2)`` clipped to ``[lo, hi]`` (values saturate; bounds may be infinite)."""

    mean: np.ndarray
    std: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    #: Derived from BatchNormalization statistics (not from the assumed input distribution alone).
    informed: bool = True

    @classmethod
    def of(cls, mean, std, clip: tuple[float, float] | None = None, informed: bool = True) -> "ChannelStats":
        mean = np.asarray(mean, np.float64).ravel()
        std = np.maximum(np.abs(np.broadcast_to(np.asarray(std, np.float64), mean.shape)), _MIN_STD)
        lo, hi = (-np.inf, np.inf) if clip is None else (float(clip[0]), float(clip[1]))
        return cls(mean, std, np.full(mean.shape, lo), np.full(mean.shape, hi), informed)

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of the clipped values, per channel."""
        return clipped_normal_moments(self.mean, self.std, self.lo, self.hi)

    def value_range(self, sigmas: float) -> tuple[float, float]:
        """The range an encoding of the whole tensor spans: ``mean +- sigmas std`` of every channel, clipped."""
        lo = np.maximum(self.lo, self.mean - sigmas * self.std)
        hi = np.minimum(self.hi, self.mean + sigmas * self.std)
        return float(np.min(lo)), float(np.max(hi))

    def take(self, index) -> "ChannelStats":
        return ChannelStats(self.mean[index], self.std[index], self.lo[index], self.hi[index], self.informed)


def clipped_normal_moments(mean, std, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """``E[clip(X, lo, hi)]`` and ``Var[clip(X, lo, hi)]`` for ``X ~ N(mean, std^2)``, in closed form.

    With ``a = (lo - mean) / std``, ``b = (hi - mean) / std`` and ``P = Phi(b) - Phi(a)``:
    ``E = lo Phi(a) + hi (1 - Phi(b)) + mean P + std (phi(a) - phi(b))`` and
    ``E[clip^2] = lo^2 Phi(a) + hi^2 (1 - Phi(b)) + (mean^2 + std^2) P
    + std ((mean + lo) phi(a) - (mean + hi) phi(b))``.
    A ReLU (``lo = 0``, ``hi = inf``) gives DFQ's ``mean Phi(mean/std) + std phi(mean/std)``.
    """
    mean, std, lo, hi = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (mean, std, lo, hi)))
    std = np.maximum(std, _MIN_STD)
    a, b = (lo - mean) / std, (hi - mean) / std
    cdf_a, sf_b = norm.cdf(a), norm.sf(b)
    pdf_a, pdf_b = norm.pdf(a), norm.pdf(b)
    inside = 1.0 - cdf_a - sf_b

    def edge(bound, weight):            # bound * weight, 0 where the bound is infinite (its weight is then 0)
        return np.where(np.isfinite(bound), np.nan_to_num(bound) * weight, 0.0)

    first = (edge(lo, cdf_a) + edge(hi, sf_b) + mean * inside + std * (pdf_a - pdf_b))
    second = (edge(lo * lo, cdf_a) + edge(hi * hi, sf_b) + (mean ** 2 + std ** 2) * inside
              + std * (edge(mean + lo, pdf_a) - edge(mean + hi, pdf_b)))
    return first, np.maximum(second - first ** 2, 0.0)


# --- propagation ---------------------------------------------------------------------------------------------

def _group_inputs(layer: FloatLayer, values: np.ndarray) -> np.ndarray:
    """Per output channel, the per-input-channel ``values`` its weight reads: shaped (Cout, Cin/groups)."""
    w = layer.weight
    groups = int(layer.attrs.get("groups", 1)) if layer.op in ("conv", "convtranspose") else 1
    per_group = values.reshape(groups, -1)
    if per_group.shape[1] != w.shape[1]:
        raise QuantizationError(f"Layer {layer.name!r}: {values.size} input channels for a weight shaped {w.shape}")
    return per_group[np.arange(w.shape[0]) // (w.shape[0] // groups)]


def _weighted(layer: FloatLayer, x: ChannelStats) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the layer's output before its clip, from its input's: the mean exactly, the
    deviation's upper bound over every correlation of the inputs (reached when they move together)."""
    mean_in, var_in = x.moments()
    w = layer.weight.reshape(layer.weight.shape[0], layer.weight.shape[1], -1)
    mean = np.einsum("ckt,ck->c", w, _group_inputs(layer, mean_in))
    std = np.einsum("ckt,ck->c", np.abs(w), _group_inputs(layer, np.sqrt(var_in)))
    if layer.bias is not None:
        mean = mean + layer.bias
    return mean, std


def _layer_stats(layer: FloatLayer, ins: list[ChannelStats], shapes: dict) -> ChannelStats:
    x = ins[0]
    if layer.op in ("conv", "linear", "convtranspose"):    # (a transposed conv's bound: every tap at once)
        if layer.output_stats is not None:
            return ChannelStats.of(*layer.output_stats, layer.clip)
        return ChannelStats.of(*_weighted(layer, x), layer.clip, x.informed)
    if layer.op in ("maxpool", "resize"):
        return x
    if layer.op in ("avgpool", "global_avgpool"):
        mean, var = x.moments()
        return ChannelStats(mean, np.maximum(np.sqrt(var), _MIN_STD), x.lo, x.hi, x.informed)
    if layer.op == "add":
        moments = [s.moments() for s in ins]        # the same bound: deviations add
        return ChannelStats.of(sum(m for m, _ in moments), sum(np.sqrt(v) for _, v in moments), layer.clip,
                               all(s.informed for s in ins))
    if layer.op == "concat":
        return ChannelStats(*(np.concatenate([getattr(s, f) for s in ins]) for f in ("mean", "std", "lo", "hi")),
                            all(s.informed for s in ins))
    if layer.op == "flatten":
        shape = shapes[layer.inputs[0]]
        return x.take(np.repeat(np.arange(shape[0]), int(np.prod(shape[1:]))))
    if layer.op == "slice":
        c0, c1, cs = (int(v) for v in layer.attrs["ranges"][:3])
        return x.take(np.arange(x.mean.size)[c0:c1:cs])
    raise QuantizationError(f"Layer {layer.name!r} ({layer.op}): data-free quantization cannot derive its range "
                            "from BatchNormalization statistics; calibrate with samples (--calibrate SAMPLES.npy)")


def tensor_stats(net: FloatNetwork, shapes: dict, options: DataFree) -> dict[str, ChannelStats]:
    """The channel model of every tensor: the input uniform over ``input_range``, then layer by layer."""
    if not any(layer.output_stats is not None for layer in net.layers):
        raise QuantizationError("Data-free quantization needs BatchNormalization statistics, and this model has none "
                                "(exported with BatchNorm folded, or trained without): calibrate with samples "
                                "(--calibrate SAMPLES.npy)")
    lo, hi = (float(v) for v in options.input_range)
    channels = shapes[net.input][0]
    stats = {net.input: ChannelStats.of(np.full(channels, (lo + hi) / 2), (hi - lo) / np.sqrt(12), (lo, hi),
                                        informed=False)}
    for layer in net.layers:
        if layer.activation is not None:
            raise QuantizationError(f"Layer {layer.name!r} ends with a {layer.activation['op']}, whose input range "
                                    "data-free quantization cannot derive; calibrate with samples "
                                    "(--calibrate SAMPLES.npy)")
        stats[layer.output] = _layer_stats(layer, [stats[t] for t in layer.inputs], shapes)
    return stats


def activation_ranges(net: FloatNetwork, stats: dict[str, ChannelStats], options: DataFree
                      ) -> dict[str, np.ndarray]:
    """Per tensor, its two range ends (what a min-max calibration of the tensor then encodes)."""
    out = {t: np.array(s.value_range(options.sigmas)) for t, s in stats.items()}
    out[net.input] = np.array([float(v) for v in options.input_range])
    return out


def expected_input(layer: FloatLayer, stats: dict[str, ChannelStats]) -> np.ndarray | None:
    """``E[x]`` per input channel of a weighted layer (the clipped normal's mean); None where it would rest on the
    assumed input distribution alone (no BatchNormalization statistics before the layer)."""
    x = stats[layer.inputs[0]]
    return x.moments()[0] if x.informed else None


def correct_bias(layer: FloatLayer, qw: QuantizedWeight, mean_in: np.ndarray) -> FloatLayer:
    """A copy of ``layer`` whose bias cancels the expected output error of its quantized weights:
    ``bias - (W_q - W) E[x]`` (each tap reads its input channel's mean)."""
    eps = qw.dequantize() - layer.weight
    eps = eps.reshape(eps.shape[0], eps.shape[1], -1)
    shift = np.einsum("ckt,ck->c", eps, _group_inputs(layer, np.asarray(mean_in, np.float64)))
    bias = np.zeros(layer.weight.shape[0]) if layer.bias is None else np.asarray(layer.bias, np.float64)
    return replace(layer, bias=bias - shift)
