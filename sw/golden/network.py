"""Run a whole :class:`sw.ir.QuantizedNetwork` on codes, layer by layer, with the golden layers.

This is the reference every compiled program and every RTL run is compared with: codes in, codes out, no
float anywhere between :func:`quantize_input` and :func:`dequantize_output`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from hw.spec.formats import get_format
from sw.ir import QuantizedNetwork

from .layers import LayerError, run_layer

__all__ = ["NetworkError", "check_network", "run_network", "quantize_input", "dequantize_output"]


#: The batch goes through the network in slices whose largest tensor holds about this many values (its exact
#: accumulators are int64, and the rescale makes a few temporaries of that size).
_SLICE_ELEMENTS = 1 << 22


class NetworkError(LayerError):
    """A network or an input the golden model cannot run (wrong shape, dtype, format or structure)."""


def check_network(net: QuantizedNetwork) -> None:
    """Refuse structures the layer semantics do not cover, before any work: unknown ops, tensors used before
    they are made, and tensors whose format is not the engine's activation format."""
    from sw.ops import OPERATORS
    _check_formats(net)
    known = {net.input}
    for layer in net.layers:
        if layer.op not in OPERATORS:
            raise NetworkError(f"Layer {layer.name!r} has unknown op {layer.op!r}; the IR has "
                               f"{', '.join(OPERATORS)}")
        for i in layer.inputs:
            if i not in known:
                raise NetworkError(f"Layer {layer.name!r} reads tensor {i!r} before any layer makes it; list "
                                   f"the layers in topological order")
        for name in (*layer.inputs, layer.output):
            if name not in net.tensors or name not in net.shapes:
                raise NetworkError(f"Tensor {name!r} of layer {layer.name!r} has no encoding or shape in the "
                                   f"network (net.tensors, net.shapes)")
        known.add(layer.output)
    if net.output not in known:
        raise NetworkError(f"No layer makes the network output {net.output!r}")


def _check_formats(net: QuantizedNetwork) -> None:
    """One act format for every tensor, or (a mixed-format network) formats of its set for tensors and weights."""
    if not net.formats:
        for name, t in net.tensors.items():
            if get_format(t.format) != get_format(net.act_format):
                raise NetworkError(f"Tensor {name!r} is encoded in {t.format}, but the engine has one activation "
                                   f"format, {net.act_format}; quantize every tensor in {net.act_format}")
        return
    allowed = {get_format(f).name for f in net.formats}
    for name, t in net.tensors.items():
        if get_format(t.format).name not in allowed:
            raise NetworkError(f"Tensor {name!r} is encoded in {t.format}, outside the network's formats "
                               f"{', '.join(net.formats)}; quantize it in one of them")
    from sw.ops import OPERATORS
    for layer in net.layers:
        if layer.weights and net.weight_format_of(layer).name not in allowed:
            raise NetworkError(f"Layer {layer.name!r} has {net.weight_format_of(layer).name} weights, outside the "
                               f"network's formats {', '.join(net.formats)}")
        tied = {"inputs": layer.inputs, "all": [*layer.inputs, layer.output],
                "through": [layer.inputs[0], layer.output]}.get(OPERATORS[layer.op].ties, []) \
            if layer.op in OPERATORS else []
        found = {t: net.act_format_of(t).name for t in tied if t in net.tensors}
        if len(set(found.values())) > 1:
            raise NetworkError(f"Layer {layer.name!r} ({layer.op}) joins tensors in different formats "
                               f"({', '.join(f'{t}: {f}' for t, f in found.items())}); they share one encoding: "
                               "quantize them in one format (the quantizer ties them)")


def _check_batch(net: QuantizedNetwork, x, what: str, float_ok: bool) -> np.ndarray:
    x = np.asarray(x)
    expected = ("N", *net.input_shape)
    if x.ndim != len(expected) or tuple(x.shape[1:]) != tuple(net.input_shape):
        raise NetworkError(f"{what} must be shaped {expected} (batch first), not {x.shape}")
    if not float_ok and x.dtype.kind not in "iu":
        raise NetworkError(f"{what} must be integer codes of {net.tensors[net.input].format}, not {x.dtype} "
                           f"values; convert floats with quantize_input(net, x)")
    return x


def run_network(net: QuantizedNetwork, codes, *, keep: bool = False) -> dict[str, np.ndarray] | np.ndarray:
    """Codes of the network's output (N, *output_shape) for input codes (N, *input_shape); with ``keep``,
    a dict of the codes of every tensor (the input included)."""
    check_network(net)
    x = _check_batch(net, codes, "Input codes", float_ok=False)
    fmt = get_format(net.tensors[net.input].format)
    if x.size and (x.min() < 0 or x.max() >= 1 << fmt.bits):
        raise NetworkError(f"Input codes must lie in 0..{(1 << fmt.bits) - 1} ({fmt.name}), not "
                           f"{x.min()}..{x.max()}")
    x = x.astype(np.uint8 if fmt.bits <= 8 else np.uint16)
    largest = max(int(np.prod(shape)) for shape in net.shapes.values())
    step = max(1, _SLICE_ELEMENTS // max(largest, 1))
    parts = [x[at:at + step] for at in range(0, len(x), step)] or [x]
    # numpy's products, sorts and copies release the GIL: slices of the batch on every core at once
    if len(parts) == 1:
        slices = [_run_slice(net, x, keep)]
    else:
        with ThreadPoolExecutor(min(len(parts), os.cpu_count() or 1)) as pool:
            slices = list(pool.map(lambda part: _run_slice(net, part, keep), parts))
    values = slices[0] if len(slices) == 1 else {name: np.concatenate([s[name] for s in slices])
                                                 for name in slices[0]}
    return values if keep else values[net.output]


def _run_slice(net: QuantizedNetwork, x: np.ndarray, keep: bool) -> dict[str, np.ndarray]:
    """Every tensor (``keep``) or the output of the network on a slice of the batch; tensors no later layer
    reads are dropped as it goes."""
    values = {net.input: x}
    last_read = {name: i for i, layer in enumerate(net.layers) for name in layer.inputs}
    for i, layer in enumerate(net.layers):
        out = run_layer(layer, [values[name] for name in layer.inputs], net)
        if out.shape[1:] != tuple(net.shapes[layer.output]):
            raise NetworkError(f"Layer {layer.name!r} ({layer.op}) makes {layer.output!r} shaped "
                               f"{out.shape[1:]}, but the network says {tuple(net.shapes[layer.output])}")
        values[layer.output] = out
        if not keep:
            for name in layer.inputs:
                if last_read[name] == i and name != net.output:
                    values.pop(name, None)
    return values if keep else {net.output: values[net.output]}


def quantize_input(net: QuantizedNetwork, x) -> np.ndarray:
    """Codes of float inputs (N, *input_shape) in the input tensor's encoding."""
    x = _check_batch(net, x, "Input", float_ok=True)
    return net.tensors[net.input].quantize(x)


def dequantize_output(net: QuantizedNetwork, codes) -> np.ndarray:
    """Float32 values of output codes (N, *output_shape) in the output tensor's encoding."""
    codes = np.asarray(codes)
    if codes.ndim != len(net.output_shape) + 1 or tuple(codes.shape[1:]) != tuple(net.output_shape):
        raise NetworkError(f"Output codes must be shaped {('N', *net.output_shape)}, not {codes.shape}")
    return net.tensors[net.output].dequantize(codes).astype(np.float32)
