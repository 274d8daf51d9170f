"""The energy table (sw/energy/table.py): the default loads with a source for every entry, units convert, and
every kind of bad file is one line naming the file, the entry and what is expected."""

import json

import pytest

from sw.energy import DEFAULT_TABLE, EnergyTableError, load_table


def _write(tmp_path, data) -> str:
    path = tmp_path / "table.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def _default() -> dict:
    return json.loads(DEFAULT_TABLE.read_text())


def test_default_table_holds_horowitz_figures():
    t = load_table()
    assert t.int_add == ((8, 0.03), (32, 0.1))
    assert t.int_mult == ((8, 0.2), (32, 3.1))
    assert t.sram_read_64b == ((8192, 10.0), (32768, 20.0), (1 << 20, 100.0))
    assert 1300 <= t.dram_64b <= 2600 and t.static_power_mw == 0.0
    assert all("Horowitz" in s or "assumed" in s or "not modelled" in s for s in t.sources.values())
    assert len(t.sources) == 2 + 2 + 3 + 3


def test_units_convert(tmp_path):
    data = _default()
    data["dram_64b"] = {"value": 2.6, "unit": "nJ", "source": "high end"}
    data["int_add"][0] = {"bits": 8, "value": 30, "unit": "fJ", "source": "x"}
    data["static_power"] = {"value": 1.5, "unit": "W", "source": "a stick's power"}
    t = load_table(_write(tmp_path, data))
    assert t.dram_64b == pytest.approx(2600) and t.int_add[0] == (8, pytest.approx(0.03))
    assert t.static_power_mw == pytest.approx(1500)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("dram_64b"), r"dram_64b is missing"),
    (lambda d: d["dram_64b"].pop("source"), r"dram_64b lacks source: every entry states its value, unit and source"),
    (lambda d: d["dram_64b"].update(unit="kWh"), r"dram_64b.unit must be one of fJ, pJ, nJ, not 'kWh'"),
    (lambda d: d["int_mult"][1].update(value=-3), r"int_mult\[1\].value must be a positive number \(pJ\), not -3"),
    (lambda d: d["int_add"][0].update(bits="8"), r"int_add\[0\].bits must be an integer of at least 1, not '8'"),
    (lambda d: d["sram_read_64b"].append(dict(d["sram_read_64b"][0])),
     r"sram_read_64b\[3\]: a second point at capacity_bytes 8192"),
    (lambda d: d.update(int_add=[]), r"int_add must be a non-empty list"),
    (lambda d: d["static_power"].update(value=float("nan")), r"static_power.value must be a non-negative number"),
    (lambda d: d["sram_write_over_read"].update(source=" "), r"sram_write_over_read.source must say where"),
])
def test_bad_entries_are_one_line(tmp_path, change, message):
    data = _default()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(EnergyTableError, match=f"^{path}: {message}") as e:
        load_table(path)
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(EnergyTableError, match=r"cannot read the energy table"):
        load_table(tmp_path / "none.json")
    with pytest.raises(EnergyTableError, match=r"not valid JSON"):
        load_table(_write(tmp_path, "{"))
    with pytest.raises(EnergyTableError, match=r"an energy table is a JSON object, not list"):
        load_table(_write(tmp_path, []))
