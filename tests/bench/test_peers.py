"""Peers in the harness: other libraries' caches measured like stepcache's, reported where they do not apply,
and taken off so that every later run is bit-identical to the untouched pipeline."""

import pytest
import torch

import tiny
from stepcache import cli
from stepcache.bench import peers, runner
from stepcache.bench.peers import PeerConfig, peer_configs
from stepcache.bench.records import run_info
from stepcache.bench.report import benchmarks_markdown, front_value
from stepcache.bench.samplers import pipeline_sampler

STEPS = 4  # DDIM timesteps 751, 501, 251, 1

# one setting per diffusers cache, each caching something within 4 steps
DIFFUSERS_PEERS = [
    PeerConfig("diffusers.FirstBlockCache", (("threshold", 0.5),)),
    PeerConfig("diffusers.TaylorSeerCache", (("cache_interval", 2), ("max_order", 1), ("disable_cache_before_step", 1),
                                             ("taylor_factors_dtype", "float32"),
                                             ("cache_identifiers", (r"transformer_blocks\.\d+\.(attn1|ff)",)))),
    PeerConfig("diffusers.MagCache", (("threshold", 10.0), ("max_skip_steps", 2), ("retention_ratio", 0.2))),
    PeerConfig("diffusers.FasterCache", (("spatial_attention_block_skip_range", 2),
                                         ("spatial_attention_timestep_skip_range", (-1, 1001)),
                                         ("unconditional_batch_skip_range", 2),
                                         ("unconditional_batch_timestep_skip_range", (-1, 1001)))),
    PeerConfig("diffusers.PyramidAttentionBroadcast", (("spatial_attention_block_skip_range", 2),
                                                       ("cross_attention_block_skip_range", 2))),
]


def _untouched(pipe) -> bool:
    """No peer left anything on the denoiser: its own class, no hook registries, no instance forward."""
    model = pipe.transformer if hasattr(pipe, "transformer") else pipe.unet
    return type(model).__module__.startswith("diffusers") and "CacheMixin" not in [c.__name__ for c in type(model).__mro__] \
        and not any("_diffusers_hook" in m.__dict__ or "forward" in m.__dict__ for m in model.modules())


def _bench(pipe, call_kwargs, configs):
    """Run the harness with ``configs`` as peers; also every image an untouched pipeline produced meanwhile."""
    sampler = pipeline_sampler(pipe, call_kwargs, num_steps=STEPS)
    clean_runs, sample = [], sampler.sample

    def spy(steps, seed):
        images = sample(steps, seed)
        if steps == STEPS and _untouched(pipe):
            clean_runs.append(images)
        return images

    sampler.sample = spy
    records = runner.run(sampler, [], peers=configs, repeats=1, progress=False, fewer_steps_baseline=False)
    return sampler, records, clean_runs


@pytest.mark.filterwarnings("ignore:torch.meshgrid")  # inside FasterCache
def test_each_diffusers_cache_that_applies_gets_a_row_and_leaves_no_trace():
    pipe = tiny.pixart_pipeline()
    sampler, records, clean_runs = _bench(pipe, tiny.pixart_call_kwargs(), DIFFUSERS_PEERS)
    uncached, *rows = records
    assert [r["kind"] for r in rows] == ["peer"] * len(DIFFUSERS_PEERS), [r.get("reason") for r in rows]
    for row, config in zip(rows, DIFFUSERS_PEERS):
        assert row["label"] == config.label and row["config"]["version"] and row["config"]["package"] == "diffusers"
        assert row["full_steps"] + row["cached_steps"] == STEPS and len(row["step_macs"]) == STEPS
        assert row["speedup_macs"] > 1 and row["fidelity"]["psnr"] < 100, row["label"]
        assert row["peer"]["hooked_modules"] and row["wall_s"]["runs"] and row["reference_wall_s"]["runs"]
    assert rows[2]["peer"]["calibration"]["steps"] == STEPS  # MagCache calibrated on the same pipeline first
    assert len(rows[2]["peer"]["calibration"]["mag_ratios"]) == STEPS
    # every run between the peers (the timed uncached runs, the calibration's end) is the untouched pipeline's
    assert len(clean_runs) >= 1 + len(DIFFUSERS_PEERS)
    assert all(torch.equal(images, uncached["_images"]) for images in clean_runs)
    assert _untouched(pipe) and torch.equal(sampler.sample(STEPS, 0), uncached["_images"])


def test_a_peer_that_does_not_apply_is_reported_with_the_reason(tmp_path):
    pipe = tiny.sd_pipeline()
    configs = [PeerConfig("diffusers.FirstBlockCache", (("threshold", 0.1),)),
               PeerConfig("diffusers.TaylorSeerCache", (("cache_identifiers", (r"transformer_blocks\.\d+\.ff",)),)),
               PeerConfig("diffusers.PyramidAttentionBroadcast", (("spatial_attention_block_skip_range", 2),))]
    sampler, records, clean_runs = _bench(pipe, tiny.sd_call_kwargs(), configs)
    uncached, fbc, taylorseer, pab = records
    assert fbc["kind"] == taylorseer["kind"] == "peer_not_run"
    assert "does not apply" in fbc["reason"] and "UNet2DConditionModel has none" in fbc["reason"]
    assert "hooks no module of UNet2DConditionModel" in taylorseer["reason"] and "attn1" in taylorseer["reason"]
    assert pab["kind"] == "peer" and pab["speedup_macs"] > 1  # PAB finds the U-Net's attention by name
    assert all(torch.equal(images, uncached["_images"]) for images in clean_runs)
    text = benchmarks_markdown([{"model": "tiny", "records": records, "plot": "p.png"}],
                               run_info(torch.device("cpu")), "cmd", [], quick=True)
    assert "Peers not run here:" in text and "diffusers.FirstBlockCache (1 setting): does not apply" in text
    assert "| diffusers PyramidAttentionBroadcast |" in text  # in the comparison at fixed speedups
    assert _untouched(pipe)


