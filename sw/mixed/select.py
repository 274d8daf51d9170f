"""Mixed precision end to end: measure sensitivities and costs, solve for a budget, build and measure the choice.

:func:`prepare` does the expensive part once per network and menu (a quantization and golden run per unit and
format, a compile and timed emulator run per format); :func:`choose` then solves any number of budgets;
:func:`build` quantizes and compiles the chosen network for today's single engine (the menu's container format),
and :func:`measure` sets the predicted figures beside the counted ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hw.spec.config import AcceleratorConfig
from sw.compiler.network import CompiledNetwork
from sw.ir import FloatNetwork

from .costs import COSTS, CostTable, check_available, cost_table, cycles_per_layer, engine_config, weight_bits_per_layer
from .errors import MixedError
from .ilp import solve
from .menu import Choice, default, emulates
from .sensitivity import Sensitivity, measure_sensitivity, output_noise
from .units import Unit, decision_units, layer_formats, neighbourhoods, tensor_units

__all__ = ["COSTS_ON", "MixedPlan", "parse_budget", "declared_formats", "prepare", "choose", "build", "measure"]

#: Where a layer's costs in a format are counted: ``per-format``, on an engine of that format (the user's geometry;
#: what a multi-format engine that packs narrow formats would take), or ``engine``, on the engine that runs the mix
#: (every layer in that format, emulated there: what today's engine takes, so counted and predicted agree).
COSTS_ON = ("per-format", "engine")


@dataclass
class MixedPlan:
    """What a choice needs: the network, the menu, its units, their sensitivities and cost tables."""
    net: FloatNetwork
    config: AcceleratorConfig          # the engine that runs the mixed network today (the container formats)
    menu: list[Choice]
    units: list[Unit]
    sensitivity: Sensitivity
    costs: dict[str, CostTable]
    uniform: list[CompiledNetwork]     # each menu entry's uniform program (see COSTS_ON)
    samples: np.ndarray
    method: str
    per_channel: bool
    costs_on: str = "per-format"
    #: The multi-format build's set when the network declares each layer's own format (see
    #: :func:`declared_formats`); empty when narrower formats are emulated in the engine's.
    declared: tuple[str, ...] = ()
    #: On a build that packs int4 per layer (``costs_on="engine"``): each entry's uniform program packed (``uniform``
    #: then holds it unpacked), None where nothing packs, and per entry the units each unit's packing depends on.
    packed: list[CompiledNetwork | None] = field(default_factory=list)
    together: list[list[tuple[int, ...]] | None] = field(default_factory=list)

    def cost_table(self, metric: str) -> CostTable:
        return cost_table(metric, self.uniform, tensor_units(self.net, self.units, bool(self.declared)),
                          len(self.units), self.packed, self.together)

    @property
    def engine(self) -> tuple[str, str]:
        """The (weights, acts) pair of layers outside the choice: the engine's, or the menu's default."""
        if self.declared:
            d = default(self.menu)
            return d.weights, d.acts
        return self.config.weights.name, self.config.acts.name


def declared_formats(menu: list[Choice], config: AcceleratorConfig) -> tuple[str, ...]:
    """The format set a mixed network declares on ``config``: its ``formats`` when it is a multi-format build whose
    first format cannot emulate every entry (integer with minifloat layers, or a narrow first format), else none
    (the network is quantized for the first format, narrower ones emulated in it, as before)."""
    if not config.multi_format:
        return ()
    if all(emulates(c, config.weights, config.acts) is None for c in menu):
        return ()
    return tuple(config.formats)


def parse_budget(text: str) -> tuple[str, float]:
    """``"cycles=4000"`` -> ("cycles", 4000.0); one-line MixedError otherwise."""
    metric, sep, value = str(text).partition("=")
    metric = metric.strip()
    if not sep or metric not in COSTS:
        raise MixedError(f"--budget {text!r}: write METRIC=VALUE with METRIC one of {', '.join(COSTS)} "
                         "(e.g. cycles=4000)")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (number > 0 and math.isfinite(number)):
        raise MixedError(f"--budget {text!r}: the value must be a positive number")
    check_available(metric)
    return metric, number


def _compile(net: FloatNetwork, config: AcceleratorConfig, samples, method: str, per_channel: bool,
             formats: dict | None = None, engine: tuple[str, str] | None = None,
             declared: tuple[str, ...] = (), pack: bool = True) -> CompiledNetwork:
    """Quantize (for ``engine``'s pair, default the config's; ``declared``: each layer in its own format of that
    set) and compile (``pack``: int4 tensors two codes a slot where the build packs)."""
    from sw.compiler.network import compile_network
    from sw.quantize import quantize_network
    weights, acts = engine or (config.weights.name, config.acts.name)
    qnet = quantize_network(net, act_format=acts, weight_format=weights,
                            acc_bits=config.acc_bits, samples=samples, method=method, per_channel=per_channel,
                            layer_formats=formats, formats=declared or None)
    return compile_network(qnet, config, pack=pack)


def prepare(net: FloatNetwork, menu: list[Choice], config: AcceleratorConfig, samples: np.ndarray, *,
            metrics: tuple[str, ...] = ("cycles", "weight-bits"), budget: tuple[str, float] | None = None,
            method: str = "mmse", per_channel: bool = True, costs_on: str = "per-format",
            progress: Callable[[str], None] = print) -> MixedPlan:
    """Cost tables of the ``metrics`` and sensitivities of every unit in every entry of ``menu``; ``config`` is
    the engine that runs the mix (its formats must hold every entry's: see :func:`sw.mixed.menu.container`). A
    ``budget`` (metric, value) is checked for feasibility before the sensitivities are measured; ``costs_on``: one
    of :data:`COSTS_ON`."""
    if costs_on not in COSTS_ON:
        raise MixedError(f"costs_on must be one of {', '.join(COSTS_ON)}, not {costs_on!r}")
    samples = np.asarray(samples, np.float64)
    declared = declared_formats(menu, config)
    units = decision_units(net, bool(declared))
    if not units:
        raise MixedError("the network has no layer whose format can be chosen (no conv, linear, add or pool)")
    engine = (default(menu).weights, default(menu).acts) if declared else (config.weights.name, config.acts.name)
    progress(f"Mixed precision: {len(units)} units x {len(menu)} formats; costs from each format's program"
             + (f"; each layer in its own format of {','.join(declared)}" if declared else ""))
    uniform, packed = [], []
    packs = costs_on == "engine" and bool(declared) and config.packs_per_layer
    for k, choice in enumerate(menu, 1):
        if costs_on == "engine":
            every = layer_formats(units, dict.fromkeys(range(len(units)), choice), engine)
            uniform.append(_compile(net, config, samples, method, per_channel, every, engine, declared, not packs))
            if packs:
                program = _compile(net, config, samples, method, per_channel, every, engine, declared)
                packed.append(program if program.program.dram != uniform[-1].program.dram else None)
        else:
            uniform.append(_compile(net, engine_config(config, choice), samples, method, per_channel))
        progress(f"  costs {k}/{len(menu)}: compiled every layer in {choice.name} ({costs_on}"
                 + (", packed and not" if packs else "") + ")")
    together = [None if p is None else
                neighbourhoods(net, units, bool(declared), {t for t, at in p.placements.items() if at.packed})
                for p in packed]
    where = tensor_units(net, units, bool(declared))
    costs = {m: cost_table(m, uniform, where, len(units), packed, together) for m in metrics}
    if budget is not None:
        solve(np.zeros((len(units), len(menu))), costs[budget[0]], budget[1])      # infeasible: one-line error
    progress(f"  sensitivities on {len(samples)} calibration samples")
    sens = measure_sensitivity(net, units, menu, engine, config.acc_bits, samples, method=method,
                               per_channel=per_channel, progress=progress, declared=declared)
    return MixedPlan(net, config, menu, units, sens, costs, uniform, samples, method, per_channel, costs_on,
                     declared, packed, together)


def choose(plan: MixedPlan, metric: str, budget: float) -> list[int]:
    """Menu index per unit for the least predicted output error within ``budget`` of ``metric``."""
    if metric not in plan.costs:
        plan.costs[metric] = plan.cost_table(metric)
    return solve(plan.sensitivity.loss, plan.costs[metric], budget)


def build(plan: MixedPlan, picks: list[int]) -> CompiledNetwork:
    """The chosen mix quantized and compiled for today's engine (the plan's container formats)."""
    formats = layer_formats(plan.units, {u: plan.menu[k] for u, k in enumerate(picks)}, plan.engine)
    return _compile(plan.net, plan.config, plan.samples, plan.method, plan.per_channel, formats, plan.engine,
                    plan.declared)


def measure(plan: MixedPlan, picks: list[int], compiled: CompiledNetwork, inputs: np.ndarray | None = None,
            labels: np.ndarray | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Predicted figures of ``picks`` next to the figures counted on ``compiled`` (its build)."""
    from sw.frontend.float_model import run_float
    from sw.runtime import run_codes

    predicted = {m: t.total(picks) for m, t in plan.costs.items()}
    reference = np.asarray(run_float(plan.net, plan.samples), np.float64)
    noise = output_noise(plan.net, compiled.network, plan.samples, reference)
    measured = {"weight-bits": sum(weight_bits_per_layer(compiled).values()),
                "cycles_on_this_engine": sum(cycles_per_layer(compiled).values()),
                "output_sqnr_db": _db(plan.sensitivity.signal, noise)}
    if "energy-uj" in plan.costs:       # like cycles, the energy of the container engine that runs the mix today
        measured["energy_uj_on_this_engine"] = sum(COSTS["energy-uj"](compiled).values())
    if plan.costs_on == "engine":       # the costs were counted on this engine: the same figures, measured
        measured["cycles"] = measured["cycles_on_this_engine"]
        if "energy_uj_on_this_engine" in measured:
            measured["energy-uj"] = measured["energy_uj_on_this_engine"]
    if inputs is not None:
        net = compiled.network
        codes = net.tensors[net.input].quantize(inputs)
        emulated = run_codes(compiled, codes, "emulator", progress=None if progress is None else
                             lambda d, n: progress(f"  emulator: {d}/{n} images"))
        golden = run_codes(compiled, codes, "golden")
        measured["golden_emulator_mismatches"] = int((golden.codes != emulated.codes)
                                                     .reshape(len(codes), -1).any(axis=1).sum())
        if labels is not None:
            logits = net.tensors[net.output].dequantize(emulated.codes).reshape(len(codes), -1)
            measured["accuracy"] = float((logits.argmax(axis=1) == labels).mean())
            measured["images"] = len(codes)
    formats = getattr(plan.config, "formats", ())
    return {"engine": "+".join(formats) if formats else "/".join(plan.engine), "costs_on": plan.costs_on,
            "choice": {u.name: plan.menu[k].name for u, k in zip(plan.units, picks)},
            "units": [{"layers": list(u.layers), "format": plan.menu[k].name,
                       "loss": float(plan.sensitivity.loss[u_i, k]),
                       "sqnr_alone_db": plan.sensitivity.sqnr_alone_db(u_i, k),
                       **{m: t.unit_costs(picks)[u_i] for m, t in plan.costs.items()}}
                      for u_i, (u, k) in enumerate(zip(plan.units, picks))],
            "predicted": {**predicted, "output_sqnr_db": plan.sensitivity.predicted_sqnr_db(picks)},
            "measured": measured}


def _db(signal: float, noise: float) -> float:
    return math.inf if noise <= 0 else 10 * math.log10(signal / noise)
