import pytest

from stepcache.bench import configs
from stepcache.methods import METHODS
from bench.toy import ToyConfig


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(METHODS, "toy", ToyConfig)
    monkeypatch.setitem(configs.DEFAULT_GRIDS, "toy", [{"interval": [2, 3]}])


def test_every_registered_method_has_a_default_grid_of_valid_configs():
    for name in METHODS:
        grid = configs.grid_configs(name)
        assert len(grid) >= 3 and len({configs.describe(c) for c in grid}) == len(grid)


def test_text_is_coerced_to_the_field_types(toy):
    assert configs.coerce_fields(ToyConfig, {"interval": "4", "scale": "0.5"}) == {"interval": 4, "scale": 0.5}


def test_unions_nested_tuples_and_none():
    from typing import Optional

    assert configs.coerce("3", int | float, "x") == 3 and configs.coerce("0.3", int | float, "x") == 0.3
    assert configs.coerce("none", Optional[int], "x") is None
    assert configs.coerce("0.03:4/0.05:3", tuple[tuple[float, int], ...], "x") == ((0.03, 4), (0.05, 3))
    assert configs.coerce("yes", bool, "x") is True


def test_unknown_field_lists_the_fields(toy):
    with pytest.raises(ValueError, match="interval, scale"):
        configs.coerce_fields(ToyConfig, {"intervall": "2"})


def test_unreadable_value_names_the_field(toy):
    with pytest.raises(ValueError, match="toy.interval"):
        configs.coerce_fields(ToyConfig, {"interval": "two"})


def test_unknown_method_lists_the_methods():
    with pytest.raises(ValueError, match="known methods"):
        configs.config_class("nosuch")


def test_grid_override_replaces_the_default(toy):
    grid = configs.parse_grid(["interval=4,5", "toy.scale=0.5"], ["toy"])
    built = configs.grid_configs("toy", grid["toy"])
    assert [(c.interval, c.scale) for c in built] == [(4, 0.5), (5, 0.5)]
    assert [c.interval for c in configs.grid_configs("toy")] == [2, 3]


def test_grid_field_of_no_requested_method_is_an_error(toy):
    with pytest.raises(ValueError, match="none of the methods"):
        configs.parse_grid(["threshold=0.1"], ["toy"])


def test_out_of_range_grid_value_raises_the_config_error(toy):
    with pytest.raises(ValueError, match="interval"):
        configs.grid_configs("toy", {"interval": ["0"]})
