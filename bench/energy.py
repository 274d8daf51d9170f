"""Energy per inference and inferences/s per watt of SqueezeNet 1.1 and the digits CNN on a 16x16 engine, next to
the seed paper's edge-device figures for SqueezeNet.

Ours are estimates: cycles from the emulator's cycle model (one timed run; checked against the RTL's cycle counter,
bench/cycle_model.py) at the configuration's clock target (100 MHz; --fmax-mhz for an achieved fmax), and dynamic
energy from the events the emulator counted for one inference times the energy table (Horowitz's 45 nm figures
scaled by width, sw/energy/horowitz_45nm.json, or --energy-table FILE): no static power, no host, no board. The
devices' figures are measurements the seed paper reports (NVIDIA Jetson AGX Xavier: 864 inferences/s and 52.6
inferences/s per watt; Intel Movidius Neural Compute Stick: 24.2 inferences/s at 1.5 W); their energy per inference
and power are derived from those two numbers. SqueezeNet 1.1 is the zoo's (models/zoo: torch architecture, random
weights, exported as bench/zoo.py does; ImageNet-sized input 3x224x224), quantized on its 8 calibration inputs
(MMSE, per channel); its accuracy is meaningless (random weights) and not reported. The digits CNN is models/digits
with its accuracy on its held-out images.

Usage: python bench/energy.py [--formats int8,int4,minifloat6] [--networks squeezenet1_1,digits] [--images 1]
       [--energy-table FILE] [--fmax-mhz MHZ]
Writes bench/results/energy.json, prints the table and updates it in README.md.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from common import progress, run, table, update_readme, write  # (importing common puts the repository on sys.path)

from hw.spec.cli import Parser, UsageError, integer, number  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402

MARKERS = ("<!-- energy-table: python bench/energy.py -->", "<!-- end energy-table -->")
NETWORKS = ("squeezenet1_1", "digits")
ROWS = 16
#: The seed paper's edge figures for SqueezeNet (measured on the devices): name, inferences/s, inferences/s per W.
DEVICES = (("NVIDIA Jetson AGX Xavier", 864.0, 52.6), ("Intel Movidius NCS", 24.2, 24.2 / 1.5))
DEVICE_NOTE = "measured (seed paper); mJ and W derived from its two figures"


def _device_rows() -> list[dict]:
    return [{"system": name, "network": "squeezenet1_1", "format": "-", "inferences_per_second": per_s,
             "inferences_per_second_per_watt": round(per_w, 2), "energy_mj_per_inference": round(1e3 / per_w, 2),
             "power_w": round(per_s / per_w, 2), "figures": DEVICE_NOTE} for name, per_s, per_w in DEVICES]


def _round(value: float) -> float | int:
    """Three significant digits at least; whole numbers from 1000 on."""
    return int(round(value)) if value >= 1000 else round(value, 2)


def _ours(network: str, fmt: str, images: int, energy_table, fmax_mhz: float | None) -> dict:
    """Compile and run ``network`` in ``fmt`` on the 16x16 engine: cycles, events, energy."""
    from sw.energy import energy_report, network_layers
    from sw.evaluate import evaluate
    from sw.model_folder import DIGITS

    config = AcceleratorConfig(rows=ROWS, cols=ROWS, weight_format=fmt, act_format=fmt)
    started = time.perf_counter()
    accuracy = None
    if network == "digits":
        result = evaluate(config, folder=DIGITS, energy_table=energy_table, fmax_mhz=fmax_mhz, log=lambda *_: None)
        energy, accuracy = result["energy"], result["accuracy"]
    else:
        from sw.compile import compile_model
        from sw.runtime import run_codes
        from zoo import model_files

        path, samples_path = model_files(network)
        samples = np.load(samples_path)
        compiled = compile_model(path, config, samples, method="mmse", per_channel=True, log=lambda *_: None)
        net = compiled.network
        emulated = run_codes(compiled, net.tensors[net.input].quantize(samples[:images]), "emulator", cycles=True)
        energy = energy_report(config, emulated.events, energy_table, cycles=int(max(emulated.cycles)),
                               layers=network_layers(compiled), fmax_mhz=fmax_mhz)
    progress(f"  {time.perf_counter() - started:.0f} s")
    power = energy["average_power_mw"] / 1e3
    classes = energy["by_class_uj"]
    return {"system": f"this engine {ROWS}x{ROWS}", "network": network, "format": fmt,
            "inferences_per_second": _round(energy["inferences_per_second"]),
            "inferences_per_second_per_watt": _round(energy["inferences_per_second_per_watt"]),
            "energy_mj_per_inference": round(energy["energy_uj_per_inference"] / 1e3, 4), "power_w": round(power, 4),
            "figures": f"estimated: cycles at {energy['clock_mhz']:g} MHz ({energy['clock_source']}), dynamic energy",
            "how": f"cycles from the emulator's cycle model at {energy['clock_mhz']:g} MHz ({energy['clock_source']}); "
                   f"{energy['scope']}; table {energy['energy_table']['name']}",
            "accuracy": accuracy, "cycles_per_inference": energy["cycles_per_inference"],
            "dram_share": round(classes["dram"] / energy["energy_uj_per_inference"], 4),
            "mac_share": round(classes["mac"] / energy["energy_uj_per_inference"], 4),
            "energy": energy}


COLUMNS = [("system", "system"), ("network", "network"), ("format", "format"),
           ("inferences_per_second", "inferences/s"), ("inferences_per_second_per_watt", "inferences/s per W"),
           ("energy_mj_per_inference", "mJ / inference"), ("power_w", "W"), ("dram_share", "DRAM share"),
           ("mac_share", "MAC share"), ("figures", "figures")]


def main(argv=None) -> int:
    from sw.energy import EnergyTableError, load_table

    p = Parser(prog="python bench/energy.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--formats", default="int8,int4,minifloat6")
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--images", type=integer(1, 64), default=1, help="SqueezeNet inputs to run (default 1)")
    p.add_argument("--energy-table", metavar="FILE", type=Path, help="energy per event (default: Horowitz 45 nm)")
    p.add_argument("--fmax-mhz", type=number(1, 2000), help="an achieved clock (default: the clock target)")
    args = p.parse_args(argv)
    networks = [n for n in args.networks.split(",") if n]
    unknown = [n for n in networks if n not in NETWORKS]
    if unknown:
        raise UsageError(f"--networks: unknown network {unknown[0]!r}; choose from {', '.join(NETWORKS)}")
    try:
        energy_table = load_table(args.energy_table)
    except EnergyTableError as e:
        raise UsageError(f"--energy-table {e}") from None
    records = _device_rows()
    for network in networks:
        for fmt in [f for f in args.formats.split(",") if f]:
            progress(f"[{network}] {ROWS}x{ROWS} {fmt} ...")
            records.append(_ours(network, fmt, args.images, energy_table, args.fmax_mhz))
    text = table(records, COLUMNS)
    print(text)
    path = write("energy", records, engine=f"{ROWS}x{ROWS}", energy_table=energy_table.path,
                 clock=("achieved fmax (given)" if args.fmax_mhz else "clock target of the configuration"))
    print(f"\nWrote {path}")
    update_readme(MARKERS, text)
    print("updated the table in README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
