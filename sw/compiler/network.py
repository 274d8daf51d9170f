"""A whole quantized network as one engine program: placement of tensors, lowering of layers to jobs, layers
in order behind barriers, and the manifest that tells a host where inputs and outputs live.

Tensors live in external memory in the engine's blocked layout (``C/cols`` blocks of ``H*W`` lines, one code per
lane). A vector (a linear layer's input or output) is a 1x1 map whose "channels" are memory positions: flatten
costs nothing, because the linear layer's weights are permuted at compile time to the order in which the
feature map already sits in memory. A max pool whose input comes from an accumulating layer used nowhere else
is fused into that layer (ALU MAX on its accumulators); any other max pool runs on an identity layer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from hw.spec.layout import output_line_bytes, pack_codes, unpack_codes
from sw.ir import ACCUMULATING_OPS, QuantizedNetwork, QuantLayer

from .program import Program, ProgramBuilder, Region
from .tiling import ConvJob, LayoutError, Plan, Pool, Requant, Source, ceil_div, emit_job, plan_job, split_job

__all__ = ["CompileError", "Placement", "CompiledNetwork", "compile_network"]


class CompileError(ValueError):
    """A network this engine cannot run; the message names the layer and the reason."""



@dataclass
class Placement:
    """Where a tensor lives: a blocked ``channels x height x width`` map at ``region``; for a vector, ``index``
    gives the map channel (memory position) of each element."""

    region: str
    channels: int
    height: int
    width: int
    index: list[int] | None = None

    def to_dict(self) -> dict:
        return {"region": self.region, "channels": self.channels, "height": self.height, "width": self.width,
                "index": self.index}


@dataclass
class CompiledNetwork:
    config: AcceleratorConfig
    network: QuantizedNetwork
    program: Program
    placements: dict[str, Placement]
    #: One entry per engine layer: name, op, the IR layers it runs, its plan and counts.
    layers: list[dict] = field(default_factory=list)
    compile_seconds: float = 0.0

    # --- host side -------------------------------------------------------------------------------------
    def _map_bytes(self, p: Placement) -> int:
        return ceil_div(p.channels, self.config.cols) * p.height * p.width * output_line_bytes(self.config)

    def tensor_region(self, name: str) -> tuple[int, int]:
        """(address, bytes) of tensor ``name`` in external memory."""
        p = self.placements[name]
        return self.program.regions[p.region].addr, self._map_bytes(p)

    def tensor_bytes(self, name: str, codes: np.ndarray) -> np.ndarray:
        """Codes of tensor ``name`` for a batch (N, *IR shape) in the engine's layout: (N, bytes) uint8."""
        c, p = self.config, self.placements[name]
        zero = self.network.tensors[name].zero_code()
        codes = np.asarray(codes)
        n = codes.shape[0]
        dtype = np.uint8 if c.acts.bits <= 8 else np.uint16
        if codes.size and (codes.dtype.kind not in "iu" or codes.min() < 0 or codes.max() >> c.acts.bits):
            raise ValueError(f"Codes must be integers in 0..{(1 << c.acts.bits) - 1}")
        if p.index is not None:
            chw = np.full((n, p.channels), zero, dtype=dtype)
            chw[:, np.asarray(p.index)] = codes.reshape(n, -1)
        else:
            chw = codes.reshape(n, p.channels, p.height * p.width)
        blocks = ceil_div(p.channels, c.cols)
        lines = np.full((n, blocks, p.height * p.width, c.cols), zero, dtype=dtype)
        for b in range(blocks):                       # block b holds channels b*cols.. in its lanes
            part = chw[:, b * c.cols:(b + 1) * c.cols].reshape(n, -1, p.height * p.width)
            lines[:, b, :, :part.shape[1]] = part.transpose(0, 2, 1)
        return pack_codes(lines, c.acts.bits, output_line_bytes(c)).reshape(n, -1)

    def tensor_codes(self, name: str, data: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`tensor_bytes`: (N, bytes) from external memory to codes (N, *IR shape)."""
        c, p = self.config, self.placements[name]
        data = np.asarray(data, dtype=np.uint8)
        n, blocks = data.shape[0], ceil_div(p.channels, c.cols)
        lines = unpack_codes(data.reshape(n, blocks * p.height * p.width, -1), c.cols, c.acts.bits)
        chw = lines.reshape(n, blocks, p.height * p.width, c.cols).transpose(0, 1, 3, 2)
        chw = chw.reshape(n, -1, p.height * p.width)[:, :p.channels]
        if p.index is not None:
            return chw.reshape(n, -1)[:, np.asarray(p.index)]
        return chw.reshape(n, *self.network.shapes[name])

    def write_tensor(self, dram: bytearray, name: str, codes: np.ndarray) -> None:
        """Write one sample's codes (IR shape) of tensor ``name`` into ``dram``, in the engine's layout."""
        addr, _ = self.tensor_region(name)
        data = self.tensor_bytes(name, np.asarray(codes)[None])[0]
        dram[addr:addr + data.size] = data.tobytes()

    def read_tensor(self, dram, name: str) -> np.ndarray:
        """One sample's codes (IR shape) of tensor ``name`` from ``dram``."""
        addr, nbytes = self.tensor_region(name)
        raw = np.frombuffer(bytes(dram), np.uint8)[addr:addr + nbytes]
        return self.tensor_codes(name, raw[None])[0]

    def dram_with_input(self, codes: np.ndarray) -> bytearray:
        dram = bytearray(self.program.dram)
        self.write_tensor(dram, self.network.input, codes)
        return dram

    @property
    def materialized(self) -> list[str]:
        """Tensors with their own place in external memory (the others were fused away or are flatten views)."""
        return [name for name, p in self.placements.items() if p.region == f"tensor:{name}"]

    # --- files ---------------------------------------------------------------------------------------------
    def manifest(self) -> dict:
        net = self.network

        def io(name):
            t = net.tensors[name]
            p = self.placements[name]
            r = self.program.regions[p.region]
            return {"name": name, "shape": list(net.shapes[name]),
                    "encoding": {"format": t.format, "scale": t.scale, "zero_point": t.zero_point},
                    "addr": r.addr, "bytes": self._map_bytes(p), "placement": p.to_dict()}
        return {
            "config": self.config.to_dict(),
            "program": {"addr": self.program.program_addr, "instructions": len(self.program.words),
                        "dram_size": self.program.dram_size, "image": "program.bin", "listing": "program.asm"},
            "input": io(net.input),
            "output": io(net.output),
            "tensors": {name: p.to_dict() for name, p in self.placements.items()},
            "regions": {name: {"addr": r.addr, "bytes": r.size} for name, r in self.program.regions.items()},
            "layers": self.layers,
            "useful_macs": self.program.useful_macs,
            "compile_seconds": round(self.compile_seconds, 3),
        }

    def save(self, folder: Path) -> None:
        """Write the program folder (see :mod:`sw.compiler.folder`)."""
        from .folder import save_folder
        save_folder(self, folder)

    @classmethod
    def load(cls, folder: Path, *, verify_digests: bool = True) -> "CompiledNetwork":
        """Read a program folder, refusing one that is damaged or edited (see :mod:`sw.compiler.folder`)."""
        from .folder import load_folder
        return load_folder(folder, verify_digests=verify_digests)

    def listing(self) -> str:
        """The assembly listing, with a comment line where each layer begins."""
        starts = {entry["first_instruction"]: entry for entry in self.layers}
        lines = self.program.listing().splitlines()
        out = [f"; {self.network.input} -> {self.network.output} on {self.config.rows}x{self.config.cols} "
               f"{self.config.weights.name} x {self.config.acts.name}"]
        for i, line in enumerate(lines):
            if i in starts:
                e = starts[i]
                out.append(f"; layer {e['name']} ({e['op']}{' + ' + ', '.join(e['fused']) if e['fused'] else ''}): "
                           f"{e['plan']['order']} order, {e['plan']['rows']} output rows per tile")
            out.append(line)
        return "\n".join(out) + "\n"


# --- lowering ------------------------------------------------------------------------------------------------

def _one_code(fmt_name: str) -> int:
    fmt = get_format(fmt_name)
    code = int(fmt.quantize(1.0))
    if float(fmt.decode(code)) != 1.0:
        raise CompileError(f"the weight format {fmt.name} cannot represent 1, which pooling, add and concat layers "
                           f"need for their identity weights")
    return code


def _dense_conv_weights(layer: QuantLayer, cin: int) -> np.ndarray:
    """IR conv weights (Cout, Cin/g, kh, kw) per tensor as dense (T, kh, kw, Cin, Cout), zero across groups."""
    groups = int(layer.attrs.get("groups", 1))
    w0 = layer.weights[0]
    cout, cg, kh, kw = w0.shape
    out = np.zeros((len(layer.weights), kh, kw, cin, cout), dtype=np.int64)
    per_group = cout // groups
    for t, w in enumerate(layer.weights):
        for g in range(groups):
            block = np.asarray(w[g * per_group:(g + 1) * per_group], dtype=np.int64)    # (per_group, cg, kh, kw)
            out[t, :, :, g * cg:(g + 1) * cg, g * per_group:(g + 1) * per_group] = block.transpose(2, 3, 1, 0)
    return out


def _pair(v, name: str, layer: str) -> int:
    v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if v[0] != v[1]:
        raise CompileError(f"layer {layer!r}: {name} {v} differs between height and width; the engine supports "
                           f"equal {name}s only")
    return int(v[0])


def _window(layer: QuantLayer, shape: tuple[int, int]) -> tuple[Pool, tuple[int, int, int, int]]:
    """A pooling layer's window on the engine and its padding."""
    if layer.op == "global_avgpool":
        return Pool("sum", shape, shape), (0, 0, 0, 0)
    a = layer.attrs
    pool = Pool("max" if layer.op == "maxpool" else "sum", tuple(int(k) for k in a["kernel"]),
                tuple(int(v) for v in a.get("stride", (1, 1))), tuple(int(v) for v in a.get("dilation", (1, 1))))
    return pool, tuple(int(v) for v in a.get("padding", (0, 0, 0, 0)))


def compile_network(net: QuantizedNetwork, config: AcceleratorConfig, *, progress=None, order: str | None = None,
                    max_rows: int | None = None) -> CompiledNetwork:
    """Lower ``net`` to one program for an engine built with ``config``.

    ``order`` / ``max_rows``: restrict every layer's tiling (see :func:`plan_job`); by default the cost model
    chooses freely. Lowering runs twice: the second time the code area is exactly as long as the program, so
    the memory image holds no empty instruction space.
    """
    started = time.perf_counter()
    count = _lower(net, config, None, None, order, max_rows)
    compiled = _lower(net, config, count, progress, order, max_rows)
    compiled.compile_seconds = time.perf_counter() - started
    return compiled


def _lower(net: QuantizedNetwork, config: AcceleratorConfig, max_instructions: int | None, progress, order,
           max_rows) -> CompiledNetwork | int:
    """The compiled network, or (``max_instructions`` None) only how many instructions it has."""
    c = config
    if c.acts.name != get_format(net.act_format).name or c.weights.name != get_format(net.weight_format).name:
        raise CompileError(f"the network is quantized for {net.weight_format} weights x {net.act_format} "
                           f"activations, the engine is built for {c.weights.name} x {c.acts.name}")
    if c.acc_bits != net.acc_bits:
        raise CompileError(f"the network assumes {net.acc_bits}-bit accumulators, the engine has {c.acc_bits}")
    if c.rows != c.cols:
        raise CompileError(f"networks need a square array (the output of one layer is the input of the next): "
                           f"rows {c.rows} != cols {c.cols}")
    consumers: dict[str, list[QuantLayer]] = {}
    producer: dict[str, QuantLayer] = {}
    for layer in net.layers:
        producer[layer.output] = layer
        for name in layer.inputs:
            consumers.setdefault(name, []).append(layer)

    # Max pools fused into the accumulating layer before them: producer name -> pool layer.
    fused: dict[str, QuantLayer] = {}
    for layer in net.layers:
        if layer.op != "maxpool":
            continue
        src = producer.get(layer.inputs[0])
        # Fusing needs a monotone rescale (positive multipliers) and no padding (the conv outputs are the map).
        if (src is not None and src.op in ACCUMULATING_OPS and len(consumers.get(src.output, [])) == 1
                and src.output != net.output and not any(layer.attrs.get("padding", (0, 0, 0, 0)))
                and np.all(np.asarray(src.multiplier, dtype=object) > 0)):
            fused[src.name] = layer

    b = ProgramBuilder(c, max_instructions=max_instructions or 1 << 22)
    placements: dict[str, Placement] = {}

    def place_map(name: str, channels: int, h: int, w: int) -> Placement:
        size = ceil_div(channels, c.cols) * h * w * output_line_bytes(c)
        b.region(f"tensor:{name}", size=size)
        p = Placement(f"tensor:{name}", channels, h, w)
        placements[name] = p
        return p

    shape_in = net.input_shape
    if len(shape_in) == 3:
        place_map(net.input, *shape_in)
    else:
        placements[net.input] = Placement(place_map(net.input, shape_in[0], 1, 1).region, shape_in[0], 1, 1,
                                          list(range(shape_in[0])))

    def source_map(name: str, layer: QuantLayer) -> Placement:
        p = placements.get(name)
        if p is None:
            raise CompileError(f"layer {layer.name!r} reads {name!r}, which no earlier layer writes")
        return p

    one = None
    jobs: list[tuple[ConvJob, list[str], str, str]] = []
    skip = {pool.name for pool in fused.values()}
    for layer in net.layers:
        if layer.name in skip:
            continue
        if layer.op == "flatten":
            p = source_map(layer.inputs[0], layer)
            if p.index is not None:
                placements[layer.output] = p
            else:
                hw_ = p.height * p.width
                index = [(ch // c.cols) * hw_ * c.cols + pix * c.cols + ch % c.cols
                         for ch in range(p.channels) for pix in range(hw_)]
                placements[layer.output] = Placement(p.region, ceil_div(p.channels, c.cols) * c.cols * hw_, 1, 1, index)
            continue
        pool_layer = fused.get(layer.name)
        out_name = pool_layer.output if pool_layer is not None else layer.output
        pad_value = net.tensors[layer.inputs[0]].zero_code()
        pool = None
        requant = None
        if layer.op in ACCUMULATING_OPS:
            requant = _requant(layer, net.shapes[layer.output][0])
        attrs = layer.attrs
        kernel, stride, dilation, padding = (1, 1), 1, 1, (0, 0, 0, 0)
        ins = [source_map(n, layer) for n in layer.inputs]
        p0 = ins[0]
        if layer.op != "linear" and p0.index is not None:
            raise CompileError(f"layer {layer.name!r} ({layer.op}) needs a feature map, not a vector")
        if layer.op == "conv":
            weights = _dense_conv_weights(layer, p0.channels)
            kernel = weights.shape[1:3]
            stride = _pair(attrs.get("stride", 1), "stride", layer.name)
            dilation = _pair(attrs.get("dilation", 1), "dilation", layer.name)
            padding = tuple(int(v) for v in attrs.get("padding", (0, 0, 0, 0)))
            sources = [weights]
            cout = weights.shape[-1]
        elif layer.op == "linear":
            if p0.index is None and (p0.height, p0.width) != (1, 1):
                raise CompileError(f"layer {layer.name!r}: a linear layer needs a vector input (flatten first)")
            index = p0.index if p0.index is not None else list(range(p0.channels))
            stacked = np.stack([np.asarray(w, dtype=np.int64) for w in layer.weights])       # (T, N, K)
            weights = np.zeros((stacked.shape[0], 1, 1, p0.channels, stacked.shape[1]), dtype=np.int64)
            weights[:, 0, 0, np.asarray(index), :] = stacked.transpose(0, 2, 1)
            sources = [weights]
            cout = stacked.shape[1]
        else:
            one = one if one is not None else _one_code(net.weight_format)
            ch = p0.channels
            if layer.op in ("avgpool", "global_avgpool", "maxpool"):
                # The map through an identity tile into the accumulators (padded as the window needs: padding
                # never wins a max), then the window by ALU instructions.
                pool, padding = _window(layer, (p0.height, p0.width))
                if pool.kind == "max":
                    fmt = get_format(net.act_format)
                    pad_value = int(fmt.quantize(fmt.min))
                eye = np.zeros((1, 1, 1, ch, ch), dtype=np.int64)
                eye[0, 0, 0, np.arange(ch), np.arange(ch)] = one
                sources = [eye]
                cout = ch
            elif layer.op == "add":
                for p in ins[1:]:
                    if (p.channels, p.height, p.width) != (p0.channels, p0.height, p0.width):
                        raise CompileError(f"layer {layer.name!r}: add inputs differ in shape")
                eye = np.zeros((1, 1, 1, ch, ch), dtype=np.int64)
                eye[0, 0, 0, np.arange(ch), np.arange(ch)] = one
                sources = [eye] * len(ins)
                cout = ch
            elif layer.op == "concat":
                cout = sum(p.channels for p in ins)
                sources, offset = [], 0
                for p in ins:
                    if (p.height, p.width) != (p0.height, p0.width):
                        raise CompileError(f"layer {layer.name!r}: concat inputs differ in height or width")
                    shifted = np.zeros((1, 1, 1, p.channels, cout), dtype=np.int64)
                    shifted[0, 0, 0, np.arange(p.channels), offset + np.arange(p.channels)] = one
                    sources.append(shifted)
                    offset += p.channels
            else:
                raise CompileError(f"layer {layer.name!r}: the compiler cannot lower operator {layer.op!r}")
            if layer.op == "maxpool":
                # Identity: v = (value / 2**e + B) * 2**30 * 2**(e - 30) = value - zero point, exactly.
                e, t = net.acc_exponent, net.tensors[layer.inputs[0]]
                if e > 0 and t.zero_point:
                    raise CompileError(f"layer {layer.name!r}: a zero point needs an accumulator unit of at most 1")
                requant = Requant(np.full(ch, -(t.zero_point << max(0, -e))), np.full(ch, 1 << 30), np.full(ch, 30),
                                  t.zero_point, *_range_codes(net.act_format))
        if pool_layer is not None:
            pool, _ = _window(pool_layer, (0, 0))
        job = ConvJob(layer.name, [Source(b.regions[p.region], p.channels, w) for p, w in zip(ins, sources)],
                      p0.height, p0.width, int(cout), tuple(int(k) for k in kernel), stride, dilation, padding,
                      pad_value, requant, Region(0, 0), pool)
        cho, cwo = job.conv_out
        # Multiply-accumulates of the model: those of its convolutions and matrix products.
        job.macs = int(cho * cwo * layer.weights[0].size * len(layer.weights)) if layer.op in ("conv", "linear") \
            else 0
        ho, wo = job.out_shape
        if ho < 1 or wo < 1:
            raise CompileError(f"layer {layer.name!r} has no output on a {p0.height}x{p0.width} input")
        out = place_map(out_name, int(cout), ho, wo)
        if len(net.shapes[out_name]) == 1:
            out.index = list(range(int(cout)))
        job.out = b.regions[out.region]
        jobs.append((job, [layer.name] + ([pool_layer.name] if pool_layer is not None and pool_layer is not layer
                                          else []), layer.op, out_name))

    entries = []
    half = c.param_buffer_depth // 2
    emitted = 0
    for n, (job, names, op, out_name) in enumerate(jobs):
        if progress:
            progress(f"layer {n + 1}/{len(jobs)}: {job.name}")
        first = len(b.words)
        plans, counts = [], {"steps": 0, "tiles": 0, "instructions": 0}
        try:
            for part in split_job(c, job):          # column strips and channel groups, when it needs them
                plan: Plan = plan_job(c, part, order=order, max_rows=max_rows)
                if emitted:
                    b.barrier()
                for key, value in emit_job(b, part, plan, param_base=(emitted % 2) * half).items():
                    counts[key] += value
                plans.append(plan)
                emitted += 1
        except LayoutError as e:
            raise CompileError(str(e)) from None
        entries.append({"name": job.name, "op": op, "fused": names[1:], "output": out_name,
                        "plan": {"rows": plans[0].rows, "order": plans[0].order,
                                 "estimated_cycles": sum(p.cycles for p in plans),
                                 "dram_bytes": sum(p.dram_bytes for p in plans), "parts": len(plans)},
                        "macs": job.useful_macs, "first_instruction": first, **counts})
    if max_instructions is None:
        return len(b.words) + 1                      # with FINISH
    program = b.build(f"network {net.input} -> {net.output}", useful_macs=sum(e["macs"] for e in entries))
    for name in placements:
        if name not in net.shapes:
            raise CompileError(f"internal: placement of unknown tensor {name!r}")
    return CompiledNetwork(c, net, program, placements, entries)


def _requant(layer: QuantLayer, channels: int) -> Requant:
    """The layer's post-processing integers, one per output channel, checked against their PARAM fields."""
    def per_channel(name, value, default, lo, hi):
        if value is None:
            if default is None:
                raise CompileError(f"layer {layer.name!r} has no {name}")
            value = default
        a = np.asarray(value, dtype=object).ravel()
        if a.size == 1:
            a = np.repeat(a, channels)
        if a.size != channels:
            raise CompileError(f"layer {layer.name!r}: {a.size} {name} values for {channels} output channels")
        if not all(lo <= int(v) <= hi for v in a):
            raise CompileError(f"layer {layer.name!r}: {name} must lie in {lo}..{hi} (its PARAM field)")
        return np.array([int(v) for v in a], dtype=np.int64)
    return Requant(per_channel("bias", layer.bias, 0, -(1 << 63), (1 << 63) - 1),
                   per_channel("multiplier", layer.multiplier, None, -(1 << 31), (1 << 31) - 1),
                   per_channel("shift", layer.shift, None, 0, 255),
                   layer.zero_point, layer.clamp_lo, layer.clamp_hi)


def _range_codes(fmt_name: str) -> tuple[int, int]:
    fmt = get_format(fmt_name)
    return int(fmt.quantize(fmt.min)), int(fmt.quantize(fmt.max))
