"""sim/engine_tb_build.py's cached builds: what a build keeps on disk, and what a failed build reports."""

from pathlib import Path

import pytest

from sim.engine_tb_build import build_compiled
from sim.toolchain import verilog_of
from tests.sim.axi_copy import AxiCopy
from tests.sim.test_axi_cpp import MAIN, _testbench

HEADER = "#pragma once\n#include <cstdint>\nconstexpr unsigned BEAT_BYTES = 4;\n"


def test_a_build_keeps_its_testbench_and_drops_the_precompiled_headers_and_objects(tmp_path, monkeypatch):
    monkeypatch.setenv("SIM_BUILD_DIR", str(tmp_path))
    executable = _testbench()
    assert executable.is_file() and executable.stat().st_mode & 0o111
    assert executable.is_relative_to(tmp_path)
    left = sorted(p.name for p in executable.parent.iterdir() if p.suffix in (".gch", ".o", ".a"))
    assert left == []


def test_a_failed_build_names_its_log_and_shows_how_it_ends(tmp_path, monkeypatch):
    monkeypatch.setenv("SIM_BUILD_DIR", str(tmp_path))
    broken = verilog_of(AxiCopy()).replace("endmodule", "endmodule oops", 1)
    with pytest.raises(RuntimeError) as failure:
        build_compiled("broken-tb", broken, MAIN, HEADER, opt="-O0")
    message = str(failure.value)
    log = next(Path(tmp_path).glob("broken-tb-*/build.log"))
    assert str(log) in message
    assert log.read_text().strip().splitlines()[-1] in message
    assert "%Error" in message
