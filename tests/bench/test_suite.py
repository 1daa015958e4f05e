import pytest

from stepcache.bench import suite


@pytest.mark.parametrize("argv, message", [
    (["--arch-latent", "0"], "--arch-latent must be >= 1, got 0"),
    (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["--models", "arch:nope"], "unknown suite model(s) arch:nope"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, message, tmp_path, capsys):
    code = suite.main([*argv, "--out", str(tmp_path / "B.md"), "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "B.md").exists()


def test_render_only_lists_models_without_results_as_not_measured(tmp_path):
    assert suite.main(["--render-only", "--out", str(tmp_path / "B.md"), "--results-dir", str(tmp_path / "r")]) == 0
    text = (tmp_path / "B.md").read_text()
    assert "## Not measured" in text and all(f"- {m}" in text for m in suite.suite_models())


def test_peers_flag_hands_every_peer_grid_to_the_harness(tmp_path, monkeypatch):
    from stepcache.bench.peers import peer_configs

    calls = []
    monkeypatch.setattr(suite, "run", lambda sampler, configs, **kwargs: calls.append(kwargs))
    argv = ["--peers", "--repeats", "2", "--models", "zoo:dit-digits", "--out", str(tmp_path / "B.md"),
            "--results-dir", str(tmp_path / "r")]
    assert suite.main(argv) == 0
    assert calls[0]["peers"] == peer_configs() and calls[0]["repeats"] == 2
    assert "--peers --repeats 2" in (tmp_path / "B.md").read_text()
