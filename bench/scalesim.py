"""Cycles per layer against SCALE-Sim's weight-stationary figure and the roofline, on a zoo network.

SCALE-Sim (Samajdar et al., ISPASS 2020) gives a weight-stationary array of R rows and C columns, for a layer that
reduces K = Cin/groups * kh * kw terms into N = Cout/groups outputs at M = out_h * out_w positions, the stall-free
cycles ceil(K/R) * ceil(N/C) * (2R + C + M - 2) per group: each weight fold is filled (R), streams its M vectors
and drains (R + C - 2). That formula reproduces its runs to the cycle; it leaves out DRAM, which SCALE-Sim models
apart, so the roofline column adds it: max(MACs / PEs, DRAM bytes / bus bytes per cycle). Our cycles are the
emulator's timed run (within 2 % of the RTL) of one inference, per engine layer from the cycle its previous layer
ended to the cycle it ended (fused layers included); pooling and adds have no SCALE-Sim figure.

Usage: python bench/scalesim.py [--model resnet18] [--shape 16x16] [--format int8]
Writes bench/results/scalesim.json (one record per engine layer, the totals) and prints the table.
"""

from __future__ import annotations

import math

import numpy as np

from common import progress, table, write  # (importing common puts the repository on sys.path)

from hw.spec.cli import Parser, UsageError  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402


def scalesim_cycles(k: int, n: int, m: int, groups: int, rows: int, cols: int) -> int:
    """SCALE-Sim's stall-free weight-stationary cycles of a layer (see the module docstring)."""
    return groups * math.ceil(k / rows) * math.ceil(n / cols) * (2 * rows + cols + m - 2)


def gemm_shape(layer, shapes: dict) -> tuple[int, int, int, int] | None:
    """(K, N, M, groups) of a convolution or linear layer of the IR, else None."""
    if layer.op == "conv":
        cout, cin_g, kh, kw = layer.weights[0].shape
        groups = layer.attrs.get("groups", 1)
        out = shapes[layer.output]
        return cin_g * kh * kw, cout // groups, out[-1] * out[-2], groups
    if layer.op == "linear":
        n, k = layer.weights[0].shape
        return k, n, int(np.prod(shapes[layer.output][:-1])), 1
    return None


def measure(model: str, rows: int, cols: int, fmt: str) -> list[dict]:
    from sw.compile import compile_model
    from sw.runtime import run_codes
    from zoo import model_files

    path, samples_path = model_files(model)
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format=fmt, act_format=fmt)
    samples = np.load(samples_path)
    progress(f"compiling {model} at {rows}x{cols} {fmt} ...")
    compiled = compile_model(path, config, samples, method="mmse", per_channel=True, log=lambda *_: None)
    net = compiled.network
    progress("one inference on the emulator's cycle model ...")
    result = run_codes(compiled, net.tensors[net.input].quantize(samples[:1]), "emulator", cycles=True)
    layers = {layer.name: layer for layer in net.layers}
    bus = config.dma_bits // 8
    records = []
    for entry, cycles in zip(compiled.layers, result.layer_cycles[0]):
        layer = layers.get(entry["name"])
        shape = None if layer is None else gemm_shape(layer, net.shapes)
        roofline = max(entry["macs"] / (rows * cols), entry["plan"]["dram_bytes"] / bus)
        record = {"layer": entry["name"], "op": entry["op"], "macs": entry["macs"], "cycles": cycles,
                  "roofline_cycles": int(roofline), "over_roofline": round(cycles / max(roofline, 1), 3),
                  "scalesim_cycles": None, "over_scalesim": None, "K": None, "N": None, "M": None}
        if shape is not None:
            k, n, m, groups = shape
            ss = scalesim_cycles(k, n, m, groups, rows, cols)
            record.update(K=k, N=n, M=m, scalesim_cycles=ss, over_scalesim=round(cycles / ss, 3))
        records.append(record)
    return records


def main(argv=None) -> int:
    p = Parser(prog="python bench/scalesim.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--shape", default="16x16", help="RxC (default 16x16)")
    p.add_argument("--format", default="int8")
    args = p.parse_args(argv)
    try:
        rows, cols = (int(v) for v in args.shape.split("x"))
    except ValueError:
        raise UsageError(f"--shape: write the array as RxC, e.g. 16x16, not {args.shape!r}") from None
    records = measure(args.model, rows, cols, args.format)
    print(table(records, [("layer", "layer"), ("op", "op"), ("K", "K"), ("N", "N"), ("M", "M"), ("macs", "MACs"),
                          ("cycles", "cycles"), ("scalesim_cycles", "SCALE-Sim"), ("over_scalesim", "/ SCALE-Sim"),
                          ("roofline_cycles", "roofline"), ("over_roofline", "/ roofline")]))
    gemms = [r for r in records if r["scalesim_cycles"]]
    totals = {"cycles": sum(r["cycles"] for r in records),
              "roofline_cycles": sum(r["roofline_cycles"] for r in records),
              "gemm_layer_cycles": sum(r["cycles"] for r in gemms),
              "scalesim_cycles": sum(r["scalesim_cycles"] for r in gemms),
              "worst_over_scalesim": max((r["over_scalesim"] for r in gemms), default=None),
              "layers_slower_than_scalesim": sum(r["over_scalesim"] > 1 for r in gemms)}
    totals["over_roofline"] = round(totals["cycles"] / totals["roofline_cycles"], 3)
    totals["gemm_over_scalesim"] = round(totals["gemm_layer_cycles"] / max(totals["scalesim_cycles"], 1), 3)
    print(f"\n{args.model} {rows}x{cols} {args.format}: {totals['cycles']:,} cycles, {totals['over_roofline']}x the "
          f"roofline; convolution/linear layers {totals['gemm_over_scalesim']}x SCALE-Sim, worst layer "
          f"{totals['worst_over_scalesim']}x, {totals['layers_slower_than_scalesim']} of {len(gemms)} slower")
    path = write("scalesim", records, model=args.model, shape=args.shape, format=args.format, totals=totals)
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
