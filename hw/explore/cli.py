"""Design-space exploration: ``python -m hw.explore MODEL.onnx --calibrate SAMPLES.npy --formats int4,int8
--shapes 8x8,16x16 [--eval IMAGES.npy --labels LABELS.npy] [--synth generic,ice40] --out DIR``.

Every point (a format and an array shape) is built (``hw.build``, cached by configuration hash), its area
estimated, the model compiled for it and emulated (``python -m sw.evaluate`` in a child process, cached by the
digests of the model and data, the configuration hash and the quantizer options): accuracy where labels are
given, cycles and MAC utilization per layer, yosys area and fmax where --synth asks for them. Points run on a
local process pool, or on a Dask cluster with --cluster tcp://HOST:PORT. A point that fails (a layer that does
not fit, weights the quantizer refuses) is a row with its reason. Rerunning with the same --out skips
the finished points, so an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hw.spec.cli import Parser, UsageError, check_out_folder, integer, main_guard, run_child
from hw.spec.outputs import atomic_file

__all__ = ["main", "parse_shapes", "parse_formats", "cache_root"]

PROG = "python -m hw.explore"
#: Bumped when a point's row changes meaning: older saved points then run again.
POINT_VERSION = 1


def cache_root() -> Path:
    """``$EXPLORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnn-accel-gen/explore`` (``~/.cache`` when unset)."""
    if os.environ.get("EXPLORE_CACHE_DIR"):
        return Path(os.environ["EXPLORE_CACHE_DIR"]).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-accel-gen" / "explore"


def _parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.onnx", type=Path, help="float, QDQ or QONNX ONNX model")
    p.add_argument("--calibrate", metavar="SAMPLES.npy", type=Path, help="float32 calibration inputs (N, ...)")
    p.add_argument("--formats", required=True, help="comma-separated number formats; WEIGHTS:ACTS for a mixed pair "
                                                    "(int4,int8,minifloat6,fp8_e4m3,int4:int8)")
    p.add_argument("--shapes", required=True, help="comma-separated array shapes ROWSxCOLS (8x8,16x16,16x32)")
    p.add_argument("--eval", metavar="IMAGES.npy|.npz", type=Path,
                   help="inputs to measure (a .npz holding images and labels, or a .npy with --labels)")
    p.add_argument("--labels", metavar="LABELS.npy", type=Path, help="integer classes of the --eval inputs")
    p.add_argument("--images", type=integer(1, 1 << 20), help="use only the first N --eval inputs")
    p.add_argument("--method", choices=("minmax", "percentile", "mmse"), default="mmse",
                   help="clipping of activations and weights (default %(default)s)")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                   help="one weight scale per output channel (default on)")
    p.add_argument("--synth", default="", help="comma-separated yosys area estimates (generic, ice40) and devices "
                                               "to place and route on for fmax (ecp5-85f, ...); default none")
    p.add_argument("--workers", type=integer(1, 256), default=os.cpu_count() or 1,
                   help="local worker processes (default: the CPU count, %(default)s here)")
    p.add_argument("--cluster", metavar="ADDRESS", help="run the points on the Dask scheduler at tcp://HOST:PORT")
    p.add_argument("--cache", metavar="DIR", type=Path,
                   help="build and compile caches (default $EXPLORE_CACHE_DIR or ~/.cache/cnn-accel-gen/explore)")
    p.add_argument("--detail", metavar="POINT", help="the point whose utilization per layer is plotted (e.g. "
                                                     "int8-16x16; default: the most accurate, then fastest)")
    p.add_argument("--out", metavar="DIR", type=Path, required=True, help="sweep folder (rerun to resume)")
    return p


def parse_formats(text: str) -> list[tuple[str, str]]:
    """``int4,int8:int4`` -> [(weights, acts)], names normalised; UsageError naming a bad one."""
    from hw.spec.formats import FormatError, get_format

    pairs = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        names = item.split(":")
        if len(names) > 2:
            raise UsageError(f"--formats: {item[:40]!r} is not FMT or WEIGHTS:ACTS")
        try:
            w, a = (get_format(n).name for n in (names[0], names[-1]))
        except FormatError as e:
            raise UsageError(f"--formats: {e}") from None
        if (w, a) not in pairs:
            pairs.append((w, a))
    if not pairs:
        raise UsageError("--formats: no format given (e.g. --formats int4,int8)")
    return pairs


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``8x8,16x32`` -> [(8, 8), (16, 32)]; UsageError naming a bad one."""
    shapes = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        parts = item.lower().split("x")
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 3 for p in parts):
            raise UsageError(f"--shapes: {item[:40]!r} is not ROWSxCOLS (e.g. 16x16)")
        rows, cols = map(int, parts)
        if not (1 <= rows <= 128 and 1 <= cols <= 128):
            raise UsageError(f"--shapes: {item}: rows and cols must be in 1..128")
        if (rows, cols) not in shapes:
            shapes.append((rows, cols))
    if not shapes:
        raise UsageError("--shapes: no shape given (e.g. --shapes 8x8,16x16)")
    return shapes


