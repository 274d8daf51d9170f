"""The front door: ``python -m hw.build --pe minifloat6 --rows 16``.

Elaborates the design for a configuration, writes its Verilog, estimates its area with yosys, places and
routes it on the FPGAs asked for (``--targets ecp5-85f,ice40-up5k``), and writes ``report.json`` and ``report.md``. Outputs appear all at once (written to a scratch folder, then moved),
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
from .spec.flags import flag_error, format_flags, format_set
from .spec.config import AcceleratorConfig, ConfigError
from .spec.formats import product_of
from .spec.outputs import atomic_folder
from . import area_model
from .pnr import DEVICES, ROUTER_HELP, ROUTERS, outcome

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
    p.add_argument("--formats", metavar="FMT,FMT,...",
                   help="a multi-format build: the formats a layer selects from at run time, e.g. "
                        "int4,int8,minifloat6 (instead of --pe/--weights/--acts)")
    p.add_argument("--rows", type=integer(), default=16, help="PE rows: the reduction dimension (default 16)")
    p.add_argument("--cols", type=integer(), help="PE columns: output channels in parallel (default: --rows)")
    p.add_argument("--max-reduction", type=integer(), default=AcceleratorConfig.max_reduction,
                   help="longest reduction the accumulators hold exactly (default %(default)s)")
    p.add_argument("--clock-mhz", type=number(1, 2000), default=AcceleratorConfig.clock_mhz, help="clock target")
    p.add_argument("--dsp-pes", type=integer(), default=0, metavar="N",
                   help="packed int4 builds: the first N PEs make their pair of products in one DSP multiply "
                        "(a MULT18X18D on an ECP5) instead of LUTs (default 0)")
    p.add_argument("--out", metavar="DIR", type=Path, help="output folder (default build/<format>-<R>x<C>-<hash>)")
    p.add_argument("--no-synth", action="store_true", help="skip yosys: the area estimate and place and route")
    p.add_argument("--no-network", action="store_true",
                   help="skip compiling and emulating the bundled CNN (accuracy, cycles per inference)")
    p.add_argument("--energy-table", metavar="FILE", type=Path,
                   help="energy per event for the bundled CNN's energy per inference (JSON, the form of "
                        "sw/energy/horowitz_45nm.json, the default)")
    p.add_argument("--targets", default="generic,ice40",
                   help="comma-separated: yosys area estimates (generic, ice40) and devices to place and route "
                        f"on ({', '.join(DEVICES)}); default %(default)s")
    p.add_argument("--router", choices=ROUTERS, help=ROUTER_HELP + " (default router1)")
    return p


def _config_from(args) -> AcceleratorConfig:
    formats = format_set(args)
    if formats:
        try:
            return AcceleratorConfig(rows=args.rows, cols=args.rows if args.cols is None else args.cols,
                                     weight_format=formats[0], act_format=formats[0], formats=formats,
                                     max_reduction=args.max_reduction, clock_mhz=args.clock_mhz,
                                     dsp_pes=args.dsp_pes)
        except ConfigError as e:
            message = str(e)
            raise (UsageError(f"--{message}") if message.startswith("formats") else flag_error(e)) from None
    weights, acts = format_flags(args)
    if weights is None or acts is None:
        raise UsageError("no number format given: use --pe FMT, --formats FMT,FMT,... or both --weights FMT and "
                         "--acts FMT")
    try:
        return AcceleratorConfig(rows=args.rows, cols=args.rows if args.cols is None else args.cols,
                                 weight_format=weights, act_format=acts, max_reduction=args.max_reduction,
                                 clock_mhz=args.clock_mhz, dsp_pes=args.dsp_pes)
    except ConfigError as e:
        raise flag_error(e) from None


def _config_name(config: AcceleratorConfig) -> str:
    """The formats part of a build folder's default name."""
    if config.multi_format:
        return "-".join(config.formats)
    return f"{config.weights.name}-{config.acts.name}"


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
        f"| codes per PE lane (reduction rows) | {d['values_per_lane']} ({d['reduction_rows']}) |",
        *([f"| packed per layer (COMPUTE.packed: {d['packed_reduction_rows']} reduction rows) | "
           f"{', '.join(d['packed_pairs'])} |"] if "packed_pairs" in d else []),
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
    lines += _breakdown_markdown(report)
    lines += _fpga_markdown(report)
    lines += _network_markdown(report.get("network"))
    return "\n".join(lines)


