"""Hardware costs per (unit, format), from this project's own cost model: counted, not estimated from bit counts.

A *layer cost* is a function of a compiled program: its cost per inference for each engine layer, keyed by the
tensor the layer writes. Three exist:

- ``cycles``: the emulator's timed run (the cycle model the RTL's counter is held to), split per engine layer by
  where each layer's instructions start (``first_instruction``; a layer's cycles run from the end of the layer
  before to the end of its last instruction, so they sum to the run's total);
- ``weight-bits``: the weight codes the program carries, each counted at the width of the format its layer was
  quantized in (checked: every value must lie in that format), i.e. the weight memory a packed store needs;
- ``energy-uj``: a hook (:func:`set_energy_model`) for an energy model; without one, ``sw.energy``'s (issue 13 item
  4: counted events times its default table) where this build has it, else a one-line error.

The table for a menu: each entry's *uniform* program (every layer in that format, on an engine of that format with
the user's geometry) is compiled and costed, and a unit in format ``f`` is charged the costs of its layers in the
``f`` program: the additive proxy that a layer costs what it costs on an engine of its own format. Layers outside
every unit (none in the networks so far) cost the most any program charges them, as a fixed part.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from sw.compiler.network import CompiledNetwork

from .errors import MixedError
from .menu import Choice

__all__ = ["LayerCost", "COSTS", "CostTable", "Packing", "check_available", "cycles_per_layer", "weight_bits_per_layer",
           "energy_per_layer", "set_energy_model", "sw_energy_model", "engine_config", "cost_table"]

#: A compiled program -> its cost per inference per engine layer, keyed by the tensor the layer writes.
LayerCost = Callable[[CompiledNetwork], dict[str, float]]

_energy_model: LayerCost | None = None


def set_energy_model(model: LayerCost | None) -> None:
    """Plug in the energy model (µJ per inference per engine layer) that ``energy-uj`` budgets use."""
    global _energy_model
    _energy_model = model


def cycles_per_layer(compiled: CompiledNetwork) -> dict[str, float]:
    """Emulator cycles per engine layer for one inference (the cycle model does not depend on the data)."""
    from sw.runtime import run_codes
    net = compiled.network
    codes = np.zeros((1, *net.input_shape), dtype=np.int64)
    run = run_codes(compiled, codes, "emulator", cycles=True)
    costs: dict[str, float] = {}
    for entry, cycles in zip(compiled.layers, run.layer_cycles[0]):
        costs[entry["output"]] = costs.get(entry["output"], 0.0) + float(cycles)
    return costs


def weight_bits_per_layer(compiled: CompiledNetwork) -> dict[str, float]:
    """Weight bits per layer: its codes counted at its own format's width, after checking they are its values."""
    net = compiled.network
    chosen = {r["name"]: r["weight_format"] for r in (net.report or []) if r.get("weight_format")}
    costs: dict[str, float] = {}
    for layer in net.layers:
        if not layer.weights:
            continue
        fmt = get_format(chosen.get(layer.name, net.weight_format))
        engine = net.weight_format_of(layer)          # the codes' format (a layer's own in a mixed network)
        for codes in layer.weights:
            values = engine.decode(codes)
            if not np.array_equal(fmt.decode(fmt.quantize(values + 0.0)), values):
                raise MixedError(f"layer {layer.name!r}: its weight codes are not all {fmt.name} values")
            costs[layer.output] = costs.get(layer.output, 0.0) + float(codes.size * fmt.bits)
    return costs


def sw_energy_model(table=None) -> LayerCost | None:
    """The energy model of ``sw.energy`` (issue 13 item 4: counted events times a per-event table, its default one
    unless ``table``, an ``EnergyTable``, is given) as a layer cost, where this build has that package; else None."""
    try:
        from sw.energy import energy_report, load_table, network_layers, program_events
    except ImportError:
        return None
    table = load_table(None) if table is None else table

    def model(compiled: CompiledNetwork) -> dict[str, float]:
        report = energy_report(compiled.config, program_events(compiled), table, layers=network_layers(compiled))
        outputs = {e["name"]: e["output"] for e in compiled.layers}
        costs: dict[str, float] = {}
        for layer in report["layers"]:
            costs[outputs[layer["name"]]] = costs.get(outputs[layer["name"]], 0.0) + float(layer["energy_uj"])
        return costs
    return model


def _energy() -> LayerCost | None:
    return _energy_model if _energy_model is not None else sw_energy_model()


