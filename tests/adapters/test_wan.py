"""Wan 2.2's two-stage pipeline: both denoisers found, cached under one handle, with stats for each."""

import pytest
import torch

import stepcache
import tiny
from stepcache.api import find_denoisers

STEPS = 8  # transformer runs steps 0-2 (timesteps at or above the 0.875 boundary), transformer_2 steps 3-7


def _pipe():
    pipe = tiny.wan_pipeline(two_stage=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe):
    with torch.no_grad():
        return pipe(**tiny.wan_call_kwargs(), num_inference_steps=STEPS, output_type="latent",
                    generator=torch.Generator().manual_seed(0)).frames


def test_both_denoisers_are_found_the_first_stage_first():
    pipe = _pipe()
    assert find_denoisers(pipe) == ([("transformer", pipe.transformer), ("transformer_2", pipe.transformer_2)], pipe)
    wan21 = tiny.wan_pipeline()  # Wan 2.1: transformer_2 is None
    assert find_denoisers(wan21) == ([("transformer", wan21.transformer)], wan21)


def test_one_handle_caches_both_stages_and_reports_each():
    pipe = _pipe()
    reference = _run(pipe)
    handle = stepcache.apply(pipe, stepcache.FORAConfig(interval=2))
    _run(pipe)
    stats = handle.stats()
    # step 1 reuses transformer's step 0; transformer_2 first runs step 3 in full, then reuses at 5 and 7
    assert stats["cached_step_indices"] == [1, 5, 7]
    assert set(stats["denoisers"]) == {"transformer", "transformer_2"}
    assert all(d["class"] == "WanTransformer3DModel" and d["cached_modules"] > 0 for d in stats["denoisers"].values())
    with pytest.raises(RuntimeError, match="already has a fora cache"):
        stepcache.apply(pipe.transformer_2, stepcache.FORAConfig())
    handle.remove()
    assert torch.equal(_run(pipe), reference)
    stepcache.apply(pipe.transformer_2, stepcache.FORAConfig()).remove()  # both models are free again


def test_tgate_refuses_a_gate_before_the_second_stage_takes_over():
    pipe = _pipe()
    with stepcache.cached(pipe, stepcache.TGateConfig(gate_step=2)):
        with pytest.raises(RuntimeError, match="first ran after it"):
            _run(pipe)
    with stepcache.cached(pipe, stepcache.TGateConfig(gate_step=5)) as handle:
        _run(pipe)
        assert handle.stats()["denoisers"]["transformer_2"]["cross_attn_reused_steps"] == [5, 6, 7]


def test_calibration_takes_the_pairs_of_both_stages():
    pipe = _pipe()
    calibration = stepcache.calibrate(pipe, **tiny.wan_call_kwargs(), num_inference_steps=STEPS, output_type="latent",
                                      seeds=(0,), degree=1)
    # split CFG, 2 branches: transformer compares steps 1-2 with the step before, transformer_2 steps 4-7
    assert calibration.model_class == "WanTransformer3DModel" and calibration.num_samples == 2 * (2 + 4)


def test_token_frames_names_the_runs_of_tokens_each_input_frame_feeds():
    """Changing one input frame changes exactly that frame's run of the first block's tokens (AdaCache's MoReg
    compares these runs)."""
    from stepcache.adapters import adapter_for

    model = tiny.wan()
    adapter = adapter_for(model)
    inputs = tiny.model_inputs("wan", model, batch=1)
    frames = adapter.token_frames((), inputs)
    assert frames == inputs["hidden_states"].shape[2] == 3
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    changed = dict(inputs, hidden_states=inputs["hidden_states"].clone())
    changed["hidden_states"][:, :, 1] += 1.0
    with torch.no_grad():
        model(**inputs)
        model(**changed)
    differs = (seen[0] != seen[1]).any(dim=-1)[0].reshape(frames, -1)
    assert differs[1].all() and not differs[0].any() and not differs[2].any()
