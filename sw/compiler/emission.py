"""One planned job as instructions: the LOADs, COMPUTEs, ALU pools and STOREs of its tiles, in its plan's order.

:mod:`sw.compiler.tiling` decides how a :class:`~sw.compiler.tiling.ConvJob` is cut (tile height, loop order,
kernel groups, bands); this module writes that plan into a :class:`~sw.compiler.program.ProgramBuilder` as one
schedule. Activation patches and weight tiles alternate between two halves of their buffers (one computing, one
loading), accumulator tiles too, and the PARAM buffer's half is the caller's (``param_base``).
"""

from __future__ import annotations


import numpy as np

from hw.spec.isa import Buffer, Opcode
from hw.spec.layout import line_bytes, output_line_bytes, pack_lines, pack_params, tensor_line_bytes, tensor_sublines

from .lines import act_loads, field_max, output_stores, padding_row
from .pooling import band_pool_alus, pool_alus
from .program import ProgramBuilder, Region, Step
from .stacking import emit_stack_steps, stack_spans
from .tiling import (ConvJob, LayoutError, Plan, _acc_regions, _bands, _chunk, _geometry, _span, _stack_layout,
                     _tiles, ceil_div, job_depth)

__all__ = ["emit_job"]


def emit_job(b: ProgramBuilder, job: ConvJob, plan: Plan, *, param_base: int = 0,
             shared: dict | None = None) -> dict:
    """Emit ``job`` into ``b`` as one schedule (after :meth:`ProgramBuilder.barrier` if an earlier layer wrote
    its inputs); returns counts of steps, output tiles and instructions. ``shared``: regions of weights, parameters
    and tables by name, filled on first use, so that copies of one job (a batch's samples) share them."""
    return _JobEmitter(b, job, plan, param_base, shared).emit()


