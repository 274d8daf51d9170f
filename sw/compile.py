"""Compile an ONNX CNN for an engine: quantize, tile, and write the program, memory image and manifest.

Usage:
  python -m sw.compile MODEL.onnx --pe FMT [--weights FMT --acts FMT] --rows R [--cols C]
      [--calibrate SAMPLES.npy] [--method minmax|percentile|mmse] [--per-channel] [--multi-tensor]
      [--first-last FMT] [--data-free [--input-range LO,HI]] [--energy-table FILE] [--batch N] --out DIR
  python -m sw.compile MODEL.onnx --config CONFIG.json [the options above but the engine's] --out DIR
  python -m sw.compile MODEL.onnx --mixed FMT,FMT[,...] --budget cycles=N|weight-bits=N|energy-uj=X --rows R
      --calibrate SAMPLES.npy [--eval TEST_SET.npz] [--costs-on per-format|engine] [--pe FMT] --out DIR

A float model needs --calibrate: float32 samples shaped (N, *input_shape[1:]) in the model's layout and units,
or --data-free: no samples; activation ranges from the BatchNormalization statistics (beta +- 6 gamma per
channel, the input assumed in --input-range, default 0,1), weights per channel with MMSE clipping (unless --method
says otherwise) and a bias correction for their expected error (sw/quantize/data_free.py).
A QDQ or QONNX model brings its own scales. --config compiles for a built engine: the config.json that
python -m hw.build or python -m boards.build wrote (a board's engine, with its buffers and small-part
options), instead of --pe/--weights/--acts/--rows/--cols/--max-reduction. --first-last keeps the first and
last weighted layers at FMT; the engine is then built in whichever of FMT and the --pe format holds the other's
values (e.g. --pe int4 --first-last int8 runs on an int8 engine whose middle layers use int4 values only).

DIR receives: program.bin (the external-memory image: instructions, weights, parameters, tensor space),
program.asm (the listing), manifest.json (where inputs and outputs live, their encodings, the per-layer plan),
config.json, network.json + network.npz (the quantized network, for the golden backend), report.txt (the
quantization error and the plan), and report.json + report.md: the plan per layer and the estimated energy per
inference and per layer (events counted from the program's instructions, which are what the emulator counts when it
runs them, times the energy table: the default sw/energy/horowitz_45nm.json or --energy-table FILE), with
inferences/s and inferences/s per watt from the compiler's cycle estimate at the clock target (sw.evaluate measures
the cycles on the emulator).

--batch N compiles one program that computes N samples per run: its input and output tensors hold N samples one
after the other (manifest.json's "batch"; sw.run and sw.runtime feed whole runs, padding the last); layers on
vectors (linear layers, 1x1 convolutions of 1x1 maps) run once per weight tile over the N vectors (a GEMM with
M = N), convolutions of maps once per sample (sw/compiler/batching.py). The plan's cycles and MACs are per run.

--mixed chooses a format per layer (weights and activations; W/A names them apart, e.g. minifloat6/fp8_e4m3) by an
integer linear program: the least output error (measured per layer and format on the calibration samples) within
--budget, in cycles per inference (emulator-counted per layer), weight memory bits or energy (sw/mixed). It prints
the chosen formats and the predicted and measured figures (accuracy too with --eval, a .npz of images and labels)
into report.txt and mixed.json. The engine is --pe's, or else the menu's format that holds all the others' values;
--costs-on engine counts the costs on it (today's figures) instead of on an engine of each layer's format.
Energy budgets (energy-uj=) use sw.energy's per-layer estimate with the --energy-table (or the default table).
"""

from __future__ import annotations

from hw.spec.cli import exit_on_signals_while_starting

if __name__ == "__main__":     # before the imports below, which take a moment: Ctrl-C then still ends cleanly
    exit_on_signals_while_starting("python -m sw.compile")

import json
import sys
import time
from pathlib import Path

import numpy as np

from hw.spec.config import AcceleratorConfig, ConfigError
from hw.spec.formats import FormatError, get_format

from sw.quantize.network import representable

from .cli import Parser, UsageError, check_out_folder, integer, load_array, load_config, main_guard, write_folder

#: Most samples one program computes (sw.compiler.network.MAX_BATCH, which this light module does not import).
MAX_BATCH = 1024

PROG = "python -m sw.compile"

__all__ = ["main", "compile_model", "engine_formats", "data_free_options", "parse_input_range"]


