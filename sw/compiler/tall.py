"""The ``tall`` loop order: a chunk's channel-block patches as the rows of one tall kernel.

In ``chunk`` order a chunk's ``n`` channel-block patches sit back to back in the activation buffer, ``in_rows``
rows of the padded width each, and an output block takes a weight LOAD and a COMPUTE per channel block. Read as
one map of ``n * in_rows`` rows, those patches are convolved by a ``kh' x kw`` kernel with
``kh' = (n - 1) * in_rows + kh``: block ``j``'s kernel sits at rows ``j * in_rows ..`` of it and the rows between
the blocks' kernels are zero (an output row ``r`` reads rows ``r + j * in_rows + i`` of the map, row ``r + i`` of
block ``j``'s patch). One LOAD and one COMPUTE per output block (one COMPUTE per group of blocks where the kernel
would pass COMPUTE's 15 rows) then do what ``2n`` instructions did, at the cost of the zero rows' taps and weights:
it pays where the instruction fetch, not the array, bounds the job (a stepped decoder takes 194 to 264 cycles an
instruction on the iCEBreaker, 122 to 176 reading two bits a cycle), and the cost model (tiling's ``_estimate``, as ``chunk`` order) decides. The rest
is ``chunk`` order's: its patch slots, its two weight slots, its pooling and stores. A format with NaN or Inf codes
keeps ``chunk`` order: a tall window also covers rows outside an output's receptive field (the zero rows, a short
chunk's unused rows), and a non-finite code there would make the output NaN where the golden model's is finite.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hw.spec.isa import Opcode

from .lines import field_max
from .stacking import is_vector

__all__ = ["TALL_GAIN", "tall_tiles"]

#: ``tall`` order is picked only where its estimate is at most this fraction of the best other order's: on the zoo
#: layers at 8x8 the model's error for it reaches 18 % (measured: SqueezeNet's features.4 squeeze estimated 15 %
#: below chunk order's ran 3 % slower; estimates 2-7 % below ran up to 0.1 % slower), while where the fetch bounds a
#: job it halves the cycles or better (the iCEBreaker's conv2: estimated 45 % and 66 % below, on the 2x2 and 1x1).
TALL_GAIN = 0.75


def tall_tiles(config, job, tiles, in_rows: int, depth: int):
    """``tiles`` (the job's dense tiles: every channel block's, in one kernel group) as tall tiles, for chunks of
    ``in_rows`` input rows: per output block one tall tile per group of consecutive channel blocks whose kernel fits
    the COMPUTE's ``kh`` (``(g - 1) * in_rows + kh`` rows; one group where they all fit), each group keyed by its
    first block. None where the order does not apply: a single vector (``stack`` order serves it, with its own rule
    for when that pays), activations with NaN or Inf codes (see the module's docstring), not one source of one
    weight tensor, a dilated, packed or row-skipping job (its COMPUTE's row pitch not the patches' own), a kernel
    split into groups, fewer than 2 channel blocks, groups of fewer than 2 blocks, or an output block's tall tiles
    beyond one LOAD's ``y_size`` or half the weight buffer (they load as one LOAD into one of two slots)."""
    kh, kw = job.kernel
    n = tiles.cb_counts[0] if len(tiles.cb_counts) == 1 else 0
    acts = (job.code_formats or (config.weights, config.acts))[1]
    if (is_vector(job) or len(job.sources) != 1 or job.sources[0].weights.shape[0] != 1 or job.dilation != 1
            or job.row_stride != job.stride or job.packed or tiles.groups != [(0, kh, 0, kw)] or n < 2
            or acts.has_nan or acts.has_inf):
        return None
    per_group = min(n, (field_max(Opcode.COMPUTE, "kh") - kh) // in_rows + 1)
    firsts = list(range(0, n, per_group))
    heights = [(min(per_group, n - first) - 1) * in_rows + kh for first in firsts]
    taps = sum(heights) * kw                    # an output block's tiles: one LOAD, one slot of two
    if per_group < 2 or taps > field_max(Opcode.LOAD, "y_size") or 2 * taps * depth > config.weight_buffer_depth:
        return None
    data = {}
    for nb in range(len(tiles.per_block)):
        for g, (first, height) in enumerate(zip(firsts, heights)):
            kernel = np.zeros((height, kw, depth, config.cols), dtype=np.int64)
            for cb in range(first, min(first + per_group, n)):
                row = (cb - first) * in_rows
                kernel[row:row + kh] = tiles.data[(nb, 0, cb, 0, 0)].reshape(kh, kw, depth, config.cols)
            data[(nb, 0, first, 0, g)] = kernel.reshape(-1, config.cols)
    return dataclasses.replace(tiles, per_block=[[(0, first, 0, g) for g, first in enumerate(firsts)]
                                                 for _ in tiles.per_block],
                               data=data, groups=[(0, height, 0, kw) for height in heights])
