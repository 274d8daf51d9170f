"""Mixed precision by an ILP: the Pareto front of accuracy against cycles and against weight bits.

For each model folder, the ILP (sw/mixed) chooses a format per layer from MENU for a sweep of budgets in cycles
per inference and in weight bits; every choice is compiled for one engine (the menu's container format when one
format holds all the others' values; else, as for the default menu with minifloat6 beside the integers, a
multi-format build of the menu's formats, each layer quantized and run in its own format) and run on the held-out
set by the emulator (accuracy, and a golden/emulator bit-exactness check), its weight bits
counted from the codes the program carries. Uniform programs (every layer in one format, on an engine of that
format, the same geometry) are the baselines: int8, int4, int2 and minifloat6 (and whatever --uniform names).

Cycles of a mixed choice are the sum of each layer's emulator-counted cycles on an engine of its format (what a
multi-format engine would take; today's single engine runs the mix at its container format's cycles, also
recorded); a uniform program's cycles are its own emulator count. Weight bits count each weight at the width of
its layer's format (a packed store). Energy per inference is sw.energy's estimate (counted events times its default
table), per layer on its format's engine like the cycles.

Usage: python bench/mixed_precision.py [--models models/digits,models/mnist] [--menu int2,int4,int8,minifloat6]
       [--rows 32]
       [--budgets 8] [--images N] [--uniform int8,int4,int2,minifloat6] [--name mixed_precision]
Writes bench/results/NAME.json, .md (the table) and .png (the plot). The fp8 family's weight-only menu:
python bench/mixed_precision.py --models models/digits --menu minifloat4/fp8_e4m3,minifloat6/fp8_e4m3,fp8_e4m3
       --uniform fp8_e4m3,minifloat6/fp8_e4m3,minifloat4/fp8_e4m3,minifloat6 --name mixed_precision_fp8
The residual CNN with integer and minifloat layers (its branches may differ; each add reads the widest):
python bench/mixed_precision.py --models models/mnist --menu int4,int8,minifloat6 --uniform int8,int4,minifloat6
       --name mixed_precision_residual
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from common import RESULTS, ROOT, progress, run, table, write  # (importing common puts the repo on sys.path)

from hw.spec.cli import Parser, integer  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402
from hw.spec.outputs import atomic_file  # noqa: E402

COLUMNS = [("model", "model"), ("kind", "kind"), ("budget", "budget"), ("formats", "formats per unit"),
           ("cycles", "cycles"), ("weight_bits", "weight bits"), ("energy_uj", "energy uJ"),
           ("accuracy", "accuracy"), ("sqnr_pred", "out SQNR dB pred."), ("sqnr", "out SQNR dB")]


def _parser() -> Parser:
    p = Parser(prog="python bench/mixed_precision.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="models/digits,models/mnist", help="model folders, comma-separated")
    p.add_argument("--menu", default="int2,int4,int8,minifloat6",
                   help="formats a layer may take (sw.compile --mixed; default %(default)s)")
    p.add_argument("--rows", type=integer(1, 128), default=32, help="array rows = cols (default %(default)s)")
    p.add_argument("--budgets", type=integer(2, 64), default=8, help="budgets per metric (default %(default)s)")
    p.add_argument("--images", type=integer(1, 1 << 20), help="held-out images per model (default all)")
    p.add_argument("--uniform", default="int8,int4,int2,minifloat6", help="uniform baselines (FMT or W/A)")
    p.add_argument("--name", default="mixed_precision", help="results name (default %(default)s)")
    return p


def _counted(compiled, x, y) -> dict:
    """Emulator cycles, counted weight bits and accuracy of a compiled program."""
    from sw.mixed.costs import cycles_per_layer, weight_bits_per_layer
    from sw.runtime import run_codes
    net = compiled.network
    codes = net.tensors[net.input].quantize(x)
    emulated = run_codes(compiled, codes, "emulator")
    golden = run_codes(compiled, codes, "golden")
    logits = net.tensors[net.output].dequantize(emulated.codes).reshape(len(x), -1)
    from sw.mixed.costs import energy_per_layer
    return {"cycles": int(sum(cycles_per_layer(compiled).values())),
            "energy_uj": round(sum(energy_per_layer(compiled).values()), 3),
            "weight_bits": int(sum(weight_bits_per_layer(compiled).values())),
            "accuracy": float((logits.argmax(axis=1) == y).mean()),
            "mismatches": int((golden.codes != emulated.codes).reshape(len(x), -1).any(axis=1).sum())}


def _uniform(folder, fmt: str, rows: int, samples, x, y) -> dict:
    from sw.compile import compile_model
    from sw.frontend.float_model import run_float
    from sw.mixed.sensitivity import output_noise
    from sw.frontend.onnx_import import load_onnx
    from sw.mixed.menu import Choice
    w, _, a = fmt.partition("/")
    choice = Choice(w, a or w)
    config = AcceleratorConfig(rows=rows, cols=rows, weight_format=choice.weights, act_format=choice.acts)
    compiled = compile_model(folder.onnx, config, samples, method="mmse", per_channel=True, log=lambda *a: None)
    net = load_onnx(folder.onnx)
    ref = np.asarray(run_float(net, samples.astype(np.float64)), np.float64)
    noise = output_noise(net, compiled.network, samples.astype(np.float64), ref)
    return {"kind": "uniform", "budget": "-", "formats": fmt, **_counted(compiled, x, y),
            "sqnr_pred": "-", "sqnr": round(10 * np.log10(np.mean(ref ** 2) / noise), 2)}


def _sweep(plan, metric: str, count: int, x, y, seen: dict) -> list[dict]:
    from sw.mixed import build, choose, measure
    costs = plan.costs[metric]
    records = []
    for budget in np.linspace(costs.smallest(), max(costs.uniform), count):
        budget = float(np.ceil(budget))
        picks = tuple(choose(plan, metric, budget))
        if picks not in seen:
            compiled = build(plan, list(picks))
            result = measure(plan, list(picks), compiled)
            seen[picks] = {"formats": ",".join(plan.menu[k].name for k in picks),
                           "cycles": int(plan.costs["cycles"].total(list(picks))),
                           "cycles_on_mix_engine": int(result["measured"]["cycles_on_this_engine"]),
                           **{k: v for k, v in _counted(compiled, x, y).items() if k not in ("cycles", "energy_uj")},
                           "energy_uj": round(plan.costs["energy-uj"].total(list(picks)), 3),
                           "sqnr_pred": round(result["predicted"]["output_sqnr_db"], 2),
                           "sqnr": round(result["measured"]["output_sqnr_db"], 2),
                           "predicted_weight_bits": int(result["predicted"]["weight-bits"])}
            progress(f"  {metric} <= {budget:.0f}: {seen[picks]['formats']}, accuracy {seen[picks]['accuracy']:.4f}")
        records.append({"kind": f"ILP {metric}", "budget": int(budget), **seen[picks]})
    return records


def _model(path: str, args) -> list[dict]:
    from sw.frontend.onnx_import import load_onnx
    from sw.mixed import parse_menu, prepare
    from sw.model_folder import model_folder

    folder = model_folder(ROOT / path)
    samples = folder.load_calibration()
    x, y = folder.load_test_set(args.images)
    menu = parse_menu(args.menu)
    started = time.perf_counter()
    plan = prepare(load_onnx(folder.onnx), menu, _engine(menu, args.rows),
                   samples, metrics=("cycles", "weight-bits", "energy-uj"), progress=progress)
    prepared = time.perf_counter() - started
    records = [_uniform(folder, fmt, args.rows, samples, x, y) for fmt in args.uniform.split(",")]
    seen: dict = {}
    for metric in ("cycles", "weight-bits"):
        records += _sweep(plan, metric, args.budgets, x, y, seen)
    for r in records:
        r.update(model=folder.name, images=len(x), prepare_seconds=round(prepared, 1))
    return records


def _engine(menu, rows: int) -> AcceleratorConfig:
    """The menu's container engine, or a multi-format build of its formats when no format holds the others."""
    from sw.mixed import MixedError, container
    try:
        w, a = container(menu)
    except MixedError:
        names = tuple(dict.fromkeys(n for c in menu for n in (c.weights, c.acts)))
        return AcceleratorConfig(rows=rows, cols=rows, formats=names)
    return AcceleratorConfig(rows=rows, cols=rows, weight_format=w, act_format=a)