def _fpga_markdown(report: dict) -> list[str]:
    devices = report.get("devices") or []
    if not devices:
        return []
    lines = ["## Place and route (yosys + nextpnr)", "",
             f"The engine inside a wrapper that puts its ports on shift chains (hw/fpga_wrapper.py: "
             f"{report[devices[0]]['wrapper']['flipflops']} flip-flops of the counts below), clock target "
             f"{report['config']['clock_mhz']:g} MHz, nextpnr's {report[devices[0]].get('router', 'router1')}; "
             f"fmax from nextpnr's timing report.", "",
             "| device | fits | LUT4 | flip-flops | DSP | block RAM | fmax MHz | GMAC/s at fmax | "
             "digits CNN inferences/s at fmax | critical path |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name in devices:
        d = report[name]
        r = d["resources"]

        def used(key):
            return f"{r[key]['used']}/{r[key]['available']}" if key in r else "-"
        path = d.get("critical_path")
        where = f"`{path['from']}` -> `{path['to']}` ({path['delay_ns']:.1f} ns)" if path else outcome(d)
        lines.append(f"| {name} | {'yes' if d['fits'] else 'no'} | {used('luts')} | {used('flipflops')} | "
                     f"{used('dsps')} | {used('brams')} | {d['fmax_mhz'] or '-'} | {d.get('gmacs_at_fmax', '-')} | "
                     f"{d.get('inferences_per_second_at_fmax', '-')} | {where} |")
    return lines + [""]


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
             f"| MAC utilization | {n['utilization']:.1%} |"]
    e = n.get("energy")
    if e:
        lines += [f"| energy per inference (estimate) | {e['energy_uj_per_inference']:.4g} uJ |",
                  f"| inferences per second per watt (estimate) | {e['inferences_per_second_per_watt']:,.0f} |"]
    lines += ["", "| layer | fused | cycles | MACs | utilization | tile rows | loop order | energy uJ |",
              "|---|---|---:|---:|---:|---:|---|---:|"]
    energies = [layer["energy_uj"] for layer in e["layers"]] if e else ["-"] * len(n["layers"])
    lines += [f"| {layer['name']} | {', '.join(layer['fused'])} | {layer['cycles']} | {layer['macs']} | "
              f"{layer['utilization']:.1%} | {layer['tile_rows']} | {layer['loop_order']} | {uj} |"
              for layer, uj in zip(n["layers"], energies)]
    if e:
        lines += ["", f"Energy: {e['scope']}; table {e['energy_table']['name']} ({e['energy_table']['path']}). By "
                      f"class, uJ: " + ", ".join(f"{k} {v:.4g}" for k, v in e["by_class_uj"].items() if v) + "."]
    return lines + [""]


def _plots(report: dict, folder: Path) -> dict:
    """``area.png`` (the area breakdown) and ``utilization.png`` (MAC utilization per layer of the bundled CNN),
    written into ``folder``; ``{name: file or the reason there is none}``."""
    from . import plots

    if not plots.available():
        return {"area": None, "utilization": None, "missing": plots.MISSING}
    c = report["config"]
    label = f"{c['weight_format']} x {c['act_format']} {c['rows']}x{c['cols']}"
    plots.area_breakdown([(label, report["area_breakdown"]["parts"])], folder / "area.png",
                         f"Area breakdown, {label} (analytic estimate)")
    n = report.get("network")
    if not n or "error" in n:
        return {"area": "area.png", "utilization": None}
    plots.utilization(n["layers"], folder / "utilization.png",
                      f"MAC utilization per layer, bundled CNN, {label}")
    return {"area": "area.png", "utilization": "utilization.png"}


