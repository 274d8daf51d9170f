"""The front door: ``python -m hw.build --pe minifloat6 --rows 16``.

Elaborates the design for a configuration, writes its Verilog, estimates its area with yosys, and writes
``report.json`` and ``report.md``. Outputs appear all at once (written to a scratch folder, then moved),
so a failed or interrupted build never leaves a half-written result.
"""

from __future__ import annotations

from hw.spec.cli import exit_on_signals_while_starting

if __name__ == "__main__":     # before the imports below, which take a moment: Ctrl-C then still ends cleanly
    exit_on_signals_while_starting("python -m hw.build")

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .spec.cli import Parser, UsageError, check_out_folder, integer, main_guard, number, run_child
from .spec.config import AcceleratorConfig, ConfigError
from .spec.formats import FormatError, get_format, product_of
from .spec.outputs import atomic_folder

__all__ = ["main", "build"]

PROG = "python -m hw.build"
REPORT_SCHEMA = 1


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[1],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pe", metavar="FMT", help="number format of weights and activations, e.g. int8, minifloat6, "
                                               "fp8_e4m3, e3m2b5")
    p.add_argument("--weights", metavar="FMT", help="weight format (overrides --pe)")
    p.add_argument("--acts", metavar="FMT", help="activation format (overrides --pe)")
    p.add_argument("--rows", type=integer(), default=16, help="PE rows: the reduction dimension (default 16)")
    p.add_argument("--cols", type=integer(), help="PE columns: output channels in parallel (default: --rows)")
    p.add_argument("--max-reduction", type=integer(), default=AcceleratorConfig.max_reduction,
                   help="longest reduction the accumulators hold exactly (default %(default)s)")
    p.add_argument("--clock-mhz", type=number(1, 2000), default=AcceleratorConfig.clock_mhz, help="clock target")
    p.add_argument("--out", metavar="DIR", type=Path, help="output folder (default build/<format>-<R>x<C>-<hash>)")
    p.add_argument("--no-synth", action="store_true", help="skip the yosys area estimate")
    p.add_argument("--no-network", action="store_true",
                   help="skip compiling and emulating the bundled CNN (accuracy, cycles per inference)")
    p.add_argument("--targets", default="generic,ice40",
                   help="yosys area targets, comma-separated from generic, ice40 (default %(default)s)")
    return p


def _config_from(args) -> AcceleratorConfig:
    weights = args.weights or args.pe
    acts = args.acts or args.pe
    if weights is None or acts is None:
        raise UsageError("no number format given: use --pe FMT, or both --weights FMT and --acts FMT")
    for flag, name in (("--weights" if args.weights else "--pe", weights), ("--acts" if args.acts else "--pe", acts)):
        try:
            get_format(name)
        except FormatError as e:
            raise UsageError(f"{flag}: {e}") from None
    try:
        return AcceleratorConfig(rows=args.rows, cols=args.rows if args.cols is None else args.cols,
                                 weight_format=weights, act_format=acts, max_reduction=args.max_reduction,
                                 clock_mhz=args.clock_mhz)
    except ConfigError as e:
        flag = str(e).split(" ", 1)[0].replace("_format", "").replace("_", "-")
        raise UsageError(f"--{flag}: {e}") from None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _markdown(report: dict) -> str:
    c, d = report["config"], report["derived"]
    lines = [
        f"# {report['design']}: {c['rows']}x{c['cols']} {c['weight_format']} weights x {c['act_format']} activations",
        "",
        f"Configuration hash `{report['config_hash']}`; Verilog `{report['outputs']['verilog']}`.",
        "",
        "| quantity | value |", "|---|---|",
        f"| peak MACs per cycle | {d['peak_macs_per_cycle']} |",
        f"| product | {d['product']['significand_bits']}-bit significand x 2^[{d['product']['min_exponent']}, "
        f"{d['product']['max_exponent']}], {d['product']['fixed_bits']}-bit fixed point |",
        f"| partial sum width in the array | {d['psum_bits']} bits |",
        f"| accumulator width (K = {c['max_reduction']}) | {d['acc_bits']} bits |",
        f"| array latency | {d['array_latency_cycles']} cycles |",
        "",
        "## Buffers", "", "| buffer | depth | line bits | kbit |", "|---|---|---|---|",
        *[f"| {name} | {b['depth']} | {b['line_bits']} | {b['bits'] / 1024:.1f} |"
          for name, b in report["buffers"].items()],
        "",
    ]
    area = report.get("area")
    if area:
        lines += ["## Area estimate (yosys)", "", "| target | measure | value |", "|---|---|---|"]
        if "generic" in area:
            g = area["generic"]
            lines += [f"| generic gates | NAND2 equivalents (logic and flip-flops, without buffers) | "
                      f"{g['nand2_equivalents']:.0f} |",
                      f"| generic gates | flip-flops | {g['flipflops']} |",
                      f"| generic gates | memories kept as SRAM (see Buffers) | {g.get('memories', 0)} |"]
        if "ice40" in area:
            i = area["ice40"]
            lines += [f"| iCE40 | LUT4 | {i['luts']} |", f"| iCE40 | SB_MAC16 (DSP) | {i['dsps']} |",
                      f"| iCE40 | SB_RAM40_4K (block RAM) | {i['brams']} |",
                      f"| iCE40 | flip-flops | {i['flipflops']} |"]
        lines += ["", "Gate-equivalent weights: " + ", ".join(
            f"{k} {v}" for k, v in area.get("generic", {}).get("ge_weights", {}).items()), ""]
    else:
        lines += ["No area estimate (--no-synth).", ""]
    lines += _network_markdown(report.get("network"))
    return "\n".join(lines)