def _parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL.onnx", type=Path, help="float, QDQ or QONNX ONNX model")
    p.add_argument("--pe", metavar="FMT", help="number format of weights and activations (int8, int4, minifloat6, "
                                               "minifloat6_e2m3, minifloat4, fp8_e4m3, fp8_e5m2, ...)")
    p.add_argument("--weights", metavar="FMT", help="weight format (overrides --pe)")
    p.add_argument("--acts", metavar="FMT", help="activation format (overrides --pe)")
    p.add_argument("--rows", type=integer(), help="PE rows of the engine (required unless --config)")
    p.add_argument("--cols", type=integer(), help="PE columns (default: --rows)")
    p.add_argument("--calibrate", metavar="SAMPLES.npy", type=Path, help="float32 calibration inputs (N, ...)")
    p.add_argument("--method", choices=("minmax", "percentile", "mmse"),
                   help="clipping of activations and weights (default minmax; mmse for the weights with --data-free)")
    p.add_argument("--per-channel", action="store_true", help="one weight scale per output channel")
    p.add_argument("--multi-tensor", action="store_true",
                   help="two low-bit weight tensors for layers that quantize badly")
    p.add_argument("--first-last", metavar="FMT", help="format of the first and last weighted layers")
    p.add_argument("--data-free", action="store_true",
                   help="no calibration: ranges from BatchNormalization statistics, per-channel weights, "
                        "bias correction")
    p.add_argument("--input-range", metavar="LO,HI", type=parse_input_range,
                   help="with --data-free: the range of the model's input values (default 0,1)")
    p.add_argument("--max-reduction", type=integer(),
                   help=f"longest reduction the accumulators hold exactly (default {AcceleratorConfig.max_reduction})")
    p.add_argument("--config", metavar="CONFIG.json", type=Path,
                   help="the engine of a build (config.json of python -m hw.build or python -m boards.build) "
                        "instead of --pe, --weights, --acts, --rows, --cols and --max-reduction")
    p.add_argument("--engine-only", action="store_true",
                   help="refuse operators the engine does not run instead of running them on the host")
    p.add_argument("--mixed", metavar="FMT,FMT", help="formats each layer may take, chosen by an ILP under --budget")
    p.add_argument("--budget", metavar="METRIC=N", help="budget of --mixed: cycles=N, weight-bits=N or energy-uj=X")
    p.add_argument("--eval", metavar="TEST_SET.npz", type=Path,
                   help="with --mixed: held-out 'images' and 'labels' to measure the chosen network's accuracy")
    p.add_argument("--formats", metavar="FMT,FMT",
                   help="with --mixed: run the mix on a multi-format engine with these formats (python -m hw.build "
                        "--formats), each layer in its chosen format; the first holds every other's values")
    p.add_argument("--costs-on", choices=("per-format", "engine"),
                   help="with --mixed: count each layer's costs on an engine of its format (per-format, the "
                        "default) or on the engine that runs the mix (engine: today's figures)")
    p.add_argument("--energy-table", metavar="FILE", type=Path,
                   help="energy per event (JSON, the form of sw/energy/horowitz_45nm.json, the default)")
    p.add_argument("--batch", metavar="N", type=integer(1, MAX_BATCH), default=1,
                   help="samples one run of the program computes (default 1): linear layers stream N vectors "
                        "through each weight tile")
    p.add_argument("--out", metavar="DIR", type=Path, required=True, help="output folder")
    return p


def _engine(args) -> tuple[AcceleratorConfig, dict | None]:
    """The engine of --pe/--weights/--acts/--rows/--cols/--max-reduction (and --first-last's formats)."""
    weights, acts = args.weights or args.pe, args.acts or args.pe
    if weights is None or acts is None:
        raise UsageError("no number format given: use --pe FMT, or both --weights FMT and --acts FMT")
    w, a, formats = engine_formats(weights, acts, args.first_last,
                                   ("--weights" if args.weights else "--pe", "--acts" if args.acts else "--pe"))
    try:
        return AcceleratorConfig(rows=args.rows, cols=args.rows if args.cols is None else args.cols,
                                 weight_format=w, act_format=a, max_reduction=args.max_reduction), formats
    except ConfigError as e:
        raise UsageError(str(e)) from None


def _built_engine(args, mixed: bool) -> AcceleratorConfig:
    """The engine of --config: a build's config.json; the options that also set the engine are refused."""
    given = [flag for flag, value in (("--pe", args.pe), ("--weights", args.weights), ("--acts", args.acts),
                                      ("--rows", args.rows), ("--cols", args.cols),
                                      ("--max-reduction", args.max_reduction), ("--first-last", args.first_last))
             if value is not None] + (["--mixed"] if mixed else [])
    if given:
        raise UsageError(f"--config sets the engine: drop {', '.join(given)} (or drop --config)")
    return load_config(args.config)


