"""Decision units: the layers that must take one format together, and the layer formats a choice per unit gives.

Each accumulating layer (conv, linear, add, pools: the layers that write a new encoding) chooses its weight and
output-activation formats. Layers whose outputs share one encoding (the inputs of an ``add``, a ``concat``; the
quantizer's tie groups) must share the act format, so they form one unit and choose together; maxpool and flatten
keep their input's encoding and so follow the unit that wrote it.

In a network that declares each layer's format (a multi-format build's set, :func:`sw.mixed.select.declared_formats`)
every accumulating layer is a unit of its own: the branches of a residual block or the inputs of a concat may take
different formats, and the quantizer stores a tie group in the widest format its writers ask for (each producer's
requantizing store writes it; :func:`sw.quantize.network._group_grids`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sw.ir import FloatNetwork
from sw.ops import OPERATORS
# The quantizer's own tie groups (one home for which tensors share an encoding).
from sw.quantize.network import _tie_groups

from .menu import Choice

__all__ = ["Unit", "decision_units", "layer_formats", "neighbourhoods", "tensor_units"]


@dataclass(frozen=True)
class Unit:
    """Layers that take one format together; ``root`` names the encoding their outputs share."""
    root: str
    layers: tuple[str, ...]
    weighted: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.layers[0] if len(self.layers) == 1 else f"{self.layers[0]} (+{len(self.layers) - 1})"


def decision_units(net: FloatNetwork, declared: bool = False) -> list[Unit]:
    """The network's units in order of their first layer; ``declared``: one per accumulating layer (a network that
    declares each layer's format), else the layers of a tie group together."""
    roots = {t: t for t in _tie_groups(net)} if declared else _tie_groups(net)
    members: dict[str, list] = {}
    for layer in net.layers:
        if OPERATORS[layer.op].accumulating:
            members.setdefault(roots[layer.output], []).append(layer)
    return [Unit(root, tuple(la.name for la in ls), tuple(la.name for la in ls if OPERATORS[la.op].weighted))
            for root, ls in members.items()]


def tensor_units(net: FloatNetwork, units: list[Unit], declared: bool = False) -> dict[str, int]:
    """Tensor name -> index of the unit whose format it is written in (tensors of no unit are left out); with
    ``declared`` (units of one layer each) the unit of the layer that wrote it, through maxpool/flatten views."""
    index = {u.root: i for i, u in enumerate(units)}
    if not declared:
        return {t: index[r] for t, r in _tie_groups(net).items() if r in index}
    out = {}
    for layer in net.layers:
        if layer.output in index:
            out[layer.output] = index[layer.output]
        elif OPERATORS[layer.op].ties == "through" and layer.inputs[0] in out:
            out[layer.output] = out[layer.inputs[0]]
    return out


def layer_formats(units: list[Unit], choices: dict[int, Choice], engine: tuple[str, str]
                  ) -> dict[str, tuple[str | None, str | None]]:
    """``quantize_network``'s ``layer_formats`` for a format per unit index (None where the engine's own)."""
    out = {}
    for i, choice in choices.items():
        w = None if choice.weights == engine[0] else choice.weights
        a = None if choice.acts == engine[1] else choice.acts
        for name in units[i].layers:
            out[name] = (w if name in units[i].weighted else None, a)
    return out


def neighbourhoods(net: FloatNetwork, units: list[Unit], declared: bool = False,
                   packed: set[str] = frozenset()) -> list[tuple[int, ...]]:
    """Per unit, the units whose formats decide how its tensors are laid out in a program where the tensors
    ``packed`` are packed: itself, and the writer and readers of each tensor it reads or writes that is packed there
    (of every tensor it reads or writes when none is), through maxpool/flatten views.

    Why: a multi-format build packs an int4 tensor two codes a slot only when its writer and every reader are in
    packing formats, so a unit's packed cost holds only when all of these units share its format."""
    writer = tensor_units(net, units, declared)
    root: dict[str, str] = {}
    for layer in net.layers:
        if OPERATORS[layer.op].ties == "through":
            root[layer.output] = root.get(layer.inputs[0], layer.inputs[0])
    find = lambda t: root.get(t, t)  # noqa: E731
    of_layer = {name: i for i, u in enumerate(units) for name in u.layers}
    group: dict[str, set[int]] = {}
    touches: list[set[str]] = [set() for _ in units]
    for layer in net.layers:
        if layer.name in of_layer:
            u = of_layer[layer.name]
            for t in map(find, (*layer.inputs, layer.output)):
                group.setdefault(t, {writer[t]} if t in writer else set()).add(u)
                touches[u].add(t)
    packed_roots = {find(t) for t in packed}
    out = []
    for u, tensors in enumerate(touches):
        deciding = tensors & packed_roots or tensors
        out.append(tuple(sorted({u}.union(*(group[t] for t in deciding)))))
    return out
