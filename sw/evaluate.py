"""Accuracy and cycles of a CNN on an engine configuration: what the front door adds to its report, and what
every point of a design-space sweep (hw.explore) measures.

Usage: python -m sw.evaluate --config CONFIG.json --out RESULT.json [--method mmse] [--per-channel]
       [--multi-tensor] [--data-free [--input-range LO,HI]] [--images N] [--model DIR | --model MODEL.onnx
       --calibrate SAMPLES.npy [--eval IMAGES.npy --labels LABELS.npy | --eval TEST_SET.npz]]
       [--energy-table FILE] [--fmax-mhz MHZ] [--check]

Compiles a model for the configuration, runs its held-out images on the emulator, checks them against the golden
model, and writes accuracy, cycles per inference (per layer and in total), MAC utilization, speeds and energy per
inference (``energy``: sw/energy, from the events the emulator counted and the energy table, the default
sw/energy/horowitz_45nm.json or --energy-table FILE; inferences/s at the configuration's clock target, or at
--fmax-mhz, an achieved fmax) as JSON.
The model is a model folder (``--model DIR``, default models/digits: NAME.onnx calibrated on its calibration.npy
and run on its test_set.npz; models/mnist is the other; see sw/model_folder.py) or an ONNX file: calibrated on
--calibrate (float32, the model's input shape with N samples), run on --eval (a .npy of inputs with --labels, a
.npy of integer classes; or a .npz holding ``images`` and ``labels``). Without --eval the calibration samples are
run for cycles only (accuracy null); without --labels accuracy is null too. --check reads and checks the inputs,
then stops (no --out needed). --data-free quantizes without calibration samples (as ``sw.compile --data-free``
does: ranges from the BatchNormalization statistics, MMSE weights per channel unless --method says otherwise).
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

from hw.spec.config import AcceleratorConfig

from .cli import Parser, UsageError, check_out_file, integer, load_config, main_guard, number, write_file
from .compile import data_free_options, parse_input_range
from .model_folder import DIGITS, MNIST, ModelFolder, model_folder

PROG = "python -m sw.evaluate"

__all__ = ["DIGITS", "MNIST", "evaluate", "main"]


def evaluate(config: AcceleratorConfig, *, method: str = "mmse", per_channel: bool = True,
             multi_tensor: bool = False, images: int | None = None, model: Path | None = None,
             formats: dict | None = None, samples: np.ndarray | None = None, inputs: np.ndarray | None = None,
             labels: np.ndarray | None = None, folder: Path | ModelFolder = DIGITS, data_free=None,
             energy_table=None, fmax_mhz: float | None = None, log=print) -> dict:
    """Compile ``model`` (default: the model of ``folder``) for ``config`` and measure it on ``inputs`` with
    ``labels`` (default: the folder's held-out set when the model is the folder's; else ``samples`` for cycles
    alone), their first ``images``; ``data_free`` (:class:`~sw.quantize.data_free.DataFree`): no calibration.
    ``energy_table``: an :class:`~sw.energy.EnergyTable` (default: the default table); ``fmax_mhz``: an achieved
    clock for inferences/s (default: the configuration's clock target)."""
    from sw.compile import compile_model
    from sw.energy import load_table

    if model is None:           # the folder's model with its own calibration images and held-out set
        folder = folder if isinstance(folder, ModelFolder) else model_folder(folder)
        model = folder.onnx
        samples = folder.load_calibration() if samples is None and data_free is None else samples
        if inputs is None:
            inputs, labels = folder.load_test_set()
    if inputs is None:
        inputs, labels = samples, None
    if images is not None:
        inputs, labels = inputs[:images], None if labels is None else labels[:images]
    compiled = compile_model(model, config, None if data_free else samples, method=method,
                             per_channel=per_channel, multi_tensor=multi_tensor, formats=formats,
                             data_free=data_free, log=log)
    result, events = _measure(compiled, config, inputs, labels, log)
    result["energy"] = _energy(compiled, config, events, result["cycles_per_inference"],
                               load_table() if energy_table is None else energy_table, fmax_mhz)
    return {"model": Path(model).stem, "images": len(inputs), "labelled": labels is not None,
            "weights": config.weights.name, "acts": config.acts.name,
            "quantization": {"method": method, "per_channel": per_channel, "multi_tensor": multi_tensor,
                             "first_last": formats["first_last"] if formats else None,
                             "data_free": None if data_free is None else {
                                 "input_range": list(data_free.input_range), "sigmas": data_free.sigmas,
                                 "bias_correction": data_free.bias_correction}},
            **result, "image_bytes": compiled.program.dram_size, "compile_seconds": round(compiled.compile_seconds, 3),
            "quantization_report": compiled.network.report}


def _measure(compiled, config: AcceleratorConfig, x: np.ndarray, labels: np.ndarray | None, log) -> tuple:
    """Golden and emulated runs of ``x``: accuracy (None without labels), cycles per layer, utilization; and the
    events of one inference."""
    from sw.runtime import run_codes

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
    peak = config.reduction_rows * config.cols
    cycles = int(np.max(emulated.cycles))
    layer_cycles = np.max(np.asarray(emulated.layer_cycles), axis=0)
    layers = [{"name": e["name"], "op": e["op"], "fused": e["fused"], "cycles": int(c), "macs": e["macs"],
               "utilization": round(e["macs"] / (int(c) * peak), 4) if c else 0.0,
               "estimated_cycles": e["plan"]["estimated_cycles"], "tile_rows": e["plan"]["rows"],
               "loop_order": e["plan"]["order"]}
              for e, c in zip(compiled.layers, layer_cycles)]
    macs = compiled.program.useful_macs
    accuracy = None if labels is None else float((logits.reshape(len(x), -1).argmax(axis=1) == labels).mean())
    return {
        "accuracy": accuracy,
        "golden_emulator_mismatches": mismatches,
        "cycles_per_inference": cycles,
        "inferences_per_second_at_clock": round(config.clock_mhz * 1e6 / cycles, 1),
        "macs_per_inference": macs,
        "utilization": round(macs / (cycles * peak), 4),
        "layers": layers,
        "instructions": len(compiled.program.words),
        "emulator_images_per_second": round(len(x) / emulator_seconds, 2),
        "golden_images_per_second": round(len(x) / golden_seconds, 2),
    }, emulated.events


def _energy(compiled, config: AcceleratorConfig, events, cycles: int, table, fmax_mhz: float | None) -> dict:
    """Energy per inference and per layer of the events the measured run counted."""
    from sw.energy import energy_report, network_layers

    return energy_report(config, events, table, cycles=cycles, layers=network_layers(compiled), fmax_mhz=fmax_mhz)


def _parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="engine configuration (config.json of a build)")
    p.add_argument("--out", type=Path, help="where to write the result (JSON)")
    p.add_argument("--method", choices=("minmax", "percentile", "mmse"), default="mmse")
    p.add_argument("--data-free", action="store_true",
                   help="no calibration: ranges from BatchNormalization statistics, bias correction")
    p.add_argument("--input-range", metavar="LO,HI", type=parse_input_range,
                   help="with --data-free: the range of the model's input values (default 0,1)")
    p.add_argument("--per-channel", action=__import__("argparse").BooleanOptionalAction, default=True)
    p.add_argument("--multi-tensor", action="store_true")
    p.add_argument("--images", type=integer(1, 1 << 20), help="use only the first N held-out images")
    p.add_argument("--model", metavar="DIR|MODEL.onnx", type=Path,
                   help="a model folder (default models/digits; models/mnist is the other) or an ONNX model")
    p.add_argument("--calibrate", metavar="SAMPLES.npy", type=Path, help="calibration inputs of --model")
    p.add_argument("--eval", metavar="IMAGES.npy|.npz", type=Path, help="inputs to measure (npz: images, labels)")
    p.add_argument("--labels", metavar="LABELS.npy", type=Path, help="integer classes of the --eval inputs")
    p.add_argument("--energy-table", metavar="FILE", type=Path,
                   help="energy per event (JSON, the form of sw/energy/horowitz_45nm.json, the default)")
    p.add_argument("--fmax-mhz", type=number(1, 2000), help="an achieved clock for inferences/s (default: the "
                                                            "configuration's clock target)")
    p.add_argument("--check", action="store_true", help="check the inputs and stop")
    return p


