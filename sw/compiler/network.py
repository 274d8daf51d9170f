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
from hw.spec.formats import PACKED_INT_BITS, get_format
from hw.spec.layout import pack_codes, tensor_lanes, tensor_line_bytes, unpack_codes
from sw.golden.activation import table_monotone
from sw.ir import QuantizedNetwork, QuantLayer
from sw.ops import OPERATORS

from .batching import batch_jobs
from .fold import input_fold
from .formats import LayerFormats, select_formats
from .lowering import CompileError, Lowering, LoweredHost, Placement, tensor_lanes_of
from .program import Program, ProgramBuilder
from .elementwise import MulJob, emit_mul, plan_mul, split_mul
from .splitting import split_job
from .emission import emit_job
from .tiling import LayoutError, Plan, ceil_div, plan_job

__all__ = ["CompileError", "Placement", "CompiledNetwork", "compile_network", "MAX_BATCH"]

#: Most samples one program computes (``sw.compile --batch``).
MAX_BATCH = 1024


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
    #: Samples one run of the program computes (``sw.compile --batch``): every tensor's region holds that many
    #: maps, sample after sample; the host methods below take and give whole runs.
    batch: int = 1
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
        lanes = tensor_lanes_of(self.config, p.packed)
        return ceil_div(p.channels, lanes) * p.height * p.width * tensor_line_bytes(self.config)

    def tensor_region(self, name: str) -> tuple[int, int]:
        """(address, bytes) of tensor ``name`` in external memory: the ``batch`` samples of one program run."""
        p = self.placements[name]
        return self.program.regions[p.region].addr, self.batch * self._map_bytes(p)

    def tensor_bytes(self, name: str, codes: np.ndarray) -> np.ndarray:
        """Codes of tensor ``name`` for samples (N, *IR shape), N a multiple of ``batch``, in the engine's layout:
        (N / batch, bytes) uint8, a row per program run (its samples one after the other)."""
        codes = np.asarray(codes)
        if codes.shape[0] % self.batch:
            raise ValueError(f"{codes.shape[0]} samples do not fill whole program runs of {self.batch}; pad the "
                             f"last run")
        return self._sample_bytes(name, codes).reshape(codes.shape[0] // self.batch, -1)

    def _sample_bytes(self, name: str, codes: np.ndarray) -> np.ndarray:
        c, p = self.config, self.placements[name]
        zero = self.network.tensors[name].zero_code()
        n = codes.shape[0]
        bits = c.act_slot_bits              # the activation format's (the widest of a multi-format build)
        dtype = np.uint8 if bits <= 8 else np.uint16
        if codes.size and (codes.dtype.kind not in "iu" or codes.min() < 0 or codes.max() >> bits):
            raise ValueError(f"Codes must be integers in 0..{(1 << bits) - 1}")
        if p.fold is not None:
            codes = p.fold.apply(codes, zero)
        if p.index is not None:
            chw = np.full((n, p.channels), zero, dtype=dtype)
            chw[:, np.asarray(p.index)] = codes.reshape(n, -1)
        else:
            chw = codes.reshape(n, p.channels, p.height * p.width)
        m = tensor_lanes_of(c, p.packed)
        if p.packed:                                  # two codes a slot: code k of a line at bits 4k
            bits = PACKED_INT_BITS
            if chw.size and chw.max() >> bits:
                raise ValueError(f"tensor {name!r} is stored two codes a slot: codes must be in 0..{(1 << bits) - 1}")
        blocks = ceil_div(p.channels, m)
        lines = np.full((n, blocks, p.height * p.width, m), zero, dtype=dtype)
        for b in range(blocks):                       # block b holds channels b*m.. in its first m lanes
            part = chw[:, b * m:(b + 1) * m].reshape(n, -1, p.height * p.width)
            lines[:, b, :, :part.shape[1]] = part.transpose(0, 2, 1)
        return pack_codes(lines, bits, tensor_line_bytes(c)).reshape(n, -1)

    def tensor_codes(self, name: str, data: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`tensor_bytes`: (R, bytes) of R program runs from external memory to codes
        (R * batch, *IR shape)."""
        c, p = self.config, self.placements[name]
        if p.fold is not None:
            raise ValueError(f"tensor {name!r} sits in external memory folded (im2col'd for its convolution); "
                             f"its codes are the input the host wrote")
        data = np.asarray(data, dtype=np.uint8)
        data = data.reshape(data.shape[0] * self.batch, -1)
        m = tensor_lanes_of(c, p.packed)
        n, blocks = data.shape[0], ceil_div(p.channels, m)
        lines = unpack_codes(data.reshape(n, blocks * p.height * p.width, -1), m,
                             PACKED_INT_BITS if p.packed else c.act_slot_bits)
        chw = lines.reshape(n, blocks, p.height * p.width, m).transpose(0, 1, 3, 2)
        chw = self._widened(name, chw.reshape(n, -1, p.height * p.width)[:, :p.channels])
        if p.index is not None:
            return chw.reshape(n, -1)[:, np.asarray(p.index)]
        return chw.reshape(n, *self.network.shapes[name])

    def _widened(self, name: str, codes: np.ndarray) -> np.ndarray:
        """Codes of tensor ``name`` as the network's format has them: a tensor a multi-format engine stores in a
        narrower format (sw/compiler/formats.py) holds that format's codes in the low bits of its slots."""
        index = self.formats.output(name) if self.config.multi_format else 0
        if self.network.formats:            # a mixed-format network's own codes, in the slots' low bits
            return codes & ((1 << self.config.act_formats[index].bits) - 1)
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
        """Write one program run's codes of tensor ``name`` into ``dram``, in the engine's layout: one sample (IR
        shape) when ``batch`` is 1, else (batch, *IR shape)."""
        addr, _ = self.tensor_region(name)
        codes = np.asarray(codes)
        data = self.tensor_bytes(name, codes[None] if self.batch == 1 else codes)[0]
        dram[addr:addr + data.size] = data.tobytes()

    def read_tensor(self, dram, name: str) -> np.ndarray:
        """One program run's codes of tensor ``name`` from ``dram``: one sample (IR shape) when ``batch`` is 1,
        else (batch, *IR shape)."""
        addr, nbytes = self.tensor_region(name)
        raw = np.frombuffer(bytes(dram), np.uint8)[addr:addr + nbytes]
        codes = self.tensor_codes(name, raw[None])
        return codes[0] if self.batch == 1 else codes

    def dram_with_input(self, codes: np.ndarray) -> bytearray:
        """The memory image with one program run's input (see :meth:`write_tensor`)."""
        dram = bytearray(self.program.dram)
        self.write_tensor(dram, self.network.input, codes)
        return dram

    def drams_with_inputs(self, codes: np.ndarray) -> list[bytearray]:
        """Memory images for samples (N, *input shape), N a multiple of ``batch``: one per program run."""
        addr, _ = self.tensor_region(self.network.input)
        images = []
        for row in self.tensor_bytes(self.network.input, np.asarray(codes)):
            dram = bytearray(self.program.dram)
            dram[addr:addr + row.size] = row.tobytes()
            images.append(dram)
        return images

    def read_runs(self, drams, name: str) -> np.ndarray:
        """Codes (R * batch, *IR shape) of tensor ``name`` from the memories of R program runs."""
        addr, nbytes = self.tensor_region(name)
        raw = [np.frombuffer(bytes(dram[addr:addr + nbytes]), np.uint8) for dram in drams]
        return self.tensor_codes(name, np.stack(raw) if raw else np.zeros((0, nbytes), np.uint8))

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
                    "addr": r.addr, "bytes": self.batch * self._map_bytes(p), "placement": p.to_dict()}
        return {
            "config": self.config.to_dict(),
            "batch": self.batch,
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
                    max_rows: int | None = None, batch: int = 1, pack: bool = True) -> CompiledNetwork:
    """Lower ``net`` to one program for an engine built with ``config``; ``batch``: samples one run of it computes
    (layers on vectors run once for all of them, each weight tile streaming ``batch`` vectors; see
    :mod:`sw.compiler.batching`).

    ``order`` / ``max_rows``: restrict every layer's tiling (see :func:`plan_job`); by default the cost model
    chooses freely. ``pack``: on a build that packs per layer, a convolution of a packed pair (int4 x int4) reading
    the network's input runs packed, the host writing that input two codes a slot, and so does one reading a tensor
    whose every reader is such a convolution, its writer's STOREs packing it (``Lowering.writes_packed``) (False:
    every layer unpacked, for comparison; no other build packs). Lowering runs twice: the second time the code area is exactly as long as the program, so
    the memory image holds no empty instruction space.
    """
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= MAX_BATCH:
        raise CompileError(f"batch must be a whole number of samples in 1..{MAX_BATCH}, not {batch!r}")
    started = time.perf_counter()
    count = _lower(net, config, None, None, order, max_rows, batch, pack)
    compiled = _lower(net, config, count, progress, order, max_rows, batch, pack)
    compiled.compile_seconds = time.perf_counter() - started
    return compiled


def _lower(net: QuantizedNetwork, config: AcceleratorConfig, max_instructions: int | None, progress, order,
           max_rows, batch: int = 1, pack: bool = True) -> CompiledNetwork | int:
    """The compiled network, or (``max_instructions`` None) only how many instructions it has."""
    c = config
    _check_engine(net, c)
    ctx = Lowering(net, c, ProgramBuilder(c, max_instructions=max_instructions or 1 << 22), _fused_pools(net),
                   batch)
    ctx.pack = pack
    shape_in = net.input_shape
    if len(shape_in) == 3:
        ctx.place(net.input, *shape_in, fold=input_fold(net, c), packed=pack and ctx.reads_packed(net.input))
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
    return CompiledNetwork(c, net, program, ctx.placements, entries, steps=ctx.steps, batch=batch)


def _check_engine(net: QuantizedNetwork, c: AcceleratorConfig) -> None:
    if net.formats:
        _check_mixed_engine(net, c)
    elif c.multi_format and (c.act_slot_bits != c.acts.bits or c.weight_slot_bits != c.weights.bits
                           or c.acc_exponent != net.acc_exponent):
        # The network's codes are those of the set's first format, laid out as they are (sw/compiler/formats.py).
        raise CompileError(f"the compiler needs a multi-format engine whose first format ({c.acts.name}, the "
                           f"network's) is its widest and has the finest least significant bit of the set "
                           f"({', '.join(c.formats)}); list such a format first (e.g. --formats int8,int4)")
    if not net.formats and (c.acts.name != get_format(net.act_format).name
                            or c.weights.name != get_format(net.weight_format).name):
        raise CompileError(f"the network is quantized for {net.weight_format} weights x {net.act_format} "
                           f"activations, the engine is built for {c.weights.name} x {c.acts.name}")
    if c.acc_bits != net.acc_bits:
        raise CompileError(f"the network assumes {net.acc_bits}-bit accumulators, the engine has {c.acc_bits}")


def _check_mixed_engine(net: QuantizedNetwork, c: AcceleratorConfig) -> None:
    """A mixed-format network runs on a multi-format build holding every format it uses, with its accumulator unit."""
    from sw.golden.network import NetworkError, check_network
    try:
        check_network(net)            # adds and concats of one format among others
    except NetworkError as e:
        raise CompileError(str(e)) from None
    used = {net.act_format_of(t).name for t in net.tensors} | {get_format(net.weight_format).name}
    used |= {net.weight_format_of(layer).name for layer in net.layers if layer.weights}
    have = {f.name for f in c.act_formats}
    if not c.multi_format or not used <= have:
        raise CompileError(f"the network mixes formats ({', '.join(sorted(used))}) layer by layer: it runs on a "
                           f"multi-format build holding all of them (e.g. --formats {','.join(net.formats)})")
    if c.acc_exponent != net.acc_exponent:
        raise CompileError(f"the network's accumulators are in units of 2**{net.acc_exponent} (its formats "
                           f"{', '.join(net.formats)}), the engine's in 2**{c.acc_exponent} (--formats "
                           f"{','.join(c.formats)}); quantize it for the engine's format set")


def _fused_pools(net: QuantizedNetwork) -> dict[str, QuantLayer]:
    """Max pools to fuse into the accumulating layer before them: that layer's name -> the pool layer. Fusing
    needs a monotone post-processing (positive multipliers, a PRelu's negative side not negative, and an activation
    table that never decreases), no padding (the conv outputs are the map) and a producer no other layer reads."""
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
        if (src is not None and OPERATORS[src.op].accumulating and OPERATORS[src.op].fuses_pool
                and consumers.get(src.output, 0) == 1
                and src.output != net.output and not any(layer.attrs.get("padding", (0, 0, 0, 0)))
                and np.all(np.asarray(src.multiplier, dtype=object) > 0)
                and (src.multiplier_neg is None or np.all(np.asarray(src.multiplier_neg, dtype=object) >= 0))
                and (src.table is None or table_monotone(src.table, net.act_format_of(src.output)))):
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
        shared: dict = {}       # weights and parameters: one copy for a batch's samples and the strips' like bytes
        planned: dict[str, Plan] = {}
        try:
            # Column strips and channel groups where it needs them; the product of two maps is a job of its own
            # (a batched program's samples one after the other in its one schedule: elementwise.py).
            parts = split_mul(c, job) if isinstance(job, MulJob) else [
                part for sample in batch_jobs(c, job, lowered.maps, lowered.source_bytes, lowered.out_bytes, ctx.batch)
                for part in split_job(c, sample)]
            for part in parts:
                mul = isinstance(part, MulJob)
                if mul:
                    plan = plan_mul(c, part)
                else:
                    if part.name not in planned:
                        planned[part.name] = plan_job(c, part, order=order, max_rows=max_rows)
                    plan = planned[part.name]
                if not b.segment_empty:
                    b.barrier()
                emitted_counts = (emit_mul(b, part, plan, param_base=(emitted % 2) * half) if mul else
                                  emit_job(b, part, plan, param_base=(emitted % 2) * half, shared=shared))
                for key, value in emitted_counts.items():
                    counts[key] += value
                plans.append(plan)
                emitted += 1
        except LayoutError as e:
            raise CompileError(str(e)) from None
        entries.append({"name": lowered.names[0], "op": lowered.op, "fused": lowered.names[1:],
                        "output": lowered.output,
                        "plan": {"rows": plans[0].rows, "order": plans[0].order, "band": plans[0].band,
                                 "estimated_cycles": sum(p.cycles for p in plans),
                                 "dram_bytes": sum(p.dram_bytes for p in plans), "parts": len(plans)},
                        "macs": job.useful_macs * ctx.batch, "first_instruction": first, **counts})
    if not b.segment_empty or not b.segments_ended:
        steps.append({"kind": "engine", "program": b.segments_ended})      # the one build() ends
    ctx.steps = steps
    return entries
