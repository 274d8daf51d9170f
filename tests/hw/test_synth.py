"""Area estimation through YoWASP yosys (``hw/synth.py``): structure and sanity on tiny designs."""

import pathlib

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.multiplier import ExactMultiplier
from hw.synth import GE_WEIGHTS, synthesize, yosys_version


class _Counter(wiring.Component):
    """An 8-bit counter with enable: exactly 8 flip-flops, plus a synchronous reset from the domain."""

    en: In(1)
    count: Out(8)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        return m


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test's yosys runs start from an empty cache (the module's multipliers share the user's)."""
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "synth-cache"))


def _multiplier(fmt: str, work: pathlib.Path) -> dict:
    text = verilog.convert(ExactMultiplier(fmt, fmt), name="top", emit_src=False)
    return synthesize(text, work / fmt)


@pytest.fixture(scope="module")
def multipliers(tmp_path_factory) -> dict[str, dict]:
    work = tmp_path_factory.mktemp("synth")
    return {fmt: _multiplier(fmt, work) for fmt in ("int4", "int8")}


def test_result_structure(multipliers):
    result = multipliers["int4"]
    assert set(result) == {"generic", "ice40"}
    generic, ice40 = result["generic"], result["ice40"]
    assert {"cells", "nand2_equivalents", "ge_weights", "flipflops", "seconds"} <= set(generic)
    assert {"cells", "luts", "carries", "dsps", "brams", "flipflops", "seconds"} <= set(ice40)
    assert generic["ge_weights"] == GE_WEIGHTS
    for summary in (generic, ice40):
        assert summary["cells"] and all(isinstance(n, int) and n > 0 for n in summary["cells"].values())
        assert summary["seconds"] >= 0
    assert set(generic["cells"]) <= set(GE_WEIGHTS)
    assert ice40["luts"] == ice40["cells"]["SB_LUT4"]


def test_combinational_multiplier_sanity(multipliers):
    int4, int8 = multipliers["int4"], multipliers["int8"]
    assert 0 < int4["generic"]["nand2_equivalents"] < int8["generic"]["nand2_equivalents"]
    assert int4["generic"]["flipflops"] == 0 and int4["ice40"]["flipflops"] == 0
    assert int4["ice40"]["luts"] > 0 and int4["ice40"]["dsps"] == 0
    assert int8["ice40"]["dsps"] == 1


def test_flipflops_counted_with_enable_and_reset_as_logic(tmp_path):
    messages = []
    text = verilog.convert(_Counter(), name="top", emit_src=False)
    result = synthesize(text, tmp_path, targets=("generic",), progress=messages.append)
    generic = result["generic"]
    assert set(result) == {"generic"}
    assert generic["flipflops"] == 8 and generic["cells"]["DFF_P"] == 8
    assert generic["nand2_equivalents"] > 8 * GE_WEIGHTS["DFF"]
    assert messages[0].startswith("yosys: generic gates for top (1/1)") and "done in" in messages[-1]
    assert (tmp_path / "top.v").is_file() and (tmp_path / "yosys_generic.log").is_file()


def test_failure_names_the_log(tmp_path):
    with pytest.raises(RuntimeError, match=r"yosys_generic\.log"):
        synthesize("module top(input a; endmodule\n", tmp_path, targets=("generic",))


def test_unknown_target(tmp_path):
    with pytest.raises(ValueError, match=r"^Unknown synthesis target 'ecp5'; known targets are generic, ice40$"):
        synthesize("module top; endmodule\n", tmp_path, targets=("ecp5",))


def test_yosys_version():
    assert yosys_version().startswith("Yosys 0.")


def test_results_cached_by_verilog_digest(tmp_path):
    """A second synthesis of the same Verilog comes from the cache (no yosys run, no log); other Verilog does not."""
    text = verilog.convert(_Counter(), name="top", emit_src=False)
    first = synthesize(text, tmp_path / "a", targets=("generic",))
    messages = []
    again = synthesize(text, tmp_path / "b", targets=("generic",), progress=messages.append)
    assert again == first and "from the cache" in messages[-1]
    assert not (tmp_path / "b" / "yosys_generic.log").exists()
    other = synthesize(text.replace("count", "counter"), tmp_path / "c", targets=("generic",))
    assert (tmp_path / "c" / "yosys_generic.log").is_file() and other["generic"]["flipflops"] == 8


class _TwoCounters(wiring.Component):
    """Two 8-bit counters as submodules ``a`` and ``b``: 16 flip-flops in all, 8 in each."""

    en: In(1)
    total: Out(9)

    def elaborate(self, platform):
        m = Module()
        m.submodules.a = a = _Counter()
        m.submodules.b = b = _Counter()
        m.d.comb += [a.en.eq(self.en), b.en.eq(a.count[0]), self.total.eq(a.count + b.count)]
        return m


def test_breakdown_synthesizes_each_submodule_on_its_own(tmp_path):
    from hw.synth import breakdown, submodules

    text = verilog.convert(_TwoCounters(), name="top", emit_src=False)
    assert submodules(text) == ["top", "top.a", "top.b"] and submodules(text, depth=0) == ["top"]
    messages = []
    results = breakdown(text, tmp_path, progress=messages.append)
    assert list(results) == ["top", "top.a", "top.b"]
    assert [results[n]["flipflops"] for n in results] == [16, 8, 8]
    assert results["top"]["luts"] > 0 and results["top"]["luts"] >= results["top.a"]["luts"]
    assert messages[-1].startswith("yosys: iCE40 for top.b (3/3) in ")
    # The whole design's entry is the one synthesize() caches.
    assert synthesize(text, tmp_path / "whole", targets=("ice40",))["ice40"] == results["top"]


def test_breakdown_records_a_module_yosys_fails_on(tmp_path):
    from hw.synth import breakdown

    text = verilog.convert(_Counter(), name="top", emit_src=False)
    text += "\nmodule \\top.broken (input x);\n  no_such_cell u (.a(x));\nendmodule\n"
    results = breakdown(text, tmp_path)
    assert results["top"]["flipflops"] == 8
    assert set(results["top.broken"]) == {"error"} and "yosys_ice40_top.broken.log" in results["top.broken"]["error"]