def _synth_targets(text: str) -> list[str]:
    from hw.build import AREA_TARGETS
    from hw.pnr import DEVICES

    targets = [t.strip() for t in text.split(",") if t.strip()]
    known = (*AREA_TARGETS, *DEVICES)
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise UsageError(f"--synth: unknown target(s) {', '.join(unknown)[:80]}; choose from {', '.join(known)}")
    return list(dict.fromkeys(targets))


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def _file_digest(path: Path | None) -> str:
    return "" if path is None else _digest(path.read_bytes())


def sources_digest(folder: Path, skip: tuple[str, ...] = ()) -> str:
    """A digest of the Python sources under ``folder`` (but ``skip``, relative names or folders): a cache entry
    made by other code is not reused."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        name = path.relative_to(folder).as_posix()
        if not name.startswith(skip):
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _evaluate_args(args) -> list[str]:
    """The data and quantizer options of ``python -m sw.evaluate``, as absolute paths."""
    out = ["--model", str(args.model.resolve()), "--method", args.method]
    out += [] if args.per_channel else ["--no-per-channel"]
    for flag in ("calibrate", "eval", "labels"):
        if getattr(args, flag) is not None:
            out += [f"--{flag}", str(getattr(args, flag).resolve())]
    if args.images is not None:
        out += ["--images", str(args.images)]
    return out


def _check_inputs(evaluate_args: list[str]) -> None:
    """Let ``sw.evaluate --check`` judge the model and data once, before any point runs (its one line becomes ours)."""
    from hw.spec.config import AcceleratorConfig

    from .points import ROOT

    with tempfile.TemporaryDirectory(prefix="explore-check-") as work:
        config = Path(work) / "config.json"
        config.write_text(AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8").to_json())
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = run_child([sys.executable, "-m", "sw.evaluate", "--config", str(config), *evaluate_args, "--check"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if done.returncode in (130, 143):
        raise SystemExit(done.returncode)
    if done.returncode != 0:
        lines = done.stdout.strip().splitlines() or [f"sw.evaluate exited with status {done.returncode}"]
        raise UsageError(lines[-1].removeprefix("python -m sw.evaluate: error: "))


def _tasks(args, pairs, shapes, synth: list[str], cache: Path) -> list[dict]:
    """One task per (format, shape), each with the keys that decide whether its earlier result still holds."""
    from .points import ROOT

    evaluate_args = _evaluate_args(args)
    data = [_file_digest(p) for p in (args.model, args.calibrate, args.eval, args.labels)]
    compile_key = _digest(*data, args.method, args.per_channel, args.images, sources_digest(ROOT / "sw"))
    build_key = sources_digest(ROOT / "hw", skip=("explore/", "plots.py"))
    tasks = []
    for w, a in pairs:
        for rows, cols in shapes:
            name = f"{w if w == a else f'{w}:{a}'}-{rows}x{cols}"
            tasks.append({"point": name, "weights": w, "acts": a, "rows": rows, "cols": cols,
                          "key": _digest(POINT_VERSION, compile_key, build_key, w, a, rows, cols, *synth),
                          "compile_key": compile_key, "build_key": build_key, "synth": synth, "cache": str(cache),
                          "evaluate_args": evaluate_args})
    return tasks


def main(argv: list[str] | None = None) -> int:
    return main_guard(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    started = time.monotonic()
    args = _parser().parse_args(argv)
    pairs, shapes, synth = parse_formats(args.formats), parse_shapes(args.shapes), _synth_targets(args.synth)
    if not args.model.is_file():
        raise UsageError(f"{args.model}: no such file")
    out = check_out_folder(args.out, "sweep.json")
    cache = (args.cache or cache_root()).expanduser().absolute()
    _say("checking the model and data ...")
    _check_inputs(_evaluate_args(args))
    tasks = _tasks(args, pairs, shapes, synth, cache)
    if args.detail is not None and args.detail not in {t["point"] for t in tasks}:
        raise UsageError(f"--detail {args.detail[:40]}: not a point of this sweep; choose one of "
                         f"{', '.join(t['point'] for t in tasks)[:200]}")
    from .engines import open_engine
    from .results import mark_pareto, record, write_results
    from .sweep import run_sweep

    engine = open_engine(args.cluster, args.workers)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "hw.explore", *(argv if argv is not None else sys.argv[1:])])
    with atomic_file(out / "sweep.json") as scratch:
        scratch.write_text(json.dumps({"command": command, "points": [t["point"] for t in tasks]}, indent=1) + "\n")
    rows, counts = run_sweep(tasks, out, engine, _say)
    records = [record(r) for r in rows]
    mark_pareto(records)
    meta = {"command": command, "model": args.model.name, "engine": engine.name,
            "eval": (f"{args.eval.name}" + (f" (first {args.images})" if args.images else "")) if args.eval else
                    "no evaluation data (cycles on the calibration samples; accuracy not measured)",
            "quantization": f"{args.method}{', per-channel' if args.per_channel else ''}",
            "seconds": round(time.monotonic() - started, 1), **counts}
    written = write_results(records, out, meta, args.detail)
    failed = sum(r["status"] != "ok" for r in records)
    print(f"Swept {len(records)} points ({counts['run']} run, {counts['cached']} of them from the caches; "
          f"{counts['skipped']} finished earlier; {failed} failed) "
          f"in {meta['seconds']:.0f} s; wrote {', '.join(f'{out}/{w}' for w in written[:3])} and "
          f"{len(written) - 3} plots in {out}/plots")
    return 0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
