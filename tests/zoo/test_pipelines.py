"""Zoo models load offline and sample correctly in every CFG mode."""

import pytest
import torch

import tiny
from stepcache import zoo
from stepcache.zoo import registry

INPUTS = {"dit-digits": [3, 7], "pixart-shapes": ["a red circle", "a blue square"]}
INPUTS["unet-shapes"] = INPUTS["pixart-shapes"]
CHANNELS = {"dit-digits": 1, "pixart-shapes": 3, "unet-shapes": 3}


@pytest.fixture(scope="module", params=list(registry.MODELS))
def named_pipe(request):
    return request.param, zoo.load(request.param)


def generate(pipe, inputs, **kwargs):
    return pipe(inputs, num_inference_steps=3, generator=torch.Generator().manual_seed(0), **kwargs).images


@pytest.mark.parametrize("cfg_mode", ["batched", "split"])
def test_generates_batch_in_range(named_pipe, cfg_mode):
    name, pipe = named_pipe
    images = generate(pipe, INPUTS[name], cfg_mode=cfg_mode, output_type="pt")
    assert images.shape == (2, CHANNELS[name], 16, 16)
    assert images.min() >= 0 and images.max() <= 1
    assert images.std() > 0.05  # not a constant image


def test_pil_output(named_pipe):
    name, pipe = named_pipe
    images = generate(pipe, INPUTS[name])
    assert len(images) == 2 and images[0].size == (16, 16)
    assert images[0].mode == ("L" if CHANNELS[name] == 1 else "RGB")


def test_split_and_batched_cfg_agree(named_pipe):
    name, pipe = named_pipe
    batched = generate(pipe, INPUTS[name], cfg_mode="batched", output_type="pt")
    split = generate(pipe, INPUTS[name], cfg_mode="split", output_type="pt")
    tiny.assert_within_rounding(split, batched, tiny.ZOO_RUN_EPS)


@pytest.mark.parametrize(("cfg_mode", "guidance_scale", "calls_per_step"), [("batched", 3.0, 1), ("split", 3.0, 2), ("split", 1.0, 1)])
def test_denoiser_and_scheduler_calls(named_pipe, cfg_mode, guidance_scale, calls_per_step):
    name, pipe = named_pipe
    calls = []
    handle = pipe.denoiser.register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        generate(pipe, INPUTS[name], cfg_mode=cfg_mode, guidance_scale=guidance_scale)
    finally:
        handle.remove()
    assert len(calls) == 3 * calls_per_step
    assert len(pipe.scheduler.timesteps) == 3


def test_denoiser_attribute_names():
    assert isinstance(zoo.load("dit-digits").transformer, torch.nn.Module)
    assert isinstance(zoo.load("unet-shapes").unet, torch.nn.Module)


def test_unknown_model_raises_with_known_names():
    with pytest.raises(ValueError, match="dit-digits"):
        zoo.load("sdxl")


def test_list_models_matches_catalogue():
    names = [name for name, _ in zoo.list_models()]
    assert names == list(registry.MODELS)
    assert all(isinstance(d, str) and d for _, d in zoo.list_models())


def test_bad_prompt_and_label_raise():
    with pytest.raises(ValueError, match="vocabulary"):
        zoo.load("unet-shapes")("a purple circle")
    with pytest.raises(ValueError, match="class labels"):
        zoo.load("dit-digits")([10])