def _load_data(args) -> dict:
    """``model``, ``samples``, ``inputs`` and ``labels`` from the arguments, checked (UsageError otherwise)."""
    from sw.frontend.onnx_import import load_onnx

    from .cli import load_array

    if args.model is None or args.model.is_dir():
        for flag in ("calibrate", "eval", "labels"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} needs --model MODEL.onnx (a model folder brings its own data)")
        return {"folder": model_folder(DIGITS if args.model is None else args.model)}
    if not args.model.is_file():
        raise UsageError(f"--model {args.model}: no such file or folder; give a model folder such as models/digits "
                         f"or an ONNX model")
    net = load_onnx(args.model)
    shape = net.input_shape
    samples = None if args.calibrate is None else load_array(args.calibrate, "--calibrate", shape)
    inputs, labels = _load_eval(args, shape)
    if inputs is None and samples is None:
        raise UsageError("--model needs inputs to run: --calibrate SAMPLES.npy or --eval IMAGES.npy")
    if labels is not None:
        classes = int(np.prod(net.output_shape))
        if labels.shape != (len(inputs),) or labels.min() < 0 or labels.max() >= classes:
            raise UsageError(f"--labels must be {len(inputs)} integers in 0..{classes - 1} (one per --eval input), "
                             f"not {labels.dtype} shaped {labels.shape}")
    return {"model": args.model, "samples": samples, "inputs": inputs, "labels": labels}