def test_a_peer_that_fails_mid_run_is_reported_and_removed():
    # diffusers 0.42.1's FasterCache reads tensor, tuple or Transformer2DModelOutput outputs, not a U-Net's
    pipe = tiny.sd_pipeline()
    _, records, clean_runs = _bench(pipe, tiny.sd_call_kwargs(), [PeerConfig("diffusers.FasterCache")])
    uncached, faster = records
    assert faster["kind"] == "peer_not_run" and faster["reason"].startswith("failed: ")
    assert _untouched(pipe) and torch.equal(pipe_sample(pipe), uncached["_images"])


def pipe_sample(pipe):
    return pipeline_sampler(pipe, tiny.sd_call_kwargs(), num_steps=STEPS).sample(STEPS, 0)


def test_missing_package_or_wrong_model_is_reported(monkeypatch):
    pipe = tiny.dit_pipeline()
    sampler = pipeline_sampler(pipe, {"class_labels": [1, 2]}, num_steps=STEPS)
    record = runner.measure_peer(sampler, PeerConfig("DeepCache.DeepCacheSDHelper", (("cache_interval", 2),)),
                                 STEPS, 1, 0, reference={})
    assert record["kind"] == "peer_not_run" and ("not installed" in record["reason"] or ".unet" in record["reason"])
    monkeypatch.setattr(peers.CacheDiTPeer, "version", lambda self: None)
    record = runner.measure_peer(sampler, PeerConfig("cache-dit.DBCache"), STEPS, 1, 0, reference={})
    assert record["reason"] == "does not apply: cache-dit is not installed (pip install 'stepcache[peers]')"


def test_cache_dit_dbcache_row_on_a_dit_pipeline():
    pytest.importorskip("cache_dit")
    pipe = tiny.dit_pipeline()
    call = type(pipe).__dict__.get("__call__")
    config = PeerConfig("cache-dit.DBCache", (("Fn_compute_blocks", 1), ("Bn_compute_blocks", 0), ("max_warmup_steps", 1),
                                               ("residual_diff_threshold", 10.0), ("taylorseer_order", 1)))
    _, records, clean_runs = _bench(pipe, {"class_labels": [1, 2]}, [config])
    uncached, row = records
    assert row["kind"] == "peer", row.get("reason")
    assert row["speedup_macs"] > 1 and row["cached_steps"] > 0 and row["config"]["version"]
    assert all(torch.equal(images, uncached["_images"]) for images in clean_runs) and len(clean_runs) >= 2
    assert type(pipe).__dict__.get("__call__") is call and "_is_cached" not in type(pipe).__dict__
    assert _untouched(pipe) and "_norm1_emb" not in pipe.transformer._modules


def test_deepcache_package_row_on_a_unet_pipeline():
    pytest.importorskip("DeepCache")
    pipe = tiny.sd_pipeline()
    config = PeerConfig("DeepCache.DeepCacheSDHelper", (("cache_interval", 2), ("cache_branch_id", 0)))
    _, records, clean_runs = _bench(pipe, tiny.sd_call_kwargs(), [config])
    uncached, row = records
    assert row["kind"] == "peer", row.get("reason")
    assert row["speedup_macs"] > 1 and row["full_steps"] == 2 and row["cached_steps"] == 2
    assert row["cache_bytes"] > 0
    assert all(torch.equal(images, uncached["_images"]) for images in clean_runs) and len(clean_runs) >= 2
    assert _untouched(pipe)


def test_peer_grids_and_names():
    configs = peer_configs(["diffusers.TaylorSeerCache"])
    assert len(configs) == 6 and {c.values["cache_interval"] for c in configs} == {2, 3, 5}
    assert all(c.values["disable_cache_before_step"] == 3 and c.values["taylor_factors_dtype"] == "float32"
               for c in configs)
    assert len(peer_configs(["cache-dit.DBCache"])) == 3 and len(peer_configs(["DeepCache.DeepCacheSDHelper"])) == 3
    with pytest.raises(ValueError, match="unknown peer 'nope'; known peers: diffusers.FirstBlockCache"):
        peer_configs(["nope"])


def test_bench_command_rejects_an_unknown_peer_before_loading(capsys):
    assert cli.main(["bench", "--model", "zoo:dit-digits", "--peers", "diffusers.Nope"]) == 2
    assert "unknown peer 'diffusers.Nope'" in capsys.readouterr().err


def test_front_value_interpolates_along_the_pareto_front():
    points = [(1.5, 30.0, {}), (2.0, 26.0, {}), (1.8, 25.0, {}), (3.0, 20.0, {})]  # 1.8x is dominated by 2.0x
    assert front_value(points, 1.5)[0] == 30.0
    assert front_value(points, 1.75)[0] == pytest.approx(28.0)
    assert front_value(points, 2.5)[0] == pytest.approx(23.0)
    assert front_value(points, 3.05)[0] == 20.0  # within 2% of the front's end
    assert front_value(points, 1.2)[::2] == (30.0, True)  # a faster config reaches 30 dB: a lower bound
    assert front_value(points, 2.5)[2] is False
    assert front_value(points, 3.5) is None and front_value([], 2.0) is None
