"""Design-space exploration (``python -m hw.explore``): arguments, the table, resume after an interrupt, the caches,
and the same points on a local Dask cluster."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hw.explore.cli import main, parse_formats, parse_shapes
from hw.explore.results import KEYS, record
from hw.plots import pareto_front
from hw.spec.cli import UsageError

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"
BASE = [str(DIGITS / "digits_cnn.onnx"), "--calibrate", str(DIGITS / "calibration.npy"),
        "--eval", str(DIGITS / "test_set.npz"), "--images", "16"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """Build and compile caches shared by this module's sweeps."""
    return tmp_path_factory.mktemp("explore-cache")


def _sweep(out: Path, cache: Path, *args: str) -> tuple[int, list[dict]]:
    status = main([*BASE, "--cache", str(cache), "--out", str(out), *args])
    rows = json.loads((out / "results.json").read_text())["rows"] if status == 0 else []
    return status, rows


def test_parse_formats_and_shapes():
    assert parse_formats("int4, int8,E3M2,int4:int8,int4") == [("int4", "int4"), ("int8", "int8"),
                                                                ("minifloat6", "minifloat6"), ("int4", "int8")]
    assert parse_shapes("8x8,16X32, 8x8") == [(8, 8), (16, 32)]
    for bad in ("8", "8x", "x8", "8x8x8", "0x4", "4x129", "٨x8", "1e1x2"):
        with pytest.raises(UsageError, match="--shapes"):
            parse_shapes(bad)
    for bad in ("float9", "int4:int8:int4", "", ","):
        with pytest.raises(UsageError, match="--formats"):
            parse_formats(bad)


