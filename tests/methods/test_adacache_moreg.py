"""AdaCache's motion regularisation (MoReg): the motion score, its factor on the rate and the schedule it gives."""

import contextlib
import dataclasses

import pytest
import torch

import stepcache
import tiny
from stepcache import zoo
from stepcache.adapters.base import FRAMES
from stepcache.adapters.dit import DiTAdapter
from stepcache.zoo import data
from stepcache.methods.adacache import frame_change, motion_score
from test_adacache import ADACACHE_PORT_EPS, NO_REUSE, _AdaCachePort, _generate, port_then_stepcache

STEPS = 8
DIT_FRAMES = 4  # the port test's tiny DiT: its 4 x 4 patch tokens, row-major, read as 4 frames of one row each
CAPTION = "a red circle moving left"


@pytest.fixture(scope="module")
def video():
    """The zoo's Wan video model (4 frames): real video tokens, from the Wan adapter's frame layout."""
    return zoo.load("wan-moving-shapes")


def _frames(pipe, config=None, steps=STEPS):
    """One unguided video (one sample per call: its rate is the step's rate), and the cache's stats."""
    with contextlib.ExitStack() as stack:
        handle = None if config is None else stack.enter_context(stepcache.cached(pipe, config))
        frames = pipe([CAPTION], num_inference_steps=steps, guidance_scale=1.0,
                      generator=torch.Generator().manual_seed(0), output_type="pt").frames
        return frames, None if handle is None else handle.stats()


@pytest.fixture
def frames_on_dit(monkeypatch):
    """A stand-in for a video adapter on the tiny DiT, for the port of the repository's DiT-free code."""
    monkeypatch.setattr(DiTAdapter, "capabilities", DiTAdapter.capabilities | {FRAMES})
    monkeypatch.setattr(DiTAdapter, "token_frames", lambda self, args, kwargs: DIT_FRAMES)


def test_motion_score_of_still_moving_and_half_moving_residuals():
    frames, per_frame, dim = 4, 6, 3
    still = torch.randn(per_frame, dim, generator=torch.Generator().manual_seed(0)).repeat(frames, 1)
    moving = torch.zeros(frames * per_frame, dim)
    for f in range(frames):
        moving[f * per_frame + f] = 1.0  # a spot one token further in every frame
    # the same spot beside a still part of three times its L1 norm: a quarter of the content moves
    half = moving.clone()
    for f in range(frames):
        half[f * per_frame + 5] = 3.0
    residuals = torch.stack([still, moving, half])
    for strides in [(1,), (2,), (1, 3)]:
        scores = motion_score(frame_change(residuals, frames, strides))
        tiny.assert_within_rounding(scores, torch.tensor([0.0, 1.0, 0.25]), 4)
    # pooled over the batch (the reference convention): summed changes (18 + 18) over summed scales (18 + 72)
    pooled = motion_score(frame_change(residuals[1:], frames, (1,)).sum(1))
    tiny.assert_within_rounding(pooled, torch.tensor(0.4), 4)


def test_motion_score_is_the_repositorys_pooled_formula():
    residual = torch.randn(2, 5 * 7, 3, generator=torch.Generator().manual_seed(1))
    spatial_dim, strides = 7, (1, 2)
    expected = 0
    for i in strides:  # the AdaCache repository's compute_next_step, verbatim but for names
        moreg_i = (residual[:, i * spatial_dim:, :] - residual[:, :-i * spatial_dim, :]).norm(p=1)
        moreg_i /= (residual[:, i * spatial_dim:, :].norm(p=1) + residual[:, :-i * spatial_dim, :].norm(p=1))
        expected += moreg_i
    expected = expected / len(strides)
    tiny.assert_within_rounding(motion_score(frame_change(residual, 5, strides).sum(1)), expected, 8)


def test_frames_must_split_the_tokens_and_exceed_the_strides():
    residual = torch.zeros(1, 12, 2)
    with pytest.raises(ValueError, match="12 tokens in 5 frames"):
        frame_change(residual, 5, (1,))
    with pytest.raises(ValueError, match="12 tokens in 4 frames"):
        frame_change(residual, 4, (4,))


def _residual_scores(pipe, steps=STEPS) -> list[float]:
    """Per step of an uncached run, the motion score of the block stack's residual, measured here by hooks."""
    blocks, inputs, scores = pipe.transformer.blocks, [], []
    hooks = [blocks[0].register_forward_pre_hook(lambda module, args: inputs.append(args[0])),
             blocks[-1].register_forward_hook(lambda module, args, out: scores.append(
                 motion_score(frame_change(out - inputs[-1], data.VIDEO_FRAMES, (1,))).item()))]
    try:
        _frames(pipe, steps=steps)
    finally:
        for hook in hooks:
            hook.remove()
    return scores