class _JobEmitter:
    """The addresses of one job's plan (buffer halves, slots, regions) and the steps that use them."""

    def __init__(self, b: ProgramBuilder, job: ConvJob, plan: Plan, param_base: int, shared: dict | None):
        c = self.c = b.config
        self.b, self.job, self.plan, self.param_base, self.shared = b, job, plan, param_base, shared
        tiles = self.tiles = plan.tiles or _tiles(c, job)
        _, l_pad, _, r_pad = job.padding
        self.alb, self.wlb, self.olb, self.tlb = (line_bytes(Buffer.ACT, c), line_bytes(Buffer.WEIGHT, c),
                                                  output_line_bytes(c), tensor_line_bytes(c))
        self.ki, self.ko = tensor_sublines(c)  # activation and output blocks in a tensor line (hw/spec/layout.py)
        self.pitch = job.width + l_pad + r_pad
        self.block_pitch = job.height * job.src_pitch if job.block_pitch is None else job.block_pitch
        self.depth = job_depth(c, job)
        # Weight lines of a slot: the largest tile fits (in tall order, every group's tile of an output block).
        taps = sum(map(tiles.taps, range(len(tiles.groups)))) if plan.order == "tall" else tiles.slot_taps
        self.w_tile = taps * self.depth
        self.patch = _geometry(job, plan.rows, plan.band)[1] * self.pitch
        #: ``tall`` order is ``chunk`` order with one tall tile per output block (sw/compiler/tall.py).
        self.chunked = plan.order in ("chunk", "tall")
        self.slots = tiles.slots("chunk" if self.chunked else plan.order)
        self.every = {key: k for k, key in enumerate((i, cb) for i, n in enumerate(tiles.cb_counts)
                                                     for cb in range(n))}
        self.own = [{key: k for k, key in enumerate(tiles.needed(nb))} for nb in range(len(tiles.per_block))]
        self.regions = _acc_regions(job, plan.rows, plan.band)
        self.acc_tile = sum(self.regions)
        self.stack = _stack_layout(c, job, plan.rows, tiles) if plan.order == "stack" else None
        self.spans = stack_spans(c, job, self.stack, plan.rows) if self.stack is not None else None
        self.steps: list[Step] = []
        self.tile_count = self.bands_done = 0

    def region(self, name: str, data: bytes) -> Region:
        """A read-only region of ``data`` named ``name``; with ``shared``, the one an earlier part of the layer wrote
        with the same bytes (a batch's samples, column strips of the same weights and parameters)."""
        if self.shared is None:
            return self.b.region(name, data)
        if data not in self.shared:
            self.shared[data] = self.b.region(name, data)
        return self.shared[data]

    def emit(self) -> dict:
        job, c, tiles = self.job, self.c, self.tiles
        keys = [(nb, *key) for nb, block in enumerate(tiles.per_block) for key in block]
        w_data = np.concatenate([tiles.data[key] for key in keys])
        self.w_offset = dict(zip(keys, np.cumsum([0] + [len(tiles.data[key]) for key in keys[:-1]]).tolist()))
        self.rw = self.region(f"{job.name}.weights", pack_lines(w_data, c.weight_slot_bits, self.wlb))
        nb_n = len(tiles.per_block)
        bias, mult, shift = job.requant.lines(nb_n, c.cols)
        rp = self.region(f"{job.name}.params", pack_params(bias, mult, shift, line_bytes(Buffer.PARAM, c)))
        param_load = ("LOAD", dict(buffer=Buffer.PARAM, sram_addr=self.param_base, dram_addr=rp.addr, y_size=1,
                                   x_size=nb_n * job.requant.lines_per_block))
        self.pad_row = padding_row(self.b, job.name, self.pitch, job.pad_value, job.padding)  # a wide array's
        self._tiles_in_order()
        first = len(self.b.words)
        prologue, early = self._prologue(param_load)
        self.b.schedule(self.steps, prologue=prologue, setpp=job.requant.setpp(), early=early)
        return {"steps": len(self.steps), "tiles": self.tile_count, "instructions": len(self.b.words) - first}

    def _tiles_in_order(self) -> None:
        """Every output tile's steps in the plan's loop order."""
        job, plan, nb_n = self.job, self.plan, len(self.tiles.per_block)
        chunks = ceil_div(job.out_shape[0], plan.rows)
        if plan.order == "stack":
            self.steps.extend(emit_stack_steps(self.c, job, self.stack, nb_n, self.chunk_geometry, len(self.spans),
                                               self.patch_load, self.stores_of, self.pool_of, self.rw.addr,
                                               self.w_offset, self.acc_tile))
            self.tile_count = sum(step.ends for step in self.steps)
        elif self.chunked:
            for sample in range(job.samples):
                for chunk in range(chunks):
                    loaded = set()
                    for nb in range(nb_n):
                        self._add_tile(nb, chunk, (sample * chunks + chunk) % 2, 0, True, loaded, sample)
        else:           # the weights of an output block stay resident while every sample's chunks pass
            most = max(len(t) for t in self.tiles.per_block)
            gc = 0
            for nb in range(nb_n):
                for sample in range(job.samples):
                    for chunk in range(chunks):
                        self._add_tile(nb, chunk, gc % 2, (nb % 2) * most * self.w_tile, chunk == 0 and sample == 0,
                                       set(), sample)
                        gc += 1

    def _prologue(self, param_load: tuple) -> tuple[list, list]:
        """The instructions before the job's first data (its parameters, its activation table) and those before
        the barrier (``early``)."""
        job, c = self.job, self.c
        prologue = [param_load]
        if job.requant.table is not None:
            # The activation table: after the barrier (every earlier STORE done), before this job's first data.
            if not c.lut_buffer_depth:
                raise LayoutError(f"layer {job.name!r} ends with a nonlinear activation, but the engine's activation "
                                  f"format {c.acts.name} has no lookup table; build the engine with an activation "
                                  f"format of at most 8 bits")
            rl = self.region(f"{job.name}.table", job.requant.lut(c))
            prologue.append(("LOAD", dict(buffer=Buffer.LUT, sram_addr=0, dram_addr=rl.addr, y_size=1,
                                          x_size=c.lut_buffer_depth)))
        early = []
        if self.plan.order == "stack" and self.b.waits_for_barrier:
            # The PARAM half this job uses was last read by the STOREs of the job before last, which the barrier
            # before the last job waited for: load it before this barrier, and let one PARAM line take the barrier's
            # tokens.
            early, prologue[0] = [param_load], ("LOAD", dict(param_load[1], x_size=1))
        return prologue, early

    def slot(self, nb: int, i: int, cb: int, parity: int) -> int:
        """First activation line of patch (i, cb) for output block ``nb`` in the half ``parity``."""
        index = self.every[(i, cb)] if self.chunked else self.own[nb][(i, cb)]
        return (parity * self.slots + index) * self.patch

    def chunk_geometry(self, chunk: int) -> tuple:
        return _span(self.job, *self.spans[chunk]) if self.spans else _chunk(self.job, self.plan.rows, chunk)

    def patch_load(self, i: int, cb: int, band: tuple, base: int, sample: int) -> list:
        """The LOADs of input patch (source ``i``, channel block ``cb``) for ``band`` into activation line ``base``."""
        job, tlb = self.job, self.tlb
        _, l_pad, _, r_pad = job.padding
        _, _, iy0, in_rows, top, bottom = band
        real = in_rows - top - bottom
        if real < 1:
            raise LayoutError(f"layer {job.name!r}: a chunk of output rows reads only padding")
        src, src_pitch = job.sources[i], job.src_pitch
        first = src.region.addr + (job.sample_bytes[i] * sample if sample else 0)
        fields = dict(buffer=Buffer.ACT, sram_addr=base,
                      dram_addr=first + ((cb // self.ki) * self.block_pitch + max(iy0, 0) * src_pitch) * tlb
                      + (cb % self.ki) * self.alb,
                      y_size=real, x_size=job.width, dram_stride=src_pitch * tlb, pad_top=top, pad_bottom=bottom,
                      pad_left=l_pad, pad_right=r_pad, pad_value=job.pad_value)
        if (top == bottom == l_pad == r_pad == 0 and src_pitch == job.width
                and real * job.width <= field_max(Opcode.LOAD, "x_size")):
            fields.update(y_size=1, x_size=real * job.width, dram_stride=0)
        return act_loads(self.c, fields, self.pad_row)

    def pool_of(self, chunk: int, acc_base: int) -> list:
        """The ALUs that pool output tile ``chunk`` at accumulator line ``acc_base`` (none without a pool or when
        banded: a band pools as it goes)."""
        if self.job.pool is None or self.plan.band:
            return []
        _, rows, _, conv_rows, *_ = self.chunk_geometry(chunk)
        return pool_alus(self.job, acc_base, rows, conv_rows, self.job.conv_out[1], self.regions)

    def stores_of(self, chunk: int, nb: int, acc_base: int, sample: int) -> list:
        """The STOREs of output tile (chunk, nb) from accumulator line ``acc_base``, with the job's requantization."""
        job = self.job
        extra = {"param_addr": self.param_base + nb * job.requant.lines_per_block, **job.requant.store(),
                 **({"packed": 1} if job.packs_out else {})}
        return [(op, {**f, **extra}) for op, f in self._output_stores(chunk, nb, acc_base, sample)]

    def _output_stores(self, chunk: int, nb: int, acc_base: int, sample: int) -> list:
        job, plan, regions, tlb = self.job, self.plan, self.regions, self.tlb
        out_w, wo, dst_pitch, param = job.out_shape[1], job.conv_out[1], job.dst_pitch, self.param_base + nb
        r0, rows, *_ = self.chunk_geometry(chunk)
        pooled_in_place = job.pool is not None and job.pool.in_place and not plan.band
        first = acc_base if job.pool is None else acc_base + regions[0] + regions[1]
        if job.scatter is not None:
            base = job.out.addr + job.out_sample_bytes * sample
            if not pooled_in_place:
                return job.scatter.stores(base, nb, r0, rows, out_w, lambda r: first + r * out_w, 1, param, tlb,
                                          self.ko, self.olb)
            psh, psw = job.pool.stride
            return job.scatter.stores(base, nb, r0, rows, out_w, lambda r: acc_base + r * psh * wo, psw, param,
                                      tlb, self.ko, self.olb)
        out_base = (job.out.addr + job.out_sample_bytes * sample
                    + ((nb // self.ko) * job.out_block_lines + r0 * dst_pitch) * tlb + (nb % self.ko) * self.olb)
        if not pooled_in_place:
            if dst_pitch == out_w and rows * out_w <= field_max(Opcode.STORE, "x_size"):
                return [("STORE", dict(acc_addr=first, dram_addr=out_base, y_size=1, x_size=rows * out_w,
                                       param_addr=param))]
            return [("STORE", dict(acc_addr=first, dram_addr=out_base, y_size=rows, x_size=out_w,
                                   acc_stride=out_w, dram_stride=dst_pitch * tlb, param_addr=param))]
        psh, psw = job.pool.stride
        if psw == 1:
            return [("STORE", dict(acc_addr=acc_base, dram_addr=out_base, y_size=rows, x_size=out_w,
                                   acc_stride=psh * wo, dram_stride=dst_pitch * tlb, param_addr=param))]
        return [("STORE", dict(acc_addr=acc_base + r * psh * wo, dram_addr=out_base + r * dst_pitch * tlb,
                               y_size=out_w, x_size=1, acc_stride=psw, dram_stride=tlb, param_addr=param))
                for r in range(rows)]

    def _add_tile(self, nb: int, chunk: int, patch_parity: int, weight_base: int, load_weights: bool,
                  loaded: set, sample: int) -> None:
        """Steps of one output tile (sample, chunk, nb); ``loaded``: patches already in this chunk's region. A
        banded tile takes a step per band, each band's patches in the other half from the band before."""
        job, plan, steps = self.job, self.plan, self.steps
        acc_base = (self.tile_count % 2) * self.acc_tile
        for band in _bands(job, plan.rows, chunk, plan.band):
            if plan.band:
                patch_parity, loaded = self.bands_done % 2, set()
                self.bands_done += 1
            for n, key in enumerate(self.tiles.per_block[nb]):
                self._add_compute(nb, n, key, band, patch_parity, weight_base, load_weights, loaded, acc_base, sample)
            if plan.band:
                steps[-1].computes.extend(band_pool_alus(job, acc_base, band, job.conv_out[1], self.regions))
        last = steps[-1]
        last.ends = True
        last.computes.extend(self.pool_of(chunk, acc_base))
        last.stores = output_stores(self.c, self.stores_of(chunk, nb, acc_base, sample))  # a tensor line apart
        self.tile_count += 1

    def _add_compute(self, nb: int, n: int, key: tuple, band: tuple, patch_parity: int, weight_base: int,
                     load_weights: bool, loaded: set, acc_base: int, sample: int) -> None:
        """The COMPUTE of weight tile ``n`` (``key``: source, channel block, tensor, kernel group) of output block
        ``nb`` over ``band``, with the LOADs of its patch and weights where they are not resident."""
        job, steps, tiles = self.job, self.steps, self.tiles
        i, cb, t, g = key
        ky0, ky1, kx0, kx1 = tiles.groups[g]
        loads = []
        # A tall tile reads every channel block's patch (back to back from block 0's: its rows).
        for block in (range(tiles.cb_counts[i]) if self.plan.order == "tall" else [cb]):
            if (i, block) not in loaded:
                loads.extend(self.patch_load(i, block, band, self.slot(nb, i, block, patch_parity), sample))
                loaded.add((i, block))
        load = None                     # (first weight line, taps) of the weight LOAD this tile takes, if any
        if self.plan.order == "tall":
            # One LOAD an output block: its groups' tall tiles, back to back in memory, into one slot.
            base = ((len(steps) - int(n > 0)) % 2) * self.w_tile
            w_addr = base + sum(map(tiles.taps, range(g))) * self.depth
            load = (base, self.w_tile // self.depth) if n == 0 else None
        elif load_weights and band[0] == 0:
            w_addr = (len(steps) % 2) * self.w_tile if self.chunked else weight_base + n * self.w_tile
            load = (w_addr, tiles.taps(g))
        else:
            w_addr = weight_base + n * self.w_tile
        if load is not None:
            # One row of lines per kernel position: a tile may be longer than one LOAD row can be.
            loads.append(("LOAD", dict(buffer=Buffer.WEIGHT, sram_addr=load[0],
                                       dram_addr=self.rw.addr + self.w_offset[(nb, i, cb, t, g)] * self.wlb,
                                       y_size=load[1], x_size=self.depth, dram_stride=self.depth * self.wlb)))
        # A kernel group reads the patch from its window's first tap on.
        act_addr = self.slot(nb, i, cb, patch_parity) + (ky0 * self.pitch + kx0) * job.dilation
        compute = ("COMPUTE", dict(acc_addr=acc_base, act_addr=act_addr, weight_addr=w_addr, out_h=band[1],
                                   out_w=job.conv_out[1], act_pitch=self.pitch * job.row_stride // job.stride,
                                   stride=job.stride, dilation=job.dilation, kh=ky1 - ky0, kw=kx1 - kx0,
                                   accumulate=int(n > 0), **job.formats))
        if loads or not steps or steps[-1].ends:
            steps.append(Step(loads, [compute], begins=n == 0 and band[0] == 0))
        else:
            steps[-1].computes.append(compute)
