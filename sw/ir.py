"""The network between the frontend, the quantizer, the golden model and the compiler.

A network is a list of layers in topological order over named activation tensors. Shapes never include the
batch: ``(C, H, W)`` for feature maps, ``(F,)`` for vectors.

``FloatNetwork`` is what the frontend reads from ONNX: float weights, BatchNorm already folded, Relu/Clip
fused into the layer before them as ``clip``. Models that carry their own quantization (QDQ, QONNX) also fill
``tensor_quant`` and ``weight_quant``.

``QuantizedNetwork`` is what the quantizer makes and what the golden model and the compiler consume: codes
and integers only. ``e = product_of(acts, weights).min_exponent`` is the exponent of the accumulator's least
significant bit (in a mixed-format network, ``QuantizedNetwork.formats``, the finest pair of its set, for every
layer) and ``value(q)`` the number a code stands for, in the format of its tensor (each tensor's encoding names it;
a layer's weights are in the network's weight format, or in ``QuantLayer.weight_format`` in a mixed network). Every operator's exact quantized meaning is
written in its own module of ``sw/ops`` (``conv``, ``linear``, ``pool``, ``add``, ``concat``, ``flatten``, ...);
the accumulating ones then go, per output channel ``c``, through ``out = rescale(acc, e, bias[c],
multiplier[c], shift[c], acts, zero_point, clamp_lo, clamp_hi, acc_bits)``
(:func:`sw.golden.postprocess.rescale`).

Conventions: codes are the raw bit patterns of their format (int8 -1 is code 255); zero points are values of
the format (int8: -128..127); missing stride/padding/dilation attributes take the ONNX defaults;
``weight_quant`` is keyed by layer name.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hw.spec.formats import Format, IntFormat, get_format, product_of

__all__ = ["OPS", "WEIGHTED_OPS", "ACCUMULATING_OPS", "FloatLayer", "FloatNetwork", "TensorQuant",
           "WeightQuant", "QuantTensor", "QuantLayer", "QuantizedNetwork", "NetworkFileError", "acc_exponent",
           "set_acc_exponent"]


def __getattr__(name: str):
    """``OPS`` (every operator of the IR), ``WEIGHTED_OPS`` (those with a weight tensor) and ``ACCUMULATING_OPS``
    (those that sum into accumulators and leave through the post-processing unit), from the registry of
    :mod:`sw.ops` (looked up lazily: the operators' modules import this one)."""
    if name in ("OPS", "WEIGHTED_OPS", "ACCUMULATING_OPS"):
        from sw.ops import OPERATORS
        test = {"OPS": lambda op: True, "WEIGHTED_OPS": lambda op: op.weighted,
                "ACCUMULATING_OPS": lambda op: op.accumulating}[name]
        return tuple(n for n, op in OPERATORS.items() if test(op))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def acc_exponent(act_format, weight_format) -> int:
    """Exponent of the least significant bit of the accumulators of an engine with these formats."""
    return product_of(get_format(act_format), get_format(weight_format)).min_exponent


def set_acc_exponent(formats) -> int:
    """Exponent of the accumulators' least significant bit for a set of formats: the finest product of any pair
    (a multi-format build's, :attr:`hw.spec.config.AcceleratorConfig.acc_exponent`, from the definitions)."""
    lsb = min(get_format(f).lsb_exponent for f in formats)
    return 2 * lsb


class _Endpoints:
    """The shapes of a network's input and output (both network classes have ``shapes``, ``input``, ``output``)."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shapes[self.input]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[self.output]


# --- float -------------------------------------------------------------------------------------------------

@dataclass
class FloatLayer:
    """One layer of a float network.

    ``attrs``: conv and pooling: ``kernel`` (kh, kw), ``stride`` (sh, sw), ``padding`` (top, left, bottom,
    right), ``dilation`` (dh, dw); conv also ``groups``. ``weight``: conv (Cout, Cin/groups, kh, kw); linear
    (N, K), meaning ``y = W @ x + b``. ``clip``: (lo, hi) applied to the output (Relu is (0, inf)).
    ``activation``: a nonlinear activation fused into the layer, applied after the clip: ``{"op": NAME, ...its
    attributes}`` with NAME an activation operator of :mod:`sw.ops.activations` (it runs in the post-processing
    unit's lookup table). ``output_stats``: (mean, std) per output channel of the output before its clip, from
    a BatchNormalization folded into the layer (its ``B`` and ``|scale|``): what data-free quantization
    (:mod:`sw.quantize.data_free`) knows of the layer's values without data; None without a BatchNormalization.
    """

    name: str
    op: str
    inputs: list[str]
    output: str
    attrs: dict = field(default_factory=dict)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    clip: tuple[float, float] | None = None
    activation: dict | None = None
    output_stats: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class TensorQuant:
    """An encoding a quantized model prescribes for a tensor: real = scale * (value(code) - zero_point)."""

    format: str
    scale: float
    zero_point: int = 0


@dataclass
class WeightQuant:
    """Weights as a quantized model stores them: codes (same shape as the float weight), a scale per tensor
    (shape ()) or per output channel (shape (Cout,)), and a zero point (0: symmetric)."""

    format: str
    codes: np.ndarray
    scale: np.ndarray
    zero_point: int = 0


@dataclass
class FloatNetwork(_Endpoints):
    input: str
    output: str
    shapes: dict[str, tuple[int, ...]]
    layers: list[FloatLayer]
    #: The ONNX names of the model's input and output, and the input's full shape (batch first).
    onnx_input: str = ""
    onnx_output: str = ""
    tensor_quant: dict[str, TensorQuant] = field(default_factory=dict)
    weight_quant: dict[str, WeightQuant] = field(default_factory=dict)


# --- quantized ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantTensor:
    """How an activation tensor is encoded: real = scale * (value(code) - zero_point)."""

    format: str
    scale: float
    zero_point: int = 0

    def zero_code(self) -> int:
        """The code of real zero (what padding holds)."""
        fmt = get_format(self.format)
        return int(fmt.quantize(self.zero_point)) if isinstance(fmt, IntFormat) else 0

    def quantize(self, x) -> np.ndarray:
        """Codes of float values: round to nearest even, saturate; never -0."""
        fmt = get_format(self.format)
        x = np.asarray(x, dtype=np.float64) / self.scale
        if isinstance(fmt, IntFormat):
            return fmt.quantize(np.rint(x) + self.zero_point)
        codes = fmt.quantize(x)
        return np.where(fmt.decode(codes) == 0, 0, codes).astype(codes.dtype)

    def dequantize(self, codes) -> np.ndarray:
        return (get_format(self.format).decode(np.asarray(codes)) - self.zero_point) * self.scale


@dataclass
class QuantLayer:
    """One layer of a quantized network; see the module docstring for what it computes.

    ``weights``: the codes of each tensor of a multi-tensor sum (one array for an ordinary layer), shaped as
    :attr:`FloatLayer.weight`, in ``weight_format`` (None: the network's weight format; set only in a
    mixed-format network, see :attr:`QuantizedNetwork.formats`). ``weight_scale``: per output channel, the real
    value of one unit of weight (reports only). ``bias``, ``multiplier``, ``shift``: per output channel,
    integers (bias in accumulator units). ``zero_point``, ``clamp_lo``, ``clamp_hi``: of the output.
    ``table``: a fused nonlinear activation (``attrs["activation"]`` names it): ``zero_point`` and the clamps are
    then those of the pre-activation encoding (``attrs["pre_scale"]``, ``attrs["pre_zero_point"]``) and each code
    ``q`` the rescale gives becomes ``table[q]``, a code of the output encoding
    (:func:`sw.golden.postprocess.lookup`; made by :func:`sw.golden.activation.activation_table`).
    ``multiplier_neg``, ``shift_neg``: a PRelu with one slope per channel (``attrs["activation"] == "prelu"``),
    per output channel: an output whose ``acc + bias`` is negative is rescaled with them instead of ``multiplier``
    and ``shift`` (``rescale(..., multiplier_neg=, shift_neg=)``; STORE ``negative_param`` on the engine).
    """

    name: str
    op: str
    inputs: list[str]
    output: str
    attrs: dict = field(default_factory=dict)
    weights: list[np.ndarray] = field(default_factory=list)
    weight_scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    zero_point: int = 0
    clamp_lo: int = 0
    clamp_hi: int = 0
    table: np.ndarray | None = None
    weight_format: str | None = None
    multiplier_neg: np.ndarray | None = None
    shift_neg: np.ndarray | None = None


#: The per-channel integer arrays of a QuantLayer besides its weights, as ``network.npz`` names them.
_LAYER_ARRAYS = ("weight_scale", "bias", "multiplier", "shift", "multiplier_neg", "shift_neg")


@dataclass
class QuantizedNetwork(_Endpoints):
    act_format: str
    weight_format: str
    #: Accumulator width of the engine; the bias saturates to it (see :func:`sw.golden.postprocess.rescale`).
    acc_bits: int
    input: str
    output: str
    shapes: dict[str, tuple[int, ...]]
    tensors: dict[str, QuantTensor]
    layers: list[QuantLayer]
    #: Per-layer quantization error, as the quantizer measured it (list of dicts).
    report: list[dict] = field(default_factory=list)
    #: A mixed-format network: the set of formats its tensors and layers' weights are encoded in (each tensor's
    #: ``QuantTensor.format``, each weighted layer's ``weight_format``); accumulators of every layer are then in
    #: units of ``2**acc_exponent``, the finest product of the set. Empty: one act and one weight format.
    formats: list[str] = field(default_factory=list)

    @property
    def acc_exponent(self) -> int:
        if self.formats:
            return set_acc_exponent(self.formats)
        return acc_exponent(self.act_format, self.weight_format)

    def act_format_of(self, tensor: str) -> Format:
        """The format of the codes of ``tensor`` (the network's act format unless the network mixes formats)."""
        return get_format(self.tensors[tensor].format if self.formats else self.act_format)

    def weight_format_of(self, layer: "QuantLayer") -> Format:
        """The format of ``layer``'s weight codes (the network's weight format unless the network mixes)."""
        return get_format(layer.weight_format if self.formats and layer.weight_format else self.weight_format)

    # --- files ----------------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """``network.json`` (structure, encodings, scalars) and ``network.npz`` (every array)."""
        folder = Path(folder)
        arrays, layers = {}, []
        for i, layer in enumerate(self.layers):
            entry = {k: getattr(layer, k) for k in ("name", "op", "inputs", "output", "zero_point", "clamp_lo",
                                                    "clamp_hi")}
            entry["attrs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in layer.attrs.items()}
            entry["weights"] = len(layer.weights)
            if layer.weight_format is not None:
                entry["weight_format"] = layer.weight_format
            for j, w in enumerate(layer.weights):
                arrays[f"{i}.weight{j}"] = w
            for k in (*_LAYER_ARRAYS, "table"):
                if getattr(layer, k) is not None:
                    arrays[f"{i}.{k}"] = np.asarray(getattr(layer, k))
            layers.append(entry)
        doc = {"act_format": self.act_format, "weight_format": self.weight_format, "acc_bits": self.acc_bits,
               "input": self.input, "output": self.output,
               "shapes": {k: list(v) for k, v in self.shapes.items()},
               "tensors": {k: {"format": t.format, "scale": t.scale, "zero_point": t.zero_point}
                           for k, t in self.tensors.items()},
               "layers": layers, "report": self.report, **({"formats": self.formats} if self.formats else {})}
        (folder / "network.json").write_text(json.dumps(doc, indent=1) + "\n")
        np.savez_compressed(folder / "network.npz", **arrays)

    @classmethod
    def load(cls, folder: Path) -> "QuantizedNetwork":
        """Read ``network.json`` + ``network.npz``; a :class:`NetworkFileError` for anything malformed, checked
        before a value of the files can size an allocation."""
        folder = Path(folder)
        try:
            text = (folder / "network.json").read_bytes()
            if len(text) > _MAX_JSON_BYTES:
                raise NetworkFileError(f"network.json is {len(text) >> 20} MiB, not a network this project wrote")
            doc = json.loads(text)
            with np.load(folder / "network.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            return _network_from(cls, doc, arrays)
        except NetworkFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, zipfile.BadZipFile) as e:
            raise NetworkFileError(f"cannot read the network ({type(e).__name__}: "
                                   f"{' '.join(str(e).split())[:160]})") from None


class NetworkFileError(ValueError):
    """``network.json``/``network.npz`` that this project did not write, or damaged ones."""


_MAX_JSON_BYTES = 256 << 20
_MAX_DIM = 1 << 16


def _network_from(cls, doc: dict, arrays: dict) -> QuantizedNetwork:
    """A :class:`QuantizedNetwork` from the parsed files, checking every value that sizes work or memory."""
    def bad(message):
        raise NetworkFileError(message)

    def small_ints(value, what, lo=0, hi=_MAX_DIM):
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in items):
            bad(f"{what} must be integers in {lo}..{hi}, not {str(value)[:40]}")
        return tuple(value) if isinstance(value, list) else value

    if not isinstance(doc, dict):
        bad("network.json must hold an object")
    shapes = {k: small_ints(v, f"shape of {k!r}", 1) for k, v in doc["shapes"].items()}
    if any(not isinstance(v, tuple) or not 1 <= len(v) <= 3 for v in shapes.values()):
        bad("tensor shapes must be lists of 1 to 3 sizes")
    tensors = {k: QuantTensor(str(v["format"]), float(v["scale"]), small_ints(v["zero_point"], "zero points",
                                                                              -_MAX_DIM, _MAX_DIM))
               for k, v in doc["tensors"].items()}
    layers = []
    for i, e in enumerate(doc["layers"]):
        if e["op"] not in __getattr__("OPS"):
            bad(f"layer {i} has unknown op {str(e['op'])[:20]!r}")
        attrs = {k: _attribute(v, f"attribute {k!r} of layer {i}", small_ints, signed=k in _SIGNED_ATTRIBUTES)
                 for k, v in e["attrs"].items()}
        weights = [arrays[f"{i}.weight{j}"] for j in range(small_ints(e["weights"], "weight counts", 0, 8))]
        extra = [arrays.get(f"{i}.{k}") for k in _LAYER_ARRAYS]
        if any(a.dtype.kind not in "iu" for a in [*weights, *(x for x in extra[1:] if x is not None)]):
            bad(f"layer {i}: weights, bias, multiplier and shift (both sides) must be integer arrays")
        if (extra[4] is None) != (extra[5] is None):
            bad(f"layer {i}: multiplier_neg and shift_neg go together")
        table = arrays.get(f"{i}.table")
        if table is not None and (table.dtype.kind not in "iu" or table.ndim != 1 or table.size > _MAX_DIM
                                  or (table.size and (table.min() < 0 or table.max() >= _MAX_DIM))):
            bad(f"layer {i}: an activation table must be a 1-D array of at most {_MAX_DIM} codes")
        layers.append(QuantLayer(str(e["name"]), e["op"], [str(x) for x in e["inputs"]], str(e["output"]), attrs,
                                 weights, *extra[:4], small_ints(e["zero_point"], "zero points", -_MAX_DIM, _MAX_DIM),
                                 small_ints(e["clamp_lo"], "clamps"), small_ints(e["clamp_hi"], "clamps"), table,
                                 None if e.get("weight_format") is None else str(e["weight_format"]),
                                 multiplier_neg=extra[4], shift_neg=extra[5]))
    formats = doc.get("formats", [])
    if not isinstance(formats, list) or len(formats) > 8 or not all(isinstance(f, str) for f in formats):
        bad("formats must be a list of at most 8 format names")
    for name in [*formats, *(la.weight_format for la in layers if la.weight_format is not None)]:
        try:
            get_format(name)
        except ValueError as e:
            bad(f"unknown format {name[:20]!r} ({e})")
    return cls(str(doc["act_format"]), str(doc["weight_format"]), small_ints(doc["acc_bits"], "acc_bits", 2, 256),
               str(doc["input"]), str(doc["output"]), shapes, tensors, layers, doc.get("report", []),
               [str(f) for f in formats])


#: Integer attributes that may be negative: the zero point of a fused activation's input encoding.
_SIGNED_ATTRIBUTES = ("pre_zero_point",)


def _attribute(value, what: str, small_ints, signed: bool = False):
    """An attribute: small integers (or a list of them; negative ones only where ``signed``), one finite number (a
    padding constant, a scale), or text (a host layer's ONNX graph, an activation's name)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if not np.isfinite(value):
            raise NetworkFileError(f"{what} must be finite, not {value}")
        return value
    return small_ints(value, what, -_MAX_DIM) if signed else small_ints(value, what)
