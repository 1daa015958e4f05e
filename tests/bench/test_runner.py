import json
import statistics

import pytest
import torch

import stepcache
import tiny
from bench.toy import ToyConfig
from stepcache.bench import runner
from stepcache.bench.report import benchmarks_markdown
from stepcache.bench.records import run_info

STEPS = 4


def bench(tmp_path, configs, **kwargs):
    pipe = tiny.dit_pipeline()
    return runner.run(pipe, configs, call_kwargs={"class_labels": [1, 2]}, num_steps=STEPS, repeats=1,
                      out=tmp_path / "r.json", progress=False, **kwargs)


def test_records_and_fewer_steps_baseline(tmp_path):
    records = bench(tmp_path, [ToyConfig(interval=2)], plot=tmp_path / "p.png")
    kinds = [r["kind"] for r in records]
    assert kinds == ["uncached", "cached", "fewer_steps"]
    uncached, cached, fewer = records
    assert cached["full_steps"] == 2 and cached["cached_steps"] == 2
    assert cached["speedup_macs"] > 1 and cached["cache_bytes"] > 0
    assert fewer["steps"] == round(STEPS * cached["mac_ratio"]) and fewer["matches"] == [cached["label"]]
    assert cached["fidelity"]["psnr"] < 100 and 0 < cached["fidelity"]["ssim"] < 1
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [r["label"] for r in saved["records"]] == [r["label"] for r in records]
    assert saved["records"][1]["config"] == {"method": "toy", "interval": 2, "scale": 1.0, "warmup": 0, "cooldown": 0,
                                          "convention": "stepcache"}
    assert saved["run"]["torch"] and saved["run"]["date"] and saved["schema_version"] == 1
    assert (tmp_path / "p.png").stat().st_size > 0
    text = benchmarks_markdown([{"model": "tiny", "records": records, "plot": "p.png"}], run_info(torch.device("cpu")),
                               "cmd", [], quick=True)
    assert "fewer steps: " in text and "toy interval=2" in text


def test_interrupted_run_keeps_finished_records(tmp_path, monkeypatch):
    measure = runner.measure
    calls = []

    def interrupted(sampler, config, *args, **kwargs):
        calls.append(config)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return measure(sampler, config, *args, **kwargs)

    monkeypatch.setattr(runner, "measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench(tmp_path, [ToyConfig(interval=2), ToyConfig(interval=3)])
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [r["kind"] for r in saved["records"]] == ["uncached", "cached"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_zoo_model_gets_feature_distance_and_distribution_scores():
    from stepcache.bench.samplers import zoo_sampler

    sampler = zoo_sampler("dit-digits", num_steps=3, batch=2, distribution_samples=10)
    records = runner.run(sampler, [ToyConfig(interval=2)], repeats=1, progress=False, fewer_steps_baseline=False)
    uncached, cached = records
    assert uncached["fidelity"]["feature_distance"] == 0.0 < cached["fidelity"]["feature_distance"]
    scores = cached["distribution"]
    assert scores["samples"] == 10 and len(scores["per_seed_set"]) == 2
    assert 0 <= scores["accuracy"] <= 1 and scores["frechet"] > 0 and scores["frechet_spread"] >= 0


def test_each_timed_run_follows_an_uncached_run():
    # pairs see the same machine speed even when a shared host drifts over minutes
    from stepcache import api
    from stepcache.bench.samplers import pipeline_sampler

    pipe = tiny.dit_pipeline()
    sampler = pipeline_sampler(pipe, {"class_labels": [1, 2]}, num_steps=STEPS)
    calls, sample = [], sampler.sample

    def spy(steps, seed):
        calls.append((steps, pipe.transformer in api._ACTIVE))
        return sample(steps, seed)

    sampler.sample = spy
    records = runner.run(sampler, [ToyConfig(interval=2)], repeats=3, progress=False)
    uncached, cached, fewer = records
    config_calls = calls[4:-7]  # after the uncached record (warm-up + 3), before the fewer-steps record
    assert config_calls == [(STEPS, True)] + [(STEPS, False), (STEPS, True)] * 3
    assert calls[-7:] == [(fewer["steps"], False)] + [(STEPS, False), (fewer["steps"], False)] * 3
    ratios = [r / t for r, t in zip(cached["reference_wall_s"]["runs"], cached["wall_s"]["runs"])]
    assert len(ratios) == 3 and cached["speedup_wall"] == statistics.median(ratios)
    assert uncached["reference_wall_s"] is None and pipe.transformer not in api._ACTIVE


def test_results_files_are_readable_by_others_like_any_file_the_user_writes(tmp_path):
    import os

    from stepcache.bench.records import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "r.json", {"records": []})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_a_config_is_refused_before_any_run_only_when_it_cannot_run_with_any_call_layout():
    # a user's pipeline tells its CFG layout only when called: T-GATE's cfg="auto" is not refused for it
    from stepcache import TGateConfig
    from stepcache.bench.samplers import pipeline_sampler

    sampler = pipeline_sampler(tiny.sd_pipeline(), tiny.sd_call_kwargs(), num_steps=STEPS)
    assert runner.cannot_run(sampler, TGateConfig(gate_step=0.5), STEPS) is None
    assert "falls on step 0" in runner.cannot_run(sampler, TGateConfig(gate_step=0.1), STEPS)
    sampler.cfg = "none"  # a known layout is the only one tried
    assert runner.cannot_run(sampler, TGateConfig(cfg="none"), STEPS) is None
    assert "does not run classifier-free guidance" in runner.cannot_run(sampler, TGateConfig(cfg="batched"), STEPS)


def test_cache_bytes_count_both_denoisers_of_a_two_stage_pipeline(tmp_path):
    """Wan 2.2: ``transformer_2`` takes the late steps while ``transformer``'s cache is still held."""
    config = stepcache.FORAConfig(interval=2)
    pipe, kwargs = tiny.wan_pipeline(two_stage=True), tiny.wan_call_kwargs()
    held = []  # per step: each denoiser's cache bytes at the step's end

    def step_end(pipe, step, timestep, tensors):
        held.append([stats["cache_bytes"] for stats in handle.stats()["denoisers"].values()])
        return tensors

    with stepcache.cached(pipe, config) as handle:
        pipe(**kwargs, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), output_type="pt",
             callback_on_step_end=step_end)
    assert min(held[-1]) > 0  # both denoisers hold a cache at the last step
    cached = runner.run(pipe, [config], call_kwargs=kwargs, num_steps=STEPS, repeats=0, progress=False)[1]
    assert cached["kind"] == "cached" and cached["cache_bytes"] == max(sum(step) for step in held)
