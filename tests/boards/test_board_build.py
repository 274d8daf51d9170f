"""Board builds (boards/build.py): the board tops elaborate on amaranth-boards' platforms with the board's pins and
memory; the command's outputs, report and messages (place and route stubbed: the real flow takes minutes to an
hour, it runs with ``-m slow``); the configuration flags and the UART's rate."""

import json
import re

import pytest

from boards import build as board_build
from boards.build import _elaborate, board_config, board_core, clocks_per_bit
from boards.top import BOARDS
from hw.spec.cli import UsageError
from hw.spec.config import AcceleratorConfig


def test_board_configurations():
    ulx3s = board_config(BOARDS["ulx3s-85f"])
    assert (ulx3s.rows, ulx3s.cols, ulx3s.weights.name, ulx3s.dma_bits, ulx3s.clock_mhz) == (8, 8, "int8", 128, 25.0)
    ice = board_config(BOARDS["icebreaker"], weights="minifloat4", rows=4, cols=2)
    assert (ice.rows, ice.cols, ice.weights.name, ice.acts.name, ice.dma_bits) == (4, 2, "minifloat4", "int4", 64)
    # The small part's choices on the iCE40; the ECP5's engine keeps the defaults (and their JSON and hash).
    assert (ice.command_queue_depth, ice.decode_chains, ice.perf_counters, ice.decode_shared) == (0, 4, False, True)
    assert "command_queue_depth" not in ulx3s.to_json()
    assert (ulx3s.decode_chains, ulx3s.perf_counters, ulx3s.decode_shared) == (2, True, False)
    assert (ice.slow_clock, ice.table_bram, ice.narrow_line_fifo, ice.retire_queue_depth) == (True, True, True, 2)
    # The iCEBreaker's burst addresses in the bits of its memory: an address beyond it sets the bit above them.
    assert (1 << ice.dram_addr_bits, ulx3s.dram_addr_bits) == (BOARDS["icebreaker"].memory_bytes, 32)
    assert (ulx3s.slow_clock, ulx3s.table_bram, ulx3s.narrow_line_fifo, ulx3s.retire_queue_depth) == (False, False,
                                                                                                       False, 4)
    # The serial lane on integer outputs only: a minifloat output keeps the barrel shifter.
    assert ice.postprocess_serial and not ulx3s.postprocess_serial
    assert not board_config(BOARDS["icebreaker"], acts="minifloat6").postprocess_serial
    assert (ice.compute_compact, ulx3s.compute_compact) == (True, False)


def test_a_memory_beyond_the_engines_burst_addresses_is_refused():
    """The iCEBreaker's engine counts burst addresses in 17 bits (its 128 KiB): a 256 KiB memory behind it would
    answer some addresses beyond the first 128 KiB with data instead of an error, so the board top refuses it."""
    from boards.top import BoardCore

    config = board_config(BOARDS["icebreaker"], rows=1)
    assert config.dram_addr_bits == 17
    with pytest.raises(ValueError, match=r"dram_addr_bits=17 addresses 131072 bytes, less than the board's 262144"):
        BoardCore(config, memory_bytes=256 * 1024, memory_kind="spram", clocks_per_bit=4, idle_timeout=100)
    BoardCore(config, memory_bytes=128 * 1024, memory_kind="spram", clocks_per_bit=4, idle_timeout=100)


@pytest.mark.parametrize("board,baud,cycles", [("ulx3s-85f", 115200, 217), ("icebreaker", 115200, 195),
                                               ("icebreaker", 5_625_000, 4)])
def test_clocks_per_bit(board, baud, cycles):
    """On the board's clock: the ULX3S's 25 MHz oscillator, the iCEBreaker's 22.5 MHz PLL (22.5e6 / 115200 =
    195.3; / 5.625e6 = 4)."""
    assert clocks_per_bit(BOARDS[board], baud) == cycles


def test_a_rate_the_clock_cannot_make_is_refused():
    """22.5e6 / 3e6 = 7.5: 8 clocks a bit make 2.81 Mbaud, 6.3 % off (7: 3.21, 7.1 % off)."""
    with pytest.raises(UsageError, match="--baud 3000000: the 22.5 MHz clock cannot make it within 2 %"):
        clocks_per_bit(BOARDS["icebreaker"], 3_000_000)


@pytest.mark.parametrize("name,pins", [("icebreaker", ["set_io uart_0__rx__io 6", "set_io uart_0__tx__io 9"]),
                                       ("ulx3s-85f", ['LOCATE COMP "uart_0__rx__io" SITE "M1"',
                                                      'LOCATE COMP "uart_0__tx__io" SITE "L4"'])])
