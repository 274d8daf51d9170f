"""The front door: outputs, report keys, and one-line errors with exit status 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hw.build import main


ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "hw.build", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


@pytest.mark.parametrize("args,message", [
    (["--pe", "float9"], "--pe: Unknown format 'float9'. Valid forms: int2..int16"),
    (["--pe", "int8", "--rows", "0"], "--rows: rows must be an integer in 1..128, not 0"),
    (["--pe", "int8", "--rows", "4", "--cols", "200"], "--cols: cols must be an integer in 1..128, not 200"),
    (["--rows", "4"], "no number format given: use --pe FMT, --formats FMT,FMT,... or both --weights FMT and "
                      "--acts FMT"),
    (["--formats", "int4,float9"], "--formats: Unknown format 'float9'. Valid forms: int2..int16"),
    (["--formats", "int4"], "--formats: list two or more formats separated by commas (e.g. int4,int8,minifloat6), "
                            "not 'int4'; for one format use --pe"),
    (["--formats", "int4,,int8"], "--formats: list two or more formats separated by commas"),
    (["--formats", "int4,int8", "--pe", "int8"], "--formats: give either --formats or --pe/--weights/--acts, not both"),
    (["--formats", "int8,e3m2,minifloat6"], "--formats lists minifloat6 more than once; list each format "
                                            "once"),
    (["--formats", "int2,int3,int4,int5,int6,int7,int8,int9,int10"], "--formats must list 2..8 formats (one format is a plain --pe build), not 9"),
    (["--formats", "int4,int8", "--rows", "0"], "--rows: rows must be an integer in 1..128, not 0"),
    (["--weights", "int4", "--acts", "e9m9"], "--acts: Unknown format 'e9m9'"),
    (["--pe", "int8", "--rows", "x"], "argument --rows: invalid int value: 'x'"),
    (["--pe", "int8", "--targets", "xilinx"], "--targets: unknown target(s) xilinx"),
    (["--pe", "int8", "--max-reduction", "2", "--rows", "4"], "--max-reduction: max_reduction must be an integer"),
    (["--pe", "int8", "--rows", "4", "--dsp-pes", "2"], "--dsp-pes: dsp_pes needs a packed build"),
    (["--formats", "int4,int8", "--rows", "2", "--cols", "4", "--dsp-pes", "1"], "--dsp-pes: dsp_pes needs a packed"),
    (["--pe", "int4", "--rows", "2", "--cols", "4", "--dsp-pes", "9"], "--dsp-pes: dsp_pes must be an integer in 0..8"),
])
def test_bad_arguments_get_one_line_and_status_2(args, message, tmp_path):
    result = _cli(*args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_writes_verilog_and_report(tmp_path, capsys):
    out = tmp_path / "w4a8"
    assert main(["--weights", "int4", "--acts", "int8", "--rows", "4", "--cols", "8", "--out", str(out),
                 "--no-synth", "--no-network"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["area.png", "config.json", "report.json", "report.md", "top.v"]
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["weight_format"] == "int4" and report["config"]["act_format"] == "int8"
    assert (report["config"]["rows"], report["config"]["cols"]) == (4, 8)
    assert report["derived"]["peak_macs_per_cycle"] == 32
    assert "dsp_pes" not in report["config"]
    # int4 x int8: -8 * -128 = 1024 is the largest product, 12 bits signed; 4 of them need 14.
    assert report["derived"]["product"]["fixed_bits"] == 12
    assert report["derived"]["psum_bits"] == 14
    assert "module top(" in (out / "top.v").read_text()
    assert str(out) in capsys.readouterr().out
    assert not out.with_name("w4a8.partial").exists()


def test_a_packed_int4_build_reports_its_reduction_depth(tmp_path):
    out = tmp_path / "int4"
    assert main(["--pe", "int4", "--rows", "2", "--cols", "4", "--out", str(out), "--no-synth", "--no-network"]) == 0
    derived = json.loads((out / "report.json").read_text())["derived"]
    # Two int4 codes per PE lane: 2 PE rows reduce over 4 rows, 4 x 4 MACs a cycle. int4 x int4 products lie in
    # -56..64; 4 of them in -224..256: 10 bits.
    assert (derived["values_per_lane"], derived["reduction_rows"], derived["peak_macs_per_cycle"]) == (2, 4, 16)
    assert derived["psum_bits"] == 10
    assert "| codes per PE lane (reduction rows) | 2 (4) |" in (out / "report.md").read_text()


def test_a_multi_format_build(tmp_path):
    """--formats: the set in config.json and the report, the accumulators' unit that of the finest pair."""
    out = tmp_path / "multi"
    assert main(["--formats", "int4,int8,minifloat6", "--rows", "2", "--out", str(out), "--no-synth",
                 "--no-network"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["formats"] == ["int4", "int8", "minifloat6"]
    assert config["weight_format"] == config["act_format"] == "int4"
    report = json.loads((out / "report.json").read_text())
    assert report["config"] == config and report["derived"]["acc_exponent"] == -8     # minifloat6 x minifloat6
    assert "packed_pairs" not in report["derived"]       # 2x2: packed, it would be taller than wide
    assert "module top(" in (out / "top.v").read_text()


def test_a_multi_format_build_that_packs_per_layer(tmp_path):
    """--formats int4,int8,... on an array twice as wide as tall: the report names the pairs COMPUTE.packed
    selects and their depth; a square one (test above) has neither."""
    out = tmp_path / "packing"
    assert main(["--formats", "int4,int8,minifloat6", "--rows", "2", "--cols", "4", "--out", str(out), "--no-synth",
                 "--no-network"]) == 0
    derived = json.loads((out / "report.json").read_text())["derived"]
    assert derived["packed_pairs"] == ["int4 x int4"] and derived["packed_reduction_rows"] == 4
    assert derived["reduction_rows"] == 2 and derived["values_per_lane"] == 1
    assert "| packed per layer (COMPUTE.packed: 4 reduction rows) | int4 x int4 |" in (out / "report.md").read_text()


def test_cols_default_to_rows(tmp_path):
    out = tmp_path / "sq"
    assert main(["--pe", "minifloat4", "--rows", "2", "--out", str(out), "--no-synth", "--no-network"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["rows"] == config["cols"] == 2


def test_area_estimate_in_report(tmp_path):
    out = tmp_path / "tiny"
    assert main(["--pe", "int4", "--rows", "2", "--out", str(out), "--no-network"]) == 0
    area = json.loads((out / "report.json").read_text())["area"]
    assert area["generic"]["nand2_equivalents"] > 0
    assert area["ice40"]["luts"] > 0
    assert "NAND2 equivalents" in (out / "report.md").read_text()


def test_out_never_replaces_a_folder_that_is_not_a_build(tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "keep.txt").write_text("precious")
    result = _cli("--pe", "int4", "--rows", "2", "--no-synth", "--out", str(keep))
    assert result.returncode == 2
    assert "is not an earlier output of this tool" in result.stderr and result.stderr.count("\n") == 1
    assert (keep / "keep.txt").read_text() == "precious"
    result = _cli("--pe", "int4", "--rows", "2", "--no-synth", "--out", ".", cwd=keep)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_out_replaces_an_earlier_build(tmp_path):
    out = tmp_path / "again"
    assert main(["--pe", "int4", "--rows", "2", "--no-synth", "--no-network", "--out", str(out)]) == 0
    assert main(["--pe", "int8", "--rows", "2", "--no-synth", "--no-network", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["weight_format"] == "int8"


def test_report_has_the_bundled_cnn(tmp_path):
    """The front door compiles models/digits for the engine it built and emulates the held-out images."""
    out = tmp_path / "net"
    table = json.loads((Path(__file__).parents[2] / "sw" / "energy" / "horowitz_45nm.json").read_text())
    table["static_power"] = {"value": 1, "unit": "mW", "source": "a test's leakage"}
    (tmp_path / "table.json").write_text(json.dumps(table))
    assert main(["--pe", "int8", "--rows", "8", "--no-synth", "--out", str(out), "--energy-table",
                 str(tmp_path / "table.json")]) == 0
    n = json.loads((out / "report.json").read_text())["network"]
    e = n["energy"]
    assert e["energy_table"]["path"] == str(tmp_path / "table.json") and e["static_uj"] > 0
    assert e["energy_uj_per_inference"] == pytest.approx(e["dynamic_uj"] + e["static_uj"], abs=2e-6)
    assert e["cycles_per_inference"] == n["cycles_per_inference"]
    assert [layer["name"] for layer in e["layers"]] == [layer["name"] for layer in n["layers"]]
    assert "| energy per inference (estimate) |" in (out / "report.md").read_text()
    assert n["images"] == 360 and n["golden_emulator_mismatches"] == 0
    assert n["accuracy"] > 0.95                       # float: 98.06 %
    assert n["cycles_per_inference"] == sum(layer["cycles"] for layer in n["layers"])
    assert [layer["name"] for layer in n["layers"]] == ["/conv1/Conv", "/conv2/Conv", "/fc1/Gemm", "/fc2/Gemm"]
    assert "## Bundled CNN" in (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["plots"] == {"area": "area.png", "utilization": "utilization.png"}
    assert (out / "utilization.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_has_the_area_breakdown(tmp_path):
    """Every report splits an analytic area estimate into PEs, buffers, control and post-processing, and plots it;
    the PE share grows with the format's width."""
    shares = {}
    for fmt in ("int4", "fp8_e4m3"):
        out = tmp_path / fmt
        assert main(["--pe", fmt, "--rows", "4", "--no-synth", "--no-network", "--out", str(out)]) == 0
        report = json.loads((out / "report.json").read_text())
        b = report["area_breakdown"]
        assert list(b["parts"]) == ["pe_array", "buffers", "control", "postprocess"]
        assert b["total"] == sum(b["parts"].values()) and all(v > 0 for v in b["parts"].values())
        assert abs(b["parts"]["pe_array"] - 16 * b["pe_nand2"]) <= 16
        assert b["buffer_bits"] == sum(x["bits"] for x in report["buffers"].values())
        assert "not synthesis" in b["kind"] and "## Area breakdown (estimate)" in (out / "report.md").read_text()
        assert report["plots"]["area"] == "area.png" and report["plots"]["utilization"] is None
        shares[fmt] = b["parts"]["pe_array"]
    assert shares["fp8_e4m3"] > 2 * shares["int4"]


def test_bad_energy_table_is_one_line_before_any_work(tmp_path, capsys):
    (tmp_path / "table.json").write_text("[]")
    out = tmp_path / "never"
    assert main(["--pe", "int8", "--rows", "2", "--no-synth", "--out", str(out), "--energy-table",
                 str(tmp_path / "table.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"python -m hw.build: error: --energy-table {tmp_path / 'table.json'}: an energy table is a JSON "
                   f"object, not list"]
    assert not out.exists()


def test_network_that_cannot_map_is_reported_not_fatal(tmp_path):
    out = tmp_path / "unsigned"
    assert main(["--pe", "uint4", "--rows", "4", "--no-synth", "--out", str(out)]) == 0
    n = json.loads((out / "report.json").read_text())["network"]
    assert "weights are symmetric" in n["error"]


def test_bundled_cnn_on_a_rectangular_array(tmp_path):
    out = tmp_path / "rect"
    assert main(["--pe", "int8", "--rows", "4", "--cols", "8", "--no-synth", "--out", str(out)]) == 0
    n = json.loads((out / "report.json").read_text())["network"]
    assert "error" not in n and n["golden_emulator_mismatches"] == 0 and n["accuracy"] > 0.9


def test_network_energy_at_an_achieved_fmax(tmp_path):
    """Where place and route gave an fmax, the bundled CNN's inferences/s are at it, and the report says so."""
    from hw.build import _network
    from hw.spec.config import AcceleratorConfig

    config = tmp_path / "config.json"
    config.write_text(AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8").to_json())
    n = _network(config, tmp_path / "network.json", fmax=("ecp5-85f", 21.79))
    e = n["energy"]
    assert e["clock_mhz"] == 21.79 and e["clock_source"] == "achieved fmax on ecp5-85f (nextpnr)"
    assert e["inferences_per_second"] == pytest.approx(21.79e6 / n["cycles_per_inference"], rel=1e-4)
