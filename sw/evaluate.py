"""Accuracy and cycles of a bundled CNN (models/digits unless --model) on an engine configuration: what the front
door adds to its report.

Usage: python -m sw.evaluate --config CONFIG.json --out RESULT.json [--model DIR] [--method mmse] [--per-channel]
       [--multi-tensor] [--images N]

Compiles the model of a model folder (``--model``, default models/digits: digits_cnn.onnx, calibrated on its
calibration.npy, 64 training images; models/mnist is the other; see sw/model_folder.py) for the configuration,
runs the held-out images on the emulator, checks them against the golden model, and writes accuracy, cycles per
inference (per layer and in total), MAC utilization and speeds as JSON.
"""

from __future__ import annotations

from hw.spec.cli import exit_on_signals_while_starting

if __name__ == "__main__":     # before the imports below, which take a moment: Ctrl-C then still ends cleanly
    exit_on_signals_while_starting("python -m sw.evaluate")

import json
import sys
import time
from pathlib import Path

import numpy as np

from hw.spec.config import AcceleratorConfig, ConfigError

from .cli import Parser, UsageError, check_out_file, integer, main_guard, write_file
from .model_folder import DIGITS, MNIST, ModelFolder, model_folder

PROG = "python -m sw.evaluate"

__all__ = ["DIGITS", "MNIST", "evaluate", "main"]


def evaluate(config: AcceleratorConfig, *, method: str = "mmse", per_channel: bool = True,
             multi_tensor: bool = False, images: int | None = None, model: Path | None = None,
             formats: dict | None = None, folder: Path | ModelFolder = DIGITS, log=print) -> dict:
    """Compile the model of ``folder`` (or ``model``, same input) for ``config`` and measure it on the folder's
    held-out set (its first ``images``)."""
    from sw.compile import compile_model
    from sw.runtime import run_codes

    if not isinstance(folder, ModelFolder):
        folder = model_folder(folder)
    x, labels = folder.load_test_set(images)
    compiled = compile_model(model or folder.onnx, config, folder.load_calibration(), method=method,
                             per_channel=per_channel, multi_tensor=multi_tensor, formats=formats, log=log)
    net = compiled.network
    codes = net.tensors[net.input].quantize(x)
    started = time.perf_counter()
    golden = run_codes(compiled, codes, "golden")
    golden_seconds = time.perf_counter() - started
    started = time.perf_counter()
    emulated = run_codes(compiled, codes, "emulator", cycles=True,
                         progress=lambda d, n: log(f"  emulator: {d}/{n} images"))
    emulator_seconds = time.perf_counter() - started
    mismatches = int((golden.codes != emulated.codes).reshape(len(x), -1).any(axis=1).sum())
    logits = net.tensors[net.output].dequantize(emulated.codes)
    peak = config.rows * config.cols
    cycles = int(np.max(emulated.cycles))
    layer_cycles = np.max(np.asarray(emulated.layer_cycles), axis=0)
    layers = [{"name": e["name"], "op": e["op"], "fused": e["fused"], "cycles": int(c), "macs": e["macs"],
               "utilization": round(e["macs"] / (int(c) * peak), 4) if c else 0.0,
               "estimated_cycles": e["plan"]["estimated_cycles"], "tile_rows": e["plan"]["rows"],
               "loop_order": e["plan"]["order"]}
              for e, c in zip(compiled.layers, layer_cycles)]
    macs = compiled.program.useful_macs
    return {
        "model": folder.name, "images": len(x),
        "weights": config.weights.name, "acts": config.acts.name,
        "quantization": {"method": method, "per_channel": per_channel, "multi_tensor": multi_tensor,
                         "first_last": formats["first_last"] if formats else None},
        "accuracy": float((logits.argmax(axis=1) == labels).mean()),
        "golden_emulator_mismatches": mismatches,
        "cycles_per_inference": cycles,
        "inferences_per_second_at_clock": round(config.clock_mhz * 1e6 / cycles, 1),
        "macs_per_inference": macs,
        "utilization": round(macs / (cycles * peak), 4),
        "layers": layers,
        "instructions": len(compiled.program.words),
        "compile_seconds": round(compiled.compile_seconds, 3),
        "emulator_images_per_second": round(len(x) / emulator_seconds, 2),
        "golden_images_per_second": round(len(x) / golden_seconds, 2),
        "quantization_report": net.report,
    }


def _parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="engine configuration (config.json of a build)")
    p.add_argument("--out", type=Path, required=True, help="where to write the result (JSON)")
    p.add_argument("--model", type=Path, default=DIGITS, metavar="DIR",
                   help="model folder (default models/digits; models/mnist is the other)")
    p.add_argument("--method", choices=("minmax", "percentile", "mmse"), default="mmse")
    p.add_argument("--per-channel", action=__import__("argparse").BooleanOptionalAction, default=True)
    p.add_argument("--multi-tensor", action="store_true")
    p.add_argument("--images", type=integer(1, 1 << 20), help="use only the first N held-out images")
    return p


def main(argv: list[str] | None = None) -> int:
    from sw.compiler.network import CompileError
    from sw.quantize import QuantizationError

    return main_guard(PROG, lambda: _main(argv), usage_errors=(CompileError, QuantizationError))


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    out = check_out_file(args.out, "--out", ".json")
    if not args.config.is_file():
        raise UsageError(f"--config {args.config}: no such file")
    try:
        config = AcceleratorConfig.from_json(args.config.read_text())
    except (ConfigError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {args.config}: {e}") from None
    folder = model_folder(args.model)
    result = evaluate(config, method=args.method, per_channel=args.per_channel, multi_tensor=args.multi_tensor,
                      images=args.images, folder=folder)
    write_file(out, lambda scratch: scratch.write_text(json.dumps(result, indent=1) + "\n"), "--out")
    print(f"Accuracy {result['accuracy']:.2%} on {result['images']} held-out images; "
          f"{result['cycles_per_inference']} cycles per inference; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
