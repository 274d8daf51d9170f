"""One point of a sweep: a configuration built (or taken from the build cache), its area, the model compiled and
emulated on it (or taken from the compile cache), summarised as one row.

Runs in a worker (a pool process or a Dask worker). The model is compiled and emulated by ``python -m
sw.evaluate`` in a child process, as ``hw.build`` does: ``hw`` never imports ``sw``.

Caches (under the sweep's ``--cache`` folder, each entry written whole under a file lock):

- ``builds/HASH-TARGETS-CODE/``: ``hw.build`` output (Verilog, report with the area estimate and yosys results)
  by configuration hash, synthesis targets and a digest of the ``hw`` sources; yosys itself caches by the
  Verilog's digest (``hw/synth.py``);
- ``compiles/KEY-HASH.json``: ``sw.evaluate``'s result by the model's, calibration's and evaluation data's
  digests, the quantizer options and a digest of the ``sw`` sources (``KEY``), and the configuration hash.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hw.spec.cli import run_child
from hw.spec.outputs import atomic_file, locked

__all__ = ["run_point", "failed_row", "ROOT"]

#: The repository (for the child's ``PYTHONPATH``).
ROOT = Path(__file__).resolve().parents[2]


def _row(task: dict) -> dict:
    return {"point": task["point"], "weights": task["weights"], "acts": task["acts"], "rows": task["rows"],
            "cols": task["cols"], "key": task["key"]}


def failed_row(task: dict, stage: str, error: str, seconds: float = 0.0) -> dict:
    """The row of a point that could not be measured: where it stopped and why."""
    return {**_row(task), "status": "failed", "stage": stage, "error": error, "seconds": round(seconds, 2)}


def run_point(task: dict) -> dict:
    """Build, compile and emulate one point of the sweep; a row with ``status`` ``ok`` or ``failed``."""
    from hw.spec.config import AcceleratorConfig, ConfigError

    started = time.monotonic()
    try:
        config = AcceleratorConfig(rows=task["rows"], cols=task["cols"], weight_format=task["weights"],
                                   act_format=task["acts"])
    except ConfigError as e:
        return failed_row(task, "config", str(e))
    try:
        report, build_cached = _build(config, task)
    except (RuntimeError, OSError) as e:
        return failed_row(task, "build", " ".join(str(e).split())[:400], time.monotonic() - started)
    row = {**_row(task), "config_hash": config.hash, "build": report, "build_cached": build_cached}
    evaluation, compile_cached = _evaluate(config, task)
    row.update(evaluation=evaluation, compile_cached=compile_cached, seconds=round(time.monotonic() - started, 2))
    if "error" in evaluation:
        row.update(status="failed", stage="compile", error=evaluation["error"])
    else:
        row.update(status="ok", stage=None, error=None)
    return row


def _build(config, task: dict) -> tuple[dict, bool]:
    """``hw.build``'s report for ``config`` without the bundled CNN, from the build cache or built now."""
    from hw.build import build

    targets = tuple(task["synth"])
    folder = Path(task["cache"]) / "builds" / f"{config.hash}-{'+'.join(targets) or 'nosynth'}-{task['build_key'][:12]}"
    with locked(folder.with_name(folder.name + ".lock")):
        if (folder / "report.json").is_file():
            return json.loads((folder / "report.json").read_text()), True
        log = io.StringIO()
        with contextlib.redirect_stderr(log):
            report = build(config, folder, synth=bool(targets), targets=targets or ("generic",), network=False)
    return report, False


def _evaluate(config, task: dict) -> tuple[dict, bool]:
    """``sw.evaluate``'s result for this configuration, from the compile cache or run now; ``{"error": line}``
    when the model does not compile for it (a layer that does not fit, weights the quantizer refuses)."""
    entry = Path(task["cache"]) / "compiles" / f"{task['compile_key'][:24]}-{config.hash}.json"
    with locked(entry.with_suffix(".lock")):
        if entry.is_file():
            return json.loads(entry.read_text()), True
        result = _run_evaluate(config, task)
        if "error" not in result or result["status"] == 2:     # a result, or the model's refusal of this config
            with atomic_file(entry) as scratch:
                scratch.write_text(json.dumps(result, indent=1) + "\n")
    return result, False


def _run_evaluate(config, task: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="explore-") as work:
        config_file, out = Path(work) / "config.json", Path(work) / "result.json"
        config_file.write_text(config.to_json())
        command = [sys.executable, "-m", "sw.evaluate", "--config", str(config_file), "--out", str(out),
                   *task["evaluate_args"]]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = run_child(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        if done.returncode in (130, 143):
            raise SystemExit(done.returncode)
        if done.returncode != 0:
            lines = done.stdout.strip().splitlines()
            line = lines[-1] if lines else f"sw.evaluate exited with status {done.returncode}"
            return {"error": line.removeprefix("python -m sw.evaluate: error: "), "status": done.returncode}
        result = json.loads(out.read_text())
    result.pop("quantization_report", None)
    return result
