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

from sw.ir import FloatLayer, FloatNetwork, TensorQuant, WeightQuant
from sw.ops import OPERATORS, onnx_operator
from sw.ops.host import HostGroup, host_refusal

from .float_model import FloatModelError, layer_output_shape
from .onnx_check import check_model
from .onnx_fold import fold_constants
from .onnx_common import (_FLOAT_TYPES, _MIN_OPSET, QONNX_DOMAINS, FrontendError, NotOnEngine,
                          supported_ops,
                          _attrs, _ConstQuant, _describe, _text)
from .quant_nodes import QuantNodes

__all__ = ["FrontendError", "SUPPORTED_OPS", "load_onnx", "Importer"]


def __getattr__(name: str):
    if name == "SUPPORTED_OPS":
        return supported_ops()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")



def load_onnx(model: str | Path | onnx.ModelProto, *, engine_only: bool = False) -> FloatNetwork:
    """The float network of an ONNX model (a path or a loaded ``ModelProto``); nodes the engine does not run become
    host layers (:mod:`sw.ops.host`), unless ``engine_only`` refuses them."""
    if isinstance(model, (str, Path)):
        try:
            model = onnx.load(str(model))
        except Exception as error:  # OSError, protobuf's DecodeError, ...
            if isinstance(error, FileNotFoundError):
                raise FrontendError(f"No ONNX file at {model}") from None
            raise FrontendError(f"Cannot read {model} as an ONNX model: {error}") from None
    if not isinstance(model, onnx.ModelProto):
        raise FrontendError(f"load_onnx takes a path or an onnx.ModelProto, not {type(model).__name__}")
    return Importer(fold_constants(check_model(model)), engine_only).run()


