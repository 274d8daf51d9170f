"""A whole quantized network as one engine program: every layer lowered by its operator (``sw/ops``, through
:class:`~sw.compiler.lowering.Lowering`) to jobs, the jobs in order behind barriers, and the manifest that tells
a host where inputs and outputs live. A max pool whose input comes from an accumulating layer used nowhere else
is fused into that layer (ALU instructions on its accumulators); any other runs on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from hw.spec.layout import output_line_bytes, pack_codes, unpack_codes
from sw.golden.activation import table_monotone
from sw.ir import QuantizedNetwork, QuantLayer
from sw.ops import OPERATORS

from .fold import input_fold
from .formats import LayerFormats, select_formats
from .lowering import CompileError, Lowering, LoweredHost, Placement
from .program import Program, ProgramBuilder
from .elementwise import MulJob, emit_mul, plan_mul, split_mul
from .splitting import split_job
from .tiling import LayoutError, Plan, ceil_div, emit_job, plan_job

__all__ = ["CompileError", "Placement", "CompiledNetwork", "compile_network"]


@dataclass
class CompiledNetwork:
    config: AcceleratorConfig
    network: QuantizedNetwork
    program: Program
    placements: dict[str, Placement]
    #: One entry per engine layer: name, op, the IR layers it runs, its plan and counts.
    layers: list[dict] = field(default_factory=list)
    compile_seconds: float = 0.0
    #: What runs, in order: {"kind": "engine", "program": index into program.segments} and {"kind": "host",
    #: "layer": name}. A network without host layers is one engine program.
    steps: list[dict] = field(default_factory=lambda: [{"kind": "engine", "program": 0}])
    _formats: LayerFormats | None = field(default=None, repr=False, compare=False)

    @property
    def host_layers(self) -> list[str]:
        return [s["layer"] for s in self.steps if s["kind"] == "host"]

    def host_macs(self) -> dict[str, tuple[str, int]]:
        """Per host layer: its ONNX operators and multiply-accumulates per sample (an estimate; none for a layer of
        another operator that the compiler left to the host, such as a mul this engine's accumulators cannot hold)."""
        net, host = self.network, OPERATORS["host"]
        layers = {layer.name: layer for layer in net.layers}
        return {name: (layers[name].attrs["op_type"],
                       host.macs(layers[name], [net.shapes[t] for t in layers[name].inputs]))
                if layers[name].op == "host" else (layers[name].op, 0)
                for name in self.host_layers}

    def program_address(self, step: dict) -> int:
        """Byte address of an engine step's first instruction."""
        from hw.spec.isa import INSTRUCTION_BYTES
        return self.program.program_addr + self.program.segments[step["program"]][0] * INSTRUCTION_BYTES

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
        if p.fold is not None:
            codes = p.fold.apply(codes, zero)
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
        if p.fold is not None:
            raise ValueError(f"tensor {name!r} sits in external memory folded (im2col'd for its convolution); "
                             f"its codes are the input the host wrote")
        data = np.asarray(data, dtype=np.uint8)
        n, blocks = data.shape[0], ceil_div(p.channels, c.cols)
        lines = unpack_codes(data.reshape(n, blocks * p.height * p.width, -1), c.cols, c.acts.bits)
        chw = lines.reshape(n, blocks, p.height * p.width, c.cols).transpose(0, 1, 3, 2)
        chw = self._widened(name, chw.reshape(n, -1, p.height * p.width)[:, :p.channels])
        if p.index is not None:
            return chw.reshape(n, -1)[:, np.asarray(p.index)]
        return chw.reshape(n, *self.network.shapes[name])

    def _widened(self, name: str, codes: np.ndarray) -> np.ndarray:
        """Codes of tensor ``name`` as the network's format has them: a tensor a multi-format engine stores in a
        narrower format (sw/compiler/formats.py) holds that format's codes in the low bits of its slots."""
        index = self.formats.output(name) if self.config.multi_format else 0
        if not index:
            return codes
        narrow, engine = self.config.act_formats[index], get_format(self.network.act_format)
        values = narrow.decode(codes & ((1 << narrow.bits) - 1)).astype(np.int64)
        return (values % (1 << engine.bits)).astype(codes.dtype)

    @property
    def formats(self) -> LayerFormats:
        """The format each layer and tensor selects on a multi-format engine (a function of network and engine)."""
        if self._formats is None:
            self._formats = select_formats(self.network, self.config, _fused_pools(self.network))
        return self._formats

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
        """Tensors the engine wrote to a place of their own in external memory (the others were fused away or are
        flatten views; a folded input is the host's, in the convolution's layout)."""
        return [name for name, p in self.placements.items() if p.region == f"tensor:{name}" and p.fold is None]

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
            "segments": [list(seg) for seg in self.program.segments],
            "steps": self.steps,
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
    _check_engine(net, c)
    ctx = Lowering(net, c, ProgramBuilder(c, max_instructions=max_instructions or 1 << 22), _fused_pools(net))
    shape_in = net.input_shape
    if len(shape_in) == 3:
        ctx.place(net.input, *shape_in, fold=input_fold(net, c))
    else:
        ctx.place(net.input, shape_in[0], 1, 1).index = list(range(shape_in[0]))
    skip = {pool.name for pool in ctx.fused.values()}
    for layer in net.layers:
        if layer.name not in skip:
            OPERATORS[layer.op].lower(layer, ctx)
    entries = _emit(ctx, progress, order, max_rows)
    b = ctx.b
    if max_instructions is None:
        return len(b.words) + (0 if b.segment_empty and b.segments_ended else 1)     # with the last FINISH
    program = b.build(f"network {net.input} -> {net.output}", useful_macs=sum(e["macs"] for e in entries))
    for name in ctx.placements:
        if name not in net.shapes:
            raise CompileError(f"internal: placement of unknown tensor {name!r}")
    return CompiledNetwork(c, net, program, ctx.placements, entries, steps=ctx.steps)


def _check_engine(net: QuantizedNetwork, c: AcceleratorConfig) -> None:
    if c.multi_format and (c.act_slot_bits != c.acts.bits or c.weight_slot_bits != c.weights.bits
                           or c.acc_exponent != net.acc_exponent):
        # The network's codes are those of the set's first format, laid out as they are (sw/compiler/formats.py).
        raise CompileError(f"the compiler needs a multi-format engine whose first format ({c.acts.name}, the "
                           f"network's) is its widest and has the finest least significant bit of the set "
                           f"({', '.join(c.formats)}); list such a format first (e.g. --formats int8,int4)")
    if c.acts.name != get_format(net.act_format).name or c.weights.name != get_format(net.weight_format).name:
        raise CompileError(f"the network is quantized for {net.weight_format} weights x {net.act_format} "
                           f"activations, the engine is built for {c.weights.name} x {c.acts.name}")
    if c.acc_bits != net.acc_bits:
        raise CompileError(f"the network assumes {net.acc_bits}-bit accumulators, the engine has {c.acc_bits}")
    if c.rows != c.cols:
        raise CompileError(f"networks need a square array (the output of one layer is the input of the next): "
                           f"rows {c.rows} != cols {c.cols}")


def _fused_pools(net: QuantizedNetwork) -> dict[str, QuantLayer]:
    """Max pools to fuse into the accumulating layer before them: that layer's name -> the pool layer. Fusing
    needs a monotone post-processing (positive multipliers, and an activation table that never decreases), no
    padding (the conv outputs are the map) and a producer no other layer reads."""
    consumers: dict[str, int] = {}
    producer: dict[str, QuantLayer] = {}
    for layer in net.layers:
        producer[layer.output] = layer
        for name in layer.inputs:
            consumers[name] = consumers.get(name, 0) + 1
    fused = {}
    for layer in net.layers:
        if layer.op != "maxpool":
            continue
        src = producer.get(layer.inputs[0])
        if (src is not None and OPERATORS[src.op].accumulating and consumers.get(src.output, 0) == 1
                and src.output != net.output and not any(layer.attrs.get("padding", (0, 0, 0, 0)))
                and np.all(np.asarray(src.multiplier, dtype=object) > 0)
                and (src.table is None or table_monotone(src.table, get_format(net.act_format)))):
            fused[src.name] = layer
    return fused


def _emit(ctx: Lowering, progress, order, max_rows) -> list[dict]:
    """Plan and emit every job in order (each split where it does not fit), a barrier between them; the
    manifest's entry of each layer."""
    c, b = ctx.config, ctx.b
    entries = []
    half = c.param_buffer_depth // 2
    emitted = 0
    steps = []                                      # what runs, in order: engine programs and host layers
    for n, lowered in enumerate(ctx.jobs):
        if isinstance(lowered, LoweredHost):
            if not b.segment_empty:
                b.end_segment()
                steps.append({"kind": "engine", "program": b.segments_ended - 1})
            steps.append({"kind": "host", "layer": lowered.layer.name})
            continue
        job = lowered.job
        if progress:
            progress(f"layer {n + 1}/{len(ctx.jobs)}: {job.name}")
        first = len(b.words)
        plans, counts = [], {"steps": 0, "tiles": 0, "instructions": 0}
        try:
            # Column strips and channel groups where it needs them; the product of two maps is a job of its own.
            for part in (split_mul(c, job) if isinstance(job, MulJob) else split_job(c, job)):
                mul = isinstance(part, MulJob)
                plan = plan_mul(c, part) if mul else plan_job(c, part, order=order, max_rows=max_rows)
                if not b.segment_empty:
                    b.barrier()
                emit = emit_mul if mul else emit_job
                for key, value in emit(b, part, plan, param_base=(emitted % 2) * half).items():
                    counts[key] += value
                plans.append(plan)
                emitted += 1
        except LayoutError as e:
            raise CompileError(str(e)) from None
        entries.append({"name": job.name, "op": lowered.op, "fused": lowered.names[1:], "output": lowered.output,
                        "plan": {"rows": plans[0].rows, "order": plans[0].order, "band": plans[0].band,
                                 "estimated_cycles": sum(p.cycles for p in plans),
                                 "dram_bytes": sum(p.dram_bytes for p in plans), "parts": len(plans)},
                        "macs": job.useful_macs, "first_instruction": first, **counts})
    if not b.segment_empty or not b.segments_ended:
        steps.append({"kind": "engine", "program": b.segments_ended})      # the one build() ends
    ctx.steps = steps
    return entries
