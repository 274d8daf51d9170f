"""The weight-stationary systolic array: rows x cols PEs, skewed activations, double-buffered weights."""

from amaranth.hdl import Array, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .lanes import act_lane, psum_lane
from .pe import ProcessingElement
from .skid import SkidBuffer
from .spec.config import AcceleratorConfig
from .spec.microarchitecture import ARRAY_INPUT_STAGES, array_latency, bank_drain

__all__ = ["SystolicArray"]



class SystolicArray(wiring.Component):
    """``psums = acts @ W`` for one weight tile ``W`` (reduction_rows x cols) per batch of activation vectors.

    ``rows`` PE rows of ``values_per_lane`` reduction rows each (a packed int4 PE multiplies two codes per cycle).

    Streams:

    - ``weights``: a weight tile is ``reduction_rows`` consecutive beats, row 0 first, one code per column. In a
      build that packs per layer (``config.packs_per_layer``) ``weight_packed`` beside each beat says the tile is
      ``packed_reduction_rows`` beats (two weights a PE), and an activation vector's ``packed`` that its slots hold
      two codes each.
    - ``acts``: one activation vector (one code per reduction row) per beat; ``last`` marks the final vector of
      the batch that uses the current tile, after which the next loaded tile takes over.
    - ``psums``: one vector of exact partial sums (one per column) per activation vector, in order,
      :attr:`latency` cycles after it (``array_latency`` of ``hw/spec/microarchitecture.py``).

    While a batch computes, the next tile loads into the other bank, so with batches of at least
    ``2*rows + cols`` vectors every PE does one MAC per cycle. Back-pressure on ``psums`` stalls the array one
    cycle later: every PE advances on one enable, a flip-flop (the ``ready`` of the :class:`SkidBuffer` at the
    output), so no combinational path runs from ``psums.ready`` to the PEs. With ``stalls=False`` the consumer
    takes every result (``psums`` is ``always_ready``, as in the engine, whose accumulators never refuse one): the
    array then has no enable at all, and a plain register takes the skid buffer's place (same latency).
    """

    def __init__(self, config: AcceleratorConfig, *, stalls: bool = True):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")
        self._config = config
        self._stalls = bool(stalls)
        c = config
        acts = {"codes": data.ArrayLayout(unsigned(c.act_slot_bits), c.reduction_rows), "last": unsigned(1)}
        if c.multi_format:
            # The formats of the batch's weights and activations (indices into the set) travel with every vector.
            acts.update(weight_format=unsigned(self._select_bits), act_format=unsigned(self._select_bits))
        if c.packs_per_layer:
            # The batch's COMPUTE sets packed: two codes a slot (its tile is 2 * rows lines).
            acts.update(packed=unsigned(1))
        ports = {
            "weights": In(stream.Signature(data.ArrayLayout(unsigned(c.weight_slot_bits), c.cols))),
            "acts": In(stream.Signature(data.StructLayout(acts))),
            "psums": Out(stream.Signature(data.ArrayLayout(psum_lane(c.psum_bits), c.cols),
                                          always_ready=not stalls)),
        }
        if c.packs_per_layer:
            # Beside each weight beat: its tile packs (2 * rows lines, two weights a PE) or not (rows lines).
            ports["weight_packed"] = In(1)
        super().__init__(ports)

    @property
    def config(self) -> AcceleratorConfig:
        return self._config

    @property
    def _select_bits(self) -> int:
        """Width of a format index in a multi-format array (0 in a single-format one)."""
        c = self._config
        return (max(len(c.formats), 2) - 1).bit_length() if c.multi_format else 0

    def _lane(self):
        c = self._config
        if c.multi_format:
            return act_lane(c.act_slot_bits, self._select_bits, packed=c.packs_per_layer)
        return act_lane(c.acts.bits * c.values_per_lane)

    @property
    def latency(self) -> int:
        """Cycles from an activation vector's acceptance to its partial sums on ``psums`` (without stalls)."""
        return array_latency(self._config.rows, self._config.cols)

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._config.rows, self._config.cols

        # Everything that carries activations or partial sums moves together, or not at all: on the registered
        # ready of the output buffer, which always has room for what arrives while the stall takes effect.
        result = stream.Signature(self.psums.payload.shape()).create(path=("result",))
        advance = Signal()
        if self._stalls:
            m.submodules.output = output = SkidBuffer(self.psums.payload.shape())
            wiring.connect(m, output.o, wiring.flipped(self.psums))
            wiring.connect(m, result, output.i)
            m.d.comb += advance.eq(output.i.ready)
        else:
            m.d.comb += advance.eq(1)
            m.d.sync += [self.psums.valid.eq(result.valid), self.psums.payload.eq(result.payload)]

        # --- double-buffered weight banks ------------------------------------------------------
        # A bank is written only when it holds no unconsumed tile and no activation that uses it is
        # still inside the array: after the last vector of its batch, that takes bank_drain advances.
        drain_advances = bank_drain(rows, cols)
        full = Array(Signal(name=f"bank{i}_full") for i in range(2))
        draining = Array(Signal(range(drain_advances + 1), name=f"bank{i}_drain") for i in range(2))
        load_bank = Signal()
        tile_lines = self._config.reduction_rows          # a weight tile: values_per_lane lines per PE row
        compute_bank = Signal()
        if self._config.packs_per_layer:                   # a packed layer's tile: two lines per PE row
            load_row = Signal(range(self._config.packed_reduction_rows))
            tile_last = Mux(self.weight_packed, self._config.packed_reduction_rows - 1, rows - 1)
        else:
            load_row = Signal(range(tile_lines))
            tile_last = tile_lines - 1

        m.d.comb += self.weights.ready.eq(~full[load_bank] & (draining[load_bank] == 0))
        load = self.weights.valid & self.weights.ready
        with m.If(load):
            with m.If(load_row == tile_last):
                m.d.sync += [full[load_bank].eq(1), load_bank.eq(~load_bank), load_row.eq(0)]
            with m.Else():
                m.d.sync += load_row.eq(load_row + 1)

        m.d.comb += self.acts.ready.eq(advance & full[compute_bank])
        accept = self.acts.valid & self.acts.ready
        with m.If(advance):
            for bank in range(2):
                with m.If(draining[bank] != 0):
                    m.d.sync += draining[bank].eq(draining[bank] - 1)
        with m.If(accept & self.acts.payload.last):
            m.d.sync += [
                full[compute_bank].eq(0),
                draining[compute_bank].eq(drain_advances),
                compute_bank.eq(~compute_bank),
            ]

        # --- the PE grid -------------------------------------------------------------------------
        c = self._config
        formats = (c.weight_formats, c.act_formats) if c.multi_format else (c.weights, c.acts)
        pes = [[ProcessingElement(*formats, c.psum_bits, c.values_per_lane, c.packed_pairs,
                                  dsp=r * cols + col < c.dsp_pes) for col in range(cols)] for r in range(rows)]
        for r in range(rows):
            for col in range(cols):
                pe = pes[r][col]
                m.submodules[f"pe_{r}_{col}"] = pe
                m.d.comb += [pe.en.eq(advance), pe.w_shift.eq(load), pe.w_bank.eq(load_bank)]
                if c.packs_per_layer:
                    m.d.comb += pe.w_packed.eq(self.weight_packed)
                if col > 0:
                    m.d.comb += pe.a_in.eq(pes[r][col - 1].a_out)
                if r > 0:
                    m.d.comb += pe.psum_in.eq(pes[r - 1][col].psum_out)
                if r < rows - 1:
                    m.d.comb += pe.w_in.eq(pes[r + 1][col].w_out)
                else:
                    m.d.comb += pe.w_in.eq(self.weights.payload[col])

        # --- input register and skew: row r enters 1 + r advances late; a bubble is code 0, zero in every format
        # (a packed lane: PE row r takes reduction rows r*n .. r*n + n - 1, n = values_per_lane, side by side)
        codes = self.acts.payload.codes.as_value()
        lane_bits = c.act_slot_bits * c.values_per_lane
        for r in range(rows):
            lane = Signal(self._lane(), name=f"act_row{r}")
            m.d.comb += [lane.code.eq(Mux(accept, codes[r * lane_bits:(r + 1) * lane_bits], 0)),
                         lane.bank.eq(compute_bank)]
            if c.multi_format:
                m.d.comb += [lane.weight_format.eq(self.acts.payload.weight_format),
                             lane.act_format.eq(self.acts.payload.act_format)]
            if c.packs_per_layer:
                m.d.comb += lane.packed.eq(self.acts.payload.packed)
            for stage in range(ARRAY_INPUT_STAGES + r):
                delayed = Signal(self._lane(), name=f"act_row{r}_skew{stage}")
                with m.If(advance):
                    m.d.sync += delayed.eq(lane)
                lane = delayed
            m.d.comb += pes[r][0].a_in.eq(lane)

        # --- output de-skew: column c leaves cols - 1 - c advances late -----------------------------
        for col in range(cols):
            lane = pes[rows - 1][col].psum_out
            for stage in range(cols - 1 - col):
                delayed = Signal(psum_lane(c.psum_bits), name=f"psum_col{col}_deskew{stage}")
                with m.If(advance):
                    m.d.sync += delayed.eq(lane)
                lane = delayed
            m.d.comb += result.payload[col].eq(lane)

        # --- which output slots hold real results (the output buffer adds the last cycle) ----------------
        valid = accept
        for stage in range(self.latency - 1):
            delayed = Signal(name=f"valid{stage}")
            with m.If(advance):
                m.d.sync += delayed.eq(valid)
            valid = delayed
        m.d.comb += result.valid.eq(valid)
        return m

