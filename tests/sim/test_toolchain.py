"""sim/toolchain.py's build cache: a finished build keeps what is run and drops what only compiling needed."""

from pathlib import Path

from sim.toolchain import cached_build


def _fake_build(directory: Path) -> None:
    """What a Verilator build leaves: sources, precompiled headers, objects, an archive and the executable."""
    obj = directory / "obj"
    obj.mkdir()
    for name in ("Vtop.cpp", "Vtop__pch.h.fast.gch", "Vtop__pch.h.slow.gch", "Vtop.o", "verilated.o",
                 "Vtop__ALL.a", "testbench"):
        (obj / name).write_bytes(b"x")
    (directory / "top.gch").write_bytes(b"x")


def test_a_finished_build_keeps_its_executable_and_sources_but_no_headers_objects_or_archives(tmp_path, monkeypatch):
    monkeypatch.setenv("SIM_BUILD_DIR", str(tmp_path))
    directory = cached_build("fake", "contents", _fake_build)
    kept = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    assert kept == ["BUILT", "obj/Vtop.cpp", "obj/testbench"]


def test_a_cached_build_is_not_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("SIM_BUILD_DIR", str(tmp_path))
    calls = []
    first = cached_build("fake", "contents", lambda d: calls.append(d))
    second = cached_build("fake", "contents", lambda d: calls.append(d))
    assert first == second and calls == [first]