def test_factor_multiplies_the_rate_inside_the_window_with_its_gradient(video):
    scores = _residual_scores(video)
    plain_frames, plain = _frames(video, stepcache.AdaCacheConfig(codebook=NO_REUSE))
    norm, power, weight, window = 0.1, 2.0, 3.0, (2, 5)
    config = stepcache.AdaCacheConfig(codebook=NO_REUSE, moreg=True, moreg_norm=norm, moreg_power=power,
                                      moreg_gradient=weight, moreg_window=window)
    frames, stats = _frames(video, config)
    assert torch.equal(frames, plain_frames)  # every step full: MoReg changes only the rates
    # a rate for steps 1 .. STEPS-2; outside the window the factor is 1, and the gradient restarts at its start
    expected, previous = [], None
    for step in range(1, STEPS - 1):
        if not window[0] <= step <= window[1]:
            expected.append(1.0)
            previous = None
            continue
        normalised = (scores[step] / norm) ** power
        expected.append(normalised + (0.0 if previous is None else abs(weight * (normalised - previous))))
        previous = normalised
    assert len(set(expected)) > 3  # the motion differs from step to step
    tiny.assert_within_rounding(torch.tensor(stats["motion_factors"]), torch.tensor(expected), 64)
    tiny.assert_within_rounding(torch.tensor(stats["rates"]), torch.tensor(plain["rates"]) * torch.tensor(expected),
                                64)


def test_motion_sets_the_schedule(video):
    uncached, _ = _frames(video)
    always_3, never = ((1e9, 3),), ((1e-4, 3),)  # every rate below / above the threshold without MoReg
    moreg = dict(moreg=True, moreg_window=(0, STEPS))
    # a factor far above 1 (much motion for this norm) makes every rate too high to reuse: exactly uncached
    _, stats = _frames(video, stepcache.AdaCacheConfig(codebook=always_3))
    assert stats["cached_steps"] > 0
    frames, stats = _frames(video, stepcache.AdaCacheConfig(codebook=always_3, moreg_norm=1e-3, **moreg))
    assert stats["cached_steps"] == 0 and torch.equal(frames, uncached)
    # a factor near 0 (still content, no gradient) lets every residual serve the codebook's longest reuse
    _, stats = _frames(video, stepcache.AdaCacheConfig(codebook=never))
    assert stats["cached_steps"] == 0
    _, stats = _frames(video, stepcache.AdaCacheConfig(codebook=never, moreg_norm=1e3, moreg_gradient=0.0, **moreg))
    assert stats["full_step_indices"] == [0, 1, 4, 7] and max(stats["motion_factors"]) < 1e-6
    # a window after the run's end leaves AdaCache as it is without MoReg
    codebook = ((0.08, 3), (0.2, 2))
    plain_frames, plain = _frames(video, stepcache.AdaCacheConfig(codebook=codebook))
    frames, stats = _frames(video, stepcache.AdaCacheConfig(codebook=codebook, moreg=True, moreg_window=(STEPS, STEPS)))
    assert torch.equal(frames, plain_frames) and stats["full_step_indices"] == plain["full_step_indices"]
    assert stats["motion_factors"] == [1.0] * len(stats["rates"])


def test_reference_convention_follows_a_port_of_the_repositorys_moreg(frames_on_dit):
    steps = 14
    pipe = tiny.dit_pipeline()
    model = pipe.transformer
    # the repository's 30-step fast codebook, its moreg_steps (4, 26) scaled to the run (counted from 1)
    config = stepcache.presets.get("adacache-fast", moreg=True, moreg_window=(2, 10), moreg_norm=0.3,
                                   moreg_power=2.0, moreg_gradient=1.0)
    tokens = (model.config.sample_size // model.config.patch_size) ** 2
    moreg = dict(moreg_strides=config.moreg_strides, moreg_steps=(3, 11), spatial_dim=tokens // DIT_FRAMES,
                 moreg_hyp=(config.moreg_norm, config.moreg_power, 1, 2), mograd_mul=config.moreg_gradient)
    port = _AdaCachePort(model, steps, config.codebook, ((len(model.transformer_blocks) - 1) // 2,), moreg)
    expected, images, stats = port_then_stepcache(pipe, port, config, steps)
    assert stats["full_step_indices"] == port.recomputed_steps
    assert stats["cached_steps"] > 0 and any(f != 1.0 for f in stats["motion_factors"])
    tiny.assert_within_rounding(stats["rates"], port.rates[:-1], ADACACHE_PORT_EPS)
    tiny.assert_within_rounding(images, expected, ADACACHE_PORT_EPS)
    # without MoReg the same run schedules otherwise
    with stepcache.cached(pipe, dataclasses.replace(config, moreg=False)) as handle:
        _generate(pipe, lambda: dict(class_labels=[1]), steps=steps)
        assert handle.stats()["full_step_indices"] != port.recomputed_steps


def test_refused_where_the_model_has_no_frames():
    with pytest.raises(stepcache.UnsupportedModelError, match="frame-ordered video tokens"):
        stepcache.apply(tiny.dit_pipeline(), stepcache.AdaCacheConfig(moreg=True))


@pytest.mark.parametrize("field,value,message", [
    ("moreg", 1, "True or False"),
    ("moreg_strides", (), "non-empty tuple"),
    ("moreg_strides", (0,), r"moreg_strides entry must be an integer in \[1, inf\]"),
    ("moreg_window", (0.2,), r"\(first, last\) pair"),
    ("moreg_window", (5, 2), "must not end before it starts"),
    ("moreg_window", (0.1, 1.5), r"moreg_window must be a number in \[0.0, 1.0\]"),
    ("moreg_norm", 0.0, r"moreg_norm must be a number in \(0.0, inf\]"),
    ("moreg_power", -1.0, r"moreg_power must be a number in \(0.0, inf\]"),
    ("moreg_gradient", -0.5, r"moreg_gradient must be a number in \[0.0, inf\]"),
])
def test_bad_moreg_parameters_name_the_allowed_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        stepcache.AdaCacheConfig(**{"moreg": True, field: value})
