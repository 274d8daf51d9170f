"""Place and route (hw/pnr.py): nextpnr's reports read right, real runs on designs that take seconds, the cache, the
front door's --targets; the whole engine on an FPGA is a slow test (minutes)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.fpga_wrapper import ShiftChainWrapper
from hw.pnr import (DEVICES, FAMILIES, ROUTERS, check_router, critical_path, outcome, place_and_route, summarise,
                    utilisation_from_log)

ROOT = Path(__file__).resolve().parents[2]
RECORDED = json.loads((Path(__file__).parent / "data" / "nextpnr_ecp5_engine_2x2.json").read_text())


# --- nextpnr's reports, recorded -------------------------------------------------------------------------------

def test_summary_of_a_recorded_engine_run():
    s = summarise(DEVICES["ecp5-25f"], RECORDED["report"], RECORDED["log"], RECORDED["stat"], 0)
    assert s["fits"] and "overflow" not in s and "error" not in s
    assert s["fmax_mhz"] == 30.24
    assert s["resources"] == {"luts": {"used": 9993, "available": 24288}, "flipflops": {"used": 4319, "available": 24288},
                              "dsps": {"used": 28, "available": 28}, "brams": {"used": 0, "available": 56}}
    assert s["utilisation"]["TRELLIS_RAMW"] == {"used": 325, "available": 3036}
    assert "ALU54B" not in s["utilisation"]             # only what the design uses
    assert outcome(s) == "fits; fmax 30.2 MHz"


def test_critical_path_is_named_by_module_and_signal():
    """The path the issue describes: the decoder's static check, two DSP multiplies and a chain of carries."""
    path = critical_path(RECORDED["report"])
    assert (path["from"], path["to"]) == ("core.word", "core.decoder.error")
    assert path["dsp_cells"] == 2 and path["carry_cells"] == 24 and path["logic_cells"] == 46
    assert path["through"] == ["core.decoder.$131", "core.decoder.$38"]
    assert path["delay_ns"] == pytest.approx(1000 / 30.24, abs=0.05)
    assert path["logic_ns"] + path["routing_ns"] <= path["delay_ns"]


def test_async_paths_are_not_the_critical_path():
    report = {"critical_paths": [p for p in RECORDED["report"]["critical_paths"] if "<async>" in p["from"] + p["to"]]}
    assert len(report["critical_paths"]) == 2 and critical_path(report) is None


def test_a_constant_net_is_neither_the_fmax_nor_the_critical_path():
    """yosys ties an unregistered SB_MAC16's clock to 0 and nextpnr times $PACKER_GND_NET as a clock, listed first:
    the iCEBreaker's board table named a DSP's 3 ns self-path as critical. Here that clock is also the slowest."""
    real = RECORDED["report"]
    gnd = "$PACKER_GND_NET_$glb_clk"
    first = real["critical_paths"][0]
    fake = {"from": f"posedge {gnd}", "to": f"posedge {gnd}", "path": first["path"][:2]}
    report = {**real, "fmax": {gnd: {"achieved": 20.0, "constraint": 30.0}, **real["fmax"]},
              "critical_paths": [fake, *real["critical_paths"]]}
    assert critical_path(report) == critical_path(real) and critical_path(real)["from"] == "core.word"
    s = summarise(DEVICES["ecp5-25f"], report, RECORDED["log"], RECORDED["stat"], 0)
    assert s["fmax_mhz"] == 30.24


def test_utilisation_table_of_a_log():
    table = utilisation_from_log(RECORDED["log"])
    assert table["MULT18X18D"] == {"used": 28, "available": 28}
    assert table["TRELLIS_COMB"] == {"used": 9993, "available": 24288}
    assert len(table) == 28
    # A design that overflows: nextpnr prints the same table, then fails to place.
    log = RECORDED["log"].replace("MULT18X18D:      28/     28   100%", "MULT18X18D:      45/     28   160%")
    log += "\nERROR: Unable to place cell 'core.pe_MULT18X18D', no BELs remaining to implement cell type 'MULT18X18D'\n"
    s = summarise(DEVICES["ecp5-25f"], None, log, RECORDED["stat"], 1)
    assert not s["fits"] and s["overflow"] == {"MULT18X18D": {"used": 45, "available": 28}}
    assert s["fmax_mhz"] is None and s["critical_path"] is None
    assert outcome(s) == "does not fit: MULT18X18D 45/28"


def test_a_failure_that_is_not_an_overflow_is_named():
    s = summarise(DEVICES["ecp5-25f"], None, RECORDED["log"] + "ERROR: Failed to route arc 3 of net 'x'.\n",
                  RECORDED["stat"], 1)
    assert not s["fits"] and "overflow" not in s
    assert outcome(s) == "failed: ERROR: Failed to route arc 3 of net 'x'."


