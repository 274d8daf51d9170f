"""Random GEMM and convolution layers as engine programs, with every post-processing option drawn at random."""

from __future__ import annotations

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import IntFormat
from sw.compiler.kernels import Requant, conv2d_program, gemm_program

__all__ = ["random_requant", "random_layer_program"]


def random_requant(config: AcceleratorConfig, n: int, rng: np.random.Generator) -> Requant:
    """Bias, multiplier, shift per channel; zero point and clamp bounds (full range, ReLU, a random window)."""
    fmt = config.acts
    codes = np.arange(1 << fmt.bits)
    values = fmt.decode(codes)
    finite = codes[np.isfinite(values)]
    lo, hi = int(fmt.quantize(fmt.min)), int(fmt.quantize(fmt.max))
    mode = rng.integers(3)
    if mode == 1:                                   # ReLU (and ReLU6-like when the top is cut too)
        lo = int(fmt.quantize(0.0))
        if rng.random() < 0.5:
            hi = int(rng.choice(finite[values[finite] > 0]))
    elif mode == 2:                                 # any ordered window
        a, b = rng.choice(finite, 2)
        lo, hi = (int(a), int(b)) if fmt.decode([a])[0] <= fmt.decode([b])[0] else (int(b), int(a))
    zero_point = int(rng.integers(-20, 21)) if isinstance(fmt, IntFormat) else 0
    shift_lo = 0 if isinstance(fmt, IntFormat) else 0
    return Requant(rng.integers(-(1 << 12), 1 << 12, n), rng.integers(-(1 << 31), 1 << 31, n),
                   rng.integers(shift_lo, 48, n), zero_point, lo, hi)


def random_layer_program(config: AcceleratorConfig, rng: np.random.Generator, *, max_size: int = 12):
    """A small random GEMM or convolution (stride, padding, dilation, kernel size all random) that fits."""
    for _ in range(100):
        try:
            return _random_layer(config, rng, max_size)
        except ValueError:
            continue          # too big for this configuration's buffers: draw another
    raise ValueError(f"no random layer of size {max_size} fits {config}")


def _random_layer(config: AcceleratorConfig, rng: np.random.Generator, max_size: int):
    wf, af = config.weights, config.acts
    if rng.random() < 0.5:
        m, k, n = (int(rng.integers(1, max_size + 1)) for _ in range(3))
        a = rng.integers(0, 1 << af.bits, (m, k))
        w = rng.integers(0, 1 << wf.bits, (k, n))
        return gemm_program(config, a, w, random_requant(config, n, rng))
    kh = kw = int(rng.integers(1, 4))
    stride, dilation = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    span = dilation * (kh - 1) + 1
    padding = int(rng.integers(0, min(2, span - 1) + 1))
    h, wd = (int(rng.integers(max(span - 2 * padding, 1), span + 6)) for _ in range(2))
    cin, cout = int(rng.integers(1, max_size + 1)), int(rng.integers(1, max_size + 1))
    x = rng.integers(0, 1 << af.bits, (h, wd, cin))
    w = rng.integers(0, 1 << wf.bits, (kh, kw, cin, cout))
    pad_value = int(rng.integers(0, 1 << af.bits)) if rng.random() < 0.3 else 0
    return conv2d_program(config, x, w, random_requant(config, cout, rng), stride=stride, padding=padding,
                          dilation=dilation, pad_value=pad_value)
