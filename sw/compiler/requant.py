"""A job's post-processing: what its SETPP and PARAM lines say (bias, multiplier and shift per output channel, zero
point, clamps, the activation table, a PRelu's negative side, the output format)."""

from __future__ import annotations

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.layout import pack_lut

__all__ = ["Requant"]


class Requant:
    """Per-output-channel bias, multiplier and shift, plus zero point and clamp codes (see SETPP), and the
    activation table the lookup stage applies, if any (loaded into the LUT buffer with the PARAM lines).
    ``negative``: (multiplier, shift) per channel for outputs whose ``acc + B`` is negative (a PRelu per channel):
    each block of ``cols`` channels then takes two PARAM lines, the second one the negative side (its bias unused),
    and every STORE sets ``negative_param``."""

    def __init__(self, bias, multiplier, shift, zero_point: int = 0, clamp_lo: int = 0, clamp_hi: int = 0,
                 table=None, out_format: int = 0, *, negative=None):
        self.bias = np.asarray(bias, dtype=np.int64)
        self.multiplier = np.asarray(multiplier, dtype=np.int64)
        self.shift = np.asarray(shift, dtype=np.int64)
        self.zero_point, self.clamp_lo, self.clamp_hi = int(zero_point), int(clamp_lo), int(clamp_hi)
        self.table = None if table is None else np.asarray(table, dtype=np.int64)
        #: SETPP.format of a multi-format engine (the clamps are codes of that format).
        self.out_format = int(out_format)
        self.negative = None if negative is None else tuple(np.asarray(a, dtype=np.int64) for a in negative)

    @property
    def lines_per_block(self) -> int:
        """PARAM lines per block of ``cols`` output channels: two with a negative side."""
        return 1 if self.negative is None else 2

    def channels(self, c0: int, c1: int) -> "Requant":
        """The post-processing of output channels ``c0 .. c1 - 1`` (a channel group)."""
        negative = None if self.negative is None else tuple(a[c0:c1] for a in self.negative)
        return Requant(self.bias[c0:c1], self.multiplier[c0:c1], self.shift[c0:c1], self.zero_point, self.clamp_lo,
                       self.clamp_hi, self.table, self.out_format, negative=negative)

    def lines(self, blocks: int, cols: int):
        """(bias, multiplier, shift) PARAM lines of ``blocks`` blocks, shaped (blocks * lines_per_block, cols): with
        a negative side, block ``b``'s lines are ``2b`` (bias, M, S) and ``2b + 1`` (0, M_neg, S_neg)."""
        def pad(a):
            out = np.zeros(blocks * cols, dtype=np.int64)
            out[:a.size] = a
            return out.reshape(blocks, cols)
        if self.negative is None:
            return pad(self.bias), pad(self.multiplier), pad(self.shift)
        neg_m, neg_s = self.negative
        pairs = [(pad(self.bias), np.zeros((blocks, cols), dtype=np.int64)), (pad(self.multiplier), pad(neg_m)),
                 (pad(self.shift), pad(neg_s))]
        return tuple(np.stack(pair, axis=1).reshape(2 * blocks, cols) for pair in pairs)

    def lut(self, config: AcceleratorConfig) -> bytes:
        """The activation table as the LUT buffer holds it: ``config.lut_entries`` codes, packed. A layer whose
        output format is narrower than the slot (int4 or minifloat6 on an int8 multi-format build) has one entry per
        code of its format; its pre-activation codes index only those, so the entries above them are never read
        (zeros)."""
        from .tiling import LayoutError
        table = self.table
        if len(table) > config.lut_entries:
            raise LayoutError(f"an activation table of {len(table)} codes does not fit the engine's "
                              f"{config.lut_entries}")
        return pack_lut(np.concatenate([table, np.zeros(config.lut_entries - len(table), dtype=table.dtype)]), config)

    def store(self) -> dict:
        """Fields every STORE of this post-processing carries."""
        return {} if self.negative is None else {"negative_param": 1}

    def setpp(self) -> dict:
        fields = {"zero_point": self.zero_point, "clamp_lo": self.clamp_lo, "clamp_hi": self.clamp_hi,
                  "lut": int(self.table is not None)}
        return {**fields, "format": self.out_format} if self.out_format else fields
