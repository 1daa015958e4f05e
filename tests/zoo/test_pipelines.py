"""Zoo models load offline and sample correctly in every CFG mode."""

import diffusers
import pytest
import torch

import tiny
from stepcache import zoo
from stepcache.zoo import registry

INPUTS = {"dit-digits": [3, 7], "pixart-shapes": ["a red circle", "a blue square"],
          "wan-moving-shapes": ["a red circle moving left", "a blue square moving up"]}
INPUTS["unet-shapes"] = INPUTS["pixart-shapes"]
CHANNELS = {"dit-digits": 1, "pixart-shapes": 3, "unet-shapes": 3, "wan-moving-shapes": 3}
FRAMES = {"wan-moving-shapes": 4}  # video models: frames per sample


@pytest.fixture(scope="module", params=list(registry.MODELS))
def named_pipe(request):
    return request.param, zoo.load(request.param)


def generate(pipe, inputs, **kwargs):
    out = pipe(inputs, num_inference_steps=3, generator=torch.Generator().manual_seed(0), **kwargs)
    return out.frames if hasattr(out, "frames") else out.images


@pytest.mark.parametrize("cfg_mode", ["batched", "split"])
def test_generates_batch_in_range(named_pipe, cfg_mode):
    name, pipe = named_pipe
    images = generate(pipe, INPUTS[name], cfg_mode=cfg_mode, output_type="pt")
    frames = (FRAMES[name],) if name in FRAMES else ()
    assert images.shape == (2, *frames, CHANNELS[name], 16, 16)
    assert images.min() >= 0 and images.max() <= 1
    assert images.std() > 0.05  # not a constant image


def test_pil_output(named_pipe):
    name, pipe = named_pipe
    images = generate(pipe, INPUTS[name])
    if name in FRAMES:  # a list of frames per video
        assert len(images) == 2 and all(len(video) == FRAMES[name] for video in images)
        images = images[0]
    assert len(images) >= 2 and images[0].size == (16, 16)
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
    assert isinstance(zoo.load("wan-moving-shapes").transformer, diffusers.WanTransformer3DModel)


def test_video_frames_are_in_diffusers_layout_and_move_the_captions_way_in_its_colour():
    """The Wan model's frames come out (B, F, C, H, W), every frame with a shape of the caption's colour,
    moving the caption's way (a pipeline that dropped or reordered the coordinate channels fails this)."""
    pipe = zoo.load("wan-moving-shapes")
    captions = ["a red circle moving left", "a green square moving right", "a blue triangle moving up",
                "a yellow circle moving down"]
    videos = pipe(captions, num_inference_steps=25, generator=torch.Generator().manual_seed(0), output_type="pt").frames
    assert videos.shape == (4, 4, 3, 16, 16)
    shape = videos.amax(2, keepdim=True) > 0.4  # the shape's pixels, brighter than the dark background
    assert shape.flatten(2).float().mean(2).min() > 0.05  # in every frame
    colour = (videos * shape).sum((3, 4)) / shape.sum((3, 4))  # (videos, frames, RGB) mean colour of the shape
    assert (colour.argmax(-1)[:3] == torch.tensor([0, 1, 2])[:, None]).all(), colour
    assert (colour[3, :, :2].min(-1).values > 2 * colour[3, :, 2]).all(), colour  # yellow: red and green, no blue
    # the shape's centre from the first frame to the last: the dataset moves it 6-7.5 px
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    mask = shape[:, :, 0].float()
    centre = torch.stack([(mask * cols).sum((2, 3)), (mask * rows).sum((2, 3))], -1) / mask.sum((2, 3))[..., None]
    moved = centre[:, -1] - centre[:, 0]  # (videos, (x, y)); y grows downwards
    expected = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
    assert ((moved * expected).sum(-1) > 3).all(), moved  # > 3 px along the caption's direction
    assert ((moved * expected.flip(-1)).sum(-1).abs() < 2).all(), moved  # and little across it


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
