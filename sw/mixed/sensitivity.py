"""Per-unit sensitivity: how much each unit adds to the network's output error in each menu format, measured.

Measured, not estimated from a Hessian or Fisher proxy: for every (unit, format) the network is quantized with that
unit alone in the format and every other unit in the engine's formats, run bit-exactly by the golden model on the
calibration samples (all of them in one vectorised batch), and compared with the float model at the *network
output*. The network output, not the unit's own output, because that is where errors matter: it weighs a layer's
error by how much the layers after it amplify or wash it out, which the layer's own SQNR cannot see.

The additive proxy: quantization errors of different layers are nearly independent, so their powers add at the
output. A unit's loss in a format is the output error power it adds over the all-engine-format baseline,
``max(N(unit, f) - N0, 0)`` (a negative difference is sampling noise: a narrower format cannot lower the expected
error); the predicted output error of a choice is ``N0 + sum of the losses``, its predicted output SQNR
``10 log10(P / that)``. Error powers add; SQNRs in dB do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sw.ir import FloatNetwork

from .menu import Choice
from .units import Unit, layer_formats

__all__ = ["Sensitivity", "measure_sensitivity", "output_noise"]


@dataclass
class Sensitivity:
    """Output signal power, baseline error power, and each unit's added error power per menu entry."""
    signal: float
    baseline: float
    loss: np.ndarray          # (units, menu): added output error power, >= 0
    noise: np.ndarray         # (units, menu): measured output error power with that unit alone in that format

    def sqnr_alone_db(self, unit: int, k: int) -> float:
        """Output SQNR measured with only ``unit`` in menu entry ``k``."""
        noise = float(self.noise[unit, k])
        return math.inf if noise <= 0 else 10 * math.log10(self.signal / noise)

    def predicted_sqnr_db(self, picks: list[int]) -> float:
        """Output SQNR the additive proxy predicts for menu index ``picks[u]`` per unit."""
        total = self.baseline + sum(self.loss[u, k] for u, k in enumerate(picks))
        return math.inf if total <= 0 else 10 * math.log10(self.signal / total)


def output_noise(net: FloatNetwork, qnet, x: np.ndarray, reference: np.ndarray) -> float:
    """Mean squared error of ``qnet``'s output (golden model, dequantized) against the float output."""
    from sw.golden.network import run_network
    codes = run_network(qnet, qnet.tensors[qnet.input].quantize(x))
    got = qnet.tensors[qnet.output].dequantize(codes)
    return float(np.mean((np.asarray(got, np.float64) - reference) ** 2))


def measure_sensitivity(net: FloatNetwork, units: list[Unit], menu: list[Choice], engine: tuple[str, str],
                        acc_bits: int, samples: np.ndarray, *, method: str = "mmse", per_channel: bool = True,
                        progress: Callable[[str], None] = print, declared: tuple[str, ...] = ()) -> Sensitivity:
    """Quantize each unit alone in each menu format (the rest in the engine's ``(weights, acts)``) and measure
    the network's output error on ``samples``; the engine's own pair is the baseline and costs nothing extra.
    ``declared``: the network declares each layer's format from this set (a unit is then quantized *in* its
    format, integer or minifloat), instead of emulating narrower ones in the engine's."""
    from sw.frontend.float_model import run_float
    from sw.quantize import quantize_network

    x = np.asarray(samples, np.float64)
    reference = np.asarray(run_float(net, x), np.float64)

    def noise(choices: dict[int, Choice]) -> float:
        qnet = quantize_network(net, act_format=engine[1], weight_format=engine[0], acc_bits=acc_bits,
                                samples=x, method=method, per_channel=per_channel,
                                layer_formats=layer_formats(units, choices, engine), formats=declared or None)
        return output_noise(net, qnet, x, reference)

    baseline = noise({})
    table = np.full((len(units), len(menu)), baseline)
    todo = [(u, k) for u in range(len(units)) for k, c in enumerate(menu) if (c.weights, c.acts) != engine]
    for done, (u, k) in enumerate(todo, 1):
        table[u, k] = noise({u: menu[k]})
        progress(f"  sensitivity {done}/{len(todo)}: {units[u].name} in {menu[k].name}: output SQNR "
                 f"{_db(float(np.mean(reference ** 2)), table[u, k])} dB")
    return Sensitivity(float(np.mean(reference ** 2)), baseline, np.maximum(table - baseline, 0.0), table)


def _db(signal: float, noise: float) -> str:
    return "inf" if noise <= 0 else f"{10 * math.log10(signal / noise):.1f}"
