"""The ``tall`` loop order: a chunk's channel-block patches as the rows of one tall kernel.

In ``chunk`` order a chunk's ``n`` channel-block patches sit back to back in the activation buffer, ``in_rows``
rows of the padded width each, and an output block takes a weight LOAD and a COMPUTE per channel block. Read as
one map of ``n * in_rows`` rows, those patches are convolved by a ``kh' x kw`` kernel with
``kh' = (n - 1) * in_rows + kh``: block ``j``'s kernel sits at rows ``j * in_rows ..`` of it and the rows between
the blocks' kernels are zero (an output row ``r`` reads rows ``r + j * in_rows + i`` of the map, row ``r + i`` of
block ``j``'s patch). One LOAD and one COMPUTE per output block then do what ``2n`` instructions did, at the cost
of the zero rows' taps and weights: it pays where the instruction fetch, not the array, bounds the job (a stepped
decoder takes 288 cycles an instruction), and the cost model (tiling's ``_estimate``, as ``chunk`` order) decides.
The rest is ``chunk`` order's: its patch slots, its two weight slots, its pooling and stores.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hw.spec.isa import Opcode

from .lines import field_max
from .stacking import is_vector

__all__ = ["TALL_GAIN", "tall_tiles"]

#: ``tall`` order is picked only where its estimate is at most this fraction of the best other order's: on the zoo
#: layers at 8x8 and 16x16 the model's error for it is a few per cent either way (measured: estimates 2-7 % below
#: chunk order's ran up to 0.1 % slower), while where the fetch bounds a job it halves the cycles.
TALL_GAIN = 0.9


def tall_tiles(config, job, tiles, in_rows: int, depth: int):
    """``tiles`` (the job's dense tiles: every channel block's, in one kernel group) as one tall tile per output
    block, for chunks of ``in_rows`` input rows; None where the order does not apply: a single vector (``stack``
    order serves it, with its own rule for when that pays), not one source of one weight
    tensor, a dilated job or one that skips rows (its COMPUTE's row pitch not the patches' own), a kernel split into groups, fewer than 2 channel blocks, or a tall
    kernel beyond the COMPUTE's ``kh``, a LOAD's ``y_size`` or two slots of the weight buffer."""
    kh, kw = job.kernel
    n = tiles.cb_counts[0] if len(tiles.cb_counts) == 1 else 0
    if (is_vector(job) or len(job.sources) != 1 or job.sources[0].weights.shape[0] != 1 or job.dilation != 1
            or job.row_stride != job.stride
            or job.packed or tiles.groups != [(0, kh, 0, kw)] or n < 2):
        return None
    tall = (n - 1) * in_rows + kh
    if (tall > field_max(Opcode.COMPUTE, "kh") or tall * kw > field_max(Opcode.LOAD, "y_size")
            or 2 * tall * kw * depth > config.weight_buffer_depth):
        return None
    data = {}
    for nb in range(len(tiles.per_block)):
        kernel = np.zeros((tall, kw, depth, config.cols), dtype=np.int64)
        for cb in range(n):
            block = tiles.data[(nb, 0, cb, 0, 0)].reshape(kh, kw, depth, config.cols)
            kernel[cb * in_rows:cb * in_rows + kh] = block
        data[(nb, 0, 0, 0, 0)] = kernel.reshape(-1, config.cols)
    return dataclasses.replace(tiles, per_block=[[(0, 0, 0, 0)] for _ in tiles.per_block], data=data,
                               groups=[(0, tall, 0, kw)])