def test_device_table():
    assert {"ecp5-25f", "ecp5-45f", "ecp5-85f", "ice40-up5k", "ice40-hx8k"} <= set(DEVICES)
    for device in DEVICES.values():
        assert device.family in FAMILIES and device.name.startswith(device.family + "-")
    with pytest.raises(ValueError, match=r"^Unknown device 'ecp5-95f'; known devices are ecp5-12f, "):
        place_and_route("", "ecp5-95f", clock_mhz=100)


# --- real runs on designs that take seconds -----------------------------------------------------------------------

class _Counter(wiring.Component):
    en: In(1)
    count: Out(16)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        return m


class _Multiply(wiring.Component):
    a: In(8)
    b: In(8)
    product: Out(16)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.product.eq(self.a.as_signed() * self.b.as_signed())
        return m


def _text(core) -> str:
    return verilog.convert(ShiftChainWrapper(core), name="top", emit_src=False)


def test_a_counter_fits_and_its_carry_chain_is_the_critical_path(tmp_path):
    messages = []
    s = place_and_route(_text(_Counter()), "ice40-hx1k", clock_mhz=100, cache_dir=tmp_path, progress=messages.append)
    assert s["fits"] and not s["cached"] and s["target_mhz"] == 100 and s["seed"] == 1
    assert 100 < s["fmax_mhz"] < 1000
    assert s["resources"]["flipflops"]["used"] == 16 + 1 + 16    # the counter, the input chain, the output chain
    assert s["critical_path"]["from"] == s["critical_path"]["to"] == "core.count"
    assert s["critical_path"]["carry_cells"] >= 8
    assert messages[0].startswith("yosys: synth_ice40") and messages[-1] == f"nextpnr ice40-hx1k: {outcome(s)}"
    assert (Path(s["files"]) / "nextpnr.log").is_file() and (Path(s["files"]) / "timing.json").is_file()
    again = place_and_route(_text(_Counter()), "ice40-hx1k", clock_mhz=100, cache_dir=tmp_path)
    assert again["cached"] and again["fmax_mhz"] == s["fmax_mhz"]
    other = place_and_route(_text(_Counter()), "ice40-hx1k", clock_mhz=50, cache_dir=tmp_path)
    assert not other["cached"] and other["target_mhz"] == 50       # the options are part of the key


def test_constraint_files_and_routed_outputs_of_a_board_build(tmp_path):
    """What boards.build passes: its pin constraints as a file nextpnr reads, and the routed design it writes."""
    def pins(sin: int) -> dict:
        return {"top.pcf": f"set_io clk 21\nset_io rst 4\nset_io sin {sin}\nset_io capture 3\nset_io sout 2\n"}
    args = ("--pcf", "top.pcf", "--asc", "top.asc")
    s = place_and_route(_text(_Counter()), "ice40-hx1k", clock_mhz=100, cache_dir=tmp_path, extra_args=args,
                        files=pins(1))
    assert s["fits"] and (Path(s["files"]) / "top.asc").is_file()
    assert "constrained 'sin' to bel" in (Path(s["files"]) / "nextpnr.log").read_text()
    assert place_and_route(_text(_Counter()), "ice40-hx1k", clock_mhz=100, cache_dir=tmp_path, extra_args=args,
                           files=pins(1))["cached"]
    assert not place_and_route(_text(_Counter()), "ice40-hx1k", clock_mhz=100, cache_dir=tmp_path, extra_args=args,
                               files=pins(7))["cached"]       # the files are part of the key


def test_a_dsp_on_a_part_without_dsps_does_not_fit(tmp_path):
    s = place_and_route(_text(_Multiply()), "ice40-hx1k", clock_mhz=100, cache_dir=tmp_path)
    assert not s["fits"] and s["fmax_mhz"] is None
    assert s["overflow"] == {"ICESTORM_DSP": {"used": None, "available": 0}}
    assert outcome(s) == "does not fit: ICESTORM_DSP ?/0"