def _breakdown_markdown(report: dict) -> list[str]:
    b = report["area_breakdown"]
    total = b["total"] or 1
    lines = ["## Area breakdown (estimate)", "", f"An {b['kind']}, in {b['unit']}; buffers as SRAM at "
             f"{b['sram_bit_nand2']} per bit. ![area](area.png)" if report["plots"].get("area") else
             f"An {b['kind']}, in {b['unit']}.", "", "| part | NAND2 equivalents | share |", "|---|---:|---:|"]
    lines += [f"| {part} | {value} | {value / total:.1%} |" for part, value in b["parts"].items()]
    lines += [f"| total | {b['total']} | |", ""]
    generic = (report.get("area") or {}).get("generic")
    if generic:
        logic = b["total"] - b["parts"]["buffers"]
        lines += [f"Yosys counts {generic['nand2_equivalents']:.0f} NAND2 equivalents without the buffers, the "
                  f"estimate {logic}.", ""]
    if report["plots"].get("utilization"):
        lines += ["![MAC utilization per layer](utilization.png)", ""]
    elif report["plots"].get("missing"):
        lines += [f"No plots: {report['plots']['missing']}.", ""]
    return lines


def _network(config_file: Path, result_file: Path, energy_table: Path | None = None,
             fmax: tuple[str, float] | None = None) -> dict:
    """Accuracy, cycles and energy of the bundled CNN on this configuration, from ``python -m sw.evaluate``;
    ``fmax``: (device, achieved fmax) for its inferences/s, instead of the clock target.

    A separate process: the hardware package never imports the software stack (dependencies flow one way).
    """
    command = [sys.executable, "-m", "sw.evaluate", "--config", str(config_file), "--out", str(result_file)]
    if energy_table is not None:
        command += ["--energy-table", str(Path(energy_table).resolve())]
    if fmax is not None:
        command += ["--fmax-mhz", f"{fmax[1]:.3f}"]
    done = run_child(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in done.stdout.splitlines():
        _say(f"      {line}")
    if done.returncode != 0:
        lines = done.stdout.strip().splitlines()
        return {"error": lines[-1] if lines else f"sw.evaluate exited with status {done.returncode}"}
    result = json.loads(result_file.read_text())
    result_file.unlink()
    if fmax is not None and "energy" in result:
        result["energy"]["clock_source"] = f"achieved fmax on {fmax[0]} (nextpnr)"
    return result


#: Yosys-only area estimates that ``--targets`` accepts beside the devices of :data:`hw.pnr.DEVICES`.
AREA_TARGETS = ("generic", "ice40")


def _place_and_route(config: AcceleratorConfig, devices, out: Path, router: str | None = None) -> dict:
    """Each device's summary (see :func:`hw.pnr.place_and_route`) of the engine inside the shift-chain wrapper;
    nextpnr's log and JSON report are copied to ``out/pnr/DEVICE/``."""
    import shutil

    from amaranth.back import verilog

    from .engine import InferenceEngine
    from .fpga_wrapper import ShiftChainWrapper
    from .pnr import place_and_route

    wrapper = ShiftChainWrapper(InferenceEngine(config))
    text = verilog.convert(wrapper, name="top", emit_src=False)
    results = {}
    for device in devices:
        summary = place_and_route(text, device, clock_mhz=config.clock_mhz, router=router,
                                  progress=lambda msg: _say(f"      {msg}"))
        folder = out / "pnr" / device
        folder.mkdir(parents=True)
        for name in ("nextpnr.log", "timing.json"):
            if (Path(summary["files"]) / name).is_file():
                shutil.copyfile(Path(summary["files"]) / name, folder / name)
        summary.pop("files")
        summary["wrapper"] = {"kind": "shift chains on 4 pins (hw/fpga_wrapper.py)", "flipflops": wrapper.flipflops}
        if summary["fmax_mhz"]:
            summary["gmacs_at_fmax"] = round(config.peak_macs_per_cycle * summary["fmax_mhz"] / 1e3, 3)
        summary["log"] = f"pnr/{device}/nextpnr.log"
        results[device] = summary
    return results


def build(config: AcceleratorConfig, out: Path, *, synth: bool = True, targets=AREA_TARGETS,
          network: bool = True, energy_table: Path | None = None, router: str | None = None) -> dict:
    """Write ``top.v``, ``config.json``, ``report.json`` and ``report.md`` for ``config`` into ``out``.

    ``targets``: yosys area estimates (:data:`AREA_TARGETS`) and devices to place and route on (:data:`DEVICES`).
    ``energy_table``: the energy table of the bundled CNN's energy per inference (default: sw.energy's); its
    inferences/s are at the first placed and routed device's fmax where there is one, else at the clock target.
    ``router``: nextpnr's router (:data:`hw.pnr.ROUTERS`; None: its default), in each device's entry.
    """
    from amaranth.back import verilog

    from .engine import InferenceEngine

    area_targets = tuple(t for t in targets if t in AREA_TARGETS)
    devices = tuple(t for t in targets if t in DEVICES)
    with atomic_folder(Path(out)) as scratch:
        started = time.monotonic()
        formats = (f"formats {', '.join(config.formats)} chosen per layer" if config.multi_format
                   else f"{config.weights.name} x {config.acts.name}")
        _say(f"[1/5] elaborating the inference engine: a {config.rows}x{config.cols} systolic array "
             f"({formats}), buffers, DMA, controller, post-processing ...")
        design = InferenceEngine(config)
        text = verilog.convert(design, name="top", emit_src=False)
        (scratch / "top.v").write_text(text)
        (scratch / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
        _say(f"      Verilog: {len(text.splitlines())} lines in {time.monotonic() - started:.1f} s")

        area = None
        if synth and area_targets:
            from . import synth as synthesis

            _say("[2/5] estimating area with yosys ...")
            area = synthesis.synthesize(text, scratch / "synth", targets=area_targets,
                                        progress=lambda msg: _say(f"      {msg}"))
        else:
            _say("[2/5] area estimate skipped" + (" (--no-synth)" if not synth else ""))

        fpga = {}
        if synth and devices:
            _say(f"[3/5] placing and routing on {', '.join(devices)} (yosys + nextpnr; cached by a digest of the "
                 f"Verilog) ...")
            fpga = _place_and_route(config, devices, scratch, router)
        else:
            _say("[3/5] place and route skipped" + (" (--no-synth)" if not synth and devices else ""))

        network_result = None
        if network:
            _say("[4/5] compiling the bundled CNN (models/digits) for this engine and running its 360 held-out "
                 "images on the emulator ...")
            achieved = [(name, d["fmax_mhz"]) for name, d in fpga.items()
                        if d.get("fits") and (d["fmax_mhz"] or 0) >= 1]
            network_result = _network(scratch / "config.json", scratch / "network.json", energy_table,
                                      achieved[0] if achieved else None)
        else:
            _say("[4/5] bundled CNN skipped (--no-network)")
        cycles = (network_result or {}).get("cycles_per_inference")
        for summary in fpga.values():
            if cycles and summary["fmax_mhz"]:
                summary["inferences_per_second_at_fmax"] = round(summary["fmax_mhz"] * 1e6 / cycles, 1)

        product = product_of(config.acts, config.weights)
        report = {
            "schema": REPORT_SCHEMA,
            "design": type(design).__name__,
            "config": config.to_dict(),
            "config_hash": config.hash,
            "derived": {
                "peak_macs_per_cycle": config.peak_macs_per_cycle,
                "values_per_lane": config.values_per_lane,
                "reduction_rows": config.reduction_rows,
                "product": {"significand_bits": product.significand_bits, "min_exponent": product.min_exponent,
                            "max_exponent": product.max_exponent, "fixed_bits": product.fixed_bits},
                "psum_bits": config.psum_bits,
                "acc_bits": config.acc_bits,
                "acc_exponent": config.acc_exponent,
                "array_latency_cycles": config.rows + config.cols - 1,
                # A multi-format build that packs per layer: the pairs COMPUTE.packed may select, and their depth.
                **({"packed_pairs": [f"{config.weight_formats[w].name} x {config.act_formats[a].name}"
                                     for w, a in config.packed_pairs],
                    "packed_reduction_rows": config.packed_reduction_rows} if config.packs_per_layer else {}),
            },
            "buffers": area_model.buffers(config),
            "area_breakdown": area_model.estimate(config),
            "area": area,
            "devices": list(fpga),
            **fpga,
            "network": network_result,
            "outputs": {"verilog": "top.v", "config": "config.json", "report_json": "report.json",
                        "report_md": "report.md"},
            "plots": {},
        }
        _say("[5/5] writing the report ...")
        report["plots"] = _plots(report, scratch)
        (scratch / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (scratch / "report.md").write_text(_markdown(report))
    return report


def _check_energy_table(path: Path) -> None:
    """Refuse a bad ``--energy-table`` before any work: ``python -m sw.energy FILE`` checks it (hw never imports
    sw)."""
    done = run_child([sys.executable, "-m", "sw.energy", str(path)], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        message = lines[-1].split("error: ", 1)[-1] if lines else f"sw.energy exited with status {done.returncode}"
        raise UsageError(f"--energy-table {message}")


def main(argv: list[str] | None = None) -> int:
    return main_guard(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    config = _config_from(args)
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    known = (*AREA_TARGETS, *DEVICES)
    unknown = [t for t in targets if t not in known]
    if unknown or not targets:
        raise UsageError(f"--targets: unknown target(s) {', '.join(unknown)[:80] or '(none)'}; "
                         f"choose from {', '.join(known)}")
    if args.router and not any(t in DEVICES for t in targets):
        raise UsageError(f"--router {args.router}: no device to place and route; add one to --targets, e.g. "
                         f"--targets ecp5-85f")
    if args.energy_table is not None:
        _check_energy_table(args.energy_table)
    out = check_out_folder(args.out or Path("build") / f"{_config_name(config)}-{config.rows}x"
                                                       f"{config.cols}-{config.hash[:8]}", "report.json")
    try:
        report = build(config, out, synth=not args.no_synth, targets=targets, network=not args.no_network,
                       energy_table=args.energy_table, router=args.router)
    except OSError as e:
        raise UsageError(f"--out {out}: {e.strerror or e}") from None
    print(f"Wrote {out}/top.v, {out}/report.json and {out}/report.md (config hash {report['config_hash']})")
    n = report.get("network")
    if n and "error" not in n:
        e = n.get("energy") or {}
        energy = (f", {e['energy_uj_per_inference']:.4g} uJ and {e['inferences_per_second_per_watt']:,.0f} "
                  f"inferences/s per W (estimated dynamic energy)" if e else "")
        print(f"  bundled CNN: {n['accuracy']:.2%} accuracy, {n['cycles_per_inference']} cycles per inference{energy}")
    elif n:
        print(f"  bundled CNN: not run ({n['error']})")
    area = report["area"] or {}
    if "generic" in area:
        print(f"  generic: {area['generic']['nand2_equivalents']:.0f} NAND2 equivalents, "
              f"{area['generic']['flipflops']} flip-flops")
    if "ice40" in area:
        print(f"  iCE40: {area['ice40']['luts']} LUT4, {area['ice40']['dsps']} SB_MAC16, "
              f"{area['ice40']['brams']} SB_RAM40_4K")
    for device in report["devices"]:
        d = report[device]
        r = d["resources"]
        used = ", ".join(f"{r[k]['used']}/{r[k]['available']} {k}" for k in ("luts", "flipflops", "dsps", "brams",
                                                                           "sprams") if k in r)
        speed = f" ({d['gmacs_at_fmax']:.2f} GMAC/s peak)" if d["fits"] else ""
        print(f"  {device}: {outcome(d)}{speed}; {used}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