def _network_markdown(n: dict | None) -> list[str]:
    if n is None:
        return ["No network run (--no-network).", ""]
    if "error" in n:
        return ["## Bundled CNN", "", f"Not run on this configuration: {n['error']}", ""]
    q = n["quantization"]
    lines = ["## Bundled CNN (models/digits, 360 held-out images, emulator)", "",
             f"Quantized with {q['method']} clipping{', per-channel weights' if q['per_channel'] else ''}"
             f"{', multi-tensor weights' if q['multi_tensor'] else ''}; golden model and emulator disagree on "
             f"{n['golden_emulator_mismatches']} images.", "",
             "| quantity | value |", "|---|---|",
             f"| accuracy | {n['accuracy']:.2%} |",
             f"| cycles per inference | {n['cycles_per_inference']} |",
             f"| inferences per second at the clock target | {n['inferences_per_second_at_clock']} |",
             f"| MAC utilization | {n['utilization']:.1%} |", "",
             "| layer | fused | cycles | MACs | utilization | tile rows | loop order |",
             "|---|---|---:|---:|---:|---:|---|"]
    lines += [f"| {layer['name']} | {', '.join(layer['fused'])} | {layer['cycles']} | {layer['macs']} | "
              f"{layer['utilization']:.1%} | {layer['tile_rows']} | {layer['loop_order']} |" for layer in n["layers"]]
    return lines + [""]


def _buffers(config: AcceleratorConfig) -> dict:
    """Depth, line width and total bits of each on-chip buffer."""
    from .compute_engine import acc_line_layout
    from .spec.isa import Buffer
    from .spec.layout import line_bits

    widths = {"activation": (config.act_buffer_depth, line_bits(Buffer.ACT, config)),
              "weight": (config.weight_buffer_depth, line_bits(Buffer.WEIGHT, config)),
              "accumulator": (config.acc_buffer_depth, acc_line_layout(config).size),
              "parameter": (config.param_buffer_depth, line_bits(Buffer.PARAM, config))}
    return {name: {"depth": d, "line_bits": w, "bits": d * w} for name, (d, w) in widths.items()}


