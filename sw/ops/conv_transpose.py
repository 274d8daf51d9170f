"""``convtranspose``: a 2-D transposed convolution (ONNX ConvTranspose; groups, output_padding; dilation 1).

The IR keeps the weights as a convolution's, one row per output channel: ``w[co, ci', ky, kx]`` is ONNX's
``W[g*Cin/g + ci', co - g*Cout/g, ky, kx]`` (group ``g`` of ``co``), so that the quantizer scales, folds
BatchNormalization into and corrects zero points of it as of a Conv.

Quantized meaning: the convolution (stride 1) of the *zero-inserted* input with the spatially flipped weights:
the input's codes at rows ``iy*s`` (columns ``ix*s``) of a map whose other positions hold the input's zero-point
code, padded by ``k-1-pad_begin`` above and ``k-1-pad_end+output_padding`` below (a negative padding crops), so
``acc[co, oy, ox] = sum of value(x[ci, iy, ix]) * value(w[co, ci', ky, kx]) / 2**e`` over ``oy = iy*sh + ky -
pad_top``, ``ox = ix*sw + kx - pad_left``, plus the zero-point code's value times every other weight; then the
layer's post-processing, as any accumulating layer's.

On the engine: a *phase-split* convolution, without the inserted zeros. Output phase (ry, rx) (rows ``oy = s*j +
ry``) is an ordinary stride-1 convolution of the input with the flipped sub-kernel of the taps ``ky`` congruent
to ``ry + pad_top`` (mod ``s``), one job per phase; its STOREs write every ``s``-th line of the output (a
:class:`~sw.compiler.tiling.Scatter`). The taps a phase leaves out would have met inserted zero points only: their
sum joins the phase's bias.
"""

from __future__ import annotations

import numpy as np

from hw.spec.formats import get_format
from sw.frontend.onnx_common import NotOnEngine, _attrs, _describe, _text
from sw.golden.layers import conv2d

from .base import Operator, OperatorError, pair


