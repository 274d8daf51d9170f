"""Random quantized networks that use every operator of the IR, for differential tests of the compiler.

The integers are random (finite codes, positive multipliers, shifts that keep outputs mostly in range), so the
networks mean nothing; what matters is that golden, emulator and RTL agree on every byte.
"""

from __future__ import annotations

import numpy as np

from hw.spec.formats import IntFormat, get_format
from sw.ir import QuantizedNetwork, QuantLayer, QuantTensor, acc_exponent

__all__ = ["random_network", "random_inputs"]


def _finite_codes(fmt) -> np.ndarray:
    codes = np.arange(1 << fmt.bits)
    return codes[np.isfinite(fmt.decode(codes))]


class _Builder:
    def __init__(self, rng, acts: str, weights: str, acc_bits: int):
        self.rng, self.acts, self.weights, self.acc_bits = rng, get_format(acts), get_format(weights), acc_bits
        self.e = acc_exponent(acts, weights)
        self.layers: list[QuantLayer] = []
        self.shapes: dict[str, tuple] = {}
        self.tensors: dict[str, QuantTensor] = {}
        self.a_codes, self.w_codes = _finite_codes(self.acts), _finite_codes(self.weights)
        self.a_rms = float(np.sqrt(np.mean(self.acts.decode(self.a_codes) ** 2)))
        self.w_rms = float(np.sqrt(np.mean(self.weights.decode(self.w_codes) ** 2)))

    def tensor(self, name: str, shape: tuple) -> str:
        zp = int(self.rng.integers(-3, 4)) if isinstance(self.acts, IntFormat) and self.acts.signed else 0
        if isinstance(self.acts, IntFormat) and not self.acts.signed:
            zp = int(self.rng.integers(0, 4))
        self.tensors[name] = QuantTensor(self.acts.name, 0.1, zp)
        self.shapes[name] = shape
        return name

    def requant(self, layer: QuantLayer, channels: int, terms: int, w_rms: float) -> None:
        """Multipliers and shifts that map a typical accumulator to about a quarter of the output range."""
        rng = self.rng
        typical = max(np.sqrt(terms) * self.a_rms * w_rms / 2.0 ** self.e, 1.0)
        target = max(abs(self.acts.max), 1.0) / 4
        m = rng.integers(1 << 30, 1 << 31, channels)
        s = np.clip(np.round(30 + self.e + np.log2(typical / target)).astype(np.int64) + rng.integers(-1, 2, channels),
                    0, 255)
        layer.multiplier, layer.shift = m, s
        layer.bias = rng.integers(-int(typical), int(typical) + 1, channels)
        out = self.tensors[layer.output]
        layer.zero_point = out.zero_point
        lo, hi = int(self.acts.quantize(self.acts.min)), int(self.acts.quantize(self.acts.max))
        if rng.random() < 0.5:                      # a ReLU-like clamp at the zero point
            lo = int(self.acts.quantize(out.zero_point)) if isinstance(self.acts, IntFormat) else 0
        layer.clamp_lo, layer.clamp_hi = lo, hi

    def table(self, output: str) -> None:
        """A random activation table (finite codes) on the layer writing ``output``, half of the time, where the
        activation format has one (at most 8 bits)."""
        layer = next(layer for layer in self.layers if layer.output == output)
        if self.acts.bits <= 8 and self.rng.random() < 0.5:
            layer.table = self.rng.choice(self.a_codes, 1 << self.acts.bits).astype(np.int64)
            layer.attrs["activation"] = "random"

    def weights_of(self, shape: tuple, tensors: int) -> list[np.ndarray]:
        return [self.rng.choice(self.w_codes, shape) for _ in range(tensors)]

    def add(self, op: str, inputs: list[str], output: str, shape: tuple, attrs=None, weights=(), terms=1,
            w_rms=None) -> str:
        self.tensor(output, shape)
        layer = QuantLayer(f"{op}{len(self.layers)}", op, inputs, output, dict(attrs or {}), list(weights))
        if op not in ("maxpool", "flatten"):
            self.requant(layer, shape[0], terms, self.w_rms if w_rms is None else w_rms)
        self.layers.append(layer)
        return output


