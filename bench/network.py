"""A bundled CNN (models/digits unless --model) per number format: accuracy, cycles, utilization, compile and
emulator speed.

Every row compiles the model folder's ONNX (digits_cnn.onnx by default) for a 16x16 engine (the front door's),
calibrated on the folder's calibration.npy (64 training images), runs its held-out images (360 for digits, 1,000
for models/mnist) on the emulator (checked against the golden model) and reports accuracy, cycles per inference,
MAC utilization per layer, estimated energy per inference and inferences/s per watt (sw/energy: dynamic energy of the
events the emulator counted, times the energy table; --energy-table FILE for another), compile time and emulator
images per second. The emulator counts cycles here: one timed
run over the batch (every image takes the same path, so its cycles are every image's); bench/emulator_speed.py
measures the functional mode and onnxruntime beside it. The float row is the ONNX model itself; the QDQ row, where
the folder holds one (models/digits/digits_cnn_qdq.onnx), is onnxruntime's own int8 quantization, imported with its
scales and run here.

Usage: python bench/network.py [--model DIR] [--rows 16] [--images N] [--only NAME,...] [--energy-table FILE]
Writes bench/results/network.json (network_NAME.json for another folder than models/digits, NAME the folder's) and
prints the accuracy table (README.md shows the last ones).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from common import progress, run, table, write  # (importing common puts the repository on sys.path)

from hw.spec.cli import Parser, UsageError, integer  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402
from sw.compile import engine_formats  # noqa: E402
from sw.evaluate import evaluate  # noqa: E402
from sw.model_folder import DIGITS, ModelFolder, model_folder  # noqa: E402

MMSE_PC = dict(method="mmse", per_channel=True)
#: (row name, weights, activations, quantization options, --first-last format)
ROWS = [
    ("int8", "int8", "int8", MMSE_PC, None),
    ("int4 min-max", "int4", "int4", dict(method="minmax", per_channel=False), None),
    ("int4 MMSE", "int4", "int4", dict(method="mmse", per_channel=False), None),
    ("int4 MMSE + per-channel + two tensors", "int4", "int4", dict(MMSE_PC, multi_tensor=True), None),
    ("int4 (first and last layers int8)", "int4", "int4", MMSE_PC, "int8"),
    ("minifloat6 (E3M2)", "minifloat6", "minifloat6", MMSE_PC, None),
    ("minifloat6 (E2M3)", "minifloat6_e2m3", "minifloat6_e2m3", MMSE_PC, None),
    ("minifloat4 (E2M1)", "minifloat4", "minifloat4", MMSE_PC, None),
    ("fp8 E4M3", "fp8_e4m3", "fp8_e4m3", MMSE_PC, None),
    ("fp8 E5M2", "fp8_e5m2", "fp8_e5m2", MMSE_PC, None),
    ("int4 weights x int8 activations", "int4", "int8", MMSE_PC, None),
]


def _float_row(folder: ModelFolder, images: int | None) -> dict:
    from sw.frontend import run_float
    from sw.frontend.onnx_import import load_onnx
    x, labels = folder.load_test_set(images)
    logits = run_float(load_onnx(folder.onnx), x)
    return {"name": "float (ONNX)", "weights": "float32", "acts": "float32", "quantization": "-",
            "accuracy": float((logits.argmax(axis=1) == labels).mean())}


def _qdq_row(folder: ModelFolder, rows: int, images: int | None) -> dict:
    import onnxruntime as ort

    from sw.compiler.network import compile_network
    from sw.frontend.onnx_import import load_onnx
    from sw.quantize import quantize_network
    from sw.runtime import run_codes
    path = folder.qdq
    x, labels = folder.load_test_set(images)
    config = AcceleratorConfig(rows=rows, cols=rows, weight_format="int8", act_format="int8")
    started = time.perf_counter()
    net = quantize_network(load_onnx(path), act_format="int8", weight_format="int8", acc_bits=config.acc_bits,
                           samples=None)
    compiled = compile_network(net, config)
    seconds = time.perf_counter() - started
    codes = net.tensors[net.input].quantize(x)
    result = run_codes(compiled, codes, "emulator", cycles=True)
    ours = net.tensors[net.output].dequantize(result.codes)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = session.run(None, {session.get_inputs()[0].name: x})[0]
    lsb = np.abs(ours - reference) / net.tensors[net.output].scale
    return {"name": "int8 QDQ by onnxruntime", "weights": "int8", "acts": "int8",
            "quantization": "onnxruntime quantize_static (min-max)",
            "accuracy": float((ours.argmax(axis=1) == labels).mean()),
            "onnxruntime_accuracy": float((reference.argmax(axis=1) == labels).mean()),
            "max_lsb_from_onnxruntime": round(float(lsb.max()), 3),
            "cycles_per_inference": int(max(result.cycles)), "compile_seconds": round(seconds, 3)}


def main() -> int:
    parser = Parser(prog="python bench/network.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DIGITS, metavar="DIR",
                        help="model folder (default models/digits; models/mnist is the other)")
    parser.add_argument("--rows", type=integer(1, 128), default=16, help="engine size (rows = cols), default 16")
    parser.add_argument("--images", type=integer(1, 1 << 20), help="only the first N held-out images")
    parser.add_argument("--only", help="comma-separated row names to run")
    parser.add_argument("--energy-table", metavar="FILE", type=Path, help="energy per event (default: Horowitz 45 nm)")
    args = parser.parse_args()
    from sw.energy import EnergyTableError, load_table
    try:
        energy_table = load_table(args.energy_table)
    except EnergyTableError as e:
        raise UsageError(f"--energy-table {e}") from None
    folder = model_folder(args.model)
    held_out = len(folder.load_test_set()[1])
    if args.images is not None and args.images > held_out:
        raise UsageError(f"--images {args.images}: the test set of {args.model} holds {held_out} images")
    only = set(args.only.split(",")) if args.only else None
    records = [_float_row(folder, args.images)]
    for name, weights, acts, options, first_last in ROWS:
        if only and name not in only:
            continue
        progress(f"[{name}] {weights} x {acts} on {args.rows}x{args.rows} ...")
        w, a, formats = engine_formats(weights, acts, first_last)
        config = AcceleratorConfig(rows=args.rows, cols=args.rows, weight_format=w, act_format=a)
        r = evaluate(config, images=args.images, formats=formats, folder=folder, energy_table=energy_table,
                     log=lambda *_: None, **options)
        energy = r.pop("energy")
        r["energy_uj_per_inference"] = energy["energy_uj_per_inference"]
        r["inferences_per_second_per_watt"] = round(energy["inferences_per_second_per_watt"])
        r["energy_by_class_uj"] = energy["by_class_uj"]
        quant = f"{options['method']}{' + per-channel' if options['per_channel'] else ''}" \
                f"{' + two tensors' if options.get('multi_tensor') else ''}"
        if first_last:
            quant += f" (engine {w} x {a})"
        report = r.pop("quantization_report")
        r.pop("quantization")
        records.append({"name": name, "quantization": quant, **r,
                        "layer_formats": {e["name"]: f"{e['weight_format']} x {e['act_format']} "
                                                     f"({e['tensors']} tensor{'s' if e['tensors'] > 1 else ''})"
                                          for e in report},
                        "layer_utilization": {layer["name"]: layer["utilization"] for layer in r["layers"]}})
    if folder.qdq is not None:
        progress("[int8 QDQ by onnxruntime] ...")
        records.append(_qdq_row(folder, args.rows, args.images))
    for r in records:
        if "accuracy" in r:
            r["accuracy_pct"] = round(100 * r["accuracy"], 2)
        if "layer_utilization" in r:
            r["utilization_per_layer"] = ", ".join(f"{v:.1%}" for v in r["layer_utilization"].values())
    print(table(records, [("name", "network"), ("quantization", "quantization"), ("accuracy_pct", "accuracy %"),
                          ("cycles_per_inference", "cycles / inference"),
                          ("utilization_per_layer", "MAC utilization per layer"),
                          ("energy_uj_per_inference", "uJ / inference (est.)"),
                          ("inferences_per_second_per_watt", "inferences/s per W (est.)"),
                          ("compile_seconds", "compile s"),
                          ("emulator_images_per_second", "emulator images/s (timed)")]))
    name = "network" if folder.path.resolve() == DIGITS else f"network_{folder.path.resolve().name}"
    path = write(name, records, model=folder.name, engine=f"{args.rows}x{args.rows}", images=args.images or held_out)
    print(f"\nWrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
