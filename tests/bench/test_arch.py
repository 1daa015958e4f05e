import json

from bench.toy import ToyConfig
from stepcache.bench import arch, runner
from stepcache.bench.report import benchmarks_markdown, terminal_table


def test_configs_are_the_published_sizes():
    assert arch.DIT_XL_2["num_layers"] == 28 and arch.DIT_XL_2["num_attention_heads"] * 72 == 1152
    assert arch.PIXART_ALPHA_512["caption_channels"] == 4096 and arch.PIXART_ALPHA_512["sample_size"] == 64
    assert arch.SD15_UNET["block_out_channels"] == (320, 640, 1280, 1280)
    assert arch.SD15_UNET["cross_attention_dim"] == 768


def test_speed_only_run_on_a_shrunk_arch_model(tmp_path):
    sampler = arch.arch_sampler("dit-xl-2", num_steps=4, num_layers=1, latent_size=8)
    records = runner.run(sampler, [ToyConfig(interval=2)], repeats=1, progress=False, fewer_steps_baseline=False,
                         out=tmp_path / "r.json")
    cached = records[1]
    assert cached["fidelity"] is None and cached["speedup_macs"] > 1.5
    assert cached["wall_over_mac_speedup"] == cached["speedup_wall"] / cached["speedup_macs"]
    # wall time only follows MACs in the compute-bound regime, so the size a figure was measured at is kept with it
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["run"]["setup"].startswith("8x8 latents (64x64 px), batch 1")
    text = benchmarks_markdown([{"model": sampler.name, "records": records, "plot": "p.png", "run": saved["run"]}],
                               saved["run"], "cmd", [], quick=False)
    assert "Each run: 8x8 latents (64x64 px)" in text
    # the terminal summary of a speed-only run: wall against MAC speedup, no quality columns
    table = terminal_table(records).splitlines()
    assert "wall/MAC" in table[0] and "PSNR" not in table[0]
    assert table[3].split()[-1] == f"{cached['wall_over_mac_speedup']:.0%}"


def test_methods_with_a_cfg_field_are_told_the_loop_runs_batched_cfg():
    from stepcache.methods import METHODS

    defaults = arch.batched_cfg_defaults()
    assert defaults and all(v == {"cfg": "batched"} for v in defaults.values())
    assert all("cfg" in METHODS[name].__dataclass_fields__ for name in defaults)


def test_every_method_for_the_family_applies_to_a_bare_arch_model():
    # a bare model has no pipeline to read CFG from: the sampler's defaults name it, so T-GATE applies
    sampler = arch.arch_sampler("sd15-unet", num_steps=4, latent_size=8, block_out_channels=(32, 32, 32, 32),
                                attention_head_dim=2)
    assert runner.does_not_apply(sampler.target, "tgate", sampler.config_defaults["tgate"]) is None
    assert runner.does_not_apply(sampler.target, "deepcache") is None
    assert "has no transformer denoiser" in runner.does_not_apply(sampler.target, "fora")
