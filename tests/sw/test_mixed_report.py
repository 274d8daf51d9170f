"""sw/mixed/report.py: the printed table of a mixed-precision choice."""

import math

from sw.mixed.report import format_mixed


def _result(**measured):
    return {"engine": "int8/int8",
            "units": [{"layers": ["a", "b"], "format": "int4", "sqnr_alone_db": 21.234, "loss": 0.125,
                       "cycles": 100.0, "weight-bits": 400.0},
                      {"layers": ["c"], "format": "int8", "sqnr_alone_db": math.inf, "loss": 0.0,
                       "cycles": 50.0, "weight-bits": 800.0}],
            "predicted": {"cycles": 150.0, "weight-bits": 1200.0, "output_sqnr_db": 20.5},
            "measured": {"weight-bits": 1200.0, "cycles_on_this_engine": 180.0, "output_sqnr_db": 19.25, **measured}}


def test_units_formats_and_figures_are_listed():
    text = format_mixed(_result(), "int4,int8", "cycles=150")
    lines = text.splitlines()
    assert lines[0] == "Mixed precision --mixed int4,int8 --budget cycles=150, on today's int8/int8 engine"
    unit_a = next(line for line in lines if line.startswith("a (+1)"))
    assert unit_a.split() == ["a", "(+1)", "int4", "21.23", "0.125", "100", "400"]
    assert next(line for line in lines if line.startswith("c ")).split()[2] == "exact"
    assert next(line for line in lines if line.startswith("weight-bits")).split()[1:] == ["1200", "1200"]
    assert next(line for line in lines if line.startswith("cycles (each")).split()[-2:] == ["150", "-"]
    assert next(line for line in lines if line.startswith("output SQNR")).split()[-2:] == ["20.50", "19.25"]
    assert next(line for line in lines if line.startswith("cycles on this engine")).split()[-1] == "180"
    assert "accuracy" not in text.split("\n\n")[1] and "energy" not in text.split("\n\n")[1]


def test_energy_on_this_engine_is_shown_when_measured():
    text = format_mixed(_result(energy_uj_on_this_engine=13.4912), "int4,int8", "cycles=150")
    assert next(line for line in text.splitlines() if line.startswith("energy-uj on this engine")).split()[-1] == \
        "13.49"


def test_accuracy_is_shown_when_measured():
    text = format_mixed(_result(accuracy=0.975, images=40, golden_emulator_mismatches=0), "int4,int8", "cycles=150")
    assert "97.50%  (40 images, 0 golden/emulator mismatches)" in text
