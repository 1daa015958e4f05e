import json

import pytest

import stepcache
from stepcache import cli
from stepcache.bench import tune as tuning
from stepcache.bench.samplers import zoo_sampler
from stepcache.bench.tune import Target
from stepcache.errors import UsageError


def test_targets_parse_with_the_direction_each_metric_improves_in():
    assert Target.parse("psnr>=30") == Target("psnr", ">=", 30.0)
    assert Target.parse("feature_distance <= 0.05") == Target("feature_distance", "<=", 0.05)
    for text, message in [("psnr<=30", "give psnr>=VALUE"), ("lpips>=1", "unknown target metric"),
                          ("psnr=30", "METRIC>=VALUE"), ("ssim>=high", "not a number")]:
        with pytest.raises(UsageError, match=message):
            Target.parse(text)


def fake(label, method, speedup, psnr, steps=None, **config):
    kind = "fewer_steps" if method is None else "cached"
    record = {"kind": kind, "label": label, "speedup_macs": speedup, "fidelity": {"psnr": psnr}, "matches": []}
    record["config"] = None if method is None else {"method": method, "warmup": 0, "cooldown": 0,
                                                    "convention": "stepcache", "order": 0, **config}
    record["steps"] = steps
    return record


def test_a_config_qualifies_only_if_it_meets_the_target_and_beats_fewer_steps_at_its_speed():
    goal = Target.parse("psnr>=30")
    fast = fake("fora interval=4", "fora", 3.5, 31.0, interval=4, sublayers=None)
    slow = fake("fora interval=2", "fora", 1.9, 40.0, interval=2, sublayers=None)
    fewer_fast = fake("uncached 7 steps", None, 3.6, 32.0, steps=7)  # fewer steps is better here: not worth it
    fewer_slow = fake("uncached 13 steps", None, 1.9, 25.0, steps=13)
    fewer_fast["matches"], fewer_slow["matches"] = [fast["label"]], [slow["label"]]
    records = [fast, slow, fewer_fast, fewer_slow]
    assert tuning._fastest_qualifying(goal, records) is slow
    # the refinement looks half-way to the next faster config of the method
    assert tuning._between(goal, slow, records) == stepcache.FORAConfig(interval=3)
    assert tuning.pareto_front(goal, records) == [fast, slow]
    # floats are halved to a value a user would write
    slow_tea = fake("teacache threshold=0.1", "teacache", 1.9, 40.0, threshold=0.1, coefficients=None)
    fast_tea = fake("teacache threshold=0.2", "teacache", 2.5, 20.0, threshold=0.2, coefficients=None)
    fewer_slow["matches"].append(slow_tea["label"])
    between = tuning._between(goal, slow_tea, [*records, slow_tea, fast_tea])
    assert between == stepcache.TeaCacheConfig(threshold=0.15)


def test_tune_returns_the_fastest_config_that_qualifies_with_its_front():
    sampler = zoo_sampler("dit-digits", num_steps=8, batch=2)
    result = stepcache.tune(sampler, "psnr>=30", methods=["fora"], refine=1, progress=False)
    goal, chosen = result.target, result.record
    assert result.config is not None and result.config.method == "fora"
    assert goal.met(chosen) and goal.score(chosen) > goal.score(result.baseline)
    assert result.baseline["steps"] < 8 and chosen["label"] in result.baseline["matches"]
    cached = [r for r in result.records if r["kind"] == "cached"]
    assert all(r["speedup_macs"] <= chosen["speedup_macs"] or not result.qualifies(r) for r in cached)
    assert chosen in result.front


def test_tune_command_writes_a_config_file_that_apply_takes(tmp_path, capsys):
    out = tmp_path / "tuned.json"
    argv = ["tune", "--model", "zoo:dit-digits", "--steps", "8", "--batch", "2", "--target", "psnr>=30",
            "--method", "fora", "--refine", "0", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "Pareto front" in printed and "CHOSEN" in printed
    config = stepcache.load_config(out)
    assert config.method == "fora" and json.loads(out.read_text())["method"] == "fora"
    pipe = stepcache.zoo.load("dit-digits")
    stepcache.apply(pipe, out).remove()


def test_tune_command_with_an_unreachable_target_writes_nothing(tmp_path, capsys):
    out = tmp_path / "tuned.json"
    argv = ["tune", "--model", "zoo:dit-digits", "--steps", "6", "--batch", "1", "--target", "psnr>=200",
            "--method", "fora", "--refine", "0", "--out", str(out)]
    assert cli.main(argv) == 1
    assert "no config meets psnr>=200" in capsys.readouterr().out and not out.exists()


def test_where_fewer_steps_do_as_well_tune_says_how_many():
    goal = Target.parse("psnr>=30")
    cached = fake("fora interval=2", "fora", 2.0, 31.0, interval=2, sublayers=None)
    fewer = [fake("uncached 5 steps", None, 2.0, 32.0, steps=5), fake("uncached 4 steps", None, 2.5, 30.5, steps=4),
             fake("uncached 3 steps", None, 3.3, 21.0, steps=3)]
    fewer[0]["matches"] = [cached["label"]]
    result = tuning.TuneResult(goal, None, None, None, [cached], [cached, *fewer])
    assert result.fewer_steps is fewer[1]


@pytest.mark.parametrize("argv, message", [
    (["--target", "psnr>=30"], "--model is required"),
    (["--model", "zoo:dit-digits"], "--target is required"),
    (["--model", "arch:dit-xl-2", "--target", "psnr>=30"], "no quality to tune against"),
    (["--model", "zoo:dit-digits", "--target", "accuracy>=0.9"], "needs distribution samples"),
    (["--model", "zoo:dit-digits", "--target", "psnr>=30", "--set", "nosuch=1"], "no method has a field"),
    (["--model", "zoo:unet-shapes", "--target", "psnr>=30", "--method", "fora"], "fora cannot run on zoo:unet-shapes"),
])
def test_tune_mistakes_are_usage_errors(argv, message, capsys, tmp_path):
    assert cli.main(["tune", *argv, "--steps", "4", "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_tune_runs_on_a_diffusers_pipeline_called_with_the_users_inputs():
    import tiny

    pipe = tiny.dit_pipeline()
    result = stepcache.tune(pipe, "ssim>=0.5", call_kwargs={"class_labels": [3]}, num_steps=4, methods=["fora"],
                            refine=0, progress=False)
    kinds = {r["label"]: r["kind"] for r in result.records}
    assert kinds["uncached 4 steps"] == "uncached" and kinds["fora interval=2"] == "cached"
    assert kinds["fora interval=5"] == "not_run"  # does not fit 4 steps: skipped, the search goes on
    assert all(r["steps"] == 4 for r in result.records if r["kind"] == "cached") and result.front
