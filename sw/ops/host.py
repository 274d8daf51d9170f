"""``host``: ONNX operators the engine does not run (Softmax, ArgMax, an LSTM, ...), evaluated on the host
between engine programs.

The layer carries a small ONNX graph (one node, or the few nodes from one batch-first tensor to the next, e.g.
Transpose -> LSTM -> Squeeze -> Transpose) with its constants inside, and evaluates it with onnx's reference
evaluator in float32, one sample at a time, as the model computes. Quantized meaning: the inputs' codes
dequantized with their encodings, the graph evaluated, the result quantized with the output's encoding (round to
nearest even, saturating). Every backend computes exactly this, so golden, emulator and RTL agree; against the
float model the difference is the quantization of the inputs and the output. The compiler cuts the program
there: the engine stops, the host reads the inputs from external memory and writes the output back, and the
next program starts.

A model with such nodes still runs; ``--engine-only`` (``load_onnx(..., engine_only=True)``) refuses them.
"""

from __future__ import annotations

import base64
from functools import lru_cache

import numpy as np
import onnx
from onnx import helper, numpy_helper

from sw.frontend.onnx_common import FrontendError, _describe, supported_ops

from .base import Operator, OperatorError

#: Gates of the recurrent operators: their weights are (directions, gates x hidden, features).
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
#: Nodes that only move data: a host layer is named after its first other node.
_LAYOUT_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"}


class Host(Operator):
    name = "host"
    host = True
    arity = None

    def shape(self, layer, in_shapes):
        try:
            out = evaluate(model_bytes(layer), tuple(np.zeros((1, *s), np.float32) for s in in_shapes))
        except Exception as e:     # noqa: BLE001 - the evaluator names what is wrong
            raise OperatorError(f"{layer.attrs.get('op_type')} cannot run on inputs {in_shapes}: "
                                f"{' '.join(str(e).split())[:160]}") from None
        return tuple(out.shape[1:])

    def run_float(self, layer, xs):
        return _per_sample(model_bytes(layer), [np.asarray(x, np.float32) for x in xs]).astype(xs[0].dtype)

    def golden(self, layer, inputs, net):
        xs = [net.tensors[t].dequantize(x).astype(np.float32) for t, x in zip(layer.inputs, inputs)]
        return np.asarray(net.tensors[layer.output].quantize(_per_sample(model_bytes(layer), xs)))

    def lower(self, layer, ctx):
        ctx.add_host(layer)

    def macs(self, layer, in_shapes) -> int:
        """Multiply-accumulates per sample of its matrix products and recurrences (from ONNX shape inference)."""
        return graph_macs(onnx.load_from_string(model_bytes(layer)))


class HostGroup:
    """ONNX nodes on their way into one host layer: they start at batch-first tensors of the network and end at
    one (a node whose output keeps the batch first closes the group at once)."""

    def __init__(self, imp):
        self.imp = imp
        self.nodes: list = []
        self.produced: set[str] = set()
        self.reason: Exception | None = None

    def add(self, node, reason: Exception) -> None:
        """``reason``: why the engine does not run ``node``; the group's first one names what opened it."""
        if not self.nodes:
            self.reason = reason
        self.nodes.append(node)
        self.produced.update(o for o in node.output if o)

    def reads(self, node) -> bool:
        return any(self.imp.name(i) in self.produced or i in self.produced for i in node.input if i)

    def close(self, output: str) -> bool:
        """Make ``output`` a host layer if it is a batch-first tensor of the network; True if it did."""
        imp = self.imp
        inputs = list(dict.fromkeys(imp.name(i) for n in self.nodes for i in n.input
                                    if i and imp.name(i) not in imp.consts and i not in self.produced
                                    and imp.name(i) not in self.produced))
        model = self._model(inputs, output)
        data = model.SerializeToString()
        if not _batch_first(data, [imp.shapes[t] for t in inputs]):
            return False
        types = "+".join(dict.fromkeys(n.op_type for n in self.nodes))
        node = next((n for n in self.nodes if n.op_type not in _LAYOUT_OPS), self.nodes[-1])   # names the layer
        layer = imp.add_layer(node, "host", inputs, {"onnx": base64.b64encode(data).decode(), "op_type": types})
        if layer.output != output:
            imp.rename_output(layer, output)
        self.nodes, self.produced = [], set()
        return True

    def _model(self, inputs: list[str], output: str) -> onnx.ModelProto:
        """The group's nodes that ``output`` needs, the network's tensors as inputs, its constants inside."""
        imp = self.imp
        need, nodes = {output}, []
        for node in reversed(self.nodes):
            if any(o in need for o in node.output):
                nodes.append(node)
                need.update(i for i in node.input if i)
        nodes.reverse()
        initializers, renamed_nodes = {}, []
        for node in nodes:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            del copy.input[:]
            for i in node.input:
                t = imp.name(i) if i else ""
                if t in imp.consts:
                    initializers[f"const:{t}"] = numpy_helper.from_array(np.asarray(imp.consts[t]), f"const:{t}")
                    copy.input.append(f"const:{t}")
                else:
                    copy.input.append(i if i in self.produced else t)
            renamed_nodes.append(copy)
        graph = helper.make_graph(
            renamed_nodes, "host",
            [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, [1, *imp.shapes[t]]) for t in inputs],
            [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)],
            initializer=list(initializers.values()))
        model = helper.make_model(graph, opset_imports=[o for o in imp.model.opset_import])
        model.ir_version = imp.model.ir_version
        return model


