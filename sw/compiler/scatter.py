"""Where a job's output lines go: the scattered STOREs of nearest upsampling, DepthToSpace and the phases of a
transposed convolution (see :class:`Scatter`). A job without one writes a map of its own output shape
(:func:`sw.compiler.emission.emit_job`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Scatter"]


@dataclass(frozen=True)
class Scatter:
    """Where a job's output lines go when not to a map of the job's own output shape: output (block ``nb``, row
    ``y``, column ``x``) of the job becomes line (block ``b``, row ``y*sy + ry``, column ``(x + col0)*sx + rx``) of
    a map of ``height`` x ``width`` lines per channel block, once for every ``(b, ry, rx)`` in ``targets[nb]``.

    Nearest upsampling (each line stored at every replica), DepthToSpace (channel blocks stored to spatial
    offsets) and the phases of a transposed convolution (every s-th output column) are scatters; one scatter
    followed by another is one (:meth:`then`). A scattered row is one STORE of ``x_size`` 1 whose DRAM stride is
    ``sx`` lines; no instruction is special."""

    step: tuple[int, int]
    height: int
    width: int
    targets: tuple[tuple[tuple[int, int, int], ...], ...]
    #: The job's first output column in the scatter's columns (a column strip of a scattered job).
    col0: int = 0

    @staticmethod
    def identity(blocks: int, height: int, width: int) -> "Scatter":
        return Scatter((1, 1), height, width, tuple(((nb, 0, 0),) for nb in range(blocks)))

    def then(self, outer: "Scatter") -> "Scatter":
        """This scatter followed by ``outer``, which maps the blocks, rows and columns this one writes."""
        if outer.col0:
            raise ValueError("an outer scatter starts at column 0")
        (sy, sx), (ty, tx) = self.step, outer.step
        targets = tuple(tuple((b2, ry * ty + ry2, rx * tx + rx2) for b1, ry, rx in mine
                              for b2, ry2, rx2 in outer.targets[b1]) for mine in self.targets)
        return Scatter((sy * ty, sx * tx), outer.height, outer.width, targets, self.col0)

    def stores(self, out_addr: int, nb: int, r0: int, rows: int, out_w: int, acc_row, acc_step: int,
               param_addr: int, line: int, sub_blocks: int = 1, sub_line: int = 0) -> list:
        """The STOREs of output rows ``r0 ..`` of block ``nb`` (accumulator line of row r: ``acc_row(r)``, the
        next column ``acc_step`` on), one per row and target; ``line``: bytes between a map's lines. On a tall
        array's dense layout (hw/spec/layout.py ``tensor_sublines``) ``sub_blocks`` output blocks share a map line,
        block b at byte ``(b % sub_blocks) * sub_line`` of line block ``b // sub_blocks``."""
        (sy, sx), out = self.step, []
        for b, ry, rx in self.targets[nb]:
            for r in range(rows):
                at = (out_addr + (((b // sub_blocks) * self.height + (r0 + r) * sy + ry) * self.width
                                  + self.col0 * sx + rx) * line + (b % sub_blocks) * sub_line)
                if sx == 1 and acc_step == 1:
                    out.append(("STORE", dict(acc_addr=acc_row(r), dram_addr=at, y_size=1, x_size=out_w,
                                              param_addr=param_addr)))
                else:
                    out.append(("STORE", dict(acc_addr=acc_row(r), dram_addr=at, y_size=out_w, x_size=1,
                                              acc_stride=acc_step, dram_stride=sx * line, param_addr=param_addr)))
        return out
