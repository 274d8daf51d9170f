"""Quantization nodes of ONNX models: QDQ pairs (QuantizeLinear/DequantizeLinear, as onnxruntime writes them)
and QONNX ``Quant``/``IntQuant``/``FloatQuant``, read into tensor encodings and weight codes.

A mixin of the importer (:mod:`sw.frontend.onnx_import`): its methods read and write the importer's state
(constants, aliases, encodings), one ONNX node at a time.
"""

from __future__ import annotations

import numpy as np
import onnx

from hw.spec.formats import FormatError, get_format
from sw.ir import FloatLayer, TensorQuant, WeightQuant

from .onnx_common import FrontendError, _attrs, _ConstQuant, _describe, _text

__all__ = ["QuantNodes"]


class QuantNodes:
    """Q/DQ and QONNX nodes, and the encodings of a finished network."""

    def q_params(self, node: onnx.NodeProto, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, str]:
        """Scale and zero point of a Q/DQ node broadcast to ``shape``, and the integer format's name."""
        a = _attrs(node)
        if a.get("block_size", 0):
            raise FrontendError(f"{_describe(node)}: blocked quantization (block_size) is not supported; use "
                                f"per-tensor or per-channel scales")
        scale = np.asarray(self.const(node, 1, "scale"), dtype=np.float64)
        zp_raw = self.const(node, 2, "zero point", required=False)
        if zp_raw is None:  # the integer type comes from the codes (DQ) or output_dtype (Q), default uint8
            src = self.consts.get(self.name(node.input[0]))
            if node.op_type == "DequantizeLinear" and src is not None:
                dtype = np.asarray(src).dtype
            elif node.op_type == "DequantizeLinear":
                dtype = self.quantized_dtype.get(self.name(node.input[0]), np.dtype(np.uint8))
            else:
                out = a.get("output_dtype", 0)
                dtype = onnx.helper.tensor_dtype_to_np_dtype(out) if out else np.dtype(np.uint8)
            zp_raw = np.zeros((), dtype=dtype)
        kinds = {np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8", np.dtype(np.int16): "int16",
                 np.dtype(np.uint16): "uint16", np.dtype(np.int32): "int32"}
        dtype = np.asarray(zp_raw).dtype
        if dtype not in kinds:
            raise FrontendError(f"{_describe(node)}: quantized type {dtype} is not supported; use int8, uint8, "
                                f"int16 or uint16 (int32 for biases)")
        zp = np.asarray(zp_raw, dtype=np.int64)
        if scale.size > 1 or zp.size > 1:
            axis = a.get("axis", 1)
            rank = len(shape)
            axis = axis + rank if axis < 0 else axis
            if scale.ndim != 1 or not 0 <= axis < rank or scale.size != shape[axis]:
                raise FrontendError(f"{_describe(node)}: scale of shape {scale.shape} along axis {a.get('axis', 1)} "
                                    f"does not fit a tensor of shape {shape}")
            view = [1] * rank
            view[axis] = -1
            scale = scale.reshape(view)
            zp = zp.reshape(view) if zp.size > 1 else zp.reshape(())
        return (np.broadcast_to(scale.reshape(()) if scale.size == 1 and scale.ndim else scale, shape),
                np.broadcast_to(zp.reshape(()) if zp.size == 1 and zp.ndim else zp, shape), kinds[dtype])

    def activation_encoding(self, node: onnx.NodeProto, fmt: str, scale: np.ndarray, zp: np.ndarray) -> TensorQuant:
        if np.ptp(scale) != 0 or np.ptp(zp) != 0:
            raise FrontendError(f"{_describe(node)}: per-channel quantization of an activation is not supported; "
                                f"activations take one scale and zero point per tensor")
        s = float(scale.flat[0])
        if not (np.isfinite(s) and s > 0):
            raise FrontendError(f"{_describe(node)}: scale {s} must be positive and finite")
        return TensorQuant(fmt, s, int(zp.flat[0]))

    def prep_quantize(self, node: onnx.NodeProto) -> None:
        src = self.name(node.input[0])
        if src in self.consts:  # a float weight quantized in the graph: evaluate it
            x = np.asarray(self.consts[src], dtype=np.float64)
            scale, zp, fmt = self.q_params(node, x.shape)
            info = np.iinfo(np.dtype(fmt))
            q = np.clip(np.rint(x / scale) + zp, info.min, info.max).astype(np.dtype(fmt))
            self.consts[node.output[0]] = q
            return
        scale, zp, fmt = self.q_params(node, ())
        if _attrs(node).get("saturate", 1) != 1:
            raise FrontendError(f"{_describe(node)}: only saturating quantization is supported")
        self.quantized[node.output[0]] = (src, self.activation_encoding(node, fmt, scale, zp), node)
        self.quantized_dtype[node.output[0]] = np.dtype(fmt)

    def prep_dequantize(self, node: onnx.NodeProto) -> None:
        src = self.name(node.input[0])
        if src in self.consts:  # a quantized weight or bias
            codes = np.asarray(self.consts[src])
            scale, zp, fmt = self.q_params(node, codes.shape)
            self.consts[node.output[0]] = (codes.astype(np.int64) - zp) * scale
            if fmt != "int32":
                f = get_format(fmt)
                self.const_quant[node.output[0]] = _ConstQuant(fmt, f.quantize(codes.astype(np.int64)), scale, zp)
            return
        if src not in self.quantized:
            raise FrontendError(f"{_describe(node)} dequantizes {node.input[0]!r}, which is neither a constant nor "
                                f"the output of a QuantizeLinear; only QuantizeLinear -> DequantizeLinear pairs on "
                                f"activations are supported (no integer graph inputs)")
        tensor, enc, qnode = self.quantized[src]
        scale, zp, fmt = self.q_params(node, ())
        if self.activation_encoding(node, fmt, scale, zp) != enc:
            raise FrontendError(f"{_describe(node)}: its scale/zero point differ from those of its QuantizeLinear "
                                f"{_describe(qnode)}; a Q/DQ pair must use the same encoding")
        self.record_encoding(node, tensor, enc)
        self.alias[node.output[0]] = tensor

    def record_encoding(self, node: onnx.NodeProto, tensor: str, enc: TensorQuant) -> None:
        old = self.tensor_quant.get(tensor)
        if old is not None and old != enc:
            raise FrontendError(f"{_describe(node)}: tensor {tensor!r} is quantized twice with different encodings "
                                f"({old} and {enc}); the IR gives each tensor one encoding")
        self.tensor_quant[tensor] = enc

    def qonnx_scalar(self, node: onnx.NodeProto, index: int, what: str) -> float:
        v = np.asarray(self.const(node, index, what), dtype=np.float64)
        if v.size != 1 or np.ptp(v) != 0:
            raise FrontendError(f"{_describe(node)}: {what} must be one number for the whole tensor, not shape "
                                f"{v.shape}")
        return float(v.flat[0])

    def qonnx_scale(self, node: onnx.NodeProto, shape: tuple[int, ...], index: int = 1) -> np.ndarray:
        scale = np.asarray(self.const(node, index, "scale"), dtype=np.float64)
        try:
            scale = np.broadcast_to(scale, shape)
        except ValueError:
            raise FrontendError(f"{_describe(node)}: scale of shape {scale.shape} does not broadcast to the "
                                f"tensor's {shape}") from None
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise FrontendError(f"{_describe(node)}: scales must be positive and finite")
        return scale

    def prep_int_quant(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        signed, narrow = bool(a.get("signed", 1)), bool(a.get("narrow", 0))
        mode = _text(a.get("rounding_mode", "ROUND")).upper()
        bits = self.qonnx_scalar(node, 3, "bitwidth")
        if bits != int(bits) or not 2 <= bits <= 16:
            raise FrontendError(f"{_describe(node)}: bit width {bits:g} is not supported; integers of 2..16 bits "
                                f"are (binary/bipolar and fractional widths are not)")
        bits = int(bits)
        fmt = f"{'int' if signed else 'uint'}{bits}"
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if narrow:
            lo, hi = (lo + 1, hi) if signed else (lo, hi - 1)
        src = self.name(node.input[0])
        if src in self.consts:
            x = np.asarray(self.consts[src], dtype=np.float64)
            scale = self.qonnx_scale(node, x.shape)
            zp = np.broadcast_to(np.asarray(self.const(node, 2, "zero point"), dtype=np.float64), x.shape)
            if np.any(zp != np.rint(zp)):
                raise FrontendError(f"{_describe(node)}: zero points must be integers")
            rounders = {"ROUND": np.rint, "HALF_EVEN": np.rint, "ROUND_TO_ZERO": np.trunc, "FLOOR": np.floor,
                        "CEIL": np.ceil, "HALF_UP": lambda v: np.floor(v + 0.5)}
            if mode not in rounders:
                raise FrontendError(f"{_describe(node)}: rounding mode {mode!r} is not supported; use one of "
                                    f"{', '.join(rounders)}")
            q = np.clip(rounders[mode](x / scale + zp), lo, hi)
            self.consts[node.output[0]] = (q - zp) * scale
            self.const_quant[node.output[0]] = _ConstQuant(fmt, get_format(fmt).quantize(q), scale,
                                                           zp.astype(np.int64))
            return
        if mode not in ("ROUND", "HALF_EVEN"):
            raise FrontendError(f"{_describe(node)}: activations are rounded to nearest even by the hardware; "
                                f"rounding mode {mode!r} is not supported (use ROUND)")
        if narrow:
            raise FrontendError(f"{_describe(node)}: narrow-range activation quantization is not supported; the "
                                f"hardware uses every code of {fmt} (set narrow=0)")
        scale = self.qonnx_scalar(node, 1, "scale")
        zp = self.qonnx_scalar(node, 2, "zero point")
        if zp != int(zp):
            raise FrontendError(f"{_describe(node)}: the zero point {zp} must be an integer")
        enc = self.activation_encoding(node, fmt, np.asarray(scale), np.asarray(int(zp)))
        self.record_encoding(node, src, enc)
        self.alias[node.output[0]] = src

    def prep_float_quant(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if not a.get("signed", 1):
            raise FrontendError(f"{_describe(node)}: unsigned minifloats are not supported")
        if _text(a.get("rounding_mode", "ROUND")).upper() != "ROUND":
            raise FrontendError(f"{_describe(node)}: only rounding mode ROUND (to nearest even) is supported")
        if not a.get("saturation", 1):
            raise FrontendError(f"{_describe(node)}: only saturating minifloat quantization is supported")
        e, m, b = (self.qonnx_scalar(node, i, w) for i, w in ((2, "exponent_bitwidth"), (3, "mantissa_bitwidth"),
                                                                (4, "exponent_bias")))
        if any(v != int(v) for v in (e, m, b)):
            raise FrontendError(f"{_describe(node)}: exponent/mantissa widths and bias must be integers")
        specials = "ieee" if a.get("has_infinity", a.get("has_inf", 0)) else "fn" if a.get("has_nan", 0) else ""
        name = f"e{int(e)}m{int(m)}b{int(b)}{specials}{'' if a.get('has_subnormal', 1) else 'ftz'}"
        try:
            fmt = get_format(name)
        except FormatError as error:
            raise FrontendError(f"{_describe(node)}: its minifloat {name} is not a supported format: {error}") from None
        max_val = self.const(node, 5, "max_val", required=False)
        if max_val is not None:
            mv = np.asarray(max_val, dtype=np.float64)
            if mv.size != 1 or not np.isclose(float(mv.flat[0]), fmt.max, rtol=1e-6, atol=0):
                raise FrontendError(f"{_describe(node)}: max_val {mv.ravel()[:4]} differs from the largest value "
                                    f"{fmt.max:g} of {fmt.name}; only the format's own range is supported")
        src = self.name(node.input[0])
        if src in self.consts:
            x = np.asarray(self.consts[src], dtype=np.float64)
            scale = self.qonnx_scale(node, x.shape)
            codes = fmt.quantize(x / scale)
            self.consts[node.output[0]] = fmt.decode(codes) * scale
            self.const_quant[node.output[0]] = _ConstQuant(fmt.name, codes, scale, np.zeros(x.shape, np.int64))
            return
        scale = self.qonnx_scalar(node, 1, "scale")
        enc = self.activation_encoding(node, fmt.name, np.asarray(scale), np.asarray(0))
        self.record_encoding(node, src, enc)
        self.alias[node.output[0]] = src

    def weight_quant_for(self, node: onnx.NodeProto, tensor: str, layout) -> WeightQuant | None:
        """The WeightQuant of a weight input, after ``layout`` (the same transform as the float weight)."""
        cq = self.const_quant.get(self.name(tensor))
        if cq is None:
            return None
        codes, scale, zp = layout(cq.codes), layout(cq.scale), layout(cq.zero_point)
        if np.ptp(zp) != 0:
            raise FrontendError(f"{_describe(node)}: its weight has different zero points per channel; the IR "
                                f"takes one weight zero point")
        flat = scale.reshape(scale.shape[0], -1)
        if np.ptp(flat, axis=1).max(initial=0) != 0:
            raise FrontendError(f"{_describe(node)}: its weight scales vary along other axes than the output "
                                f"channel; only per-tensor and per-output-channel scales are supported")
        per_channel = flat[:, 0]
        scale = np.asarray(per_channel[0]) if np.ptp(per_channel) == 0 else per_channel.copy()
        return WeightQuant(cq.format, np.ascontiguousarray(codes), np.asarray(scale, dtype=np.float64),
                           int(zp.flat[0]) if zp.size else 0)

    @staticmethod
    def clip_to_encodings(layers: list[FloatLayer], tq: dict[str, TensorQuant]) -> None:
        """A layer whose output is quantized saturates to the encoding's range: say so in its ``clip``.

        Exact (quantizing a value clipped to the range of the codes gives the same code), and it keeps
        clamps that the quantizer expressed only through the encoding, such as a Relu onnxruntime removed
        because the zero point already sits at the lowest code.
        """
        for layer in layers:
            enc = tq.get(layer.output)
            if enc is None or not _accumulating(layer.op) or layer.activation is not None:
                continue        # an activation's table quantizes to the encoding (and its clip comes before it)
            fmt = get_format(enc.format)
            lo, hi = (fmt.min - enc.zero_point) * enc.scale, (fmt.max - enc.zero_point) * enc.scale
            if layer.clip is not None:
                lo, hi = max(lo, layer.clip[0]), min(hi, layer.clip[1])
                lo = min(lo, hi)
            layer.clip = (float(lo), float(hi))

    @staticmethod
    def propagate_encodings(layers: list[FloatLayer], tq: dict[str, TensorQuant]) -> None:
        """MaxPool and Flatten keep their input's encoding (sw/ir.py): fill gaps, refuse contradictions."""
        if not tq:
            return
        for _ in range(2):
            for layer in layers if _ == 0 else reversed(layers):
                if layer.op not in ("maxpool", "flatten"):
                    continue
                a, b = layer.inputs[0], layer.output
                if a in tq and b in tq and tq[a] != tq[b]:
                    raise FrontendError(f"Layer {layer.name!r} ({layer.op}) has input encoding {tq[a]} and output "
                                        f"encoding {tq[b]}; the IR's {layer.op} keeps its input's encoding, so both "
                                        f"must be equal")
                if a in tq:
                    tq.setdefault(b, tq[a])
                elif b in tq:
                    tq[a] = tq[b]


def _accumulating(op: str) -> bool:
    from sw.ops import OPERATORS
    return OPERATORS[op].accumulating
