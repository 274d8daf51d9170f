"""ONNX to the float network IR (:class:`sw.ir.FloatNetwork`).

Reads float models as common tools write them (opset 7 and newer), QDQ models as onnxruntime's
``quantize_static`` writes them, and QONNX models (``Quant``/``IntQuant``/``FloatQuant``). The import is a
rewrite of the ONNX graph into the IR's few operators, exact in float: BatchNormalization and bias Adds fold
into the Conv/Gemm/MatMul before them, Relu/Clip fuse into the layer before them as its ``clip``, no-ops
(Identity, Dropout, flatten-equivalent Reshape/Squeeze) disappear, and quantize/dequantize pairs are stripped
into ``tensor_quant``/``weight_quant`` records. Anything the IR cannot express exactly raises
:class:`FrontendError` naming the node, its operator and what is supported instead; nothing is approximated.

Conventions: IR tensor names are ONNX tensor names (a fused layer's output is named after the last node fused
into it; the network's output takes the graph output's name). Weights and biases are float64.
``WeightQuant.codes`` are codes of the named format (``get_format(fmt).decode(codes)`` gives the integer or
minifloat value), shaped and ordered as the IR weight; ``WeightQuant.scale`` has shape () or (Cout,).
``TensorQuant.zero_point`` is a value of the format (e.g. -128 for int8), as ONNX's zero points are.

This module rewrites the float operators; ``quant_nodes.py`` reads the quantization nodes, and
``onnx_common.py`` holds what both share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from sw.ir import ACCUMULATING_OPS, FloatLayer, FloatNetwork, TensorQuant, WeightQuant

from .float_model import FloatModelError, layer_output_shape
from .onnx_check import check_model
from .onnx_fold import fold_constants
from .onnx_common import (_FLOAT_TYPES, _MIN_OPSET, _SUPPORTED, QONNX_DOMAINS, SUPPORTED_OPS, FrontendError,
                          _attrs, _ConstQuant, _describe, _text)
from .quant_nodes import QuantNodes

__all__ = ["FrontendError", "SUPPORTED_OPS", "load_onnx"]



def load_onnx(model: str | Path | onnx.ModelProto) -> FloatNetwork:
    """The float network of an ONNX model (a path or a loaded ``ModelProto``)."""
    if isinstance(model, (str, Path)):
        try:
            model = onnx.load(str(model))
        except Exception as error:  # OSError, protobuf's DecodeError, ...
            if isinstance(error, FileNotFoundError):
                raise FrontendError(f"No ONNX file at {model}") from None
            raise FrontendError(f"Cannot read {model} as an ONNX model: {error}") from None
    if not isinstance(model, onnx.ModelProto):
        raise FrontendError(f"load_onnx takes a path or an onnx.ModelProto, not {type(model).__name__}")
    return _Importer(fold_constants(check_model(model))).run()


class _Importer(QuantNodes):
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        versions = {o.domain: o.version for o in model.opset_import}
        self.opset = versions.get("", versions.get("ai.onnx"))
        if self.opset is None:
            raise FrontendError("The model imports no default-domain opset; it is not a usual ONNX model")
        if self.opset < _MIN_OPSET:
            raise FrontendError(f"Opset {self.opset} is older than supported ({_MIN_OPSET} and newer); convert it "
                                f"with onnx.version_converter.convert_version(model, 13)")
        self.consts: dict[str, np.ndarray] = {}
        self.const_quant: dict[str, _ConstQuant] = {}
        self.alias: dict[str, str] = {}
        self.tensor_quant: dict[str, TensorQuant] = {}
        self.quantized: dict[str, tuple[str, TensorQuant, onnx.NodeProto]] = {}  # Q output -> (input, enc, node)
        self.layers: list[FloatLayer] = []
        self.producer: dict[str, FloatLayer] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.weight_quant: dict[str, WeightQuant] = {}
        self.layer_names: set[str] = set()
        self.quantized_dtype: dict[str, np.dtype] = {}

    # --- names -------------------------------------------------------------------------------------------
    def name(self, tensor: str) -> str:
        """The canonical (IR) name of an ONNX tensor after aliasing."""
        while tensor in self.alias:
            tensor = self.alias[tensor]
        return tensor

    def act(self, node: onnx.NodeProto, tensor: str) -> str:
        """An activation input of ``node``: its IR name, or an error if it is a constant or unknown."""
        t = self.name(tensor)
        if t in self.consts:
            raise FrontendError(f"{_describe(node)}: input {tensor!r} is a constant where the frontend needs an "
                                f"activation; constant subgraphs are not evaluated (fold them first, e.g. with "
                                f"onnxsim or onnxruntime's quant_pre_process)")
        if t not in self.shapes:
            raise FrontendError(f"{_describe(node)}: input {tensor!r} is written by no supported node before it")
        return t

    def const(self, node: onnx.NodeProto, index: int, what: str, required: bool = True) -> np.ndarray | None:
        if index >= len(node.input) or not node.input[index]:
            if required:
                raise FrontendError(f"{_describe(node)} has no {what} input")
            return None
        t = self.name(node.input[index])
        if t not in self.consts:
            raise FrontendError(f"{_describe(node)}: its {what} ({node.input[index]!r}) must be a constant "
                                f"(an initializer or a Constant node), not a computed tensor")
        return self.consts[t]

    def unique_layer_name(self, node: onnx.NodeProto) -> str:
        base = node.name or node.output[0]
        name, k = base, 1
        while name in self.layer_names:
            k += 1
            name = f"{base}_{k}"
        self.layer_names.add(name)
        return name

    # --- the whole graph ---------------------------------------------------------------------------------
    def run(self) -> FloatNetwork:
        g = self.graph
        for init in g.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise FrontendError(f"The model has {len(inputs)} graph inputs ({[i.name for i in inputs]}); the "
                                f"frontend supports exactly one (the image or feature vector)")
        if not g.output:
            raise FrontendError("The model has no graph output")
        self.onnx_input, self.onnx_output = inputs[0].name, g.output[0].name
        self.batch = self.read_input(inputs[0])
        nodes = self.prepare(list(self.graph.node))
        nodes = self.live(nodes)
        self.consumers = self.count_consumers(nodes)
        for node in nodes:
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None or node.domain not in ("", "ai.onnx"):
                raise FrontendError(f"{_describe(node)}: operator {node.op_type!r}"
                                    f"{' of domain ' + repr(node.domain) if node.domain else ''} is not supported. "
                                    f"Supported operators: {_SUPPORTED}")
            handler(node)
        return self.finish()

    def read_input(self, value: onnx.ValueInfoProto) -> int | None:
        tt = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tt.elem_type not in _FLOAT_TYPES:
            raise FrontendError(f"Graph input {value.name!r} must be a float tensor")
        if not tt.HasField("shape"):
            raise FrontendError(f"Graph input {value.name!r} has no shape; give it (N, C, H, W) or (N, F)")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if len(dims) not in (2, 4) or any(d is None or d < 1 for d in dims[1:]):
            raise FrontendError(f"Graph input {value.name!r} has shape {dims}; the frontend supports (N, C, H, W) "
                                f"and (N, F) with fixed sizes beyond the batch (the batch may be symbolic)")
        self.shapes[value.name] = tuple(dims[1:])
        return dims[0]

    def live(self, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        """Only the nodes the first graph output depends on."""
        need = {self.name(self.onnx_output)}
        keep = []
        for node in reversed(nodes):
            if any(o in need for o in node.output):
                keep.append(node)
                need.update(self.name(i) for i in node.input if i)
        return keep[::-1]

    def count_consumers(self, nodes: list[onnx.NodeProto]) -> dict[str, int]:
        count: dict[str, int] = {}
        for node in nodes:
            for i in node.input:
                if i:
                    count[self.name(i)] = count.get(self.name(i), 0) + 1
        out = self.name(self.onnx_output)
        count[out] = count.get(out, 0) + 1
        return count

    # --- constants, quantize/dequantize pairs, no-ops ------------------------------------------------------
    def prepare(self, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        """Evaluate constants, strip Q/DQ pairs and QONNX quantizers, alias no-ops; the rest, renamed."""
        kept = []
        for node in nodes:
            op, qonnx = node.op_type, node.domain in QONNX_DOMAINS
            if node.domain not in ("", "ai.onnx") and not qonnx:
                raise FrontendError(f"{_describe(node)}: operator {op!r} of domain {node.domain!r} is not "
                                    f"supported. Supported operators: {_SUPPORTED}")
            if qonnx and op in ("Quant", "IntQuant"):
                self.prep_int_quant(node)
            elif qonnx and op == "FloatQuant":
                self.prep_float_quant(node)
            elif qonnx:
                raise FrontendError(f"{_describe(node)}: QONNX operator {op!r} is not supported. Supported "
                                    f"operators: {_SUPPORTED}")
            elif op == "Constant":
                self.consts[node.output[0]] = self.constant_value(node)
            elif op == "QuantizeLinear":
                self.prep_quantize(node)
            elif op == "DequantizeLinear":
                self.prep_dequantize(node)
            elif op in ("Identity", "Dropout"):
                self.prep_noop(node)
            else:
                renamed = onnx.NodeProto()
                renamed.CopyFrom(node)
                del renamed.input[:]
                renamed.input.extend(self.name(i) if i else "" for i in node.input)
                if any(i in self.quantized for i in renamed.input):
                    bad = next(i for i in renamed.input if i in self.quantized)
                    raise FrontendError(f"{_describe(node)} reads {bad!r}, the integer output of a QuantizeLinear; "
                                        f"only QuantizeLinear -> DequantizeLinear pairs (QDQ format) are supported")
                kept.append(renamed)
        return kept

    def constant_value(self, node: onnx.NodeProto) -> np.ndarray:
        a = _attrs(node)
        if "value" in a:
            return numpy_helper.to_array(a["value"])
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                           ("value_ints", np.int64)):
            if key in a:
                return np.asarray(a[key], dtype=dtype)
        raise FrontendError(f"{_describe(node)}: only dense numeric constants (value, value_float(s), "
                            f"value_int(s)) are supported, not {sorted(a)}")

    def prep_noop(self, node: onnx.NodeProto) -> None:
        if node.op_type == "Dropout":
            if len(node.output) > 1 and node.output[1]:
                raise FrontendError(f"{_describe(node)}: its mask output is used; only inference-mode Dropout "
                                    f"(a no-op) is supported")
            if len(node.input) > 2 and node.input[2]:
                mode = self.consts.get(self.name(node.input[2]))
                if mode is None or bool(np.asarray(mode).item()):
                    raise FrontendError(f"{_describe(node)}: training_mode must be a constant false; only "
                                        f"inference-mode Dropout is supported")
        src = self.name(node.input[0])
        if src in self.consts:
            self.consts[node.output[0]] = self.consts[src]
            if src in self.const_quant:
                self.const_quant[node.output[0]] = self.const_quant[src]
        else:
            self.alias[node.output[0]] = src

    # --- layers ------------------------------------------------------------------------------------------
    def add_layer(self, node: onnx.NodeProto, op: str, inputs: list[str], attrs: dict | None = None,
                  weight: np.ndarray | None = None, bias: np.ndarray | None = None) -> FloatLayer:
        layer = FloatLayer(self.unique_layer_name(node), op, inputs, node.output[0], attrs or {},
                           None if weight is None else np.asarray(weight, dtype=np.float64),
                           None if bias is None else np.asarray(bias, dtype=np.float64))
        try:
            self.shapes[layer.output] = layer_output_shape(layer, [self.shapes[t] for t in inputs])
        except FloatModelError as error:
            raise FrontendError(f"{_describe(node)}: {error}") from None
        self.layers.append(layer)
        self.producer[layer.output] = layer
        return layer

    def fusable(self, node: onnx.NodeProto, tensor: str, what: str, ops=("conv", "linear")) -> FloatLayer:
        """The layer writing ``tensor`` if ``node`` may fold into it, else a clear error."""
        layer = self.producer.get(tensor)
        if layer is None or layer.op not in ops:
            kind = "the graph input" if tensor == self.onnx_input else (
                f"a {layer.op} layer" if layer else "no layer")
            raise FrontendError(f"{_describe(node)}: {what} is supported only right after "
                                f"{' or '.join(ops)} layers, but its input {tensor!r} comes from {kind}")
        if self.consumers.get(tensor, 0) != 1:
            raise FrontendError(f"{_describe(node)}: cannot fold into the layer writing {tensor!r}, which is also "
                                f"read elsewhere (or is the graph output); {what} must be its only reader")
        if tensor in self.tensor_quant:
            raise FrontendError(f"{_describe(node)}: tensor {tensor!r} between it and the layer before carries its "
                                f"own quantization; the IR folds {what} into that layer and cannot keep it")
        return layer

    def rename_output(self, layer: FloatLayer, new: str) -> None:
        old = layer.output
        self.alias.pop(new, None)  # ``new`` becomes a real tensor (e.g. the graph output, once a DQ's alias)
        layer.output = new
        self.shapes[new] = self.shapes.pop(old)
        self.producer[new] = self.producer.pop(old)
        self.consumers[new] = self.consumers.get(new, 0)
        self.alias[old] = new

    def ints(self, node: onnx.NodeProto, key: str, default: list[int], count: int) -> tuple[int, ...]:
        v = list(_attrs(node).get(key, default))
        if len(v) != count:
            raise FrontendError(f"{_describe(node)}: {key} {v} should have {count} values (2-D only)")
        return tuple(int(x) for x in v)

    def window(self, node: onnx.NodeProto, x: str, kernel: tuple[int, int]) -> dict:
        """kernel/stride/padding/dilation of a Conv or pool, resolving auto_pad and ceil_mode."""
        a = _attrs(node)
        stride = self.ints(node, "strides", [1, 1], 2)
        dilation = self.ints(node, "dilations", [1, 1], 2)
        auto = _text(a.get("auto_pad", "NOTSET"))
        h, w = self.shapes[x][1:]
        if auto in ("NOTSET", ""):
            pads = self.ints(node, "pads", [0, 0, 0, 0], 4)
        elif auto == "VALID":
            pads = (0, 0, 0, 0)
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = [], []
            for n, k, s, d in ((h, kernel[0], stride[0], dilation[0]), (w, kernel[1], stride[1], dilation[1])):
                total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
                small, big = total // 2, total - total // 2
                begin.append(small if auto == "SAME_UPPER" else big)
                end.append(big if auto == "SAME_UPPER" else small)
            pads = (begin[0], begin[1], end[0], end[1])
        else:
            raise FrontendError(f"{_describe(node)}: auto_pad {auto!r} is not one of NOTSET, VALID, SAME_UPPER, "
                                f"SAME_LOWER")
        if min(pads) < 0:
            raise FrontendError(f"{_describe(node)}: negative pads {pads} are not supported")
        if a.get("ceil_mode", 0):
            for n, k, s, d, p in ((h, kernel[0], stride[0], dilation[0], pads[0] + pads[2]),
                                  (w, kernel[1], stride[1], dilation[1], pads[1] + pads[3])):
                span = n + p - (k - 1) * d - 1
                if span >= 0 and span % s:
                    raise FrontendError(f"{_describe(node)}: ceil_mode=1 adds a partial window here; only "
                                        f"ceil_mode=0 is supported (or shapes where both modes agree). Pad the "
                                        f"input explicitly instead")
        return {"kernel": kernel, "stride": stride, "padding": pads, "dilation": dilation}

    def spatial(self, node: onnx.NodeProto, x: str) -> None:
        if len(self.shapes[x]) != 3:
            raise FrontendError(f"{_describe(node)}: only 2-D feature maps (N, C, H, W) are supported, not an "
                                f"input of shape (N, {', '.join(map(str, self.shapes[x]))})")

    # --- operators ---------------------------------------------------------------------------------------
    def op_Conv(self, node: onnx.NodeProto) -> None:
        x = self.act(node, node.input[0])
        self.spatial(node, x)
        w = self.const(node, 1, "weight")
        if w.ndim != 4:
            raise FrontendError(f"{_describe(node)}: only 2-D convolutions (4-D weights) are supported, not a "
                                f"weight of shape {w.shape}")
        kernel = tuple(int(k) for k in w.shape[2:])
        if tuple(_attrs(node).get("kernel_shape", kernel)) != kernel:
            raise FrontendError(f"{_describe(node)}: kernel_shape {_attrs(node)['kernel_shape']} differs from the "
                                f"weight's {kernel}")
        attrs = self.window(node, x, kernel)
        attrs["groups"] = int(_attrs(node).get("group", 1))
        channels = self.shapes[x][0]
        if attrs["groups"] < 1 or channels % attrs["groups"] or w.shape[0] % attrs["groups"]:
            raise FrontendError(f"{_describe(node)}: group={attrs['groups']} must be a positive divisor of its "
                                f"{channels} input and {w.shape[0]} output channels")
        bias = self.const(node, 2, "bias", required=False)
        layer = self.add_layer(node, "conv", [x], attrs, w, bias)
        wq = self.weight_quant_for(node, node.input[1], lambda a: a)
        if wq is not None:
            self.weight_quant[layer.name] = wq

    def linear(self, node: onnx.NodeProto, x: str, w: np.ndarray, bias, wq: WeightQuant | None) -> None:
        if len(self.shapes[x]) != 1:
            raise FrontendError(f"{_describe(node)}: its input {x!r} has shape {self.shapes[x]}; a matrix product "
                                f"needs a flat (N, K) input (Flatten first)")
        layer = self.add_layer(node, "linear", [x], {}, w, bias)
        if wq is not None:
            self.weight_quant[layer.name] = wq

    def op_Gemm(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if a.get("transA", 0):
            raise FrontendError(f"{_describe(node)}: transA=1 is not supported (the activation must be the left "
                                f"operand, untransposed)")
        x = self.act(node, node.input[0])
        b = self.const(node, 1, "weight B")
        if b.ndim != 2:
            raise FrontendError(f"{_describe(node)}: weight B must be 2-D, not {b.shape}")
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        trans = bool(a.get("transB", 0))
        layout = (lambda t: t) if trans else (lambda t: t.T)
        w = layout(np.asarray(b, dtype=np.float64)) * alpha
        c = self.const(node, 2, "bias C", required=False)
        bias = None if c is None else self.vector_bias(node, c, w.shape[0]) * beta
        wq = self.weight_quant_for(node, node.input[1], layout)
        if wq is not None and alpha != 1.0:
            if alpha <= 0:
                raise FrontendError(f"{_describe(node)}: alpha {alpha} with a quantized weight must be positive")
            wq.scale = wq.scale * alpha
        self.linear(node, x, w, bias, wq)

    def op_MatMul(self, node: onnx.NodeProto) -> None:
        x = self.act(node, node.input[0])
        b = self.const(node, 1, "right operand (the weight)")
        if b.ndim != 2:
            raise FrontendError(f"{_describe(node)}: the weight must be 2-D (K, N), not {b.shape}")
        w = np.asarray(b, dtype=np.float64).T
        self.linear(node, x, w, None, self.weight_quant_for(node, node.input[1], lambda t: t.T))

    def vector_bias(self, node: onnx.NodeProto, c: np.ndarray, n: int) -> np.ndarray:
        c = np.asarray(c, dtype=np.float64)
        if c.ndim == 2 and c.shape[0] == 1:
            c = c[0]
        try:
            return np.broadcast_to(c, (n,)).copy()
        except ValueError:
            raise FrontendError(f"{_describe(node)}: bias of shape {c.shape} is not one value per output "
                                f"feature ({n})") from None

    def op_Add(self, node: onnx.NodeProto) -> None:
        consts = [i for i in node.input if self.name(i) in self.consts]
        acts = [self.act(node, i) for i in node.input if self.name(i) not in self.consts]
        if not consts:
            return self.op_Sum(node)
        if len(acts) != 1:
            raise FrontendError(f"{_describe(node)}: adds constants only; constant subgraphs are not evaluated")
        x = acts[0]
        layer = self.fusable(node, x, "Add of a constant (a bias)")
        shape = self.shapes[x]
        c = np.asarray(self.consts[self.name(consts[0])], dtype=np.float64)
        try:
            if c.ndim > len(shape) + 1 or (c.ndim == len(shape) + 1 and c.shape[0] != 1):
                raise ValueError
            full = np.broadcast_to(c.reshape(c.shape[1:]) if c.ndim == len(shape) + 1 else c, shape)
        except ValueError:
            raise FrontendError(f"{_describe(node)}: constant of shape {c.shape} does not broadcast to "
                                f"(N, {', '.join(map(str, shape))}) without changing the output shape") from None
        per_channel = full.reshape(shape[0], -1)
        if np.ptp(per_channel, axis=1).max(initial=0) != 0:
            raise FrontendError(f"{_describe(node)}: the constant varies within a channel; only a bias (one value "
                                f"per output channel) can be added")
        bias = per_channel[:, 0]
        layer.bias = bias.copy() if layer.bias is None else layer.bias + bias
        self.rename_output(layer, node.output[0])

    def op_Sum(self, node: onnx.NodeProto) -> None:
        xs = [self.act(node, i) for i in node.input]
        if len(xs) == 1:
            self.alias[node.output[0]] = xs[0]
            return
        if any(self.shapes[t] != self.shapes[xs[0]] for t in xs):
            raise FrontendError(f"{_describe(node)}: inputs of shapes {[self.shapes[t] for t in xs]}; only "
                                f"same-shape additions are supported (no broadcasting)")
        self.add_layer(node, "add", xs)

    def op_BatchNormalization(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if a.get("training_mode", 0) or any(o for o in node.output[1:]):
            raise FrontendError(f"{_describe(node)}: training-mode BatchNormalization is not supported; export "
                                f"the model in eval mode")
        if not a.get("spatial", 1):
            raise FrontendError(f"{_describe(node)}: spatial=0 (per-position statistics) is not supported")
        x = self.name(node.input[0])
        layer = self.fusable(node, x, "BatchNormalization (folded into the layer before it)")
        if layer.clip is not None:
            raise FrontendError(f"{_describe(node)}: a BatchNormalization after a Relu/Clip cannot be folded into "
                                f"the layer before it")
        if layer.name in self.weight_quant:
            raise FrontendError(f"{_describe(node)}: the weights of {layer.name!r} are already quantized, and "
                                f"folding BatchNormalization would change them; fold it before quantizing "
                                f"(onnxruntime.quantization.quant_pre_process does)")
        gamma, beta, mean, var = (np.asarray(self.const(node, i, k), dtype=np.float64).reshape(-1)
                                  for i, k in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        n = layer.weight.shape[0]
        if not all(v.size == n for v in (gamma, beta, mean, var)):
            raise FrontendError(f"{_describe(node)}: statistics of {gamma.size} channels for a layer of {n}")
        k = gamma / np.sqrt(var + float(a.get("epsilon", 1e-5)))
        layer.weight = layer.weight * k.reshape((n,) + (1,) * (layer.weight.ndim - 1))
        layer.bias = (np.zeros(n) if layer.bias is None else layer.bias) * k + (beta - mean * k)
        self.rename_output(layer, node.output[0])

    def clip_target(self, node: onnx.NodeProto) -> tuple[FloatLayer, str]:
        """The layer a Relu/Clip fuses into: the one before, or before a chain of MaxPool/Flatten (they commute
        with a clamp), which ``tensor`` then aliases."""
        x = self.act(node, node.input[0])
        t = x
        while (t in self.producer and self.producer[t].op in ("maxpool", "flatten")
               and self.consumers.get(t, 0) == 1):
            t = self.producer[t].inputs[0]
        if t != x and not (t in self.producer and self.producer[t].op in ACCUMULATING_OPS):
            t = x
        layer = self.fusable(node, t, f"{node.op_type} (fused into the layer before it)", ACCUMULATING_OPS)
        return layer, x

    def fuse_clip(self, node: onnx.NodeProto, lo: float, hi: float) -> None:
        layer, x = self.clip_target(node)
        if lo > hi:
            raise FrontendError(f"{_describe(node)}: min {lo} is above max {hi}")
        if layer.clip is not None:
            lo, hi = max(lo, layer.clip[0]), min(hi, layer.clip[1])
            lo = min(lo, hi)
        layer.clip = (float(lo), float(hi))
        if layer.output == x:
            self.rename_output(layer, node.output[0])
        else:
            self.alias[node.output[0]] = x

    def op_Relu(self, node: onnx.NodeProto) -> None:
        self.fuse_clip(node, 0.0, np.inf)

    def op_Clip(self, node: onnx.NodeProto) -> None:
        if self.opset < 11:
            a = _attrs(node)
            lo, hi = float(a.get("min", -np.inf)), float(a.get("max", np.inf))
        else:
            vals = []
            for i, default in ((1, -np.inf), (2, np.inf)):
                v = self.const(node, i, "min" if i == 1 else "max", required=False)
                if v is not None and np.asarray(v).size != 1:
                    raise FrontendError(f"{_describe(node)}: min and max must be scalars")
                vals.append(default if v is None else float(np.asarray(v).item()))
            lo, hi = vals
        big = float(np.finfo(np.float32).max)
        self.fuse_clip(node, -np.inf if lo <= -big else lo, np.inf if hi >= big else hi)

    def pool_common(self, node: onnx.NodeProto) -> tuple[str, tuple[int, int]]:
        if len(node.output) > 1 and node.output[1]:
            raise FrontendError(f"{_describe(node)}: the Indices output is not supported")
        x = self.act(node, node.input[0])
        self.spatial(node, x)
        a = _attrs(node)
        if "kernel_shape" not in a:
            raise FrontendError(f"{_describe(node)} has no kernel_shape")
        return x, self.ints(node, "kernel_shape", [], 2)

    def op_MaxPool(self, node: onnx.NodeProto) -> None:
        x, kernel = self.pool_common(node)
        self.add_layer(node, "maxpool", [x], self.window(node, x, kernel))

    def op_AveragePool(self, node: onnx.NodeProto) -> None:
        x, kernel = self.pool_common(node)
        attrs = self.window(node, x, kernel)
        if any(attrs["padding"]) and not _attrs(node).get("count_include_pad", 0):
            raise FrontendError(f"{_describe(node)}: padding {attrs['padding']} with count_include_pad=0 (the "
                                f"default) divides border windows by fewer elements; only count_include_pad=1 (or "
                                f"no padding) is supported")
        self.add_layer(node, "avgpool", [x], attrs)

    def op_GlobalAveragePool(self, node: onnx.NodeProto) -> None:
        x = self.act(node, node.input[0])
        self.spatial(node, x)
        self.add_layer(node, "global_avgpool", [x])

    def op_GlobalMaxPool(self, node: onnx.NodeProto) -> None:
        x = self.act(node, node.input[0])
        self.spatial(node, x)
        h, w = self.shapes[x][1:]
        self.add_layer(node, "maxpool", [x], {"kernel": (h, w), "stride": (1, 1), "padding": (0, 0, 0, 0),
                                              "dilation": (1, 1)})

    def op_Concat(self, node: onnx.NodeProto) -> None:
        xs = [self.act(node, i) for i in node.input]
        rank = len(self.shapes[xs[0]]) + 1
        axis = int(_attrs(node).get("axis", 1))
        if (axis + rank if axis < 0 else axis) != 1:
            raise FrontendError(f"{_describe(node)}: axis {axis} is not supported; only the channel axis (1) is")
        if len(xs) == 1:
            self.alias[node.output[0]] = xs[0]
            return
        self.add_layer(node, "concat", xs)

    def flatten_to(self, node: onnx.NodeProto, x: str) -> None:
        if len(self.shapes[x]) == 1:
            self.alias[node.output[0]] = x
        else:
            self.add_layer(node, "flatten", [x])

    def op_Flatten(self, node: onnx.NodeProto) -> None:
        x = self.act(node, node.input[0])
        rank = len(self.shapes[x]) + 1
        axis = int(_attrs(node).get("axis", 1))
        if (axis + rank if axis < 0 else axis) != 1:
            raise FrontendError(f"{_describe(node)}: axis {axis} is not supported; only axis=1 (keep the batch, "
                                f"flatten the rest) is")
        self.flatten_to(node, x)

    def op_Reshape(self, node: onnx.NodeProto) -> None:
        x = self.act(node, node.input[0])
        if self.opset < 5:
            target = list(_attrs(node).get("shape", []))
        else:
            if len(node.input) < 2 or self.name(node.input[1]) not in self.consts:
                raise FrontendError(f"{_describe(node)}: its shape must be a constant (a Shape/Gather/Concat "
                                    f"subgraph is not evaluated); export with a constant shape or use Flatten")
            target = [int(v) for v in np.asarray(self.consts[self.name(node.input[1])]).reshape(-1)]
        allowzero = bool(_attrs(node).get("allowzero", 0))
        shape = self.shapes[x]
        kind = None
        for batch in ([self.batch] if self.batch else [1, 7]):
            out = self.resolve_reshape(target, (batch, *shape), allowzero)
            k = None if out is None else "flatten" if out == (batch, int(np.prod(shape))) else \
                "same" if out == (batch, *shape) else None
            if k is None or kind not in (None, k):
                raise FrontendError(f"{_describe(node)}: reshaping (N, {', '.join(map(str, shape))}) to {target} "
                                    f"{'with a symbolic batch ' if not self.batch else ''}is not supported; only "
                                    f"(N, -1) (a flatten) and reshapes that change nothing are")
            kind = k
        if kind == "same":
            self.alias[node.output[0]] = x
        else:
            self.flatten_to(node, x)

    @staticmethod
    def resolve_reshape(target: list[int], full: tuple[int, ...], allowzero: bool) -> tuple[int, ...] | None:
        """ONNX Reshape's output shape (0 copies, -1 infers), or None if impossible."""
        out = [full[i] if v == 0 and not allowzero and i < len(full) else v for i, v in enumerate(target)]
        total = int(np.prod(full))
        if out.count(-1) > 1:
            return None
        if -1 in out:
            known = int(np.prod([v for v in out if v != -1]))
            if known <= 0 or total % known:
                return None
            out[out.index(-1)] = total // known
        return tuple(out) if int(np.prod(out)) == total and min(out) >= 0 else None

    def op_Squeeze(self, node: onnx.NodeProto) -> None:
        x = self.act(node, node.input[0])
        shape = self.shapes[x]
        rank = len(shape) + 1
        if self.opset < 13:
            axes = _attrs(node).get("axes")
        else:
            axes = self.const(node, 1, "axes", required=False)
        if axes is None:
            raise FrontendError(f"{_describe(node)}: Squeeze without axes could remove the batch; give axes")
        axes = sorted({int(a) + rank if int(a) < 0 else int(a) for a in np.asarray(axes).reshape(-1)})
        if 0 in axes or any(not 0 < a < rank or shape[a - 1] != 1 for a in axes):
            raise FrontendError(f"{_describe(node)}: axes {axes} must name size-1 axes other than the batch")
        kept = [d for i, d in enumerate(shape, start=1) if i not in axes]
        if len(kept) != 1:
            raise FrontendError(f"{_describe(node)}: squeezing (N, {', '.join(map(str, shape))}) to "
                                f"(N, {', '.join(map(str, kept))}) is not supported; only squeezes that flatten are")
        self.flatten_to(node, x)

    # --- the end -----------------------------------------------------------------------------------------
    def finish(self) -> FloatNetwork:
        out = self.name(self.onnx_output)
        if out not in self.shapes:
            raise FrontendError(f"The graph output {self.onnx_output!r} is a constant, not computed from the input")
        if not self.layers:
            raise FrontendError("The model computes nothing from its input (no supported layer)")
        # Give the output its ONNX name when no other IR tensor has it.
        if out != self.onnx_output and out in self.producer and self.onnx_output not in self.shapes:
            enc = self.tensor_quant.pop(out, None)
            self.rename_output(self.producer[out], self.onnx_output)
            for layer in self.layers:
                layer.inputs = [self.onnx_output if t == out else t for t in layer.inputs]
            if enc is not None:
                self.tensor_quant[self.onnx_output] = enc
            out = self.onnx_output
        # Keep only what the output needs (a dead branch may remain after fusions).
        need, layers = {out}, []
        for layer in reversed(self.layers):
            if layer.output in need:
                layers.append(layer)
                need.update(layer.inputs)
        layers.reverse()
        tq = {}
        for tensor, enc in self.tensor_quant.items():
            t = self.name(tensor)
            if t not in need:
                continue
            if tq.get(t, enc) != enc:
                raise FrontendError(f"Tensor {t!r} carries two different encodings ({tq[t]} and {enc})")
            tq[t] = enc
        self.propagate_encodings(layers, tq)
        self.clip_to_encodings(layers, tq)
        names = {layer.name for layer in layers}
        return FloatNetwork(
            input=self.onnx_input, output=out, shapes={t: s for t, s in self.shapes.items() if t in need},
            layers=layers, onnx_input=self.onnx_input, onnx_output=self.onnx_output, tensor_quant=tq,
            weight_quant={k: v for k, v in self.weight_quant.items() if k in names})