def _network(config_file: Path, result_file: Path) -> dict:
    """Accuracy and cycles of the bundled CNN on this configuration, from ``python -m sw.evaluate``.

    A separate process: the hardware package never imports the software stack (dependencies flow one way).
    """
    command = [sys.executable, "-m", "sw.evaluate", "--config", str(config_file), "--out", str(result_file)]
    done = run_child(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in done.stdout.splitlines():
        _say(f"      {line}")
    if done.returncode != 0:
        lines = done.stdout.strip().splitlines()
        return {"error": lines[-1] if lines else f"sw.evaluate exited with status {done.returncode}"}
    result = json.loads(result_file.read_text())
    result_file.unlink()
    return result


def build(config: AcceleratorConfig, out: Path, *, synth: bool = True, targets=("generic", "ice40"),
          network: bool = True) -> dict:
    """Write ``top.v``, ``config.json``, ``report.json`` and ``report.md`` for ``config`` into ``out``."""
    from amaranth.back import verilog

    from .engine import InferenceEngine

    with atomic_folder(Path(out)) as scratch:
        started = time.monotonic()
        _say(f"[1/4] elaborating the inference engine: a {config.rows}x{config.cols} systolic array "
             f"({config.weights.name} x {config.acts.name}), buffers, DMA, controller, post-processing ...")
        design = InferenceEngine(config)
        text = verilog.convert(design, name="top", emit_src=False)
        (scratch / "top.v").write_text(text)
        (scratch / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
        _say(f"      Verilog: {len(text.splitlines())} lines in {time.monotonic() - started:.1f} s")

        area = None
        if synth:
            from . import synth as synthesis

            _say("[2/4] estimating area with yosys ...")
            area = synthesis.synthesize(text, scratch / "synth", targets=tuple(targets),
                                        progress=lambda msg: _say(f"      {msg}"))
        else:
            _say("[2/4] area estimate skipped (--no-synth)")

        network_result = None
        if network:
            _say("[3/4] compiling the bundled CNN (models/digits) for this engine and running its 360 held-out "
                 "images on the emulator ...")
            network_result = _network(scratch / "config.json", scratch / "network.json")
        else:
            _say("[3/4] bundled CNN skipped (--no-network)")

        product = product_of(config.acts, config.weights)
        report = {
            "schema": REPORT_SCHEMA,
            "design": type(design).__name__,
            "config": config.to_dict(),
            "config_hash": config.hash,
            "derived": {
                "peak_macs_per_cycle": config.peak_macs_per_cycle,
                "product": {"significand_bits": product.significand_bits, "min_exponent": product.min_exponent,
                            "max_exponent": product.max_exponent, "fixed_bits": product.fixed_bits},
                "psum_bits": config.psum_bits,
                "acc_bits": config.acc_bits,
                "array_latency_cycles": config.rows + config.cols - 1,
            },
            "buffers": _buffers(config),
            "area": area,
            "network": network_result,
            "outputs": {"verilog": "top.v", "config": "config.json", "report_json": "report.json",
                        "report_md": "report.md"},
        }
        _say("[4/4] writing the report ...")
        (scratch / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (scratch / "report.md").write_text(_markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    return main_guard(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    config = _config_from(args)
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = sorted(set(targets) - {"generic", "ice40"})
    if unknown or not targets:
        raise UsageError(f"--targets: unknown target(s) {', '.join(unknown)[:80] or '(none)'}; "
                         f"choose from generic, ice40")
    out = check_out_folder(args.out or Path("build") / f"{config.weights.name}-{config.acts.name}-{config.rows}x"
                                                       f"{config.cols}-{config.hash[:8]}", "report.json")
    try:
        report = build(config, out, synth=not args.no_synth, targets=targets, network=not args.no_network)
    except OSError as e:
        raise UsageError(f"--out {out}: {e.strerror or e}") from None
    print(f"Wrote {out}/top.v, {out}/report.json and {out}/report.md (config hash {report['config_hash']})")
    n = report.get("network")
    if n and "error" not in n:
        print(f"  bundled CNN: {n['accuracy']:.2%} accuracy, {n['cycles_per_inference']} cycles per inference")
    elif n:
        print(f"  bundled CNN: not run ({n['error']})")
    area = report["area"] or {}
    if "generic" in area:
        print(f"  generic: {area['generic']['nand2_equivalents']:.0f} NAND2 equivalents, "
              f"{area['generic']['flipflops']} flip-flops")
    if "ice40" in area:
        print(f"  iCE40: {area['ice40']['luts']} LUT4, {area['ice40']['dsps']} SB_MAC16, "
              f"{area['ice40']['brams']} SB_RAM40_4K")
    return 0


if __name__ == "__main__":
    sys.exit(main())