def parse_input_range(text: str) -> tuple[float, float]:
    import argparse
    import math
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers, e.g. 0,1), not {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise argparse.ArgumentTypeError(f"expected finite LO < HI, not {text!r}")
    return lo, hi


def data_free_options(args):
    """The :class:`~sw.quantize.data_free.DataFree` options of ``--data-free`` (None without it), after refusing
    the flags it contradicts; also used by sw.evaluate."""
    from sw.quantize.data_free import DataFree
    if not args.data_free:
        if args.input_range is not None:
            raise UsageError("--input-range only applies with --data-free")
        return None
    if args.calibrate is not None:
        raise UsageError("--data-free takes no --calibrate: drop one of them")
    return DataFree() if args.input_range is None else DataFree(input_range=args.input_range)


def _format(flag: str, name: str):
    try:
        return get_format(name)
    except FormatError as e:
        raise UsageError(f"{flag}: {e}") from None


def engine_formats(weights: str, acts: str, first_last: str | None,
                   flags: tuple[str, str] = ("--weights", "--acts")) -> tuple[str, str, dict | None]:
    """(engine weight format, engine act format, which layers use which formats) for ``--first-last``."""
    w, a = _format(flags[0], weights), _format(flags[1], acts)
    if first_last is None:
        return w.name, a.name, None
    f = _format("--first-last", first_last)
    engine = []
    for what, pe in (("weights", w), ("activations", a)):
        if representable(f, pe):
            engine.append(pe)
        elif representable(pe, f):
            engine.append(f)
        else:
            raise UsageError(f"--first-last {f.name} and {pe.name} {what}: neither format holds the other's values, "
                             f"so one engine cannot run both; choose nested formats (e.g. int4 inside int8)")
    return engine[0].name, engine[1].name, {"first_last": f.name, "middle": (w.name, a.name)}


def compile_model(model: Path, config: AcceleratorConfig, samples: np.ndarray | None, *, method: str = "minmax",
                  per_channel: bool = False, multi_tensor: bool = False, formats: dict | None = None,
                  engine_only: bool = False, data_free=None, log=print, batch: int = 1):
    """ONNX file to :class:`CompiledNetwork` (the library behind the command line); ``engine_only`` refuses
    operators the engine does not run instead of giving them to the host; ``data_free``
    (:class:`~sw.quantize.data_free.DataFree`) quantizes without ``samples``; ``batch``: samples per program run."""
    from sw.compiler.network import compile_network
    from sw.frontend.onnx_import import load_onnx
    from sw.quantize import first_last_layers, quantize_network

    started = time.perf_counter()
    net = load_onnx(model, engine_only=engine_only)
    log(f"Read {model}: {len(net.layers)} layers, input {net.input_shape}, output {net.output_shape}")
    layer_formats = None
    if formats is not None:
        ends = set(first_last_layers(net))
        fl, (mw, ma) = formats["first_last"], formats["middle"]
        layer_formats = {}
        for layer in net.layers:
            wf, af = (fl, fl) if layer.name in ends else (mw, ma)
            layer_formats[layer.name] = (None if wf == config.weights.name else wf,
                                         None if af == config.acts.name else af)
    qnet = quantize_network(net, act_format=config.acts.name, weight_format=config.weights.name,
                            acc_bits=config.acc_bits, samples=samples, method=method, per_channel=per_channel,
                            multi_tensor=multi_tensor, layer_formats=layer_formats, data_free=data_free)
    log(f"Quantized in {time.perf_counter() - started:.1f} s")
    compiled = compile_network(qnet, config, batch=batch)
    compiled.compile_seconds = time.perf_counter() - started
    return compiled


def main(argv: list[str] | None = None) -> int:
    from sw.compiler.network import CompileError
    from sw.frontend.onnx_import import FrontendError
    from sw.quantize import QuantizationError

    from sw.mixed import MixedError

    return main_guard(PROG, lambda: _main(argv),
                      usage_errors=(FrontendError, QuantizationError, CompileError, FormatError, MixedError))


def _main(argv: list[str] | None) -> int:
    from sw.quantize import format_report

    args = _parser().parse_args(argv)
    mixed = any(v is not None for v in (args.mixed, args.budget, args.eval, args.costs_on, args.formats))
    if args.config is None:
        if args.rows is None:
            raise UsageError("--rows is required: the engine's PE rows (or --config CONFIG.json of a build)")
        if args.max_reduction is None:           # (None until here: --config refuses it when given)
            args.max_reduction = AcceleratorConfig.max_reduction
        if mixed:
            from sw.mixed.command import compile_mixed
            return compile_mixed(args)
    if not args.model.is_file():
        raise UsageError(f"{args.model}: no such file")
    config, formats = (_built_engine(args, mixed), None) if args.config is not None else _engine(args)
    from sw.energy import EnergyTableError, load_table
    try:
        energy_table = load_table(args.energy_table)
    except EnergyTableError as e:
        raise UsageError(f"--energy-table {e}") from None
    data_free = data_free_options(args)
    out = check_out_folder(args.out, "manifest.json")
    samples = None
    if args.calibrate is not None:
        from sw.frontend.onnx_import import load_onnx
        shape = load_onnx(args.model, engine_only=args.engine_only).input_shape
        samples = load_array(args.calibrate, "--calibrate", shape)
    method = args.method or ("mmse" if data_free else "minmax")
    compiled = compile_model(args.model, config, samples, method=method,
                             per_channel=args.per_channel or bool(data_free), multi_tensor=args.multi_tensor,
                             formats=formats, engine_only=args.engine_only, data_free=data_free, batch=args.batch)
    report = format_report(compiled.network)
    print(report)
    print(_plan_table(compiled))
    summary = _summary(compiled, energy_table)
    energy = summary["energy"]
    print(f"Energy per inference (estimate): {energy['energy_uj_per_inference']:.4g} uJ, "
          f"{energy['inferences_per_second_per_watt']:,.0f} inferences/s per W")

    def write(folder: Path) -> None:
        from sw.energy import energy_markdown

        compiled.save(folder)
        (folder / "report.txt").write_text(report + "\n" + _plan_table(compiled) + "\n")
        (folder / "report.json").write_text(json.dumps(summary, indent=1) + "\n")
        (folder / "report.md").write_text(f"# {args.model.name} on {config.rows}x{config.cols} {config.weights.name} "
                                          f"x {config.acts.name}\n\n```\n{_plan_table(compiled)}\n```\n\n"
                                          f"## Energy per inference (estimate)\n\n{energy_markdown(energy)}")
    write_folder(out, write)
    print(f"Wrote {out}: program.bin ({compiled.program.dram_size} bytes, {len(compiled.program.words)} "
          f"instructions), program.asm, manifest.json, network.json/.npz, report.txt, report.json, report.md "
          f"(compiled in {compiled.compile_seconds:.1f} s)")
    return 0


def _summary(compiled, energy_table) -> dict:
    """report.json: the configuration, the plan per layer and the estimated energy."""
    from sw.energy import energy_report, network_layers, program_events

    cycles = sum(e["plan"]["estimated_cycles"] for e in compiled.layers)
    energy = energy_report(compiled.config, program_events(compiled), energy_table, cycles=cycles or None,
                           layers=network_layers(compiled), cycles_source="the compiler's cost-model estimate",
                           samples=compiled.batch)
    return {"config": compiled.config.to_dict(), "batch": compiled.batch, "instructions": len(compiled.program.words),
            "layers": compiled.layers, "host_layers": compiled.host_layers, "energy": energy}


def _plan_table(compiled) -> str:
    rows = ["layer                 fused              order  tile rows  est. cycles  DRAM bytes       MACs",
            "--------------------  -----------------  -----  ---------  -----------  ----------  ---------"]
    for e in compiled.layers:
        rows.append(f"{e['name'][:20]:20s}  {','.join(e['fused'])[:17]:17s}  {e['plan']['order']:5s}  "
                    f"{e['plan']['rows']:9d}  {e['plan']['estimated_cycles']:11d}  {e['plan']['dram_bytes']:10d}  "
                    f"{e['macs']:9d}")
    hosts = compiled.host_macs()
    if hosts:
        engine = sum(e["macs"] for e in compiled.layers)
        rows += ["", "host layer            operators                                        MACs",
                 "--------------------  ---------------------------------------------  ---------"]
        rows += [f"{name[:20]:20s}  {types[:45]:45s}  {macs:9d}" for name, (types, macs) in hosts.items()]
        engine //= compiled.batch
        total = engine + sum(macs for _, macs in hosts.values())
        rows.append(f"MACs per sample: {engine} on the engine ({100 * engine / max(total, 1):.1f} %), "
                    f"{total - engine} on the host, between {len(compiled.program.segments)} engine programs")
    if compiled.batch > 1:
        rows.append(f"One program run computes {compiled.batch} samples (--batch): the cycles, DRAM bytes and MACs "
                    f"of the engine layers above are per run")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