class Importer(QuantNodes):
    def __init__(self, model: onnx.ModelProto, engine_only: bool = False):
        self.model = model
        self.engine_only = engine_only
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
        #: Outputs of nodes an earlier node took in (the Mul of a SiLU): the loop skips them.
        self.absorbed: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []

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
        self.nodes = nodes
        group = HostGroup(self)
        for node in nodes:
            if node.output and node.output[0] in self.absorbed:
                continue
            rewrite = getattr(self, f"op_{node.op_type}", None)
            operator = onnx_operator(node.op_type)
            if node.domain not in ("", "ai.onnx"):
                raise FrontendError(f"{_describe(node)}: operator {node.op_type!r} of domain {node.domain!r} is not "
                                    f"supported. Supported operators: {', '.join(supported_ops())}")
            if group.nodes and group.reads(node) or rewrite is None and operator is None:
                self.host(group, node, host_refusal(node))
                continue
            try:
                rewrite(node) if rewrite is not None else operator.import_node(self, node)
            except NotOnEngine as e:
                self.host(group, node, e)
        if group.nodes:
            raise FrontendError(f"{group.reason}; nor does the host run it: the nodes from there on never give back "
                                f"a tensor (N, C, H, W) or (N, F) of one sample per batch entry")
        return self.finish()

    def host(self, group: HostGroup, node: onnx.NodeProto, reason: FrontendError) -> None:
        """A node for the host: it joins the open group, which becomes a host layer as soon as its output keeps
        the batch first (at once for most nodes; after the Transposes around an LSTM). ``reason``: why the engine
        does not run it, the error with ``engine_only``."""
        if self.engine_only:
            raise FrontendError(f"{reason}; it would run on the host, and this import asks for the engine only "
                                f"(--engine-only)") from None
        group.add(node, reason)
        try:
            group.close(node.output[0])
        except FrontendError as e:
            raise FrontendError(f"{reason}; nor does the host run it: {e}") from None

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
                                    f"supported. Supported operators: {', '.join(supported_ops())}")
            if qonnx and op in ("Quant", "IntQuant"):
                self.prep_int_quant(node)
            elif qonnx and op == "FloatQuant":
                self.prep_float_quant(node)
            elif qonnx:
                raise FrontendError(f"{_describe(node)}: QONNX operator {op!r} is not supported. Supported "
                                    f"operators: {', '.join(supported_ops())}")
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

    def fusable(self, node: onnx.NodeProto, tensor: str, what: str, ops=None) -> FloatLayer:
        """The layer writing ``tensor`` if ``node`` may fold into it (by default: into a weighted layer's weights
        and bias), else a clear error."""
        ops = ops or tuple(n for n, op in OPERATORS.items() if op.weighted)
        layer = self.producer.get(tensor)
        if layer is None or layer.op not in ops:
            kind = "the graph input" if tensor == self.onnx_input else (
                f"a {layer.op} layer" if layer else "no layer")
            raise NotOnEngine(f"{_describe(node)}: {what} is supported only right after "
                                f"{' or '.join(ops)} layers, but its input {tensor!r} comes from {kind}")
        if self.consumers.get(tensor, 0) != 1:
            raise NotOnEngine(f"{_describe(node)}: cannot fold into the layer writing {tensor!r}, which is also "
                                f"read elsewhere (or is the graph output); {what} must be its only reader")
        if layer.activation is not None:
            raise NotOnEngine(f"{_describe(node)}: the layer writing {tensor!r} ends with a {layer.activation['op']} "
                              f"already; {what} cannot follow it there")
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

    def window(self, node: onnx.NodeProto, x: str, kernel: tuple[int, int], ceil_pads: bool = False) -> dict:
        """kernel/stride/padding/dilation of a Conv or pool, resolving auto_pad and ceil_mode (``ceil_pads``: its
        partial windows become padding at the bottom and right, which a max pool ignores)."""
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
            extra = []
            for n, k, s, d, begin, end in ((h, kernel[0], stride[0], dilation[0], pads[0], pads[2]),
                                           (w, kernel[1], stride[1], dilation[1], pads[1], pads[3])):
                span = n + begin + end - (k - 1) * d - 1
                out = -(-span // s) + 1
                if (out - 1) * s >= n + begin:          # the last window may not start in the end padding
                    out -= 1
                more = max(0, (out - 1) * s + (k - 1) * d + 1 - (n + begin + end))
                if more and not ceil_pads:
                    raise FrontendError(f"{_describe(node)}: ceil_mode=1 adds a partial window here, which only a "
                                        f"max pool supports; pad the input explicitly instead")
                extra.append(more)
            pads = (pads[0], pads[1], pads[2] + extra[0], pads[3] + extra[1])
        return {"kernel": kernel, "stride": stride, "padding": pads, "dilation": dilation}

    def spatial(self, node: onnx.NodeProto, x: str) -> None:
        if len(self.shapes[x]) != 3:
            raise FrontendError(f"{_describe(node)}: only 2-D feature maps (N, C, H, W) are supported, not an "
                                f"input of shape (N, {', '.join(map(str, self.shapes[x]))})")

    # --- rewrites: ONNX nodes that fold into the layer before them (no operator of their own) -------------
    def fold_bias(self, node: onnx.NodeProto, x: str, c) -> None:
        """An Add of a constant: the bias of the conv or linear layer that writes ``x``."""
        layer = self.fusable(node, x, "Add of a constant (a bias)")
        shape = self.shapes[x]
        c = np.asarray(c, dtype=np.float64)
        try:
            if c.ndim > len(shape) + 1 or (c.ndim == len(shape) + 1 and c.shape[0] != 1):
                raise ValueError
            full = np.broadcast_to(c.reshape(c.shape[1:]) if c.ndim == len(shape) + 1 else c, shape)
        except ValueError:
            raise NotOnEngine(f"{_describe(node)}: constant of shape {c.shape} does not broadcast to "
                                f"(N, {', '.join(map(str, shape))}) without changing the output shape") from None
        per_channel = full.reshape(shape[0], -1)
        if np.ptp(per_channel, axis=1).max(initial=0) != 0:
            raise NotOnEngine(f"{_describe(node)}: the constant varies within a channel; only a bias (one value "
                                f"per output channel) can be added")
        bias = per_channel[:, 0]
        layer.bias = bias.copy() if layer.bias is None else layer.bias + bias
        if layer.output_stats is not None:
            layer.output_stats = (layer.output_stats[0] + bias, layer.output_stats[1])
        self.rename_output(layer, node.output[0])

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
        if layer.output_stats is None:      # the statistics of the layer's output (a second BN rescales them)
            layer.output_stats = (beta.copy(), np.abs(gamma))
        else:
            mu, sd = layer.output_stats
            layer.output_stats = (mu * k + (beta - mean * k), sd * np.abs(k))
        self.rename_output(layer, node.output[0])

    def clip_target(self, node: onnx.NodeProto) -> tuple[FloatLayer, str]:
        """The layer a Relu/Clip fuses into: the one before, or before a chain of MaxPool/Flatten (they commute
        with a clamp), which ``tensor`` then aliases."""
        x = self.act(node, node.input[0])
        t = x
        while (t in self.producer and OPERATORS[self.producer[t].op].commutes_with_clamp
               and self.consumers.get(t, 0) == 1):
            t = self.producer[t].inputs[0]
        if t != x and not (t in self.producer and OPERATORS[self.producer[t].op].accumulating):
            t = x
        accumulating = tuple(n for n, op in OPERATORS.items() if op.accumulating)
        layer = self.fusable(node, t, f"{node.op_type} (fused into the layer before it)", accumulating)
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

    def fuse_activation(self, node: onnx.NodeProto, tensor: str, activation: dict,
                        absorbs: onnx.NodeProto | None = None, what: str | None = None) -> None:
        """A nonlinear activation (``sw/ops/activations.py``) into the accumulating layer writing ``tensor``, as its
        ``activation`` (applied after its clip). ``absorbs``: a node that goes with it (the Mul of a SiLU), whose
        output the layer's output becomes. ``what``: how the messages name the fusion. NotOnEngine (the host runs
        it) where the layer cannot take it."""
        x = self.act(node, tensor)
        accumulating = tuple(n for n, op in OPERATORS.items() if op.accumulating)
        what = what or f"{node.op_type} (fused into the layer before it as a lookup table)"
        if absorbs is None:
            try:
                layer = self.fusable(node, x, what, accumulating)
            except FrontendError as e:
                raise NotOnEngine(str(e)) from None
        else:
            layer = self.producer.get(x)
            if (layer is None or layer.op not in accumulating or layer.activation is not None
                    or x in self.tensor_quant or self.consumers.get(x, 0) != 2):
                raise NotOnEngine(f"{_describe(node)}: the SiLU's input {x!r} must come from an accumulating layer "
                                  f"that nothing else reads, with no activation or quantization of its own")
        layer.activation = activation
        out = absorbs.output[0] if absorbs is not None else node.output[0]
        self.rename_output(layer, out)
        if absorbs is not None:
            self.absorbed.add(out)

    def silu_pattern(self, node: onnx.NodeProto) -> onnx.NodeProto | None:
        """The Mul of ``Mul(x, Sigmoid(x))`` if ``node`` is that Sigmoid and the Mul is its only reader."""
        x, s = self.name(node.input[0]), node.output[0]
        if self.consumers.get(s, 0) != 1:
            return None
        for other in self.nodes:
            if other.op_type == "Mul" and other.domain in ("", "ai.onnx") and len(other.input) == 2 \
                    and sorted(self.name(i) for i in other.input) == sorted((x, s)):
                return other
        return None

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