def test_the_board_top_on_its_platform(name, pins):
    board = BOARDS[name]
    config = board_config(board, rows=2)
    verilog, constraints = _elaborate(board, board_core(board, config, 115200))
    for pin in pins:
        assert pin in constraints
    assert re.search(r"^module top\(", verilog, re.M)
    spram = len(re.findall(r"^\s*SB_SPRAM256KA ", verilog, re.M))
    assert spram == (4 if board.memory_kind == "spram" else 0)


def _fake_pnr(fits: bool):
    def place_and_route(verilog, device, *, clock_mhz, extra_args, files, progress, router=None):
        import tempfile
        from pathlib import Path
        folder = Path(tempfile.mkdtemp())
        routed = extra_args[extra_args.index("--textcfg") + 1] if "--textcfg" in extra_args else \
            extra_args[extra_args.index("--asc") + 1]
        assert set(files) == {extra_args[1]}
        (folder / routed).write_text("routed")
        (folder / "nextpnr.log").write_text("log")
        (folder / "timing.json").write_text("{}")
        summary = {"device": device, "part": "PART", "fits": fits, "fmax_mhz": 31.5 if fits else None,
                   "resources": {"luts": {"used": 9000 if fits else 16025, "available": 5280 if not fits else 83640}},
                   "seconds": {"synthesis": 1.0, "place_and_route": 2.0}, "files": str(folder),
                   "router": router or "router1"}
        if not fits:
            summary["overflow"] = {"ICESTORM_LC": {"used": 16025, "available": 5280}}
        return summary
    return place_and_route


def test_a_build_writes_the_bitstream_timing_report_and_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("hw.pnr.place_and_route", _fake_pnr(True))
    def pack(board, summary, scratch):
        (scratch / "top.bit").write_bytes(b"bits")
        return "top.bit"
    monkeypatch.setattr(board_build, "_pack", pack)
    out = tmp_path / "ulx3s"
    assert board_build.main(["--board", "ulx3s-85f", "--rows", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "nextpnr.log", "report.json", "timing.json",
                                                     "top.bit"]
    report = json.loads((out / "report.json").read_text())
    assert AcceleratorConfig.from_json((out / "config.json").read_text()).to_dict() == report["config"]
    assert report["board"] == "ulx3s-85f" and report["config"]["rows"] == 2 and report["fmax_mhz"] == 31.5
    assert report["timing_met"] and report["outputs"]["bitstream"] == "top.bit"
    assert report["uart"] == {"baud": 115200, "clocks_per_bit": 217, "idle_timeout_cycles": 1_250_000}
    printed = capsys.readouterr()
    assert f"Wrote {out}/top.bit" in printed.out and "[3/4] packing the bitstream" in printed.err


def test_the_router_reaches_place_and_route_and_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr("hw.pnr.place_and_route", _fake_pnr(True))
    monkeypatch.setattr(board_build, "_pack", lambda board, summary, scratch: "top.bit")
    out = tmp_path / "ulx3s"
    assert board_build.main(["--board", "ulx3s-85f", "--rows", "2", "--router", "router2", "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["router"] == "router2"


def test_an_unknown_router_is_refused(tmp_path, capsys):
    assert board_build.main(["--board", "ulx3s-85f", "--router", "fast", "--out", str(tmp_path / "out")]) == 2
    assert "argument --router: invalid choice: 'fast'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_design_that_does_not_fit_gets_its_report_and_exit_status_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("hw.pnr.place_and_route", _fake_pnr(False))
    out = tmp_path / "ice"
    assert board_build.main(["--board", "icebreaker", "--out", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "nextpnr.log", "report.json", "timing.json"]
    report = json.loads((out / "report.json").read_text())
    assert not report["fits"] and report["overflow"]["ICESTORM_LC"]["used"] == 16025
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("python -m boards.build: error: the 2x2 int4 engine does not fit the icebreaker's")
    assert "ICESTORM_LC 16025/5280" in lines[-1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["icebreaker", "ulx3s-85f"])
def test_real_build(name, tmp_path):
    """The documented command, for real (minutes on the iCE40, up to an hour on the ECP5-85F)."""
    status = board_build.main(["--board", name, "--out", str(tmp_path / name)])
    report = json.loads((tmp_path / name / "report.json").read_text())
    assert status == (0 if report["fits"] else 2)
    assert report["fits"] == (tmp_path / name / f"top{BOARDS[name].bitstream}").is_file()
