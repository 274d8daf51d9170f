"""Batched programs (sw.compile --batch N): emulator cycles per sample and the linear layers' array utilization.

A program compiled for N samples loads each weight tile of a layer on vectors once and streams the N vectors
through it (a GEMM with M = N), where the per-sample program streams one vector per tile and leaves the array
waiting for the next tile's shift-in (about 2 rows + cols cycles a tile). Convolutions of maps run once per sample
either way. For the digits CNN (two convolutions, two linear layers) and a linear-heavy MLP 784-512-512-10
(random weights), at each N: cycles per program run and per sample, the speed-up over N = 1, the linear layers'
MAC utilization (their MACs / (their cycles x PEs), cycles per layer from the emulator's timed run) and the
whole network's; golden == emulator on every sample of the run.

The figures are the emulator's cycle model, which bench/results/cycle_model.json holds within 0.87 % of the RTL's
cycle counter on 240 programs (the 2 % bound tests/hw/test_engine_cycles.py keeps); ``--rtl`` runs each program on
the RTL too (the compiled Verilator testbench, cached build) and reports its cycles beside the emulator's.

Usage: python bench/batch.py [--shape 16x16] [--format int8] [--batches 1,8,64] [--rtl]
Writes bench/results/batch.json and prints the table (README.md shows it).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, progress, run, table, update_readme, write  # (importing common puts the repo on sys.path)

from hw.spec.cli import Parser, UsageError, integer  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402

MARKERS = ("<!-- batch-table: python bench/batch.py -->", "<!-- end batch-table -->")
MLP_SIZES = (784, 512, 512, 10)


def networks(folder: Path) -> dict[str, tuple[Path, np.ndarray, np.ndarray]]:
    """name -> (ONNX file, calibration samples, inputs to run)."""
    from sw.model_folder import DIGITS
    from tests.onnx_models import mlp

    with np.load(DIGITS / "test_set.npz") as data:
        images = data["images"]
    inputs = np.random.default_rng(0).random((192, MLP_SIZES[0]), dtype=np.float32)
    return {"digits CNN": (DIGITS / "digits_cnn.onnx", np.load(DIGITS / "calibration.npy"), images),
            "MLP 784-512-512-10": (mlp(folder / "mlp.onnx", MLP_SIZES), inputs[:64], inputs[64:])}


def measure(name: str, model: Path, samples: np.ndarray, inputs: np.ndarray, config: AcceleratorConfig,
            batch: int, rtl: bool) -> dict:
    from sw.compile import compile_model
    from sw.runtime import run_codes

    started = time.perf_counter()
    compiled = compile_model(model, config, samples, method="mmse", per_channel=True, log=lambda *_: None,
                             batch=batch)
    compile_s = time.perf_counter() - started
    net = compiled.network
    codes = net.tensors[net.input].quantize(inputs[:batch])            # one program run
    golden = run_codes(compiled, codes, "golden").codes
    emulated = run_codes(compiled, codes, "emulator", cycles=True)
    cycles = int(emulated.cycles[0])
    pes = config.peak_macs_per_cycle          # MACs a cycle: PEs times the codes each packs
    linear = [(e["macs"], c) for e, c in zip(compiled.layers, emulated.layer_cycles[0]) if e["op"] == "linear"]
    record = {"network": name, "shape": f"{config.rows}x{config.cols}", "format": config.weights.name,
              "batch": batch, "cycles_per_run": cycles, "cycles_per_sample": round(cycles / batch, 1),
              "linear_macs_per_run": sum(m for m, _ in linear), "linear_cycles_per_run": sum(c for _, c in linear),
              "linear_utilization": round(sum(m for m, _ in linear) / (sum(c for _, c in linear) * pes), 4),
              "network_utilization": round(compiled.program.useful_macs / (cycles * pes), 4),
              "instructions": len(compiled.program.words), "image_bytes": compiled.program.dram_size,
              "compile_s": round(compile_s, 2), "golden_equals_emulator": bool(np.array_equal(golden, emulated.codes))}
    if rtl:
        result = run_codes(compiled, codes, "rtl")
        record["rtl_cycles_per_run"] = int(result.cycles[0])
        record["emulator_vs_rtl_percent"] = round(100 * (cycles - result.cycles[0]) / result.cycles[0], 3)
        record["golden_equals_rtl"] = bool(np.array_equal(golden, result.codes))
    return record


def main(argv=None) -> int:
    p = Parser(prog="python bench/batch.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="16x16", help="RxC (default %(default)s)")
    p.add_argument("--format", default="int8", help="number format of weights and activations")
    p.add_argument("--batches", default="1,8,64", help="batch sizes N, comma-separated (default %(default)s)")
    p.add_argument("--rtl", action="store_true", help="also run every program on the RTL (Verilator)")
    args = p.parse_args(argv)
    try:
        rows, cols = (int(v) for v in args.shape.split("x"))
    except ValueError:
        raise UsageError(f"--shape: write the shape as RxC, e.g. 16x16, not {args.shape!r}") from None
    check = integer(1, 128)
    try:
        batches = [check(v) for v in args.batches.split(",")]
    except Exception as e:              # noqa: BLE001 - argparse's message, as one line
        raise UsageError(f"--batches: {e} (batch sizes 1..128, comma-separated)") from None
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format=args.format, act_format=args.format)
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        for name, (model, samples, inputs) in networks(Path(tmp)).items():
            for batch in batches:
                progress(f"[{name}] {rows}x{cols} {args.format}, batch {batch} ...")
                records.append(measure(name, model, samples, inputs, config, batch, args.rtl))
    for r in records:
        first = next(o for o in records if o["network"] == r["network"] and o["batch"] == batches[0])
        r["speedup_per_sample"] = round(first["cycles_per_sample"] / r["cycles_per_sample"], 2)
    columns = [("network", "network"), ("shape", "array"), ("batch", "N"), ("cycles_per_run", "cycles per run"),
               ("cycles_per_sample", "cycles per sample"), ("speedup_per_sample", f"speed-up vs N={batches[0]}"),
               ("linear_utilization", "linear layers' utilization"), ("network_utilization", "network utilization")]
    if args.rtl:
        columns += [("rtl_cycles_per_run", "RTL cycles per run"), ("emulator_vs_rtl_percent", "emulator - RTL %")]
    shown = [{**r, "cycles_per_sample": f"{r['cycles_per_sample']:,.0f}", "cycles_per_run": f"{r['cycles_per_run']:,}",
              **({"rtl_cycles_per_run": f"{r['rtl_cycles_per_run']:,}"} if "rtl_cycles_per_run" in r else {})}
             for r in records]
    text = table(shown, columns)
    print(text)
    command = " ".join(["python bench/batch.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"\nwrote {write('batch', records, command=command).relative_to(ROOT)}")
    if (rows, cols) == (16, 16) and batches == [1, 8, 64]:
        update_readme(MARKERS, text)
    ok = all(r["golden_equals_emulator"] and r.get("golden_equals_rtl", True) for r in records)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(run(main))