def random_network(rng: np.random.Generator, acts: str, weights: str, acc_bits: int, *,
                   size: tuple = (3, 16, 18)) -> QuantizedNetwork:
    """conv (2 tensors) -> fused maxpool -> depthwise conv (stride 2, asymmetric padding) ; add ; concat ;
    standalone maxpool ; avgpool ; dilated conv ; global average pool ; flatten ; linear -> linear. The
    depthwise conv, the add, the dilated conv and the last linear layer have a random activation table each with
    probability 1/2."""
    b = _Builder(rng, acts, weights, acc_bits)
    c, h, w = size
    x = b.tensor("input", size)
    t = b.add("conv", [x], "c1", (6, h, w), dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1),
                                                  dilation=(1, 1), groups=1),
              b.weights_of((6, c, 3, 3), 2), terms=2 * c * 9)
    b.tensors["p1"] = b.tensors[t]
    p = b.add("maxpool", [t], "p1", (6, h // 2, w // 2), dict(kernel=(2, 2), stride=(2, 2), padding=(0, 0, 0, 0)))
    b.tensors[p] = b.tensors[t]
    hp, wp = h // 2, w // 2
    dw = b.add("conv", [p], "dw", (6, (hp + 1 + 1 - 3) // 2 + 1, (wp + 0 + 2 - 3) // 2 + 1),
               dict(kernel=(3, 3), stride=(2, 2), padding=(1, 0, 1, 2), dilation=(1, 1), groups=6),
               b.weights_of((6, 1, 3, 3), 1), terms=9)
    pw = b.add("conv", [p], "pw", b.shapes[dw], dict(kernel=(1, 1), stride=(2, 2), padding=(0, 0, 0, 0),
                                                      dilation=(1, 1), groups=1),
               b.weights_of((6, 6, 1, 1), 1), terms=6)
    s = b.add("add", [dw, pw], "sum", b.shapes[dw], terms=2, w_rms=1.0)
    cat = b.add("concat", [s, dw], "cat", (12, *b.shapes[dw][1:]), terms=1, w_rms=1.0)
    ch, hh, ww = b.shapes[cat]
    mh, mw = hh // 2, ww // 2
    m = b.add("maxpool", [cat], "mp", (12, mh, mw), dict(kernel=(2, 2), stride=(2, 2), padding=(0, 0, 0, 0)))
    b.tensors[m] = b.tensors[cat]
    a = b.add("avgpool", [m], "avg", (12, mh, mw), dict(kernel=(2, 2), stride=(1, 1), padding=(1, 1, 0, 0)),
              terms=4, w_rms=1.0)
    d = b.add("conv", [a], "dil", (8, mh, mw), dict(kernel=(3, 3), stride=(1, 1), padding=(2, 2, 2, 2),
                                                 dilation=(2, 2), groups=1),
              b.weights_of((8, 12, 3, 3), 1), terms=12 * 9)
    g = b.add("global_avgpool", [d], "gap", (8, 1, 1), terms=mh * mw, w_rms=1.0)
    f = b.add("flatten", [cat], "flat", (ch * hh * ww,))
    b.tensors[f] = b.tensors[cat]
    fc = b.add("linear", [f], "fc", (10,), weights=b.weights_of((10, ch * hh * ww), 2), terms=2 * ch * hh * ww)
    gf = b.add("flatten", [g], "gflat", (8,))
    b.tensors[gf] = b.tensors[g]
    out = b.add("linear", [gf], "out", (5,), weights=b.weights_of((5, 8), 1), terms=8)
    for name in (dw, s, d, out):                  # activation tables (the post-processing unit's lookup stage)
        b.table(name)
    del fc
    return QuantizedNetwork(b.acts.name, b.weights.name, acc_bits, x, out, b.shapes, b.tensors, b.layers)


def random_inputs(rng: np.random.Generator, net: QuantizedNetwork, n: int) -> np.ndarray:
    fmt = get_format(net.act_format)
    codes = _finite_codes(fmt)
    codes = codes[fmt.decode(codes) != 0] if not isinstance(fmt, IntFormat) else codes
    return rng.choice(codes, (n, *net.input_shape)).astype(np.uint8 if fmt.bits <= 8 else np.uint16)
