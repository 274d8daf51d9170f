"""How long quantization takes on a big network: ``python -m sw.compile`` of ResNet-18 with 64 calibration images.

Issue 10's target: a ResNet-18 quantization with 64 calibration images in under a minute and under 4 GB. Each
model is compiled in a child process exactly as a user would (``--pe int8 --rows 16 --method mmse --per-channel``,
seeded normal images written to ``bench/work/quantize_speed``); the child's wall time, CPU time (user + system, all
threads) and peak resident memory come from the operating system (``os.wait4``), with the load average before
it ran, since this machine is shared. Results: ``bench/results/quantize_speed.json`` and a table in the README.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from common import ROOT, progress, run, table, update_readme, write  # (importing common puts the repo on sys.path)
from zoo import model_files

from hw.spec.cli import Parser, integer  # noqa: E402

WORK = ROOT / "bench" / "work" / "quantize_speed"
MARKERS = ("<!-- quantize-speed: python bench/quantize_speed.py -->", "<!-- end quantize-speed -->")
#: What the issue asks of ResNet-18 with 64 images.
WALL_TARGET_S, MEMORY_TARGET_GB = 60.0, 4.0
COLUMNS = [("model", "model"), ("images", "images"), ("wall_s", "wall s"), ("cpu_s", "CPU s"),
           ("peak_gb", "peak GB"), ("load_before", "load before"), ("within_targets", "< 1 min and < 4 GB")]


def calibration(name: str, images: int, shape: tuple[int, ...]) -> os.PathLike:
    """Seeded normal images (``numpy.random.default_rng(0)``), written once."""
    path = WORK / f"{name}_{images}.npy"
    if not path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        np.save(path, np.random.default_rng(0).standard_normal((images, *shape)).astype(np.float32))
    return path


def measure(name: str, images: int) -> dict:
    """One compile of ``name`` in a child process: its wall and CPU time and peak memory."""
    onnx_path, samples = model_files(name)
    shape = np.load(samples, mmap_mode="r").shape[1:]
    cal = calibration(name, images, shape)
    out = WORK / name
    command = [sys.executable, "-m", "sw.compile", str(onnx_path), "--pe", "int8", "--rows", "16", "--calibrate",
               str(cal), "--method", "mmse", "--per-channel", "--out", str(out)]
    load = os.getloadavg()[0]
    progress(f"  {name}: {' '.join(command[1:])}")
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / f"{name}.log"
    with open(log, "w") as sink:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)      # waited for here, with its resource usage
    if child.returncode != 0:
        raise RuntimeError(f"python -m sw.compile {name} failed (see {log.relative_to(ROOT)})")
    peak = usage.ru_maxrss / 2**20            # kB on Linux
    record = {"model": name, "images": images, "wall_s": round(wall, 1),
              "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_gb": round(peak, 2),
              "load_before": round(load, 2), "output": str(out.relative_to(ROOT))}
    record["within_targets"] = wall < WALL_TARGET_S and peak < MEMORY_TARGET_GB
    return record


def main(argv=None) -> int:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18", help="comma-separated zoo models (default %(default)s)")
    p.add_argument("--images", type=integer(1, 4096), default=64, help="calibration images (default %(default)s)")
    p.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    args = p.parse_args(argv)
    records = [measure(name, args.images) for name in args.models.split(",")]
    text = table(records, COLUMNS)
    print(text)
    path = write("quantize_speed", records, command=" ".join(["python bench/quantize_speed.py", *(argv or sys.argv[1:])]))
    if not args.no_readme:
        update_readme(MARKERS, text)
    progress(f"Wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