def graph_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of a graph's MatMul, Gemm, Conv, ConvTranspose and recurrent nodes."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
    shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
    total = 0
    for node in inferred.graph.node:
        ins = [shapes.get(i, []) for i in node.input]
        out = shapes.get(node.output[0], []) if node.output else []
        if node.op_type in ("MatMul", "Gemm") and len(ins[0]) >= 1:
            k = ins[0][0] if node.op_type == "Gemm" and _attribute(node, "transA", 0) else ins[0][-1]
            total += int(np.prod(out)) * k
        elif node.op_type == "Conv" and len(ins[1]) >= 3:
            total += int(np.prod(out)) * int(np.prod(ins[1][1:]))
        elif node.op_type == "ConvTranspose" and len(ins[1]) >= 3:
            total += int(np.prod(ins[0])) * int(np.prod(ins[1][1:]))
        elif node.op_type in _GATES and len(ins[1]) == 3 and len(ins[0]) == 3:
            directions, gates_hidden, features = ins[1]
            hidden = gates_hidden // _GATES[node.op_type]
            total += ins[0][0] * ins[0][1] * directions * gates_hidden * (features + hidden)
    return total


def _attribute(node, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def model_bytes(layer) -> bytes:
    return base64.b64decode(layer.attrs["onnx"])


@lru_cache(maxsize=64)
def _evaluator(model: bytes):
    from onnx.reference import ReferenceEvaluator
    proto = onnx.load_from_string(model)
    return ReferenceEvaluator(proto), [i.name for i in proto.graph.input]


def evaluate(model: bytes, xs: tuple[np.ndarray, ...]) -> np.ndarray:
    evaluator, names = _evaluator(model)
    return np.asarray(evaluator.run(None, dict(zip(names, xs)))[0], dtype=np.float32)


def _per_sample(model: bytes, xs: list[np.ndarray]) -> np.ndarray:
    """The graph on every sample alone (batch 1, as the frontend fixed it), stacked."""
    return np.concatenate([evaluate(model, tuple(x[i:i + 1] for x in xs)) for i in range(len(xs[0]))])


def _batch_first(model: bytes, shapes: list[tuple[int, ...]]) -> bool:
    """The graph's output keeps one sample's result in a first axis of 1 (rank 2 or 4 as the network's tensors)."""
    rng = np.random.default_rng(0)
    try:
        out = evaluate(model, tuple(rng.standard_normal((1, *s)).astype(np.float32) for s in shapes))
    except Exception as e:     # noqa: BLE001 - the evaluator names what is wrong
        raise FrontendError(f"on inputs {shapes}: {' '.join(str(e).split())[:200]}") from None
    return out.ndim in (2, 4) and out.shape[0] == 1


def host_refusal(node) -> FrontendError:
    """Why a node of an operator the engine lacks goes to the host."""
    return FrontendError(f"{_describe(node)}: operator {node.op_type!r} is not one the engine runs (it runs "
                         f"{', '.join(supported_ops())})")