def check_available(metric: str) -> None:
    """Refuse a metric whose cost model is missing (energy-uj without an energy model)."""
    if metric == "energy-uj" and _energy() is None:
        raise MixedError("--budget energy-uj= needs an energy model, and this build has none yet (issue 13 item 4 "
                         "adds it); budget cycles= or weight-bits= instead")


def energy_per_layer(compiled: CompiledNetwork) -> dict[str, float]:
    """Energy per engine layer (µJ per inference): the plugged-in model, else ``sw.energy``'s where it exists."""
    check_available("energy-uj")
    return _energy()(compiled)


#: Budget metric (as the command line spells it) -> its layer cost.
COSTS: dict[str, LayerCost] = {"cycles": cycles_per_layer, "weight-bits": weight_bits_per_layer,
                               "energy-uj": energy_per_layer}


def engine_config(config: AcceleratorConfig, choice: Choice) -> AcceleratorConfig:
    """The user's engine geometry with ``choice``'s formats (accumulators sized for them)."""
    # a multi-format build (a ``formats`` set, where the configuration has one) becomes a single-format one
    single = {"formats": ()} if "formats" in {f.name for f in dataclasses.fields(config)} else {}
    return dataclasses.replace(config, weight_format=choice.weights, act_format=choice.acts, acc_bits=None,
                               **single)


@dataclass(frozen=True)
class Packing:
    """What unit ``unit`` in menu entry ``entry`` costs more (or less: ``change`` < 0) when its tensors are packed,
    which they are when every unit of ``together`` takes ``entry`` too (:func:`sw.mixed.units.neighbourhoods`)."""
    unit: int
    entry: int
    together: tuple[int, ...]
    change: float


@dataclass
class CostTable:
    """Cost of each unit in each menu format (unpacked), a fixed part, each uniform program's counted total, and
    the changes packing brings where a multi-format build packs."""
    metric: str
    table: np.ndarray          # (units, menu)
    fixed: float
    uniform: list[float]       # the cost function's total on each menu entry's uniform program
    packing: list[Packing] = dataclasses.field(default_factory=list)

    def unit_costs(self, picks: list[int]) -> list[float]:
        """Each unit's cost in the mix ``picks``: its table entry, changed where its tensors are packed."""
        costs = [float(self.table[u, k]) for u, k in enumerate(picks)]
        for p in self.packing:
            if all(picks[m] == p.entry for m in p.together):
                costs[p.unit] += p.change
        return costs

    def total(self, picks: list[int]) -> float:
        return self.fixed + sum(self.unit_costs(picks))

    def smallest(self) -> float:
        """A lower bound of every mix's total (exact without packing): each unit at its cheapest, packed or not."""
        cheapest = self.table.copy()
        for p in self.packing:
            cheapest[p.unit, p.entry] += min(p.change, 0.0)
        return self.fixed + float(cheapest.min(axis=1).sum())


def cost_table(metric: str, programs: list[CompiledNetwork], tensor_unit: dict[str, int], units: int,
               packed: list[CompiledNetwork | None] | None = None,
               together: list[list[tuple[int, ...]] | None] | None = None) -> CostTable:
    """The ``metric``'s table from the uniform program of each menu entry (``programs[k]`` for entry ``k``).

    ``packed[k]``: entry ``k``'s uniform program with its int4 tensors packed (``programs[k]`` then the same program
    unpacked), None where nothing packs; a unit's difference between the two holds when the units ``together[k][u]``
    share its entry (:class:`Packing`)."""
    if metric not in COSTS:
        raise MixedError(f"--budget {metric}=: unknown budget; use {', '.join(m + '=' for m in COSTS)}")
    table = np.zeros((units, len(programs)))
    fixed, uniform = 0.0, []
    for k, program in enumerate(programs):
        outside = 0.0
        costs = COSTS[metric](program)
        for tensor, cost in costs.items():
            if tensor in tensor_unit:
                table[tensor_unit[tensor], k] += cost
            else:
                outside += cost
        fixed = max(fixed, outside)
        uniform.append(float(sum(costs.values())))
    packing = []
    for k, program in enumerate(packed or []):
        if program is None:
            continue
        other = cost_table(metric, [program], tensor_unit, units)
        uniform[k], fixed = other.uniform[0], max(fixed, other.fixed)
        packing += [Packing(u, k, together[k][u], float(other.table[u, 0] - table[u, k])) for u in range(units)
                    if other.table[u, 0] != table[u, k]]
    return CostTable(metric, table, fixed, uniform, packing)
