"""sw/mixed/command.py: python -m sw.compile --mixed ... --budget ..., its output folder and its usage errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sw.model_folder import DIGITS

ROOT = Path(__file__).resolve().parents[2]
BASE = [DIGITS / "digits_cnn.onnx", "--rows", "32", "--calibrate", DIGITS / "calibration.npy"]


def _compile(*args):
    return subprocess.run([sys.executable, "-m", "sw.compile", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


def test_mixed_compile_prints_and_writes_the_choice(tmp_path):
    out = tmp_path / "mixed"
    result = _compile(*BASE, "--mixed", "int2,int4,int8", "--budget", "weight-bits=30000", "--method", "mmse",
                      "--per-channel", "--eval", DIGITS / "test_set.npz", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "Mixed precision --mixed int2,int4,int8 --budget weight-bits=30000" in result.stdout
    mixed = json.loads((out / "mixed.json").read_text())
    assert mixed["budget"] == {"metric": "weight-bits", "value": 30000.0}
    assert mixed["measured"]["weight-bits"] == mixed["predicted"]["weight-bits"] <= 30000
    assert 0 <= mixed["measured"]["accuracy"] <= 1 and mixed["measured"]["golden_emulator_mismatches"] == 0
    assert set(mixed["choice"].values()) <= {"int2", "int4", "int8"}
    assert set(mixed["tables"]) == set(mixed["choice"])
    for unit, fmt in mixed["choice"].items():                         # the choice is one of the tabled entries
        assert mixed["tables"][unit][fmt]["weight-bits"] > 0 and mixed["tables"][unit]["int8"]["loss"] == 0
    report = (out / "report.txt").read_text()
    assert "w SQNR dB" in report and "predicted" in report and "accuracy" in report
    assert {"program.bin", "manifest.json", "network.json", "mixed.json"} <= {p.name for p in out.iterdir()}
    assert all(layer in result.stdout for layer in mixed["choice"])


@pytest.mark.parametrize("args, message", [
    (["--mixed", "int2,int4,int8", "--budget", "cycles=100"],
     "--budget cycles=100 is infeasible: the smallest feasible budget is cycles="),
    # without sw.energy (issue 13 item 4) the missing model, with it the infeasible budget
    (["--mixed", "int4,int8", "--budget", "energy-uj=0.001"],
     ("needs an energy model", "is infeasible: the smallest feasible budget is energy-uj=")),
    (["--mixed", "int4,int8"], "--mixed needs --budget METRIC=N"),
    (["--budget", "cycles=4000"], "--budget, --eval, --costs-on and --formats go with --mixed"),
    (["--costs-on", "engine"], "--budget, --eval, --costs-on and --formats go with --mixed"),
    (["--formats", "int8,int4"], "--budget, --eval, --costs-on and --formats go with --mixed"),
    (["--mixed", "int2,int4,int8", "--formats", "int8,int4", "--budget", "cycles=4000"],
     "--mixed: int2 is not in --formats int8,int4"),
    (["--mixed", "int4,int8", "--formats", "int8", "--budget", "cycles=4000"], "--formats: list two or more"),
    (["--mixed", "int4,int8", "--formats", "int8,int4", "--pe", "int8", "--budget", "cycles=4000"],
     "--formats: give either --formats or --pe"),
    (["--mixed", "int4,minifloat6", "--budget", "cycles=4000"], "add --formats int4,minifloat6"),
    (["--mixed", "int4,int8", "--pe", "int4", "--budget", "cycles=4000"], "cannot run on the int4/int4 engine"),
    (["--mixed", "int4,int8", "--budget", "cycles=4000", "--first-last", "int8"], "give one"),
    (["--mixed", "int4,int8", "--budget", "cycles=4000", "--multi-tensor"], "--multi-tensor with --mixed"),
    (["--mixed", "int4,int8", "--budget", "cycles=4000", "--data-free"], "--data-free and --mixed"),
])
def test_usage_errors_are_one_line(tmp_path, args, message):
    result = _compile(*BASE, *args, "--out", tmp_path / "never")
    assert result.returncode == 2
    messages = message if isinstance(message, tuple) else (message,)
    assert any(m in result.stderr for m in messages) and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "never").exists()


def test_energy_budget_uses_the_energy_table(tmp_path):
    pytest.importorskip("sw.energy")
    out = tmp_path / "energy"
    table = ROOT / "sw" / "energy" / "horowitz_45nm.json"
    result = _compile(*BASE, "--mixed", "int4,int8", "--budget", "energy-uj=1000", "--energy-table", table,
                      "--out", out)
    assert result.returncode == 0, result.stderr
    mixed = json.loads((out / "mixed.json").read_text())
    assert 0 < mixed["predicted"]["energy-uj"] <= 1000 and mixed["measured"]["energy_uj_on_this_engine"] > 0
    assert set(mixed["choice"].values()) == {"int8"}          # a budget that allows everything: the least error
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    result = _compile(*BASE, "--mixed", "int4,int8", "--budget", "energy-uj=1000", "--energy-table", bad,
                      "--out", tmp_path / "never")
    assert result.returncode == 2 and "--energy-table" in result.stderr and "not valid JSON" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_mix_runs_on_one_multi_format_build(tmp_path):
    """--formats: the chosen network runs on a multi-format engine, each layer's COMPUTEs selecting the format
    the ILP gave it (read back from the program words, apart from the compiler), golden == emulator."""
    from hw.spec.config import AcceleratorConfig
    from hw.spec.isa import Opcode, decode
    from sw.compiler.folder import load_folder

    out = tmp_path / "mixed"
    result = _compile(*BASE, "--mixed", "int2,int4,int8", "--formats", "int8,int4,int2", "--budget",
                      "weight-bits=30000", "--method", "mmse", "--per-channel", "--eval", DIGITS / "test_set.npz",
                      "--out", out)
    assert result.returncode == 0, result.stderr
    mixed = json.loads((out / "mixed.json").read_text())
    assert mixed["measured"]["golden_emulator_mismatches"] == 0
    compiled = load_folder(out)
    assert compiled.config.formats == ("int8", "int4", "int2")
    assert compiled.config == AcceleratorConfig(rows=32, cols=32, formats=("int8", "int4", "int2"))
    selected = set()
    for word in compiled.program.words:
        kind, f = decode(word)
        if kind.opcode is Opcode.COMPUTE:
            selected.add(compiled.config.formats[f["weight_format"]])
    assert selected == set(mixed["choice"].values()) and len(selected) > 1


def test_a_mix_of_integer_and_minifloat_layers_on_one_build(tmp_path):
    """--mixed int4,int8,minifloat6 on an int4+int8+minifloat6 build: each layer is quantized and measured in its
    own format; under a weight-bits budget the ILP mixes the families (the formats' cycles are equal today: slots are
    int8-wide, so a cycles budget cannot tell them apart), and the program runs golden == emulator, its COMPUTEs
    selecting what the network declares."""
    from hw.spec.isa import Opcode, decode
    from sw.compiler.folder import load_folder

    out = tmp_path / "mixed"
    result = _compile(DIGITS / "digits_cnn.onnx", "--rows", "8", "--calibrate", DIGITS / "calibration.npy",
                      "--mixed", "int4,int8,minifloat6", "--formats", "int4,int8,minifloat6", "--budget",
                      "weight-bits=43000", "--method", "mmse", "--per-channel", "--eval", DIGITS / "test_set.npz",
                      "--out", out)
    assert result.returncode == 0, result.stderr
    mixed = json.loads((out / "mixed.json").read_text())
    choice = set(mixed["choice"].values())
    assert "minifloat6" in choice and choice & {"int4", "int8"}
    assert mixed["measured"]["weight-bits"] <= 43000 and mixed["measured"]["golden_emulator_mismatches"] == 0
    for unit in mixed["tables"].values():            # sensitivities measured in every format
        assert {"int4", "int8", "minifloat6"} == set(unit) and unit["int8"]["loss"] == 0
        assert unit["minifloat6"]["sqnr_alone_db"] != unit["int4"]["sqnr_alone_db"]
    compiled = load_folder(out)
    net = compiled.network
    assert net.formats == ["int4", "int8", "minifloat6"]
    declared = {la.name: net.weight_format_of(la).name for la in net.layers if la.weights}
    assert {declared[u] for u in mixed["choice"]} == choice
    selected = set()
    for word in compiled.program.words:
        kind, f = decode(word)
        if kind.opcode is Opcode.COMPUTE:
            selected.add((compiled.config.formats[f["weight_format"]], compiled.config.formats[f["act_format"]]))
    assert {w for w, _ in selected} == set(declared.values()) | {net.weight_format}
    assert "minifloat6" in {a for _, a in selected}          # a layer reads a minifloat6 layer's output
