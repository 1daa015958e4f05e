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


# -- generate and bench: user mistakes end with one line and status 2, before any work ----------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--method", "nosuch"], "unknown method 'nosuch'"),
        (["generate", "--model", "zoo:nosuch", "--method", "fora"], "unknown zoo model 'nosuch'"),
        (["generate", "--model", "nosuch-dir", "--method", "fora"], "unknown model 'nosuch-dir'"),
        (["generate", "--method", "fora", "--intervall", "3"], "has no parameter 'intervall'"),
        (["generate", "--method", "fora", "--interval", "0"], "FORAConfig.interval must be"),
        (["generate", "--method", "fora", "--interval", "three"], "cannot read 'three'"),
        (["generate", "--method", "fora", "--out", "/proc/stepcache/grid.png"], "cannot"),
        (["bench", "--model", "zoo:dit-digits", "--method", "nosuch"], "unknown method 'nosuch'"),
        (["bench", "--model", "zoo:dit-digits", "--method", "fora", "--grid", "threshold=0.1"], "none of the methods"),
        (["bench", "--model", "arch:nosuch", "--method", "fora", "--out", "/proc/x/r.json"], "cannot"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bench_rejects_a_method_for_another_family(capsys, tmp_path, monkeypatch):
    from stepcache.bench import arch

    monkeypatch.setitem(arch.DIT_XL_2, "num_layers", 1)  # keep the random model small: only the family matters
    argv = ["bench", "--model", "arch:dit-xl-2", "--method", "deepcache", "--out", str(tmp_path / "r.json")]
    assert cli.main(argv) == 2
    assert "cannot run on arch:dit-xl-2" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_generate_writes_grid_and_summary(tmp_path, capsys):
    import json

    out = tmp_path / "grid.png"
    argv = ["generate", "--model", "zoo:dit-digits", "--method", "fora", "--interval", "2", "--steps", "4",
            "--batch", "2", "--repeats", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["config"] == {"method": "fora", "interval": 2, "sublayers": None, "warmup": 0, "cooldown": 0,
                                 "convention": "stepcache", "order": 0}
    assert summary["cached"]["cached_steps"] == 2 and summary["speedup_macs"] > 1
    assert out.stat().st_size > 0
    assert "MACs" in capsys.readouterr().out


def test_help_imports_no_model_code():
    """`stepcache --help` stays fast: it must not import diffusers' model classes."""
    import subprocess
    import sys

    code = ("import sys, stepcache.cli as cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('diffusers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"
