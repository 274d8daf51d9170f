"""Quantize a :class:`sw.ir.FloatNetwork` into a :class:`sw.ir.QuantizedNetwork`: encodings and layer integers.

Every activation tensor gets one encoding ``real = scale * (value(code) - zero_point)`` in the engine's act
format; every weighted layer gets weight codes in the engine's weight format with one real scale per output
channel; every accumulating layer gets the integers of the post-processing unit (bias, multiplier, shift,
zero point, clamps) that make its output codes approximate the float layer (see the module docstring of
:mod:`sw.ir`). With ``s_x, z_x`` the input encoding, ``s_w`` the channel's weight scale and ``s_y, z_y`` the
output encoding, the post-processing formula ``v = (acc + B) * M * 2**(e - S)``, ``q = rne(v) + z_y`` gives:

- conv / linear: ``M * 2**-S ~ s_x * s_w / s_y`` and ``B = rne(bias / (s_x * s_w * 2**e)) - z_x * sum(w) / 2**e``
  (the sum over every tap of the channel and every tensor of a multi-tensor sum);
- avgpool / global_avgpool: ``M * 2**-S ~ s_x / (n * s_y)``, ``B = -n * z_x / 2**e`` (``n`` the window size);
- add: ``M * 2**-S ~ s_x / s_y``, ``B = -(number of inputs) * z_x / 2**e`` (inputs share one encoding);
- concat: ``M * 2**-S = 1``, ``B = -z / 2**e``: output codes equal input codes;
- a PRelu with one slope per channel fused into any of them (or a LeakyRelu on an activation format without a
  lookup table): ``M_neg * 2**-S_neg ~ slope_c * M * 2**-S`` for the outputs whose ``acc + B`` is negative
  (``QuantLayer.multiplier_neg``, ``shift_neg``); the output encoding is calibrated after the activation.
- mul: ``M * 2**-S ~ s_x * s_g / s_y * 2**e``, ``B = 0`` (the accumulators hold ``(x - z_x) * (g - z_g)`` in units
  of ``2**(2e)``; see ``sw/ops/mul.py``).

Tied encodings (each operator's ``ties``): the inputs of ``add`` and the inputs and output of ``concat`` share one
encoding, and ``maxpool`` and ``flatten`` keep their input's; such tensors are calibrated together (on the union
of their values).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from hw.spec.formats import Format, FormatError, IntFormat, Minifloat, get_format
from sw.ir import (FloatLayer, FloatNetwork, QuantizedNetwork, QuantLayer,
                   QuantTensor, TensorQuant, WeightQuant, acc_exponent, set_acc_exponent)

from sw.ops import OPERATORS

from .calibrate import METHODS, Grid, calibrate_activation, mse, sqnr_db
from .data_free import DataFree
from .errors import QuantizationError
from .weights import QuantizedWeight, quantize_weight_auto

__all__ = ["DEFAULT_MULTI_TENSOR_SQNR_DB", "REPORT_SAMPLES", "quantize_network", "first_last_layers",
           "multiplier_shift"]

#: Layers whose single-tensor weight SQNR is below this get a multi-tensor sum (``multi_tensor=True``).
#: 28 dB sits between the weights of formats with at most 2 mantissa bits or 5 integer bits (int4 about
#: 15..22 dB, minifloat6 and fp8_e5m2 about 25..27 dB) and int8 / fp8_e4m3 weights (about 31 dB and up, almost
#: independent of the distribution for minifloats): the former get a second tensor, the latter are left alone.
DEFAULT_MULTI_TENSOR_SQNR_DB = 28.0
#: The report measures output errors on at most this many calibration samples.
REPORT_SAMPLES = 64
#: Range of the multiplier and the shift of the post-processing unit.
M_MIN, M_MAX = 1 << 30, 1 << 31
S_MAX = 255


def first_last_layers(net: FloatNetwork) -> list[str]:
    """Names of the first and the last weighted layer (one name if there is one such layer), in that order."""
    weighted = [layer.name for layer in net.layers if OPERATORS[layer.op].weighted]
    return list(dict.fromkeys(weighted[:1] + weighted[-1:]))


def multiplier_shift(ratio: float, layer: str = "") -> tuple[int, int]:
    """``(M, S)`` with ``M`` in ``[2**30, 2**31)`` and ``S`` in ``0..255`` such that ``M * 2**-S ~ ratio``."""
    if not (ratio > 0 and math.isfinite(ratio)):
        raise QuantizationError(f"Layer {layer!r}: rescale ratio {ratio!r} must be positive and finite "
                                "(a zero or non-finite scale reached it)")
    m, ex = math.frexp(ratio)            # ratio = m * 2**ex, 0.5 <= m < 1
    mult = round(m * M_MAX)
    if mult == M_MAX:
        mult, ex = M_MIN, ex + 1
    shift = 31 - ex
    if not 0 <= shift <= S_MAX:
        raise QuantizationError(
            f"Layer {layer!r}: rescale ratio {ratio:.3g} needs shift {shift}, outside 0..{S_MAX} of the "
            "post-processing unit; the scales of its input, weights and output are too far apart (check the "
            "calibration samples, or choose other formats)")
    return mult, shift


# --- options -------------------------------------------------------------------------------------------------

def _format(name, what: str) -> Format:
    try:
        return get_format(name)
    except FormatError as e:
        raise QuantizationError(f"{what}: {e}") from None


def representable(sub: Format, engine: Format) -> bool:
    """Every finite value of ``sub`` is a value of ``engine`` (decode / quantize round trip)."""
    values = sub.decode(sub.codes)
    values = values[np.isfinite(values)]
    if isinstance(engine, IntFormat) and (values.min() < engine.min or values.max() > engine.max):
        return False
    return bool(np.array_equal(engine.decode(engine.quantize(values)), values))


def _overrides(net: FloatNetwork, layer_formats, act: Format, weight: Format, formats: tuple[Format, ...] = ()
               ) -> dict[str, tuple[Grid | None, Grid | None]]:
    """Per layer name: the weight grid and the output act grid its override asks for (None: the engine's). With
    ``formats`` (a mixed-format network) an override is the layer's own format, which must be one of them;
    without, a narrower format emulated in the engine's."""
    if formats:
        return _own_formats(net, layer_formats, formats)
    out = {}
    names = {layer.name: layer for layer in net.layers}
    for name, pair in (layer_formats or {}).items():
        if name not in names:
            raise QuantizationError(f"layer_formats names layer {name!r}, which the network does not have; its "
                                    f"layers are {', '.join(names)}")
        try:
            w_name, a_name = pair
        except (TypeError, ValueError):
            raise QuantizationError(f"layer_formats[{name!r}] must be a pair (weight format, act format), not "
                                    f"{pair!r}") from None
        w_grid = a_grid = None
        if w_name is not None and OPERATORS[names[name].op].weighted:
            w_fmt = _format(w_name, f"layer_formats[{name!r}] weight format")
            if not representable(w_fmt, weight):
                raise QuantizationError(
                    f"layer_formats[{name!r}]: weight format {w_fmt.name} has values the engine's weight format "
                    f"{weight.name} cannot represent; an override must be narrower than the engine format "
                    f"(e.g. int4 weights on an int8 engine)")
            w_grid = Grid.of(w_fmt)
        if a_name is not None:
            a_fmt = _format(a_name, f"layer_formats[{name!r}] act format")
            if a_fmt != act:
                if isinstance(a_fmt, Minifloat) or isinstance(act, Minifloat):
                    raise QuantizationError(
                        f"layer_formats[{name!r}]: act format {a_fmt.name} on a {act.name} engine is not possible: "
                        "the post-processing unit rounds to the engine's act format, so only a narrower integer "
                        "format on an integer engine can be emulated (by clamps); use the engine's act format")
                if not representable(a_fmt, act):
                    raise QuantizationError(
                        f"layer_formats[{name!r}]: act format {a_fmt.name} has values the engine's act format "
                        f"{act.name} cannot represent; use a narrower integer format (e.g. int4 on int8)")
                a_grid = Grid(act, a_fmt.min, a_fmt.max, a_fmt.name)
        out[name] = (w_grid, a_grid)
    return out


def _own_formats(net: FloatNetwork, layer_formats, formats: tuple[Format, ...]
                 ) -> dict[str, tuple[Grid | None, Grid | None]]:
    """``_overrides`` of a mixed-format network: each named format is the layer's own (one of ``formats``)."""
    names = {layer.name: layer for layer in net.layers}
    allowed = ", ".join(f.name for f in formats)
    out = {}
    for name, pair in (layer_formats or {}).items():
        if name not in names:
            raise QuantizationError(f"layer_formats names layer {name!r}, which the network does not have")
        grids = []
        for which, fmt_name in zip(("weight", "act"), pair):
            fmt = None if fmt_name is None else _format(fmt_name, f"layer_formats[{name!r}] {which} format")
            if fmt is not None and fmt not in formats:
                raise QuantizationError(f"layer_formats[{name!r}]: {which} format {fmt.name} is not one of the "
                                        f"network's formats ({allowed}); add it to formats")
            grids.append(None if fmt is None or (which == "weight" and not OPERATORS[names[name].op].weighted)
                         else Grid.of(fmt))
        out[name] = tuple(grids)
    return out


def _check_mixed(net: FloatNetwork, formats: tuple[Format, ...], act: Format, weight: Format) -> None:
    """A mixed-format network: defaults among its formats, signed weights, and no prescribed encodings."""
    for what, fmt in (("act_format", act), ("weight_format", weight)):
        if fmt not in formats:
            raise QuantizationError(f"{what} {fmt.name} must be one of formats ({', '.join(f.name for f in formats)})")
    if net.tensor_quant or net.weight_quant:
        raise QuantizationError("A mixed-format network is calibrated here, but this model carries its own "
                                "encodings (QDQ/QONNX); quantize it without formats")


# --- tied encodings ------------------------------------------------------------------------------------------

def _tie_groups(net: FloatNetwork) -> dict[str, str]:
    """Each tensor's group root: tensors that must share one encoding have the same root."""
    parent = {net.input: net.input}
    for layer in net.layers:
        parent.setdefault(layer.output, layer.output)
        for t in layer.inputs:
            parent.setdefault(t, t)

    def find(t: str) -> str:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    for layer in net.layers:
        ties = OPERATORS[layer.op].ties
        tied = {"inputs": layer.inputs, "all": [*layer.inputs, layer.output],
                "through": [layer.inputs[0], layer.output], "": []}[ties]
        for t in tied[1:]:
            union(tied[0], t)
    return {t: find(t) for t in parent}


def _group_grids(net: FloatNetwork, roots: dict[str, str], overrides, act: Format,
                 mixed: tuple[Format, ...] = ()) -> dict[str, Grid]:
    """Per group root: the grid its codes stay on (the engine's act format, or a layer's narrower override).

    In a mixed-format network (``mixed``, its format set) the layers writing one group may ask for different
    formats (the branches of a residual block, the inputs of a concat): the group is stored in the widest of them
    (most bits, the set's first of equals; layers without an override ask for ``act``), and every producer's
    requantizing store writes that format, so the add/concat still reads one encoding."""
    if mixed:
        return _widest_grids(net, roots, overrides, act, mixed)
    grids, source = {}, {}
    for layer in net.layers:
        grid = overrides.get(layer.name, (None, None))[1]
        if grid is None:
            continue
        root = roots[layer.output]
        if root in grids and grids[root] != grid:
            raise QuantizationError(
                f"Layers {source[root]!r} and {layer.name!r} ask for different act formats ({grids[root].name}, "
                f"{grid.name}), but their outputs share one encoding (inputs of add/concat; maxpool/flatten keep "
                "their input's); give them the same")
        grids[root], source[root] = grid, layer.name
    default = Grid.of(act)
    return {r: grids.get(r, default) for r in set(roots.values())}


def _widest_grids(net: FloatNetwork, roots: dict[str, str], overrides, act: Format, mixed: tuple[Format, ...]
                  ) -> dict[str, Grid]:
    """:func:`_group_grids` of a mixed-format network: per group root, the widest format its writers ask for."""
    asked: dict[str, list[Format]] = {}
    for layer in net.layers:
        grid = overrides.get(layer.name, (None, None))[1]
        if grid is None and OPERATORS[layer.op].ties in ("through", "all"):
            continue                # moves its input's codes (maxpool, flatten) or joins them (concat): no ask
        asked.setdefault(roots[layer.output], []).append(act if grid is None else grid.format)
    order = {f: i for i, f in enumerate(mixed)}
    return {r: Grid.of(min(asked.get(r, [act]), key=lambda f: (-f.bits, order.get(f, len(order)))))
            for r in set(roots.values())}


# --- encodings -----------------------------------------------------------------------------------------------

def _prescribed(name: str, tq: TensorQuant, act: Format) -> tuple[QuantTensor, Grid]:
    """A QDQ/QONNX model's encoding of a tensor, expressed in the engine's act format (exactly)."""
    p = _format(tq.format, f"tensor_quant[{name!r}]")
    scale, zp = float(tq.scale), int(tq.zero_point)
    if not (scale > 0 and math.isfinite(scale)):
        raise QuantizationError(f"The model gives tensor {name!r} scale {tq.scale!r}; a scale must be positive")
    if p == act:
        if isinstance(act, Minifloat) and zp != 0:
            raise QuantizationError(f"The model gives minifloat tensor {name!r} zero point {zp}; minifloat "
                                    "encodings are symmetric (zero point 0)")
        return QuantTensor(act.name, scale, zp), Grid.of(act)
    if isinstance(p, IntFormat) and isinstance(act, IntFormat):
        # The same numbers shifted by a constant: uint8 codes u with zero point z are int8 codes u-128 with
        # zero point z-128; a narrower format keeps its values and becomes clamps.
        if p.min >= act.min and p.max <= act.max:
            offset = 0
        elif p.max - p.min <= act.max - act.min:
            offset = int(act.min - p.min)
        else:
            offset = None
        if offset is not None:
            return (QuantTensor(act.name, scale, zp + offset),
                    Grid(act, p.min + offset, p.max + offset, p.name))
    raise QuantizationError(
        f"The model quantizes tensor {name!r} as {p.name}, which the engine's act format {act.name} cannot hold; "
        f"build the engine with act format {p.name} (--acts or --pe), or quantize the float model with "
        "calibration samples")


def _encodings(net: FloatNetwork, roots: dict[str, str], grids: dict[str, Grid], act: Format,
               floats: dict[str, np.ndarray] | None, method: str, percentile: float
               ) -> tuple[dict[str, QuantTensor], dict[str, Grid]]:
    members: dict[str, list[str]] = {}
    for t, r in roots.items():
        members.setdefault(r, []).append(t)
    encodings, tensor_grids, missing = {}, {}, []
    for root, ts in members.items():
        grid = grids[root]
        given = [(t, _prescribed(t, net.tensor_quant[t], act)) for t in ts if t in net.tensor_quant]
        if given:
            if grid != Grid.of(act):
                raise QuantizationError(f"layer_formats asks for act format {grid.name} on tensor {root!r}, "
                                        "whose encoding the model prescribes; drop the override")
            options = {(q.scale, q.zero_point, g.lo, g.hi): (q, g) for _, (q, g) in given}
            if len(options) > 1:
                warnings.warn(f"The model gives tensors {', '.join(t for t, _ in given)} different encodings, "
                              "but they must share one (inputs of add/concat, maxpool/flatten); using the widest",
                              stacklevel=3)
            enc, grid = max(options.values(), key=lambda qg: qg[0].scale * (qg[1].hi - qg[1].lo))
        elif floats is None:
            missing.extend(ts)
            continue
        else:
            x = np.concatenate([np.asarray(floats[t], np.float64).ravel() for t in ts])
            scale, zp = calibrate_activation(x, grid, method, percentile)
            enc = QuantTensor(grid.format.name, scale, zp)     # the engine's format, or a mixed network's own
        for t in ts:
            encodings[t], tensor_grids[t] = enc, grid
    if missing:
        raise QuantizationError(f"The model prescribes no encoding for tensors {', '.join(missing)}: give "
                                "calibration samples (--calibrate SAMPLES.npy) to calibrate them")
    return encodings, tensor_grids


# --- layers --------------------------------------------------------------------------------------------------

def _codes(fmt: Format, values: np.ndarray, layer: str) -> np.ndarray:
    codes = fmt.quantize(np.asarray(values, np.float64) + 0.0)      # + 0.0: never the code of -0
    if not np.array_equal(fmt.decode(codes), values):
        raise QuantizationError(f"Layer {layer!r}: weight values are not all representable in {fmt.name}")
    return codes


def _layer_weights(layer: FloatLayer, net: FloatNetwork, weight: Format, grid: Grid, method: str,
                   per_channel: bool, multi_tensor: bool, min_sqnr_db: float, max_tensors: int
                   ) -> tuple[QuantizedWeight, Grid]:
    if layer.weight is None:
        raise QuantizationError(f"Layer {layer.name!r} ({layer.op}) has no weight")
    cout = layer.weight.shape[0]
    wq: WeightQuant | None = net.weight_quant.get(layer.name)
    if wq is None:
        return quantize_weight_auto(layer.weight, grid, method, per_channel, multi_tensor, min_sqnr_db,
                                    max_tensors), grid
    p = _format(wq.format, f"weight_quant[{layer.name!r}]")
    if int(wq.zero_point) != 0:
        raise QuantizationError(f"The model quantizes the weights of layer {layer.name!r} with zero point "
                                f"{wq.zero_point}; the engine's weights are symmetric (zero point 0)")
    if not representable(p, weight):
        raise QuantizationError(
            f"The model quantizes the weights of layer {layer.name!r} as {p.name}, which the engine's weight "
            f"format {weight.name} cannot hold; build the engine with weight format {p.name} (--weights or --pe)")
    codes = np.asarray(wq.codes)
    if codes.shape != layer.weight.shape:
        raise QuantizationError(f"Layer {layer.name!r}: the model's weight codes are shaped {codes.shape}, the "
                                f"weight {layer.weight.shape}")
    values = p.decode(codes) + 0.0
    if not np.isfinite(values).all():
        raise QuantizationError(f"Layer {layer.name!r}: the model's weight codes include NaN or Inf")
    scale = np.broadcast_to(np.asarray(wq.scale, np.float64).ravel() if np.ndim(wq.scale) else
                            np.asarray(wq.scale, np.float64), (cout,)).astype(np.float64)
    if not (scale > 0).all() or not np.isfinite(scale).all():
        raise QuantizationError(f"Layer {layer.name!r}: the model's weight scales must be positive and finite")
    return QuantizedWeight([values], scale), Grid.of(p)


def _clamps(enc: QuantTensor, grid: Grid, clip: tuple[float, float] | None) -> tuple[int, int]:
    """Codes of the smallest and largest output value: the grid's range, narrowed by the layer's clip."""
    fmt = get_format(enc.format)
    lo, hi = grid.lo, grid.hi
    if clip is not None:
        c_lo, c_hi = (float(c) for c in clip)
        if c_lo > c_hi:
            raise QuantizationError(f"Clip ({c_lo}, {c_hi}) is empty")
        if c_lo > -math.inf:
            lo = max(lo, float(grid.round(np.array(c_lo / enc.scale + enc.zero_point))))
        if c_hi < math.inf:
            hi = min(hi, float(grid.round(np.array(c_hi / enc.scale + enc.zero_point))))
    return int(fmt.quantize(lo + 0.0)), int(fmt.quantize(hi + 0.0))


def _zero_units(z: int, count: int, e: int, layer: str) -> int:
    """``count * z / 2**e`` (zero points of ``count`` inputs in accumulator units), exactly."""
    if z == 0:
        return 0
    if e > 0 and (count * z) % (1 << e):
        raise QuantizationError(f"Layer {layer!r}: the input zero point {z} is no whole number of accumulator "
                                f"units 2**{e}")
    return count * z << -e if e <= 0 else count * z >> e


def _acc_check(bias: list[int], acc_bits: int, layer: str) -> np.ndarray:
    """The bias as int64, refusing values the accumulator cannot hold (the engine would saturate them)."""
    limit = 1 << (acc_bits - 1)
    big = [int(b) for b in bias if not -limit <= int(b) < limit]
    if big:
        raise QuantizationError(f"Layer {layer!r}: bias {big[0]} does not fit the {acc_bits}-bit accumulator; "
                                "its weight scales are tiny next to its bias (check the model, or raise acc_bits)")
    return np.array([int(b) for b in bias], dtype=np.int64)


def _pre_activations(net: FloatNetwork, floats, grids: dict[str, Grid], method: str, percentile: float
                     ) -> dict[str, QuantTensor]:
    """Per output of a layer with a fused activation: the encoding of its values before the activation (what
    its rescale produces and its lookup table reads), calibrated on the float model's pre-activation values."""
    from sw.frontend.float_model import pre_activation
    pre = {}
    for layer in net.layers:
        if layer.activation is None or _on_negative_side(layer, grids[layer.output].format):
            continue
        if floats is None:
            raise QuantizationError(f"Layer {layer.name!r} ends with a {layer.activation['op']}, whose input "
                                    "range needs calibration samples (--calibrate SAMPLES.npy)")
        values = np.asarray(floats[pre_activation(layer.output)], np.float64).ravel()
        fmt = grids[layer.output].format         # the output's format: the table maps codes of one format
        scale, zp = calibrate_activation(values, Grid.of(fmt), method, percentile)
        pre[layer.output] = QuantTensor(fmt.name, scale, zp)
    return pre


def _activation(q: QuantLayer, layer: FloatLayer, pre: QuantTensor, out_enc: QuantTensor, out_grid: Grid) -> None:
    """A fused activation: the rescale goes to the pre-activation encoding, the table from it to the output's."""
    from sw.golden.activation import activation_table
    from sw.ops import ACTIVATIONS
    op = ACTIVATIONS[layer.activation["op"]]
    fmt = get_format(out_enc.format)
    q.zero_point = pre.zero_point
    q.clamp_lo, q.clamp_hi = _clamps(pre, Grid.of(fmt), layer.clip)
    lo, hi = int(fmt.quantize(out_grid.lo + 0.0)), int(fmt.quantize(out_grid.hi + 0.0))
    q.table = activation_table(lambda x: op.function(x, layer.activation), pre, out_enc, lo, hi)
    q.attrs.update(activation=op.name, pre_scale=float(pre.scale), pre_zero_point=int(pre.zero_point))


def _quant_layer(layer: FloatLayer, net: FloatNetwork, shapes, enc: dict[str, QuantTensor],
                 grids: dict[str, Grid], e: int, weight: Format, acc_bits: int,
                 qw: QuantizedWeight | None, pre: QuantTensor | None = None) -> QuantLayer:
    """``e``: the accumulators' exponent; ``weight``: the format of the layer's weight codes."""
    out_enc, out_grid = enc[layer.output], grids[layer.output]
    in_enc = enc[layer.inputs[0]]
    q = QuantLayer(layer.name, layer.op, list(layer.inputs), layer.output, dict(layer.attrs),
                   zero_point=out_enc.zero_point)
    q.clamp_lo, q.clamp_hi = _clamps(out_enc, out_grid, layer.clip)
    if pre is not None:
        _activation(q, layer, pre, out_enc, out_grid)
    if not OPERATORS[layer.op].accumulating:
        if layer.clip is not None:
            raise QuantizationError(f"Layer {layer.name!r} ({layer.op}) has a clip, but only accumulating layers "
                                    f"({', '.join(n for n, o in OPERATORS.items() if o.accumulating)}) can clamp; apply the "
                                    f"activation before it")
        return q
    s_x, z_x, s_y = in_enc.scale, in_enc.zero_point, (out_enc if pre is None else pre).scale
    channels = shapes[layer.output][0]
    if OPERATORS[layer.op].weighted:
        q.weights = [_codes(weight, v, layer.name) for v in qw.values]
        q.weight_scale = qw.scale.copy()
        fixed = 0
        for codes in q.weights:
            sig, shift, _ = weight.exact(codes)
            fixed = fixed + (sig.astype(object) << shift.astype(object)).reshape(channels, -1).sum(axis=1)
        corr = np.array([_zero_units(z_x, int(f), e - weight.lsb_exponent, layer.name) if z_x else 0
                         for f in np.broadcast_to(fixed, (channels,))], dtype=object)
        bias = np.zeros(channels) if layer.bias is None else np.asarray(layer.bias, np.float64)
        bias_units = np.rint(bias / (s_x * qw.scale) * 2.0 ** -e)
        if not np.isfinite(bias_units).all():
            raise QuantizationError(f"Layer {layer.name!r}: bias not finite in accumulator units")
        q.bias = _acc_check([int(b) - int(c) for b, c in zip(bias_units, corr)], acc_bits, layer.name)
        ratios = s_x * qw.scale / s_y
    elif (rule := OPERATORS[layer.op].rescale(layer, [enc[t] for t in layer.inputs], s_y, e, channels)) is not None:
        bias, ratios = rule          # inputs with encodings of their own (mul)
        q.bias = _acc_check(bias, acc_bits, layer.name)
    else:
        if any(enc[t] != in_enc for t in layer.inputs):
            raise QuantizationError(f"Layer {layer.name!r} ({layer.op}): its inputs must share one encoding")
        # The sum's divisor (an average's window, padding included) and the input zero points it sums.
        n, zeros = OPERATORS[layer.op].window(layer, [shapes[t] for t in layer.inputs])
        q.bias = _acc_check([-_zero_units(z_x, zeros, e, layer.name)] * channels, acc_bits, layer.name)
        ratios = np.full(channels, s_x / (n * s_y))
        if OPERATORS[layer.op].ties == "all" and (out_enc != in_enc or pre is not None):
            raise QuantizationError(f"Layer {layer.name!r} ({layer.op}): output and inputs must share one "
                                    f"encoding")
    ms = [multiplier_shift(float(r), layer.name) for r in ratios]
    q.multiplier = np.array([m for m, _ in ms], dtype=np.int64)
    q.shift = np.array([s for _, s in ms], dtype=np.int64)
    if _on_negative_side(layer, get_format(out_enc.format)):
        _negative_side(q, layer, ratios, channels)
    return q


def _on_negative_side(layer: FloatLayer, act: Format) -> bool:
    """Whether the layer's activation runs in the requantization's negative side instead of a table: a PRelu with a
    slope per channel always, a LeakyRelu (one slope) where the activation format has no table (above
    ``LUT_MAX_BITS`` bits)."""
    from hw.spec.config import LUT_MAX_BITS
    from sw.ops import ACTIVATIONS
    if layer.activation is None:
        return False
    op = layer.activation["op"]
    return ACTIVATIONS[op].requantized or (op == "leakyrelu" and act.bits > LUT_MAX_BITS)


def _negative_side(q: QuantLayer, layer: FloatLayer, ratios, channels: int) -> None:
    """A PRelu (or LeakyRelu) folded into the requantization: ``M_neg * 2**-S_neg ~ slope_c * ratio_c`` for the
    outputs whose ``acc + B`` is negative (``multiplier_shift`` of ``|slope_c| * ratio_c``, the multiplier negated
    for a negative slope; ``M_neg = 0`` for a zero slope)."""
    activation = layer.activation
    slope = np.asarray(activation["slope"] if "slope" in activation else [activation["alpha"]] * channels,
                       dtype=np.float64).ravel()
    if slope.size != channels or not np.isfinite(slope).all():
        raise QuantizationError(f"Layer {layer.name!r}: a PRelu needs one finite slope per output channel "
                                f"({channels}), not {slope.size} values")
    m_neg, s_neg = np.zeros(channels, dtype=np.int64), np.zeros(channels, dtype=np.int64)
    for c, (a, r) in enumerate(zip(slope, np.broadcast_to(ratios, (channels,)))):
        if a != 0:
            m, sh = multiplier_shift(abs(float(a)) * float(r), layer.name)
            m_neg[c], s_neg[c] = (m if a > 0 else -m), sh
    q.multiplier_neg, q.shift_neg = m_neg, s_neg
    q.attrs["activation"] = activation["op"]


# --- the network ---------------------------------------------------------------------------------------------

def _check_options(method: str, percentile: float, acc_bits, max_tensors, multi_tensor_sqnr_db) -> None:
    if method not in METHODS:
        raise QuantizationError(f"Unknown calibration method {method!r}: use one of {', '.join(METHODS)}")
    if not 50 < percentile <= 100:
        raise QuantizationError(f"percentile must lie in (50, 100], not {percentile!r} (e.g. 99.99)")
    if not isinstance(acc_bits, int) or isinstance(acc_bits, bool) or acc_bits < 2:
        raise QuantizationError(f"acc_bits must be an integer >= 2 (the engine's accumulator width), "
                                f"not {acc_bits!r}")
    if not isinstance(max_tensors, int) or isinstance(max_tensors, bool) or max_tensors < 1:
        raise QuantizationError(f"max_tensors must be a positive integer, not {max_tensors!r}")
    if not math.isfinite(float(multi_tensor_sqnr_db)):
        raise QuantizationError(f"multi_tensor_sqnr_db must be a finite number of dB, not {multi_tensor_sqnr_db!r}")


def _check_samples(net: FloatNetwork, samples) -> np.ndarray:
    x = np.asarray(samples)
    expected = tuple(net.input_shape)
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected or x.shape[0] == 0:
        raise QuantizationError(f"Calibration samples must be shaped (N, {', '.join(map(str, expected))}) with "
                                f"N >= 1, not {x.shape}")
    if x.dtype.kind not in "fiu":
        raise QuantizationError(f"Calibration samples must be numbers, not {x.dtype}")
    if not np.isfinite(x).all():
        raise QuantizationError("Calibration samples contain NaN or Inf")
    return x.astype(np.float64)


def quantize_network(net: FloatNetwork, *, act_format: str, weight_format: str, acc_bits: int,
                     samples: np.ndarray | None, method: str = "minmax", per_channel: bool = False,
                     multi_tensor: bool = False, layer_formats: dict[str, tuple[str, str]] | None = None,
                     percentile: float = 99.99, multi_tensor_sqnr_db: float = DEFAULT_MULTI_TENSOR_SQNR_DB,
                     max_tensors: int = 2, data_free: DataFree | None = None,
                     formats: list[str] | tuple[str, ...] | None = None) -> QuantizedNetwork:
    """Quantize ``net`` for an engine with these formats; the result carries a per-layer error report.

    ``samples`` (N, *input_shape): calibration inputs (None only for QDQ/QONNX models, whose prescribed
    encodings and weight codes are used as they are). ``method``: activation clipping, "minmax",
    "percentile" (both tails at ``percentile``) or "mmse" (least squared error); weights use the same method,
    "percentile" falling back to min-max. ``per_channel``: one weight scale per output channel.
    ``multi_tensor``: layers whose weight SQNR is below ``multi_tensor_sqnr_db`` get a sum of up to
    ``max_tensors`` weight tensors sharing one scale per channel. ``layer_formats``: layer name ->
    (weight format, output act format), narrower formats emulated on the engine's (either may be None).
    ``data_free``: no samples; activation ranges and a weight bias correction from the BatchNormalization
    statistics (:mod:`sw.quantize.data_free`); ``method`` then chooses the weights' clipping alone.
    ``formats``: a mixed-format network (:attr:`sw.ir.QuantizedNetwork.formats`, e.g. a multi-format build's set):
    ``layer_formats`` then gives layers their own formats of the set, each calibrated in its format (integer scale
    and zero point, minifloat scaling), ``act_format``/``weight_format`` being the others'; biases are in units of
    the set's finest product.
    """
    _check_options(method, percentile, acc_bits, max_tensors, multi_tensor_sqnr_db)
    act = _format(act_format, "act_format")
    weight = _format(weight_format, "weight_format")
    if isinstance(weight, IntFormat) and not weight.signed:
        raise QuantizationError(f"weight_format {weight.name}: weights are symmetric, so the weight format must "
                                "be signed (intN) or a minifloat")
    if samples is None and not net.tensor_quant and data_free is None:
        raise QuantizationError("This float model needs calibration samples (--calibrate SAMPLES.npy, an array "
                                "shaped (N, *input_shape)), or use a QDQ/QONNX model that carries its encodings")
    x = None if samples is None else _check_samples(net, samples)
    mixed = tuple(_format(f, "formats") for f in formats or ())
    if mixed:
        _check_mixed(net, mixed, act, weight)
    overrides = _overrides(net, layer_formats, act, weight, mixed)
    shapes = dict(net.shapes)
    floats = None
    if x is not None:
        from sw.frontend.float_model import infer_shapes, run_float
        shapes = {**infer_shapes(net), **shapes}
        floats = run_float(net, x, keep=True)
    stats = None
    if data_free is not None:
        stats, floats, shapes = _data_free_ranges(net, samples, data_free)
    roots = _tie_groups(net)
    enc, grids = _encodings(net, roots, _group_grids(net, roots, overrides, act, mixed), act, floats,
                            "minmax" if stats is not None else method, percentile)
    pre = _pre_activations(net, floats, grids, method, percentile)
    e = set_acc_exponent(f.name for f in mixed) if mixed else acc_exponent(act, weight)
    layers, weights, w_grids = [], {}, {}
    for layer in net.layers:
        if OPERATORS[layer.op].weighted:
            grid = overrides.get(layer.name, (None, None))[0] or Grid.of(weight)
            weights[layer.name], w_grids[layer.name] = _layer_weights(
                layer, net, weight, grid, method, per_channel, multi_tensor, multi_tensor_sqnr_db, max_tensors)
            if stats is not None and data_free.bias_correction:
                from .data_free import correct_bias, expected_input
                mean_in = expected_input(layer, stats)
                layer = layer if mean_in is None else correct_bias(layer, weights[layer.name], mean_in)
        own = w_grids[layer.name].format if mixed and layer.name in w_grids else weight
        layers.append(_quant_layer(layer, net, shapes, enc, grids, e, own, acc_bits,
                                   weights.get(layer.name), pre.get(layer.output)))
        if mixed and layer.name in w_grids:
            layers[-1].weight_format = own.name
    qnet = QuantizedNetwork(act.name, weight.name, acc_bits, net.input, net.output,
                            {t: tuple(shapes[t]) for t in enc}, enc, layers, formats=[f.name for f in mixed])
    qnet.report = _report(net, qnet, x, floats, weights, w_grids, grids)
    return qnet


def _data_free_ranges(net: FloatNetwork, samples, options: DataFree):
    """(channel models, each tensor's two range ends standing in for calibration values, shapes)."""
    from sw.frontend.float_model import infer_shapes

    from .data_free import activation_ranges, tensor_stats
    if samples is not None:
        raise QuantizationError("Data-free quantization takes no calibration samples: drop them or --data-free")
    if net.tensor_quant or net.weight_quant:
        raise QuantizationError("Data-free quantization needs a float model, but this one already carries "
                                "encodings (QDQ/QONNX): drop --data-free, the model brings its own scales")
    shapes = {**infer_shapes(net), **net.shapes}
    stats = tensor_stats(net, shapes, options)
    return stats, activation_ranges(net, stats, options), shapes


def _report(net: FloatNetwork, qnet: QuantizedNetwork, x: np.ndarray | None, floats, weights, w_grids,
            grids) -> list[dict]:
    """Per accumulating layer: weight and output errors (outputs: golden model against the float model)."""
    got = None
    if x is not None:
        from sw.golden.network import run_network
        n = min(len(x), REPORT_SAMPLES)
        got = run_network(qnet, qnet.tensors[qnet.input].quantize(x[:n]), keep=True)
    report = []
    for layer in net.layers:
        if not OPERATORS[layer.op].accumulating:
            continue
        entry = {"name": layer.name, "op": layer.op, "act_format": grids[layer.output].name,
                 "weight_format": None, "tensors": 0, "weight_sqnr_db": None, "weight_mse": None,
                 "out_sqnr_db": None, "out_mse": None}
        if layer.name in weights:
            qw = weights[layer.name]
            approx = qw.dequantize()
            entry.update(weight_format=w_grids[layer.name].name, tensors=len(qw.values),
                         weight_sqnr_db=sqnr_db(layer.weight, approx), weight_mse=mse(layer.weight, approx))
        if got is not None:
            ref = floats[layer.output][:len(got[layer.output])]
            approx = qnet.tensors[layer.output].dequantize(got[layer.output])
            entry.update(out_sqnr_db=sqnr_db(ref, approx), out_mse=mse(ref, approx))
        report.append(entry)
    return report
