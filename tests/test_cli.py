import json

import pytest

from stepcache import cli, zoo
from stepcache.adapters import ADAPTERS

# a fast zoo run: 4 steps, one image, one timed pair
FAST = ["--model", "zoo:dit-digits", "--steps", "4", "--batch", "1"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def last_line(capsys) -> str:
    """The command's closing line, after the progress bar's."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_models_lists_every_family_zoo_and_arch_model(capsys):
    from stepcache.bench.arch import ARCHS

    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for adapter in ADAPTERS:
        assert adapter.family in out
    for name, _ in zoo.list_models():
        assert name in out
    for name in ARCHS:
        assert name in out
    # one aligned column of descriptions, however long a family or model name
    entries = [line for line in out.splitlines() if line.startswith("  ")]
    assert len({len(line) - len(line[2:].split(" ", 1)[1].lstrip()) for line in entries}) == 1


def test_methods_lists_each_field_with_default_range_and_meaning(capsys):
    from stepcache.methods import METHODS

    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} (" in out for name in METHODS)
    assert cli.main(["methods", "fora"]) == 0
    out = capsys.readouterr().out
    # read off FORAConfig: its default, the range its validation states, its docstring
    assert "interval (default 3): an integer in [1, inf]" in out
    assert "full steps are i % N == 0" in out
    assert "order (default 0): an integer in [0, 3]" in out


def test_field_docs_follow_the_config_class():
    from dataclasses import dataclass, field
    from typing import ClassVar

    from stepcache.config_files import field_docs
    from stepcache.core.validate import check_float
    from stepcache.methods.base import CacheConfig

    @dataclass(frozen=True)
    class Made(CacheConfig):
        """Made up.

        speed: how fast,
            in furlongs.
        """

        method: ClassVar[str] = "made"
        speed: float = 2.5
        size: int = field(default=1)  # size in cubits

        def __post_init__(self):
            super().__post_init__()
            check_float("Made", "speed", self.speed, 0.5, 9.0)

    docs = {d.name: d for d in field_docs(Made)}
    assert (docs["speed"].default, docs["speed"].allowed) == (2.5, "a number in [0.5, 9.0]")
    assert docs["speed"].meaning == "how fast, in furlongs." and docs["size"].meaning == "size in cubits"
    assert docs["size"].allowed == "type int"  # not validated: its type is all that is known


def test_unknown_command_is_a_usage_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in one_line_error(capsys)


# -- user mistakes: one line, status 2, before any work, no folders left ---------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--method", "nosuch"], "unknown method 'nosuch'"),
        (["generate", "--model", "zoo:nosuch", "--method", "fora"], "unknown zoo model 'nosuch'"),
        (["generate", "--model", "nosuch-dir", "--method", "fora"], "unknown model 'nosuch-dir'"),
        (["generate", "--method", "fora", "--set", "intervall=3"], "has no parameter 'intervall'"),
        (["generate", "--method", "fora", "--set", "interval=0"], "FORAConfig.interval must be"),
        (["generate", "--method", "fora", "--set", "interval=three"], "cannot read 'three'"),
        (["generate", "--method", "fora", "--set", "interval"], "--set expects FIELD=VALUE"),
        (["generate", "--set", "interval=2"], "give --method NAME or --config FILE"),
        (["generate", "--method", "fora", "--out", "/proc/stepcache/grid.png"], "cannot write"),
        (["generate", "--methd", "fora"], "unknown option --methd (did you mean --method?)"),
        (["generate", "--method", "teacache", "--threshold", "0.2"], "set with --set threshold=0.2"),
        (["generate", "--method", "fora", "--steps", "0"], "argument --steps: must be >= 1, got 0"),
        (["generate", "--method", "fora", "--pairs", "0"], "argument --pairs: must be >= 1, got 0"),
        (["generate", "--method", "fora", "--device", "nosuchdevice"], "unknown device 'nosuchdevice'"),
        (["generate", "--method", "fora", "--model", "arch:dit-xl-2"], "use `stepcache bench`"),
        (["bench", "--model", "zoo:dit-digits", "--method", "nosuch"], "unknown method 'nosuch'"),
        (["bench", "--model", "zoo:dit-digits", "--method", "fora", "--grid", "threshold=0.1"], "none of the methods"),
        (["bench", "--model", "zoo:dit-digits", "--grid", "interval=2"], "--grid needs --method"),
        (["bench", "--model", "arch:nosuch", "--method", "fora", "--out", "/proc/x/r.json"], "cannot write"),
        (["bench", "--model", "notamodel", "--out", "out/x/r.json", "--plot", "out/x/r.png"], "unknown model"),
        (["bench", "--model", "zoo:dit-digits", "--repeats", "0"], "argument --repeats: must be >= 1"),
        (["calibrate", "--model", "zoo:dit-digits", "--out", "c.json", "--steps", "0"], "--steps: must be >= 2"),
        (["calibrate", "--out", "c.json"], "--model is required"),
        (["calibrate", "--model", "zoo:dit-digits", "--out", "/proc/x/c.json"], "cannot write"),
        (["stepcost", "--model", "arch:nope"], "unknown model arch:nope"),
        (["stepcost", "--set", "interval=0"], "FORAConfig.interval"),
        (["stepcost", "--overhead", "--repeats", "0"], "argument --repeats: must be >= 1"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert message in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []  # no output folder, no file


def test_a_device_this_machine_lacks_is_a_usage_error(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["generate", "--method", "fora", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in one_line_error(capsys)


def test_plot_without_matplotlib_is_a_usage_error_before_the_sweep(capsys, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    argv = ["bench", *FAST, "--method", "fora", "--out", str(tmp_path / "r.json"), "--plot", str(tmp_path / "p.png")]
    assert cli.main(argv) == 2
    assert "plots need matplotlib" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_calibrate_on_a_model_teacache_cannot_run_on_says_so_without_internal_names(capsys, tmp_path):
    assert cli.main(["calibrate", "--model", "zoo:unet-shapes", "--out", str(tmp_path / "c.json")]) == 2
    err = one_line_error(capsys)
    assert "TeaCache does not run on zoo:unet-shapes" in err and "Recording" not in err
    assert not (tmp_path / "c.json").exists()


def test_a_bug_keeps_its_traceback(monkeypatch):
    from stepcache.bench import generate

    def broken(*args, **kwargs):
        raise KeyError("a bug, not a user mistake")

    monkeypatch.setattr(generate, "generate", broken)
    with pytest.raises(KeyError):
        cli.main(["generate", *FAST, "--method", "fora", "--set", "interval=2", "--out", "/tmp/never/g.png"])


def test_bench_rejects_a_method_for_another_family(capsys, tmp_path, monkeypatch):
    from stepcache.bench import arch

    monkeypatch.setitem(arch.DIT_XL_2, "num_layers", 1)  # keep the random model small: only the family matters
    argv = ["bench", "--model", "arch:dit-xl-2", "--method", "deepcache", "--out", str(tmp_path / "r.json")]
    assert cli.main(argv) == 2
    assert "cannot run on arch:dit-xl-2" in one_line_error(capsys)
    assert not (tmp_path / "r.json").exists()


# -- configs that do not fit the run ----------------------------------------------------------------


def test_generate_finds_a_config_that_does_not_fit_the_run_before_any_run(capsys, tmp_path, monkeypatch):
    from stepcache.bench import runner

    monkeypatch.setattr(runner, "measure", lambda *a, **k: pytest.fail("nothing may run"))
    argv = ["generate", *FAST, "--method", "fora", "--set", "interval=4", "--out", str(tmp_path / "g.png")]
    assert cli.main(argv) == 2
    assert "does not fit this run of 4 steps" in one_line_error(capsys)


def only(**fields):
    """--grid options that reduce every default grid of a method to the given fields."""
    fields = {"order": "0", "warmup": "0", "cooldown": "0", **fields}
    return [arg for name, values in fields.items() for arg in ("--grid", f"{name}={values}")]


def test_bench_skips_a_grid_config_that_does_not_fit_and_goes_on(capsys, tmp_path):
    out = tmp_path / "r.json"
    argv = ["bench", *FAST, "--repeats", "1", "--method", "fora", *only(interval="2,4"), "--no-plot",
            "--out", str(out)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "skipped fora interval=4: FORAConfig.interval=4 does not fit this run of 4 steps" in captured.err
    records = json.loads(out.read_text())["records"]
    assert [(r["kind"], r["label"]) for r in records] == [
        ("not_run", "fora interval=4"), ("uncached", "uncached 4 steps"), ("cached", "fora interval=2"),
        ("fewer_steps", "uncached 2 steps")]
    # the summary table: the config, its speedups and fidelity, how it fares against fewer steps
    table = captured.out
    assert "MAC x" in table and "PSNR" in table and "fewer steps: 2" in table
    row = next(line for line in table.splitlines() if line.startswith("fora interval=2"))
    assert "1.98" in row and "dB vs 2 steps" in row
    assert "not run: fora interval=4" in table


def test_bench_where_no_config_fits_is_a_usage_error_before_any_run(capsys, tmp_path):
    argv = ["bench", *FAST, "--method", "fora", *only(interval="4,5"), "--no-plot", "--out", str(tmp_path / "r.json")]
    assert cli.main(argv) == 2
    assert "no config can run on zoo:dit-digits with 4 steps" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


# -- Ctrl-C ---------------------------------------------------------------------------------------


def interrupt_at(monkeypatch, call: int) -> None:
    from stepcache.bench import runner

    measure, calls = runner.measure, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return measure(*args, **kwargs)

    monkeypatch.setattr(runner, "measure", interrupted)


def test_ctrl_c_before_any_record_says_nothing_was_written(capsys, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 1)
    out = tmp_path / "sub" / "r.json"
    argv = ["bench", *FAST, "--repeats", "1", "--method", "fora", *only(interval="2"), "--no-plot", "--out", str(out)]
    assert cli.main(argv) == 130
    assert last_line(capsys) == "stepcache bench: interrupted; nothing was written"
    assert not (tmp_path / "sub").exists()


def test_ctrl_c_after_a_record_names_the_file_that_keeps_it(capsys, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 2)
    out = tmp_path / "r.json"
    argv = ["bench", *FAST, "--repeats", "1", "--method", "fora", *only(interval="2"), "--no-plot", "--out", str(out)]
    assert cli.main(argv) == 130
    assert last_line(capsys).startswith(f"stepcache bench: interrupted; kept {out} ")
    assert [r["kind"] for r in json.loads(out.read_text())["records"]] == ["uncached"]


def test_ctrl_c_in_generate_writes_nothing_and_says_so(capsys, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 2)
    argv = ["generate", *FAST, "--method", "fora", "--set", "interval=2", "--out", str(tmp_path / "g.png")]
    assert cli.main(argv) == 130
    assert last_line(capsys) == "stepcache generate: interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


# -- generate ---------------------------------------------------------------------------------------


def test_generate_writes_grid_and_summary_with_one_timed_pair_and_progress(tmp_path, capsys):
    out = tmp_path / "grid.png"
    argv = ["generate", *FAST, "--method", "fora", "--set", "interval=2", "--out", str(out)]
    assert cli.main(argv) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["config"] == {"method": "fora", "interval": 2, "sublayers": None, "warmup": 0, "cooldown": 0,
                                 "convention": "stepcache", "order": 0}
    assert summary["cached"]["cached_steps"] == 2 and summary["speedup_macs"] > 1
    assert summary["timed_pairs"] == 1 and len(summary["cached"]["wall_s"]["runs"]) == 1
    assert out.stat().st_size > 0
    captured = capsys.readouterr()
    assert "MACs" in captured.out and "timed pair 1/1" in captured.err  # progress goes to stderr


def test_generate_takes_a_config_file_and_more_pairs(tmp_path):
    from PIL import Image

    (tmp_path / "cfg.yaml").write_text("method: fora\ninterval: 3\n")
    out = tmp_path / "grid.png"
    argv = ["generate", *FAST, "--config", str(tmp_path / "cfg.yaml"), "--set", "interval=2", "--pairs", "2",
            "--out", str(out)]
    assert cli.main(argv) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["config"]["interval"] == 2 and len(summary["cached"]["wall_s"]["runs"]) == 2
    # two rows of 4x-upscaled 16 px images, each under a label band, with a gap between them
    from stepcache.bench.generate import GRID_SCALE, LABEL_HEIGHT, ROW_GAP

    assert Image.open(out).height == 2 * (16 * GRID_SCALE + LABEL_HEIGHT) + ROW_GAP


def test_a_config_file_for_another_method_than_method_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "cfg.json").write_text('{"method": "fora", "interval": 2}')
    assert cli.main(["generate", "--method", "teacache", "--config", str(tmp_path / "cfg.json")]) == 2
    assert "is a fora config and --method says teacache" in one_line_error(capsys)


def test_help_imports_no_model_code():
    """`stepcache --help` stays fast: it must not import diffusers' model classes."""
    import subprocess
    import sys

    code = ("import sys, stepcache.cli as cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('diffusers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_bench_with_only_a_config_file_measures_that_config(tmp_path, capsys):
    (tmp_path / "cfg.json").write_text('{"method": "fora", "interval": 2, "order": 1}')
    out = tmp_path / "r.json"
    argv = ["bench", *FAST, "--repeats", "1", "--config", str(tmp_path / "cfg.json"), "--no-plot", "--out", str(out)]
    assert cli.main(argv) == 0
    records = json.loads(out.read_text())["records"]
    assert [(r["kind"], r["label"]) for r in records] == [
        ("uncached", "uncached 4 steps"), ("cached", "fora order=1 interval=2"), ("fewer_steps", "uncached 2 steps")]
    assert records[1]["config"]["order"] == 1


def test_bench_runs_t_gate_on_a_zoo_pipeline(tmp_path):
    out = tmp_path / "r.json"
    argv = ["bench", "--model", "zoo:unet-shapes", "--steps", "4", "--batch", "1", "--repeats", "1",
            "--method", "tgate", "--grid", "gate_step=0.5", "--no-baseline", "--no-plot", "--out", str(out)]
    assert cli.main(argv) == 0
    records = json.loads(out.read_text())["records"]
    assert [(r["kind"], r["label"]) for r in records] == [("uncached", "uncached 4 steps"),
                                                         ("cached", "tgate gate_step=0.5")]


def test_generate_takes_a_published_preset_with_changes(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert cli.main(["generate", *FAST, "--preset", "fora-dit", "--set", "interval=2", "--out", str(out)]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["config"]["method"] == "fora" and summary["config"]["interval"] == 2
    assert summary["config"]["convention"] == "reference"  # the preset's, kept under --set


@pytest.mark.parametrize("argv, message", [
    (["generate", "--preset", "fora-xl"], "unknown preset 'fora-xl'; presets: adacache-100"),
    (["generate", "--preset", "fora-dit", "--method", "teacache"], "preset fora-dit is a fora config"),
    (["generate", "--preset", "fora-dit", "--config", "x.json"], "give --config FILE or --preset NAME, not both"),
])
def test_preset_mistakes_are_usage_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in one_line_error(capsys)


def test_methods_lists_each_methods_presets(capsys):
    from stepcache import presets

    assert cli.main(["methods"]) == 0
    listing = capsys.readouterr().out
    for name, preset in presets.PRESETS.items():
        assert f"    {name}: {preset.steps} steps, {preset.source}" in listing
