"""Data-free 3- and 4-bit weights against calibrated quantization (issue 13, item 3).

For each model, weight format (int3, int4; activations int8, an engine built in those formats) and method:

- data-free MMSE + bias correction (``sw.compile --data-free``): per-channel MMSE weight scales, activation
  ranges from the BatchNormalization statistics (beta +- 6 gamma per channel, the input in [0, 1]), the bias
  corrected for the weights' expected error (sw/quantize/data_free.py);
- data-free MMSE without the bias correction;
- data-free min-max: per-channel min-max weight scales, no bias correction;
- calibrated min-max and calibrated MMSE: per-channel weights, activations calibrated on the model's 64
  calibration images (``--calibrate``).

Measures top-1 accuracy on the held-out test set (golden model, which the emulator equals byte for byte: checked
on the first --check images of every row) and the SQNR of the logits against the float model.
models/zoo/resnet8 (random weights: accuracy means nothing) is measured by the logits' SQNR on its 8 inputs; its
export folds the BatchNormalizations away, so data-free quantization refuses it (the rows say so): no network of
the zoo keeps BatchNormalization statistics, and with random weights they would mean nothing anyway.

Usage: python bench/data_free.py [--models digits,mnist,resnet8] [--check 8]
Writes bench/results/data_free.json and prints the table (README.md shows the last one).
"""

from __future__ import annotations

import time

import numpy as np

from common import ROOT, progress, run, table, update_readme, write  # (importing common puts the repo on sys.path)

from hw.spec.cli import Parser, UsageError, integer  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402

MARKERS = ("<!-- data-free-table: python bench/data_free.py -->", "<!-- end data-free-table -->")
MODELS = ("digits", "mnist", "resnet8")
#: (row name, method, data-free options or None for calibrated).
METHODS = (("data-free MMSE + bias correction", "mmse", {}),
           ("data-free MMSE", "mmse", {"bias_correction": False}),
           ("data-free min-max", "minmax", {"bias_correction": False}),
           ("calibrated min-max", "minmax", None),
           ("calibrated MMSE", "mmse", None))


def _model(name: str):
    """(ONNX path, calibration inputs, test inputs, labels or None, input range)."""
    from sw.model_folder import model_folder
    if name in ("digits", "mnist"):
        folder = model_folder(ROOT / "models" / name)
        images, labels = folder.load_test_set()
        return folder.onnx, folder.load_calibration(), images, labels, (0.0, 1.0)
    path = ROOT / "models" / "zoo" / f"{name}.onnx"
    samples = np.load(ROOT / "models" / "zoo" / f"{name}_calibration.npy")
    return path, samples, samples, None, (-4.0, 4.0)


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((ref - got) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref ** 2)) / noise)


def measure(name: str, weights: str, row: tuple, check: int) -> dict:
    from sw.compile import compile_model
    from sw.frontend.float_model import run_float
    from sw.frontend.onnx_import import load_onnx
    from sw.quantize import QuantizationError
    from sw.quantize.data_free import DataFree
    from sw.runtime import run_codes

    label, method, options = row
    path, samples, x, labels, input_range = _model(name)
    config = AcceleratorConfig(rows=16, cols=16, weight_format=weights, act_format="int8")
    data_free = None if options is None else DataFree(input_range=input_range, **options)
    record = {"model": name, "weights": weights, "acts": "int8", "method": label, "data_free": data_free is not None}
    started = time.perf_counter()
    try:
        compiled = compile_model(path, config, None if data_free else samples, method=method, per_channel=True,
                                 data_free=data_free, log=lambda *_: None)
    except QuantizationError as e:
        return {**record, "refused": str(e).split(",")[0]}
    seconds = time.perf_counter() - started
    net = compiled.network
    codes = net.tensors[net.input].quantize(x)
    golden = run_codes(compiled, codes, "golden").codes
    emulated = run_codes(compiled, codes[:check], "emulator").codes
    mismatches = int((golden[:check] != emulated).reshape(len(emulated), -1).any(axis=1).sum())
    logits = net.tensors[net.output].dequantize(golden).reshape(len(x), -1)
    ref = run_float(load_onnx(path), x).reshape(len(x), -1)
    accuracy = None if labels is None else round(100 * float((logits.argmax(1) == labels).mean()), 2)
    return {**record, **({} if accuracy is None else {"accuracy_pct": accuracy}),
            "logits_sqnr_db": round(_sqnr(ref, logits), 2), "images": len(x), "checked_on_emulator": len(emulated),
            "golden_emulator_mismatches": mismatches, "compile_seconds": round(seconds, 2)}


def float_row(name: str) -> dict:
    from sw.frontend.float_model import run_float
    from sw.frontend.onnx_import import load_onnx
    path, _, x, labels, _ = _model(name)
    if labels is None:
        return {}
    logits = run_float(load_onnx(path), x).reshape(len(x), -1)
    return {"model": name, "weights": "float", "acts": "float", "method": "-", "images": len(x),
            "accuracy_pct": round(100 * float((logits.argmax(1) == labels).mean()), 2)}


def main() -> int:
    p = Parser(prog="python bench/data_free.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    p.add_argument("--check", type=integer(1, 1000), default=8, help="images run on the emulator per row")
    args = p.parse_args()
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise UsageError(f"--models: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(MODELS)}")
    records = []
    for name in models:
        records.append(float_row(name))
        for weights in ("int3", "int4"):
            for row in METHODS:
                progress(f"{name} {weights} {row[0]} ...")
                records.append(measure(name, weights, row, args.check))
    records = [r for r in records if r]
    columns = [("model", "model"), ("weights", "weights"), ("acts", "acts"), ("method", "method"),
               ("accuracy_pct", "accuracy %"), ("logits_sqnr_db", "logits SQNR dB"),
               ("golden_emulator_mismatches", "golden != emulator"), ("refused", "refused")]
    text = table(records, columns)
    print(text)
    path = write("data_free", records, command="python bench/data_free.py " + " ".join(
        f"--{k} {v}" for k, v in (("models", args.models), ("check", args.check))))
    if models == list(MODELS):
        update_readme(MARKERS, text)
    progress(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