class ConvTranspose(Operator):
    name = "convtranspose"
    onnx = ("ConvTranspose",)
    accumulating = True
    weighted = True
    #: Its phases are jobs of their own: a max pool after it cannot run on their accumulators.
    fuses_pool = False

    def import_node(self, imp, node) -> None:
        x = imp.act(node, node.input[0])
        imp.spatial(node, x)
        w = np.asarray(imp.const(node, 1, "weight"))
        a = _attrs(node)
        if w.ndim != 4:
            raise NotOnEngine(f"{_describe(node)}: only 2-D transposed convolutions (4-D weights), not {w.shape}")
        groups = int(a.get("group", 1))
        kernel = tuple(int(k) for k in w.shape[2:])
        if tuple(a.get("kernel_shape", kernel)) != kernel:
            raise NotOnEngine(f"{_describe(node)}: kernel_shape {a['kernel_shape']} differs from the weight's")
        if any(int(d) != 1 for d in a.get("dilations", [1, 1])):
            raise NotOnEngine(f"{_describe(node)}: dilations {a['dilations']}; the engine's transposed "
                              f"convolutions have dilation 1")
        if _text(a.get("auto_pad", "NOTSET")) not in ("NOTSET", "", "VALID") or "output_shape" in a:
            raise NotOnEngine(f"{_describe(node)}: auto_pad or output_shape; give explicit pads instead")
        channels = imp.shapes[x][0]
        if groups < 1 or channels % groups or w.shape[0] != channels:
            raise NotOnEngine(f"{_describe(node)}: group={groups} with a weight {w.shape} on {channels} channels")
        stride = imp.ints(node, "strides", [1, 1], 2)
        pads = (0, 0, 0, 0) if _text(a.get("auto_pad", "NOTSET")) == "VALID" else imp.ints(node, "pads",
                                                                                              [0, 0, 0, 0], 4)
        out_pad = imp.ints(node, "output_padding", [0, 0], 2)
        if min(pads) < 0 or min(out_pad) < 0 or any(p >= s for p, s in zip(out_pad, stride)):
            raise NotOnEngine(f"{_describe(node)}: pads {pads} / output_padding {out_pad} (each below its stride)")
        cig, cog = channels // groups, w.shape[1]
        weight = w.reshape(groups, cig, cog, *kernel).transpose(0, 2, 1, 3, 4).reshape(groups * cog, cig, *kernel)
        bias = imp.const(node, 2, "bias", required=False)
        imp.add_layer(node, "convtranspose", [x], {"kernel": kernel, "stride": stride, "padding": pads,
                                                   "output_padding": out_pad, "groups": groups}, weight, bias)

    def shape(self, layer, in_shapes):
        c, h, w = in_shapes[0]
        weight, groups = layer.weight, int(layer.attrs.get("groups", 1))
        if weight is None or weight.ndim != 4 or weight.shape[1] * groups != c or weight.shape[0] % groups:
            raise OperatorError(f"needs a (Cout, {c}/groups, kh, kw) weight with {groups} groups")
        out = _out_size(layer, h, w)
        if min(out) < 1:
            raise OperatorError(f"has no output on a {h}x{w} input")
        return (weight.shape[0], *out)

    def run_float(self, layer, xs):
        x, w = xs[0], layer.weight.astype(xs[0].dtype)
        n, c, h, wd = x.shape
        g = int(layer.attrs.get("groups", 1))
        (sh, sw), (kh, kw) = pair(layer, "stride", (1, 1)), w.shape[2:]
        (oph, opw), (t, l, _, _) = pair(layer, "output_padding", (0, 0)), layer.attrs["padding"]
        cout, cig = w.shape[0], w.shape[1]
        full = np.zeros((n, cout, (h - 1) * sh + kh + oph, (wd - 1) * sw + kw + opw), dtype=x.dtype)
        xg, wg = x.reshape(n, g, cig, h, wd), w.reshape(g, cout // g, cig, kh, kw)
        for ky in range(kh):
            for kx in range(kw):
                part = np.einsum("ngchw,goc->ngohw", xg, wg[..., ky, kx]).reshape(n, cout, h, wd)
                full[:, :, ky:ky + (h - 1) * sh + 1:sh, kx:kx + (wd - 1) * sw + 1:sw] += part
        ho, wo = _out_size(layer, h, wd)
        y = full[:, :, t:t + ho, l:l + wo]
        if layer.bias is not None:
            y = y + layer.bias.astype(x.dtype).reshape(1, cout, 1, 1)
        return y

    def golden(self, layer, inputs, net):
        zero = net.tensors[layer.inputs[0]].zero_code()
        flipped = [np.asarray(w)[:, :, ::-1, ::-1] for w in layer.weights]
        return conv2d(zero_inserted(layer, np.asarray(inputs[0]), zero), flipped,
                      {"groups": int(layer.attrs.get("groups", 1))}, zero, net.act_format, net.weight_format)

    def lower(self, layer, ctx):
        from sw.compiler.lowering import dense_weights
        (x,) = ctx.feature_maps(layer)
        dense = dense_weights(layer, x.channels)                  # (T, kh, kw, Cin, Cout)
        cout, ho, wo = ctx.net.shapes[layer.output]
        (sh, sw), (kh, kw) = pair(layer, "stride", (1, 1)), dense.shape[1:3]
        t, l, _, _ = layer.attrs["padding"]
        out = None
        for ry in range(sh):
            rows = _phase(ry, sh, kh, t, x.height, ho, layer)
            for rx in range(sw):
                cols = _phase(rx, sw, kw, l, x.width, wo, layer)
                if rows is None or cols is None:
                    continue                   # no output row (column) in this phase
                out = _phase_job(layer, ctx, x, dense, rows, cols, (ry, rx), out)


def _out_size(layer, h: int, w: int) -> tuple[int, int]:
    (sh, sw), (oph, opw) = pair(layer, "stride", (1, 1)), pair(layer, "output_padding", (0, 0))
    kh, kw = layer.weight.shape[2:] if layer.weight is not None else layer.weights[0].shape[2:]
    t, l, b, r = layer.attrs["padding"]
    return (h - 1) * sh + kh + oph - t - b, (w - 1) * sw + kw + opw - l - r


def zero_inserted(layer, x: np.ndarray, zero: int) -> np.ndarray:
    """The input codes ``x`` (N, C, H, W) spread ``s`` apart over the zero-point code ``zero``, padded (or
    cropped) so that the stride-1 convolution with the flipped kernel gives the transposed convolution."""
    n, c, h, w = x.shape
    (sh, sw), (oph, opw) = pair(layer, "stride", (1, 1)), pair(layer, "output_padding", (0, 0))
    kh, kw = layer.weights[0].shape[2:]
    t, l, b, r = layer.attrs["padding"]
    before, after = (kh - 1 - t, kw - 1 - l), (kh - 1 - b + oph, kw - 1 - r + opw)
    full = np.full((n, c, (h - 1) * sh + 1 + max(before[0], 0) + max(after[0], 0),
                    (w - 1) * sw + 1 + max(before[1], 0) + max(after[1], 0)), zero, dtype=x.dtype)
    y0, x0 = max(before[0], 0), max(before[1], 0)
    full[:, :, y0:y0 + (h - 1) * sh + 1:sh, x0:x0 + (w - 1) * sw + 1:sw] = x
    return full[:, :, max(-before[0], 0):full.shape[2] - max(-after[0], 0),
                max(-before[1], 0):full.shape[3] - max(-after[1], 0)]


def _phase(r: int, s: int, k: int, pad: int, n: int, n_out: int, layer):
    """One axis of output phase ``r``: (the kernel taps it takes, flipped: the phase convolution's kernel order;
    outputs; padding before; first input; inputs read; padding after), or None if the phase has no output."""
    from sw.compiler.lowering import CompileError
    outputs = len(range(r, n_out, s))
    if outputs == 0:
        return None
    a = (r + pad) % s
    taps = list(range(a, k, s))[::-1]
    q = (r + pad) // s if taps else 0
    lo, hi = q - (max(len(taps), 1) - 1), outputs - 1 + q
    first, last = max(lo, 0), min(hi, n - 1)
    if last < first:
        raise CompileError(f"layer {layer.name!r}: output phase {r} of the transposed convolution reads only its "
                           f"padding; the engine cannot run it (use less padding)")
    return taps, outputs, max(-lo, 0), first, last - first + 1, max(hi - (n - 1), 0)


def _phase_job(layer, ctx, x, dense: np.ndarray, rows, cols, phase: tuple[int, int], out):
    """The job of one output phase; returns the output's placement (the first phase's job makes it)."""
    from sw.compiler.tiling import Scatter
    (ty, ny, py0, y0, hy, py1), (tx, nx, px0, x0, wx, px1) = rows, cols
    t_count, _, _, cin, cout = dense.shape
    sub = np.zeros((t_count, max(len(ty), 1), max(len(tx), 1), cin, cout), dtype=np.int64)
    if ty and tx:
        sub[:] = dense[:, ty][:, :, tx]
    requant = ctx.requant(layer, cout)
    requant.bias = requant.bias + _left_out_zeros(layer, ctx, dense, ty, tx)
    _, ho, wo = ctx.net.shapes[layer.output]
    (sh, sw) = pair(layer, "stride", (1, 1))
    blocks = ctx.out_blocks(cout)
    scatter = Scatter((sh, sw), ho, wo, tuple(((nb, *phase),) for nb in range(blocks)))
    view = None if (y0, x0, hy, wx) == (0, 0, x.height, x.width) else (y0, x0, hy, wx)
    job = ctx.add_job(layer, [(x, sub)], cout, kernel=sub.shape[1:3], padding=(py0, px0, py1, px1),
                      requant=requant, view=view, scatter=scatter, into=out)
    job.name = f"{layer.name}[phase {phase[0]},{phase[1]}]"
    job.macs = int(ny * nx * len(ty) * len(tx) * (cin // int(layer.attrs.get("groups", 1))) * cout)
    return ctx.placements[layer.output]


def _left_out_zeros(layer, ctx, dense: np.ndarray, ty: list[int], tx: list[int]) -> np.ndarray:
    """Per output channel, in accumulator units: the zero-point code's value times the weights of the taps a
    phase leaves out (in the zero-inserted input they meet inserted zero points, whatever the position)."""
    net = ctx.net
    act, wf = get_format(net.act_format), get_format(net.weight_format)
    sig, shift, _ = act.exact(np.array([net.tensors[layer.inputs[0]].zero_code()]))
    zero = int(sig[0]) << int(shift[0])
    if zero == 0:
        return np.zeros(dense.shape[-1], dtype=np.int64)
    mask = np.ones(dense.shape[1:3], dtype=bool)
    mask[np.ix_(ty, tx)] = False
    wsig, wshift, _ = wf.exact(dense)
    fixed = (wsig.astype(object) << wshift.astype(object)) * mask[None, :, :, None, None]
    total = fixed.sum(axis=(0, 1, 2, 3))
    from sw.compiler.lowering import CompileError
    exponent = act.lsb_exponent + wf.lsb_exponent - net.acc_exponent
    units = [int(v) * zero << exponent if exponent >= 0 else (int(v) * zero) >> -exponent for v in total]
    if exponent < 0 and any(u << -exponent != int(v) * zero for u, v in zip(units, total)):
        raise CompileError(f"layer {layer.name!r}: the input zero point times its weights is no whole number of "
                           f"accumulator units; quantize its input symmetrically")
    return np.array(units, dtype=np.int64)
