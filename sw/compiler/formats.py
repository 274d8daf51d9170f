"""Which format of a multi-format engine each layer selects (COMPUTE.weight_format/act_format, SETPP.format).

A network is quantized for the engine's first format (``config.formats[0]``, its ``weights``/``acts``); layers
the quantizer gave a narrower integer format (``layer_formats``) carry codes of the engine format whose values
all lie in the narrower one. On an engine whose set holds that narrower format, such a layer runs *in* it:

- weights: the narrowest integer format of the set that holds every weight value of the layer;
- a tensor a weighted layer (conv, linear) writes, and only weighted layers read (through flatten views too):
  the narrowest integer format of the set holding its clamp range. The layer's SETPP selects it as output format (the clamps re-encoded in it),
  and the COMPUTEs that read the tensor select it as activation format.

Nothing needs re-encoding in memory: a value's code in a narrower integer format is the low bits of its code in
a wider one (both are the value modulo 2**bits), and a narrower code sits in the low bits of its slot. Every other
tensor (the network's input and output, what pools, adds, concats or the host read or write) and every layer of
a minifloat network keep index 0.

A *mixed-format* network (``net.formats``: the quantizer gave each layer its own format, integer or minifloat)
names its formats itself: every tensor is stored and read in its own format, every weighted layer's weights in
theirs, identity tiles (pools, add, concat, pad) in the network's weight format; nothing is inferred from values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import IntFormat, get_format
from sw.ir import QuantizedNetwork, QuantLayer
from sw.ops import OPERATORS

__all__ = ["LayerFormats", "select_formats"]


@dataclass
class LayerFormats:
    """Indices into the engine's format set: per weighted layer its weights', per stored tensor its format."""

    weights: dict[str, int] = field(default_factory=dict)
    tensors: dict[str, int] = field(default_factory=dict)
    #: The network declares its formats (a mixed-format network): every layer selects them, codes are as stored.
    declared: bool = False

    def compute_fields(self, layer: QuantLayer) -> dict:
        """The COMPUTE fields of ``layer`` (empty where both are the engine's first format)."""
        fields = {"weight_format": self.weights.get(layer.name, 0),
                  "act_format": self.tensors.get(layer.inputs[0], 0)}
        return {k: v for k, v in fields.items() if v}

    def output(self, tensor: str) -> int:
        return self.tensors.get(tensor, 0)


def _narrowest(formats: tuple, lo: float, hi: float) -> int:
    """Index of the narrowest integer format of ``formats`` whose range holds ``lo..hi`` (0 if none is
    narrower than the first)."""
    best = 0
    for i, fmt in enumerate(formats):
        if isinstance(fmt, IntFormat) and fmt.min <= lo and hi <= fmt.max and fmt.bits < formats[best].bits:
            best = i
    return best


def select_formats(net: QuantizedNetwork, config: AcceleratorConfig, fused: dict) -> LayerFormats:
    """The formats of every layer of ``net`` on ``config`` (empty for a single-format engine or a minifloat
    network). ``fused``: max pools fused into the weighted layer before them (layer name -> pool layer)."""
    out = LayerFormats()
    if net.formats:
        return _declared(net, config)
    engine_acts, engine_weights = get_format(net.act_format), get_format(net.weight_format)
    if not config.multi_format or not isinstance(engine_acts, IntFormat) \
            or not isinstance(engine_weights, IntFormat):
        return out
    consumers: dict[str, list[QuantLayer]] = {}
    for layer in net.layers:
        for name in layer.inputs:
            consumers.setdefault(name, []).append(layer)
    for layer in net.layers:
        if not OPERATORS[layer.op].weighted:
            continue
        values = np.concatenate([engine_weights.decode(np.asarray(w)).ravel() for w in layer.weights])
        out.weights[layer.name] = _narrowest(config.weight_formats, float(values.min()), float(values.max()))
        stored = fused[layer.name].output if layer.name in fused else layer.output
        names, readers = _readers(stored, consumers)
        if layer.table is not None or net.output in names or not readers \
                or not all(OPERATORS[r.op].weighted for r in readers):
            continue
        lo, hi = (float(engine_acts.decode(np.array([c]))[0]) for c in (layer.clamp_lo, layer.clamp_hi))
        for name in names:
            out.tensors[name] = _narrowest(config.act_formats, lo, hi)
    return out


def _declared(net: QuantizedNetwork, config: AcceleratorConfig) -> LayerFormats:
    """A mixed-format network's own formats as indices of the engine's set (the compiler checked membership)."""
    names = [f.name for f in config.act_formats]
    identity = names.index(get_format(net.weight_format).name)
    weights = {layer.name: names.index(net.weight_format_of(layer).name) if OPERATORS[layer.op].weighted
               else identity for layer in net.layers}
    return LayerFormats(weights, {t: names.index(net.act_format_of(t).name) for t in net.tensors}, declared=True)


def _readers(tensor: str, consumers: dict) -> tuple[list[str], list[QuantLayer]]:
    """The names of ``tensor`` (itself and flatten views of it, which share its memory) and the layers that read
    any of them, flatten views aside."""
    names, readers = [tensor], []
    for layer in consumers.get(tensor, []):
        if layer.op == "flatten":
            more, theirs = _readers(layer.output, consumers)
            names += more
            readers += theirs
        else:
            readers.append(layer)
    return names, readers
