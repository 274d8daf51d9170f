"""Input folding: the first convolution of a network, when it reads few channels, gets its input im2col'd.

A stem like ResNet-18's 7x7/2 convolution of 3 channels uses 3 of the array's rows per weight tile and needs 49
tiles; folded, each output position's 3 x 7 x 7 window is one input line of 147 channels, the convolution is a
1x1 one of 10 tiles (at 16 rows), and the engine runs it at the roofline. The host writes the input anyway, so
it writes it folded: the input's placement carries the window (:class:`Fold`), and
:meth:`CompiledNetwork.tensor_bytes` lays the codes out that way. The weights are reordered to match: input
channel ``(c * kh + ky) * kw + kx`` of the folded map is channel ``c`` at tap ``(ky, kx)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from hw.spec.config import AcceleratorConfig
from sw.frontend.float_model import window_out, windows
from sw.ir import QuantizedNetwork

__all__ = ["Fold", "input_fold"]


@dataclass(frozen=True)
class Fold:
    """The window a folded input is read through: its lines are the windows of the original map."""

    channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]

    @property
    def attrs(self) -> dict:
        return {"kernel": self.kernel, "stride": self.stride, "padding": self.padding, "dilation": self.dilation}

    def shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, height, width) of the folded map of a ``height`` x ``width`` input."""
        layer = SimpleNamespace(name="input fold", op="conv", attrs=self.attrs)
        return (self.channels * self.kernel[0] * self.kernel[1], *window_out(layer, height, width))

    def apply(self, codes: np.ndarray, pad_code: int) -> np.ndarray:
        """(N, C, H, W) codes -> (N, C*kh*kw, Ho, Wo): every window, positions outside the map ``pad_code``."""
        layer = SimpleNamespace(name="input fold", op="conv", attrs=self.attrs)
        win = windows(np.asarray(codes), layer, pad_code)          # (N, C, kh, kw, Ho, Wo)
        n, c, kh, kw, ho, wo = win.shape
        return win.reshape(n, c * kh * kw, ho, wo)

    def to_dict(self) -> dict:
        return {"channels": self.channels, "kernel": list(self.kernel), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation)}

    @classmethod
    def from_dict(cls, d: dict) -> "Fold":
        return cls(int(d["channels"]), tuple(d["kernel"]), tuple(d["stride"]), tuple(d["padding"]),
                   tuple(d["dilation"]))


def _pair(value) -> tuple[int, int]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value), int(value))


def input_fold(net: QuantizedNetwork, config: AcceleratorConfig) -> Fold | None:
    """The fold of the network's input, if its only reader is an ungrouped convolution with a kernel larger than
    1x1 whose weight tiles folding makes fewer (few input channels: fewer than half the array's rows)."""
    if len(net.input_shape) != 3:
        return None
    readers = [layer for layer in net.layers if net.input in layer.inputs]
    if len(readers) != 1 or readers[0].op != "conv" or int(readers[0].attrs.get("groups", 1)) != 1:
        return None
    layer = readers[0]
    channels = net.input_shape[0]
    kh, kw = (int(k) for k in layer.weights[0].shape[2:])
    taps = kh * kw
    tiles_now = taps * -(-channels // config.reduction_rows)
    tiles_folded = -(-channels * taps // config.reduction_rows)
    if taps == 1 or 2 * channels > config.reduction_rows or tiles_folded >= tiles_now:
        return None
    a = layer.attrs
    return Fold(channels, (kh, kw), _pair(a.get("stride", 1)), tuple(int(v) for v in a.get("padding", (0,) * 4)),
                _pair(a.get("dilation", 1)))
