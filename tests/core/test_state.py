"""Step and run counting, through apply() on real diffusers pipelines and hand-written loops."""

import pytest
import torch
from probe import ProbeConfig

import stepcache
import tiny


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_batched_cfg_pipeline_counts_one_call_per_step():
    pipe = _quiet(tiny.dit_pipeline())
    with stepcache.cached(pipe, ProbeConfig()) as handle:
        pipe(class_labels=[1, 2], num_inference_steps=5, output_type="np")
        calls = handle.method.calls
        stats = handle.stats()
    assert [(step, branch) for _, step, branch, _, _ in calls] == [(i, 0) for i in range(5)]
    assert {num for *_, num, _ in calls} == {5}
    assert {batch for *_, batch in calls} == {4}  # cond and uncond in one batch
    assert stats["steps"] == 5 and stats["num_steps"] == 5 and stats["calls"] == 5


@pytest.mark.parametrize("family", ["unet", "dit", "pixart", "sd3"])
def test_split_cfg_counts_two_branches_of_one_step(family):
    model = tiny.MODELS[family]()
    scheduler = tiny.ddim()
    with stepcache.cached(model, ProbeConfig(), scheduler=scheduler) as handle:
        tiny.denoise(model, family, scheduler, steps=4, cfg="split")
        calls = handle.method.calls
    assert [(step, branch) for _, step, branch, _, _ in calls] == [(i, b) for i in range(4) for b in (0, 1)]
    assert handle.stats()["steps"] == 4


def test_every_pipeline_call_is_a_new_run_and_caches_are_released_at_its_end():
    pipe = _quiet(tiny.dit_pipeline())
    with stepcache.cached(pipe, ProbeConfig()) as handle:
        pipe(class_labels=[1], num_inference_steps=3, output_type="np")
        pipe(class_labels=[1], num_inference_steps=4, output_type="np")
        calls = handle.method.calls
        assert handle.method.starts == 2 and handle.method.ends == 2  # each run ended after its last step
        assert handle.stats()["runs"] == 2
    assert [(run, step, num) for run, step, _, num, _ in calls] == [(1, i, 3) for i in range(3)] + [
        (2, i, 4) for i in range(4)
    ]


def test_flux_steps_come_from_the_scheduler_although_the_model_sees_t_over_1000():
    pipe = _quiet(tiny.flux_pipeline())
    with stepcache.cached(pipe, ProbeConfig()) as handle:
        pipe(num_inference_steps=4, output_type="np", **tiny.flux_call_kwargs())
        assert [step for _, step, *_ in handle.method.calls] == [0, 1, 2, 3]


def test_swapping_the_pipeline_scheduler_after_apply_is_followed():
    pipe = _quiet(tiny.dit_pipeline())
    with stepcache.cached(pipe, ProbeConfig()) as handle:
        pipe.scheduler = tiny.ddim()
        pipe(class_labels=[1], num_inference_steps=3, output_type="np")
        assert [(step, num) for _, step, _, num, _ in handle.method.calls] == [(0, 3), (1, 3), (2, 3)]


def test_without_scheduler_steps_follow_the_timestep_and_shape_changes_start_runs():
    model = tiny.dit()
    handle = stepcache.apply(model, ProbeConfig())
    x = torch.randn(2, 4, 8, 8)
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        for t in (900, 900, 600, 600, 300):  # split CFG by hand: equal timesteps = one step
            model(x, timestep=torch.tensor([t, t]), class_labels=labels)
        model(x, timestep=torch.tensor([900, 900]), class_labels=labels)  # t went up: a new run
        model(x[:1], timestep=torch.tensor([600]), class_labels=labels[:1])  # batch size changed
        model(torch.randn(1, 4, 16, 16), timestep=torch.tensor([600]), class_labels=labels[:1])  # resolution
    handle.remove()
    assert [(run, step, branch) for run, step, branch, _, _ in handle.method.calls] == [
        (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1), (1, 2, 0), (2, 0, 0), (3, 0, 0), (4, 0, 0),
    ]
    assert all(num is None for *_, num, _ in handle.method.calls)


def test_start_run_by_hand_gives_the_run_length():
    model = tiny.dit()
    with stepcache.cached(model, ProbeConfig()) as handle:
        handle.start_run(num_steps=2)
        with torch.no_grad():
            model(torch.randn(1, 4, 8, 8), timestep=torch.tensor([900]), class_labels=torch.tensor([1]))
        assert handle.method.calls[-1][3] == 2