@pytest.mark.parametrize("args,message", [
    (["--formats", "float9", "--shapes", "4x4"], "--formats: Unknown format 'float9'"),
    (["--formats", "int8", "--shapes", "4by4"], "--shapes: '4by4' is not ROWSxCOLS"),
    (["--formats", "int8", "--shapes", "4x4", "--synth", "xilinx"], "--synth: unknown target(s) xilinx"),
    (["--formats", "int8", "--shapes", "4x4", "--detail", "int4-2x2"], "--detail int4-2x2: not a point"),
    (["--formats", "int8", "--shapes", "4x4", "--cluster", "ray://head:10001"], "Ray is not supported"),
    (["--formats", "int8", "--shapes", "4x4", "--cluster", "tcp://127.0.0.1:9"], "cannot reach a Dask scheduler"),
    (["--formats", "int8", "--shapes", "4x4", "--workers", "0"], "--workers: must be an integer in 1..256"),
])
def test_bad_arguments_get_one_line_and_status_2(args, message, tmp_path, capsys):
    assert main([*BASE, "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("python -m hw.explore: error: ")
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_data_is_refused_before_any_point(tmp_path, capsys):
    """sw.evaluate --check judges the data once: a wrong calibration file is one line, status 2, nothing written."""
    args = [str(DIGITS / "digits_cnn.onnx"), "--calibrate", str(DIGITS / "test_set.npz"), "--formats", "int8",
            "--shapes", "4x4", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]
    assert main(args) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("python -m hw.explore: error: --calibrate") and ".npz archive" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_pareto_front():
    # (cycles, accuracy): b beats a (fewer cycles, same accuracy); d is dominated by c.
    points = [(200, 0.9), (100, 0.9), (300, 0.95), (400, 0.94), (50, 0.5)]
    assert pareto_front(points) == [4, 1, 2]


def test_sweep_table_plots_failed_points_and_caches(cache, tmp_path):
    out = tmp_path / "sweep"
    status, rows = _sweep(out, cache, "--formats", "int8,int4,uint4:int8", "--shapes", "4x4,4x8", "--workers", "2")
    assert status == 0
    assert [r["point"] for r in rows] == ["int8-4x4", "int8-4x8", "int4-4x4", "int4-4x8", "uint4:int8-4x4",
                                          "uint4:int8-4x8"]
    assert all(list(r) == list(KEYS) for r in rows)
    ok = {r["point"]: r for r in rows if r["status"] == "ok"}
    assert set(ok) == {"int8-4x4", "int8-4x8", "int4-4x4", "int4-4x8"}     # rectangular arrays compile too
    assert ok["int8-4x8"]["golden_emulator_mismatches"] == 0 and ok["int8-4x8"]["accuracy"] > 0.8
    for r in rows:
        if r["weights"] == "uint4":   # the quantizer refuses unsigned weights: a failed row with the reason
            assert r["status"] == "failed" and r["stage"] == "compile" and "weights are symmetric" in r["error"]
            assert r["area_estimate_nand2"] > 0 and r["accuracy"] is None
    int8 = ok["int8-4x4"]
    assert int8["images"] == 16 and int8["golden_emulator_mismatches"] == 0 and int8["accuracy"] > 0.8
    assert int8["cycles_per_inference"] == sum(int8["layer_cycles"]) and len(int8["layer_names"]) == 4
    assert int8["energy_nj_per_inference"] > 0 and int8["synth_generic_nand2"] is None
    assert int8["area_estimate_nand2"] > ok["int4-4x4"]["area_estimate_nand2"]
    assert int8["pareto_cycles"] is True and rows[4]["pareto_cycles"] is None
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(KEYS) and len(table) == 6
    assert table[0]["layer_cycles"] == ";".join(map(str, int8["layer_cycles"])) and table[4]["accuracy"] == ""
    for png in ("accuracy_vs_cycles", "accuracy_vs_area", "area_breakdown", "utilization"):
        assert (out / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    assert "## Failed points" in summary and "weights are symmetric" in summary and "plots/accuracy_vs_cycles.png" in summary
    assert f"| {int8['energy_nj_per_inference'] / 1e3:.4g} |" in summary

    # A second sweep into another folder that adds one shape runs only the new points' work: the others come
    # from the build and compile caches.
    status, again = _sweep(tmp_path / "more", cache, "--formats", "int8,int4", "--shapes", "4x4,4x8,2x2")
    assert status == 0
    for r in again:
        cached = r["cols"] != 2
        assert r["build_cached"] is cached and r["compile_cached"] is cached, r["point"]
    assert "this run: 6 run (4 of them wholly from the build and compile caches)" in \
        (tmp_path / "more" / "summary.md").read_text()
    assert [r["accuracy"] for r in again if r["rows"] == 4] == [r["accuracy"] for r in rows[:4]]


def _points_done(out: Path) -> list[Path]:
    return sorted((out / "points").glob("*.json")) if (out / "points").is_dir() else []


def test_interrupted_sweep_resumes(cache, tmp_path):
    """SIGINT mid-sweep: status 130, the finished point kept; the rerun skips it and runs the rest."""
    out = tmp_path / "resume"
    args = [sys.executable, "-m", "hw.explore", *BASE, "--formats", "int8,minifloat4,int4:int8", "--shapes", "4x4",
            "--workers", "1", "--cache", str(cache), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 600
    while not _points_done(out) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("python -m hw.explore: interrupted")
    done = _points_done(out)
    assert 1 <= len(done) < 3, err[-2000:]
    kept = {p.name: p.read_bytes() for p in done}
    assert not (out / "results.json").exists()

    rerun = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"3 points: {len(done)} finished earlier (skipped), {3 - len(done)} to run" in rerun.stderr
    assert all((out / "points" / name).read_bytes() == data for name, data in kept.items())
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok"] * 3


def test_sweep_on_a_local_dask_cluster(cache, tmp_path):
    """The same points through Dask (distributed.LocalCluster, 2 worker processes): the same rows."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        status, rows = _sweep(tmp_path / "dask", cache, "--formats", "int8,minifloat6", "--shapes", "4x4",
                              "--cluster", cluster.scheduler_address)
    assert status == 0
    assert [(r["point"], r["status"]) for r in rows] == [("int8-4x4", "ok"), ("minifloat6-4x4", "ok")]
    summary = (tmp_path / "dask" / "summary.md").read_text()
    assert "Dask cluster" in summary and "2 worker threads" in summary
    assert all(r["accuracy"] > 0.8 and r["cycles_per_inference"] > 0 for r in rows)


def test_record_keys_are_stable():
    row = {"point": "int8-4x4", "weights": "int8", "acts": "int8", "rows": 4, "cols": 4, "status": "failed",
           "stage": "config", "error": "x", "seconds": 0.0}
    assert list(record(row)) == list(KEYS) and record(row)["energy_nj_per_inference"] is None


class _Terminal:
    """A stream that says it is a terminal and keeps what was written."""

    def __init__(self):
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_progress_line_names_the_running_points_and_estimates_the_time_left():
    from hw.explore.sweep import Progress

    stream = _Terminal()
    progress = Progress(total=6, done=2, slots=2, stream=stream)
    now = time.monotonic()
    assert progress.line({"int8-8x8": now - 75}, left=4).endswith("| running int8-8x8 (1m15s) | time left: estimating")
    progress.finished({"point": "int4-8x8", "status": "ok", "seconds": 30.0}, left=3)
    progress.finished({"point": "int4-16x32", "status": "failed", "stage": "compile", "error": "too big",
                       "seconds": 50.0}, left=2)
    line = progress.line({}, left=2)
    assert line.startswith("[#############.......] 4/6 | idle") and line.endswith("about 40s left")   # 40 * 2 / 2
    progress.draw({"int8-16x16": now}, left=2)
    assert "point int4-16x32: FAILED (compile: too big) in 50s\n" in stream.text
    assert stream.text.endswith("running int8-16x16 (0s) | about 40s left") and "\r\033[K" in stream.text
