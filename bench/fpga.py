"""The whole engine placed and routed on FPGAs: fits, resources, fmax, GMAC/s and digits-CNN inferences/s at that fmax,
for the RTL of this tree and for a baseline commit, through the same flow (hw/pnr.py: yosys + nextpnr, the engine
inside the shift-chain wrapper of hw/fpga_wrapper.py, the clock target of the configuration, nextpnr seed 1 unless
NEXTPNR_SEEDS names another).

Usage: python bench/fpga.py [--configs int8-4x4,...] [--devices ecp5-85f,...] [--baseline COMMIT] [--rtl both|tree|baseline]
[--router router1|router2]
(default: every configuration on the ECP5-85F, and int8-4x4 on the iCE40 UP5K too, with nextpnr's default router)

The baseline's Verilog is generated from ``git archive COMMIT hw`` (with this tree's wrapper) in a child process;
place and route is this tree's. Results are cached by a digest of the Verilog (hw/pnr.py), so a second run only
reads them. Writes bench/results/fpga.json and rewrites the table between the fpga-table markers of README.md.
Place and route of a 16x16 engine takes tens of minutes on a busy 2-core machine; runs go one at a time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

# (importing common puts the repo on sys.path)
from common import ROOT, fits_cell, path_cell, progress, run, table, update_readme, write

from hw.pnr import DEVICES, ROUTER_HELP, ROUTERS, place_and_route  # noqa: E402
from hw.spec.cli import Parser, UsageError, run_child  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402

#: name -> the configuration of a row of the README's table (square at the 100 MHz target unless said otherwise).
CONFIGS = {name: AcceleratorConfig(rows=rows, cols=cols, weight_format=fmt, act_format=fmt, clock_mhz=mhz)
           for name, fmt, rows, cols, mhz in (
               ("int8-4x4", "int8", 4, 4, 100), ("int8-8x8", "int8", 8, 8, 100),
               ("minifloat6-8x8", "minifloat6", 8, 8, 100), ("int8-16x16", "int8", 16, 16, 100),
               ("minifloat6-16x16", "minifloat6", 16, 16, 100),
               # int4, two codes per PE lane (LUT multipliers): 256 MACs per cycle. The 30 GMAC/s target needs more
               # than fits: int4 12x24 (576 MACs, >= 52.1 MHz) synthesizes to 93.1 k LUT4 of the 85F's 83.6 k.
               ("int4-8x16", "int4", 8, 16, 60))}
# int4 12x24 (576 MACs per cycle) with one post-processing lane for the 24 columns (postprocess_shared): the 23 lanes
# it saves are what made the engine overflow the 85F (71.1 k TRELLIS_COMB of 83.6 k with them shared); a STORE then
# writes a line every 24 cycles. Its buffers are shallower than the defaults: with act 4096, weight and acc 1024 lines
# it took 197 of the 208 DP16KD (acc 84: three 504-bit read ports, 1024 x 18 each; act 22; param 85; weight 6) and
# router2 stalled at ~48 k overused wires; act 1024, weight and acc 512 (512 x 36) take 136 and still compile the
# digits CNN in the same cycles. It places at an estimated 53.4 MHz (30.8 GMAC/s) but has not routed either: router2
# stalls at ~25 k overused wires (README, "int4 on the ECP5-85F"), so it has no row yet.
CONFIGS["int4-12x24-shared"] = replace(CONFIGS["int4-8x16"], rows=12, cols=24, clock_mhz=58, postprocess_shared=True,
                                       act_buffer_depth=1024, weight_buffer_depth=512, acc_buffer_depth=512)
# The same packed arrays with the pair of products of some PEs each from one MULT18X18D (dsp_pes), the rest in LUTs:
# about 85 LUT4 fewer a PE. 30 GMAC/s needs 62.0 MHz at 11x22 (484 MACs a cycle) and 52.1 MHz at 12x24 (576).
# 11x22 with 152 (the 85F's 156 less the shared lane's 4) plateaus in router2 at 23 k overused wires. 12x24 with a
# LOAD's PARAM lines written beat by beat (load_direct_write: no 3,072-bit line assembled twice in flip-flops) and
# 72 DSP PEs places at an estimated 53.1 MHz in 69 % of the 85F and routes best of the tries (router2 down to 634
# overused wires, then back up; 152 DSP PEs: 52.5 MHz, plateau at 7.5 k; 104: 49.7 MHz), but has not routed either
# (docs/fpga.md, "DSP PEs"), so no row yet.
CONFIGS["int4-11x22-dsp"] = replace(CONFIGS["int4-12x24-shared"], rows=11, cols=22, clock_mhz=62, dsp_pes=152)
CONFIGS["int4-12x24-dsp"] = replace(CONFIGS["int4-12x24-shared"], clock_mhz=53, dsp_pes=72, load_direct_write=True)
#: nextpnr options beyond the flow's own, per configuration: router2 routes a large engine in a fraction of the
#: default router's time.
NEXTPNR_OPTIONS = {name: ("--router", "router2") for name in CONFIGS if name.startswith("int4-")}
#: nextpnr's placement seed where it is not 1: on an engine that fills most of the die, how far router2 gets
#: depends on the placement (int4-12x24-dsp: seed 3 down to 174 overused wires, seed 1 634, seed 2 worse; none
#: routed: docs/fpga.md, "DSP PEs").
NEXTPNR_SEEDS = {"int4-12x24-dsp": 3}
#: Every configuration on the ECP5-85F (the timing targets); the iCE40 UP5K only for the smallest, whose overflow
#: says what a fit on it needs (synth_ice40 of a 16x16 engine takes long to learn that it does not fit either).
DEFAULT_PAIRS = [(name, "ecp5-85f") for name in CONFIGS] + [("int8-4x4", "ice40-up5k")]
#: The last commit before the timing work (issue 12): the "before" column.
BASELINE = "212754c"
WORK = ROOT / "bench" / "work" / "fpga"
MARKERS = ("<!-- fpga-table: python bench/fpga.py -->", "<!-- end fpga-table -->")

_ELABORATE = """
import sys
from amaranth.back import verilog
from hw.engine import InferenceEngine
from hw.fpga_wrapper import ShiftChainWrapper
from hw.spec.config import AcceleratorConfig
config = AcceleratorConfig.from_json(sys.argv[1])
open(sys.argv[2], "w").write(verilog.convert(ShiftChainWrapper(InferenceEngine(config)), name="top", emit_src=False))
"""


def _tree(commit: str | None) -> Path:
    """The folder whose ``hw`` package elaborates the engine: this repository, or an export of ``commit``'s ``hw``
    with this tree's wrapper beside it."""
    if commit is None:
        return ROOT
    folder = WORK / f"rtl-{commit}"
    if not (folder / "hw" / "engine.py").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        archive = folder / "hw.tar"
        done = run_child(["git", "-C", str(ROOT), "archive", "-o", str(archive), commit, "hw"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise UsageError(f"--baseline {commit}: git archive failed: {done.stderr.strip()[:200]}")
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        archive.unlink()
    (folder / "hw" / "fpga_wrapper.py").write_text((ROOT / "hw" / "fpga_wrapper.py").read_text())
    return folder


def _verilog(config: AcceleratorConfig, tree: Path, name: str) -> str:
    out = WORK / f"{name}.v"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = run_child([sys.executable, "-c", _ELABORATE, config.to_json(), str(out)], cwd=tree,
                     env={**os.environ, "PYTHONPATH": str(tree)},
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"elaborating {name} failed: {done.stderr.strip().splitlines()[-1:]}")
    return out.read_text()


def _cycles_per_inference(config: AcceleratorConfig) -> int | None:
    """The digits CNN's cycles per inference on this tree's cycle model (8 images: cycles do not depend on data)."""
    from sw.compiler.network import CompileError
    from sw.evaluate import evaluate

    try:
        return evaluate(config, images=8, log=lambda *a: None)["cycles_per_inference"]
    except CompileError:
        return None


def _record(name: str, config: AcceleratorConfig, device: str, rtl: str, s: dict, cycles: int | None) -> dict:
    r = s["resources"]
    record = {"config": name, "device": device, "rtl": rtl, "fits": s["fits"],
              **{k: r[k]["used"] for k in ("luts", "flipflops", "dsps", "brams", "sprams") if k in r},
              "available": {k: r[k]["available"] for k in r}, "fmax_mhz": s["fmax_mhz"],
              "target_mhz": s["target_mhz"], "router": s["router"], "seed": s["seed"],
              "critical_path": s["critical_path"],
              "overflow": s.get("overflow"), "error": s.get("error"), "seconds": s["seconds"]}
    if s["fmax_mhz"]:
        record["gmacs"] = round(config.peak_macs_per_cycle * s["fmax_mhz"] / 1e3, 3)
        if cycles:
            record["cycles_per_inference"] = cycles
            record["inferences_per_second"] = round(s["fmax_mhz"] * 1e6 / cycles, 1)
    return record


def _readme_table(records: list[dict]) -> str:
    by = {(r["config"], r["device"], r["rtl"]): r for r in records}
    lines = ["| configuration | device | fits | LUT4 | FF | DSP | BRAM | fmax before (MHz) | fmax (MHz) | "
             "GMAC/s at fmax | digits CNN inferences/s at fmax | critical path |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name in CONFIGS:
        for device in DEVICES:
            now, before = by.get((name, device, "this tree")), by.get((name, device, f"baseline {BASELINE}"))
            if now is None:
                continue
            fits = fits_cell(now)
            fmax_before = (f"{before['fmax_mhz']:.1f}" if before and before["fmax_mhz"] else
                           "does not fit" if before and not before["fits"] else "")
            cells = [name, device, fits] + [str(now.get(k, "-")) for k in ("luts", "flipflops", "dsps", "brams")]
            notes = [now["router"]] if now.get("router", "router1") != "router1" else []
            notes += [f"seed {now['seed']}"] if now.get("seed", 1) != 1 else []
            how = f" ({', '.join(notes)})" if notes else ""
            cells += [fmax_before, f"{now['fmax_mhz']:.1f}{how}" if now["fmax_mhz"] else "-",
                      str(now.get("gmacs", "-")), str(now.get("inferences_per_second", "-")),
                      path_cell(now["critical_path"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python bench/fpga.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", help="comma-separated from " + ", ".join(CONFIGS) +
                   " (default: all, each on the ECP5-85F, and int8-4x4 on the iCE40 UP5K too)")
    p.add_argument("--devices", help="comma-separated from " + ", ".join(DEVICES) + " (with --configs: default "
                   "ecp5-85f)")
    p.add_argument("--baseline", default=BASELINE, help="commit whose RTL gives the 'before' column (%(default)s)")
    p.add_argument("--rtl", choices=("both", "tree", "baseline"), default="both",
                   help="whose RTL to place and route: this tree's, the baseline's, or both (default)")
    p.add_argument("--router", choices=ROUTERS, help=ROUTER_HELP + " (default router1; a configuration whose own "
                   "nextpnr options name a router keeps it)")
    args = p.parse_args(argv)
    known = CONFIGS
    configs = [c.strip() for c in (args.configs or ",".join(known)).split(",") if c.strip()]
    devices = [d.strip() for d in (args.devices or "ecp5-85f").split(",") if d.strip()]
    for flag, chosen, allowed in (("--configs", configs, known), ("--devices", devices, DEVICES)):
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen:
            raise UsageError(f"{flag}: unknown {', '.join(bad)[:80] or '(none)'}; choose from {', '.join(allowed)}")
    pairs = DEFAULT_PAIRS if args.configs is None and args.devices is None else \
        [(c, d) for c in configs for d in devices]
    if not re.fullmatch(r"[0-9a-fA-F]{4,40}", args.baseline):
        raise UsageError(f"--baseline must be a commit hash, not {args.baseline[:40]!r}")

    previous = {}
    results = ROOT / "bench" / "results" / "fpga.json"
    if results.is_file():
        previous = {(r["config"], r["device"], r["rtl"]): r for r in json.loads(results.read_text())["records"]}
    trees = [("this tree", None)] * (args.rtl != "baseline") + \
        [(f"baseline {args.baseline}", args.baseline)] * (args.rtl != "tree")
    for name in dict.fromkeys(c for c, _ in pairs):
        config = known[name]
        cycles = _cycles_per_inference(config) if args.rtl != "baseline" else None
        for rtl, commit in trees:
            progress(f"{name} ({rtl}): elaborating ...")
            text = _verilog(config, _tree(commit), f"{name}-{commit or 'tree'}")
            for device in (d for c, d in pairs if c == name):
                progress(f"{name} ({rtl}) on {device}:")
                extra = NEXTPNR_OPTIONS.get(name, ())
                summary = place_and_route(text, device, clock_mhz=config.clock_mhz, seed=NEXTPNR_SEEDS.get(name, 1),
                                          router=None if "--router" in extra else args.router,
                                          extra_args=(DEVICES[device].tools.unconstrained, *extra) if extra else (),
                                          progress=lambda m: progress(f"  {m}"))
                previous[(name, device, rtl)] = _record(name, config, device, rtl, summary,
                                                        cycles if commit is None else None)
    records = list(previous.values())
    print(table(records, [("config", "configuration"), ("device", "device"), ("rtl", "RTL"), ("fits", "fits"),
                          ("luts", "LUT4"), ("flipflops", "FF"), ("dsps", "DSP"), ("brams", "BRAM"),
                          ("fmax_mhz", "fmax MHz"), ("gmacs", "GMAC/s")]))
    print(f"wrote {write('fpga', records, baseline=args.baseline).relative_to(ROOT)}")
    update_readme(MARKERS, _readme_table(records))
    print("updated the table in README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
