"""``python -m sw.compile ... --mixed FMT,FMT --budget METRIC=N``: the command-line half of the mixed selection."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hw.spec.cli import UsageError, check_out_folder, write_folder
from hw.spec.config import AcceleratorConfig, ConfigError
from hw.spec.flags import format_set
from hw.spec.formats import get_format

from .costs import set_energy_model, sw_energy_model
from .menu import container, parse_menu
from .report import format_mixed
from .select import build, choose, measure, parse_budget, prepare

__all__ = ["compile_mixed", "load_test_set"]


def load_test_set(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``images`` and ``labels`` of a .npz test set, checked against the model's input shape."""
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels = data["images"], data["labels"]
    except (OSError, KeyError, ValueError) as e:
        raise UsageError(f"--eval {path}: not a .npz holding 'images' and 'labels' ({' '.join(str(e).split())[:100]})"
                         ) from None
    if images.dtype.kind != "f" or tuple(images.shape[1:]) != tuple(shape) or not np.isfinite(images).all():
        raise UsageError(f"--eval {path}: 'images' must be finite floats shaped (N, {', '.join(map(str, shape))}), "
                         f"not {images.dtype} {images.shape}")
    if labels.dtype.kind not in "iu" or labels.shape != (len(images),):
        raise UsageError(f"--eval {path}: 'labels' must be one integer per image")
    return images, labels


def _check(args: argparse.Namespace) -> None:
    if args.mixed is None:
        raise UsageError("--budget, --eval, --costs-on and --formats go with --mixed FMT,FMT (a format per layer "
                         "chosen under the budget)")
    if args.budget is None:
        raise UsageError("--mixed needs --budget METRIC=N (cycles=N, weight-bits=N or energy-uj=X)")
    if args.calibrate is None:
        raise UsageError("--mixed needs --calibrate SAMPLES.npy: sensitivities are measured on them")
    if args.first_last is not None:
        raise UsageError("--first-last and --mixed both choose layer formats; give one")
    if getattr(args, "data_free", False):
        raise UsageError("--data-free and --mixed: the mixed selection measures sensitivities on --calibrate samples; "
                         "give one")
    if args.multi_tensor:
        raise UsageError("--multi-tensor with --mixed is not supported yet (its weight tensors would need costing "
                         "per layer); leave one out")
    if getattr(args, "batch", 1) != 1:
        raise UsageError("--batch with --mixed is not supported yet (the costs are counted per sample); compile "
                         "the chosen mix without --batch")
    if not args.model.is_file():
        raise UsageError(f"{args.model}: no such file")


def compile_mixed(args: argparse.Namespace) -> int:
    """Choose, build, measure and write the mixed-precision network the arguments ask for."""
    from sw.cli import load_array
    from sw.frontend.onnx_import import load_onnx

    _check(args)
    menu = parse_menu(args.mixed)
    metric, budget = parse_budget(args.budget)
    try:
        config = _engine(args, menu)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if getattr(args, "energy_table", None) is not None:
        _use_energy_table(args.energy_table)
    out = check_out_folder(args.out, "manifest.json")
    net = load_onnx(args.model, engine_only=args.engine_only)
    samples = load_array(args.calibrate, "--calibrate", net.input_shape)
    test = None if args.eval is None else load_test_set(args.eval, net.input_shape)
    metrics = tuple(dict.fromkeys(("cycles", "weight-bits", metric)))
    plan = prepare(net, menu, config, samples, metrics=metrics, budget=(metric, budget),
                   method=args.method or "minmax", per_channel=args.per_channel,
                   costs_on=args.costs_on or "per-format")
    picks = choose(plan, metric, budget)
    compiled = build(plan, picks)
    result = measure(plan, picks, compiled, *(test or (None, None)), progress=print)
    result.update(budget={"metric": metric, "value": budget}, menu=[c.name for c in menu], tables=_tables(plan))
    report = format_mixed(result, ",".join(c.name for c in menu), args.budget)
    print(report)

    def write(folder: Path) -> None:
        from sw.quantize import format_report
        compiled.save(folder)
        (folder / "report.txt").write_text(format_report(compiled.network) + "\n\n" + report + "\n")
        (folder / "mixed.json").write_text(json.dumps(_plain(result), indent=1, allow_nan=False) + "\n")
    write_folder(out, write)
    print(f"Wrote {out}: program.bin, program.asm, manifest.json, network.json/.npz, report.txt, mixed.json")
    return 0


def _engine(args: argparse.Namespace, menu: list) -> AcceleratorConfig:
    """The engine that runs the mix: a multi-format build (``--formats``: each layer selects its format from the
    set; the network is quantized for its first format when that holds every menu entry's values, else each layer
    in its own format: :func:`sw.mixed.select.declared_formats`), else the single-format one that emulates every
    entry (``--pe``/``--weights``/``--acts``, or the menu's widest)."""
    cols = args.rows if args.cols is None else args.cols
    formats = format_set(args)
    if formats is not None:
        names = {get_format(f).name for f in formats}
        missing = next((n for c in menu for n in (c.weights, c.acts) if get_format(n).name not in names), None)
        if missing is not None:
            raise UsageError(f"--mixed: {missing} is not in --formats {args.formats}; the engine selects each layer's "
                             "format from its set")
        return AcceleratorConfig(rows=args.rows, cols=cols, weight_format=formats[0], act_format=formats[0],
                                 formats=formats, max_reduction=args.max_reduction)
    weights, acts = args.weights or args.pe, args.acts or args.pe
    if (weights is None) != (acts is None):
        raise UsageError("give the engine's formats with --pe FMT (or both --weights and --acts), or neither")
    w, a = container(menu, weights, acts)
    return AcceleratorConfig(rows=args.rows, cols=cols, weight_format=w, act_format=a,
                             max_reduction=args.max_reduction)


def _use_energy_table(path: Path) -> None:
    """Energy budgets and figures from ``sw.energy`` with the table in ``path`` (--energy-table)."""
    from sw.energy import EnergyTableError, load_table
    try:
        table = load_table(path)
    except EnergyTableError as e:
        raise UsageError(f"--energy-table {e}") from None
    set_energy_model(sw_energy_model(table))


def _tables(plan) -> dict:
    """What the ILP chose from, per unit and menu entry: output SQNR alone, loss, and every cost."""
    sens = plan.sensitivity
    return {u.name: {c.name: {"sqnr_alone_db": sens.sqnr_alone_db(i, k), "loss": float(sens.loss[i, k]),
                              **{m: float(t.table[i, k]) for m, t in plan.costs.items()}}
                     for k, c in enumerate(plan.menu)}
            for i, u in enumerate(plan.units)}


def _plain(value):
    """``value`` as strict JSON: numpy numbers as Python ones, infinities (an exact output) as strings."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else str(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value