def test_the_router_reaches_nextpnr_the_summary_and_the_cache_key(tmp_path, monkeypatch):
    """nextpnr stubbed (it replays a recorded report): router2 is passed on and cached apart; router1 is nextpnr's
    default, so it is the same run as no choice."""
    import hw.pnr as pnr

    netlist = tmp_path / "synth-ecp5-x"
    netlist.mkdir()
    monkeypatch.setattr(pnr, "_synthesize", lambda text, family, cache, say: (netlist, RECORDED["stat"], True))
    commands = []

    def nextpnr(command, cwd, on_line):
        commands.append(command)
        (Path(cwd) / "timing.json").write_text(json.dumps(RECORDED["report"]))
        (Path(cwd) / "nextpnr.log").write_text(RECORDED["log"])
        return subprocess.CompletedProcess(command, 0, "", None)
    monkeypatch.setattr(pnr, "run_child", nextpnr)
    run = lambda router: place_and_route("module top; endmodule", "ecp5-25f", clock_mhz=100,  # noqa: E731
                                         cache_dir=tmp_path, router=router)
    two = run("router2")
    assert two["router"] == "router2" and not two["cached"] and two["fmax_mhz"] == 30.24
    assert commands[-1][commands[-1].index("--router") + 1] == "router2"
    one = run("router1")
    assert one["router"] == "router1" and not one["cached"] and "--router" not in commands[-1]
    assert len(commands) == 2 and one["files"] != two["files"]
    default = run(None)
    assert default["cached"] and default["router"] == "router1" and default["files"] == one["files"]
    assert run("router2")["cached"] and len(commands) == 2
    seeded = place_and_route("module top; endmodule", "ecp5-25f", clock_mhz=100, cache_dir=tmp_path,
                             router="router2", seed=3)
    assert not seeded["cached"] and seeded["seed"] == 3 and commands[-1][commands[-1].index("--seed") + 1] == "3"
    assert two["seed"] == 1 and len(commands) == 3
    # A router among the extra options (a configuration's own, bench/fpga.py) is the same run as router=, and is
    # the one reported.
    extra = place_and_route("module top; endmodule", "ecp5-25f", clock_mhz=100, cache_dir=tmp_path,
                            extra_args=("--lpf-allow-unconstrained", "--router", "router2"))
    assert extra["router"] == "router2" and extra["cached"] and extra["files"] == two["files"]
    with pytest.raises(ValueError, match="give the router once"):
        place_and_route("module top; endmodule", "ecp5-25f", clock_mhz=100, cache_dir=tmp_path, router="router2",
                        extra_args=("--router", "router2"))


def test_an_unknown_router_is_named_with_the_choices():
    assert check_router(None) == "router1" and [check_router(r) for r in ROUTERS] == list(ROUTERS)
    with pytest.raises(ValueError, match="Unknown router 'router3'; choose router1 or router2"):
        check_router("router3")


# --- the front door --------------------------------------------------------------------------------------------------

def test_build_refuses_an_unknown_target(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hw.build", "--pe", "int8", "--targets", "ecp5-85f,virtex7",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--targets: unknown target(s) virtex7; choose from generic, ice40, ecp5-12f, " in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--router", "router3", "--targets", "ecp5-85f"], "argument --router: invalid choice: 'router3' (choose from "),
    (["--router", "router2"], "--router router2: no device to place and route; add one to --targets"),
    (["--router", "router2", "--targets", "ice40,generic"], "--router router2: no device to place and route"),
])
def test_build_refuses_a_bad_router(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "hw.build", "--pe", "int8", *args, "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_build_passes_the_router_on(tmp_path, monkeypatch):
    """The front door's --router reaches place and route and each device's entry (place and route stubbed)."""
    import hw.build as front_door

    seen = []

    def fake(config, devices, out, router=None):
        seen.append((devices, router))
        return {}
    monkeypatch.setattr(front_door, "_place_and_route", fake)
    assert front_door.main(["--pe", "int8", "--rows", "2", "--targets", "ecp5-85f", "--router", "router2",
                            "--no-network", "--out", str(tmp_path / "out")]) == 0
    assert seen == [(("ecp5-85f",), "router2")]


@pytest.mark.slow
def test_engine_placed_and_routed_by_the_front_door(tmp_path, monkeypatch):
    """The 2x2 int4 engine on an ECP5-25F and an iCE40 UP5K through python -m hw.build (several minutes)."""
    from hw.build import main

    monkeypatch.setenv("PNR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "engine"
    assert main(["--pe", "int4", "--rows", "2", "--targets", "ecp5-25f,ice40-up5k", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["devices"] == ["ecp5-25f", "ice40-up5k"]
    ecp5 = report["ecp5-25f"]
    assert ecp5["fits"] and ecp5["fmax_mhz"] > 0 and ecp5["critical_path"]["from"].startswith("core.")
    assert ecp5["gmacs_at_fmax"] == round(4 * ecp5["fmax_mhz"] / 1e3, 3)
    assert ecp5["inferences_per_second_at_fmax"] == round(ecp5["fmax_mhz"] * 1e6
                                                          / report["network"]["cycles_per_inference"], 1)
    for device in report["devices"]:
        assert {"fits", "resources", "fmax_mhz", "critical_path"} <= set(report[device])
        assert (out / "pnr" / device / "nextpnr.log").is_file()
    assert "## Place and route" in (out / "report.md").read_text()