def _load_eval(args, shape) -> tuple[np.ndarray | None, np.ndarray | None]:
    from .cli import load_array

    if args.eval is None:
        if args.labels is not None:
            raise UsageError("--labels needs --eval IMAGES.npy")
        return None, None
    if args.eval.suffix == ".npz":
        if args.labels is not None:
            raise UsageError(f"--eval {args.eval} holds its labels; leave out --labels")
        try:
            with np.load(args.eval, allow_pickle=False) as data:
                images, labels = data["images"], data["labels"]
        except (OSError, KeyError, ValueError) as e:
            raise UsageError(f"--eval {args.eval}: not a .npz holding 'images' and 'labels' ({e})") from None
        if images.dtype != np.float32 or tuple(images.shape[1:]) != tuple(shape) or not np.isfinite(images).all():
            raise UsageError(f"--eval {args.eval}: 'images' must be finite float32 shaped (N, "
                             f"{', '.join(map(str, shape))}), not {images.dtype} {images.shape}")
    else:
        images, labels = load_array(args.eval, "--eval", shape), None
        if args.labels is not None:
            try:
                labels = np.load(args.labels, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise UsageError(f"--labels {args.labels}: not a .npy array ({e})") from None
    if labels is not None and labels.dtype.kind not in "iu":
        raise UsageError(f"--labels must hold integers, not {labels.dtype}")
    return images, labels


def _energy_table(path: Path | None):
    """The energy table of ``--energy-table`` (the default table without it), or a UsageError."""
    from sw.energy import EnergyTableError, load_table

    try:
        return load_table(path)
    except EnergyTableError as e:
        raise UsageError(f"--energy-table {e}") from None


def main(argv: list[str] | None = None) -> int:
    from sw.compiler.network import CompileError
    from sw.quantize import QuantizationError

    from sw.frontend.onnx_common import FrontendError

    return main_guard(PROG, lambda: _main(argv), usage_errors=(CompileError, QuantizationError, FrontendError))


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.out is None and not args.check:
        raise UsageError("the following arguments are required: --out")
    out = None if args.out is None else check_out_file(args.out, "--out", ".json")
    config = load_config(args.config)
    table = _energy_table(args.energy_table)
    data_free = data_free_options(args)
    data = _load_data(args)
    if args.check:
        print("The inputs are fine.")
        return 0
    result = evaluate(config, method=args.method, per_channel=args.per_channel, multi_tensor=args.multi_tensor,
                      images=args.images, data_free=data_free, energy_table=table, fmax_mhz=args.fmax_mhz,
                      **data)
    write_file(out, lambda scratch: scratch.write_text(json.dumps(result, indent=1) + "\n"), "--out")
    accuracy = "no labels" if result["accuracy"] is None else f"accuracy {result['accuracy']:.2%}"
    energy = result["energy"]
    print(f"{accuracy.capitalize()} on {result['images']} images; {result['cycles_per_inference']} cycles per "
          f"inference; {energy['energy_uj_per_inference']:.4g} uJ per inference (dynamic, estimated from counted "
          f"events), {energy['inferences_per_second_per_watt']:,.0f} inferences/s per watt; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
