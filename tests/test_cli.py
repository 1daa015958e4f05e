import pytest

from stepcache import cli, zoo
from stepcache.adapters import ADAPTERS


def test_models_lists_every_family_and_zoo_model(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for adapter in ADAPTERS:
        assert adapter.family in out
    for name, _ in zoo.list_models():
        assert name in out


def test_methods_lists_the_registered_methods(capsys):
    from stepcache.methods import METHODS

    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS)


def test_unknown_command_exits_with_usage_error():
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
