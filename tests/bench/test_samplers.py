"""Reading a pipeline's output as the (B, C, H, W) batch the fidelity measures take."""

import numpy as np
import torch
from PIL import Image

from stepcache.bench.samplers import as_image_batch


def test_images_in_every_output_type_read_as_the_same_batch():
    images = torch.rand(2, 3, 4, 5)
    as_numpy = images.permute(0, 2, 3, 1).numpy()
    as_pil = [Image.fromarray((a * 255).round().astype(np.uint8)) for a in as_numpy]
    assert torch.equal(as_image_batch(images), images)
    assert torch.equal(as_image_batch(as_numpy), images)
    assert torch.equal(as_image_batch(as_pil), (images * 255).round() / 255)


def test_videos_read_with_their_frames_stacked_as_channels_in_order():
    videos = torch.rand(2, 3, 4, 5, 6)  # diffusers' "pt" videos: (B, F, C, H, W)
    stacked = as_image_batch(videos)
    assert stacked.shape == (2, 12, 5, 6) and torch.equal(stacked[:, 4:8], videos[:, 1])
    assert torch.equal(as_image_batch(videos.permute(0, 1, 3, 4, 2).numpy()), stacked)  # "np": (B, F, H, W, C)
