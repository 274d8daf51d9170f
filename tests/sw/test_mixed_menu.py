"""sw/mixed/menu.py: menu parsing and the single engine that runs a menu today."""

import pytest

from hw.spec.formats import get_format
from sw.mixed import Choice, MixedError, container, parse_menu
from sw.mixed.menu import default, emulates


def test_entries_are_canonical_pairs():
    menu = parse_menu(" int4, INT8 ,e3m2/fp8_e4m3")
    assert menu == [Choice("int4", "int4"), Choice("int8", "int8"), Choice("minifloat6", "fp8_e4m3")]
    assert [c.name for c in menu] == ["int4", "int8", "minifloat6/fp8_e4m3"]


@pytest.mark.parametrize("text, message", [
    ("int4", "at least two comma-separated formats"),
    ("int4,,int8", "at least two comma-separated formats"),
    ("int4,int4", "names a format twice"),
    ("int4,int9x", "entry 'int9x': Unknown format"),
    ("int4,int4/int8/int8", "write a format (int4) or weights/acts"),
])
def test_bad_menus_are_refused_in_one_line(text, message):
    with pytest.raises(MixedError) as e:
        parse_menu(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_container_is_the_entry_holding_all_others():
    assert container(parse_menu("int2,int4,int8")) == ("int8", "int8")
    assert container(parse_menu("int8,int3,int6")) == ("int8", "int8")
    assert container(parse_menu("minifloat6/fp8_e4m3,fp8_e4m3")) == ("fp8_e4m3", "fp8_e4m3")


def test_menus_no_single_engine_runs_point_to_formats():
    with pytest.raises(MixedError, match="no entry's engine runs all the others.*add --formats int4,minifloat6"):
        container(parse_menu("int4,minifloat6"))
    # minifloat activations narrower than the engine's need the multi-format engine
    with pytest.raises(MixedError, match="add --formats minifloat6,fp8_e4m3"):
        container(parse_menu("minifloat6,fp8_e4m3"))
    assert "multi-format engine" in emulates(Choice("minifloat6", "minifloat6"), get_format("fp8_e4m3"),
                                             get_format("fp8_e4m3"))


def test_a_given_engine_must_hold_every_entry():
    assert container(parse_menu("int2,int4"), "int8", "int8") == ("int8", "int8")
    with pytest.raises(MixedError, match="--mixed int8 cannot run on the int4/int4 engine"):
        container(parse_menu("int4,int8"), "int4", "int4")


def test_the_default_of_a_declared_mix_is_its_widest_entry():
    assert default(parse_menu("int4,int8,minifloat6")) == Choice("int8", "int8")
    assert default(parse_menu("minifloat6,fp8_e4m3,int4")) == Choice("fp8_e4m3", "fp8_e4m3")
