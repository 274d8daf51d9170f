"""Emulator speed against onnxruntime, side by side in one run, on the same models and inputs.

Rows per network: onnxruntime running the QDQ int8 model on one thread; the golden model; the emulator through the
runtime (functional mode, batched: what accuracy runs use); the emulator's timed mode as one run over the whole
batch (what a run that needs cycles costs); and, for reference, the timed mode one sample per run (what the
runtime did before batching, on a few images). Every emulator result is checked against the golden model.

Networks: the digits CNN (models/digits/digits_cnn_qdq.onnx, the 360 held-out images, 16x16 int8 engine), and a
CIFAR-style ResNet-8 (bench/resnet8.py: MLPerf Tiny topology, seeded random weights, onnxruntime's QDQ int8; 360
seeded normal images) on the default 16x16 engine and on an 8x8 one, built only when torch (the train extra) is
installed.

BLAS runs on one thread (OPENBLAS/OMP/MKL_NUM_THREADS=1 unless set), like the onnxruntime session. Images/s come
from the process's CPU time, best of ``--repeat`` interleaved repeats: on a machine shared with other jobs, wall
time punishes a long run more than a short one (the wall-clock figures are in the JSON too). The target: the
functional emulator within 5x of onnxruntime (``ratio`` = onnxruntime images/s over the row's) on every network
at the default 16x16 engine. The emulator's products are float32 GEMMs, one per kernel tap and as deep as the
array has rows; onnxruntime multiplies int8, four products per float32 one in a SIMD lane, so an 8-row engine
(reductions 8 deep per GEMM) stays further behind: its row is shown, not held to the target.

Usage: python bench/emulator_speed.py [--repeat 5] [--no-resnet8] [--sequential 24]
Writes bench/results/emulator_speed.json.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")       # before numpy loads BLAS

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from common import progress, table, write  # noqa: E402  (importing common puts the repository on sys.path)

from hw.spec.config import AcceleratorConfig  # noqa: E402
from sw.evaluate import DIGITS  # noqa: E402

TARGET_RATIO = 5.0
#: The engine the target applies to: the default one (``python -m hw.build``'s --rows).
DEFAULT_ROWS = AcceleratorConfig().rows


@dataclass
class Case:
    name: str
    qdq: Path
    rows: int
    images: np.ndarray          # float32 inputs, one batch


def _cases(with_resnet8: bool, work: Path) -> list[Case]:
    with np.load(DIGITS / "test_set.npz") as data:
        cases = [Case("digits CNN", DIGITS / "digits_cnn_qdq.onnx", 16, data["images"])]
    if with_resnet8:
        try:
            import torch  # noqa: F401
        except ImportError:
            progress("torch is not installed (pip install -e '.[train]'): no ResNet-8 rows")
            return cases
        import resnet8
        _, qdq = resnet8.build(work)
        images = np.random.default_rng(2).standard_normal((360, *resnet8.INPUT_SHAPE)).astype(np.float32)
        cases += [Case("ResNet-8 (CIFAR, random weights)", qdq, rows, images) for rows in (DEFAULT_ROWS, 8)]
    return cases


def _compile(case: Case):
    from sw.compiler.network import compile_network
    from sw.frontend.onnx_import import load_onnx
    from sw.quantize import quantize_network
    config = AcceleratorConfig(rows=case.rows, cols=case.rows, weight_format="int8", act_format="int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # onnxruntime's QDQ gives add inputs different encodings
        net = quantize_network(load_onnx(case.qdq), act_format="int8", weight_format="int8",
                               acc_bits=config.acc_bits, samples=None)
    return compile_network(net, config)


def _runners(case: Case, compiled, sequential: int) -> dict:
    """name -> (images, run() returning output codes or floats)."""
    import onnxruntime as ort

    from sw.emulator import Emulator
    from sw.runtime import run_codes
    net = compiled.network
    codes = net.tensors[net.input].quantize(case.images)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(case.qdq), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    addr, _ = compiled.tensor_region(net.input)
    out_addr, out_bytes = compiled.tensor_region(net.output)

    def timed_batch():
        emulator = Emulator(compiled.config, compiled.program.dram, batch=len(codes))
        emulator.memory.write(addr, compiled.tensor_bytes(net.input, codes))
        assert emulator.run(compiled.program.program_addr).done
        out = compiled.tensor_codes(net.output, emulator.memory.read(out_addr, out_bytes))
        emulator.release()
        return out

    def one_by_one():
        out = []
        for sample in codes[:sequential]:
            emulator = Emulator(compiled.config, bytes(compiled.dram_with_input(sample)))
            assert emulator.run(compiled.program.program_addr).done
            out.append(compiled.read_tensor(emulator.dram, net.output))
        return np.array(out)

    n = len(codes)
    return {"onnxruntime QDQ int8, 1 thread": (n, lambda: session.run(None, {name: case.images})[0]),
            "golden model": (n, lambda: run_codes(compiled, codes, "golden").codes),
            "emulator functional (runtime, batched)": (n, lambda: run_codes(compiled, codes, "emulator").codes),
            "emulator timed (one run for the batch)": (n, timed_batch),
            "emulator timed, one sample per run (before)": (min(sequential, n), one_by_one)}


def measure(case: Case, repeat: int, sequential: int) -> list[dict]:
    started = time.perf_counter()
    compiled = _compile(case)
    compile_s = time.perf_counter() - started
    runners = _runners(case, compiled, sequential)
    best = {k: float("inf") for k in runners}
    wall, outputs = dict(best), {}
    for _ in range(repeat):                     # interleaved, so a busy moment hurts every row alike
        for key, (_, run) in runners.items():
            started, cpu = time.perf_counter(), time.process_time()
            outputs[key] = run()
            best[key] = min(best[key], time.process_time() - cpu)
            wall[key] = min(wall[key], time.perf_counter() - started)
    net = compiled.network
    golden = np.asarray(outputs["golden model"]).reshape(len(case.images), -1)
    reference = outputs["onnxruntime QDQ int8, 1 thread"]
    ort_rate = len(case.images) / best["onnxruntime QDQ int8, 1 thread"]
    records = []
    for key, (images, _) in runners.items():
        rate = images / best[key]
        record = {"network": case.name, "engine": f"{case.rows}x{case.rows} int8", "backend": key,
                  "images": images, "cpu_seconds": round(best[key], 5), "images_per_s": round(rate, 1),
                  "ratio_to_onnxruntime": round(ort_rate / rate, 2), "wall_seconds": round(wall[key], 5),
                  "wall_images_per_s": round(images / wall[key], 1)}
        if key.startswith("emulator"):
            got = np.asarray(outputs[key]).reshape(images, -1)
            record["mismatches_vs_golden"] = int((got != golden[:images]).any(axis=1).sum())
        records.append(record)
    ours = net.tensors[net.output].dequantize(golden.reshape(-1, *net.output_shape))
    records[0]["max_lsb_from_golden"] = round(float(np.abs(ours - reference).max() / net.tensors[net.output].scale),
                                              3)
    records[0]["compile_s"] = round(compile_s, 3)
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="interleaved repeats; the best counts (default 5)")
    parser.add_argument("--no-resnet8", action="store_true", help="the digits CNN only")
    parser.add_argument("--sequential", type=int, default=24,
                        help="images for the one-sample-per-run row (default 24)")
    args = parser.parse_args()
    records = []
    with tempfile.TemporaryDirectory() as work:
        for case in _cases(not args.no_resnet8, Path(work)):
            progress(f"[{case.name}, {case.rows}x{case.rows}] {args.repeat} repeats ...")
            records += measure(case, args.repeat, args.sequential)
    print(table(records, [("network", "network"), ("engine", "engine"), ("backend", "backend"),
                          ("images", "images"), ("images_per_s", "images/s (CPU)"),
                          ("ratio_to_onnxruntime", "x slower than onnxruntime"),
                          ("wall_images_per_s", "images/s (wall)"),
                          ("mismatches_vs_golden", "mismatches vs golden")]))
    held = [r for r in records if r["backend"] == "emulator functional (runtime, batched)"
            and r["engine"] == f"{DEFAULT_ROWS}x{DEFAULT_ROWS} int8"]
    met = all(r["ratio_to_onnxruntime"] <= TARGET_RATIO for r in held)
    ratios = ", ".join(f"{r['network']} {r['ratio_to_onnxruntime']}x" for r in held)
    print(f"\nTarget: functional emulator within {TARGET_RATIO:g}x of onnxruntime on every network at the default "
          f"{DEFAULT_ROWS}x{DEFAULT_ROWS} engine: {ratios}: {'met' if met else 'NOT met'}")
    path = write("emulator_speed", records, blas_threads=os.environ["OPENBLAS_NUM_THREADS"],
                 target_ratio=TARGET_RATIO, target_met=met)
    print(f"Wrote {path}")
    return 0 if all(r.get("mismatches_vs_golden", 0) == 0 for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