def _plot(records: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(dict.fromkeys(r["model"] for r in records))
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 4.2 * len(models)), squeeze=False)
    for row, model in zip(axes, models):
        mine = [r for r in records if r["model"] == model]
        for ax, key, label in ((row[0], "cycles", "cycles per inference (each layer on its format's engine)"),
                               (row[1], "weight_bits", "weight memory bits")):
            for kind, style in (("ILP cycles", "o-"), ("ILP weight-bits", "s--")):
                pts = sorted({(r[key], r["accuracy"]) for r in mine if r["kind"] == kind})
                if pts:
                    ax.plot(*zip(*pts), style, label=f"{kind} budget sweep", alpha=0.8)
            for i, r in enumerate(r for r in mine if r["kind"] == "uniform"):
                ax.plot(r[key], r["accuracy"], "k^")
                ax.annotate(f"uniform {r['formats']}", (r[key], r["accuracy"]), textcoords="offset points",
                            xytext=(-60 if i % 2 else 4, -12 if i % 2 else -22), fontsize=8)
            ax.set_xlabel(label)
            ax.set_ylabel("top-1 accuracy (emulator)")
            ax.set_title(model)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_file(path) as scratch:
        fig.savefig(scratch, format="png", dpi=90)
    plt.close(fig)


def main() -> int:
    args = _parser().parse_args()
    records = []
    for path in args.models.split(","):
        progress(f"{path}:")
        records += _model(path.strip(), args)
    text = table(records, COLUMNS)
    print(text)
    write(args.name, records, menu=args.menu, rows=args.rows, budgets=args.budgets,
          command="python bench/mixed_precision.py " + " ".join(sys.argv[1:]))
    with atomic_file(RESULTS / f"{args.name}.md") as scratch:
        scratch.write_text(f"Menu {args.menu}, {args.rows}x{args.rows} array (`python bench/mixed_precision.py "
                           f"{' '.join(sys.argv[1:])}`)\n\n{text}\n")
    _plot(records, RESULTS / f"{args.name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
