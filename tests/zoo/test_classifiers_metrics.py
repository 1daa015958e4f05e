"""Shipped classifiers, scoring metrics and datasets behave as documented."""

import numpy as np
import pytest
import torch

from stepcache import zoo
from stepcache.zoo import data, metrics


@pytest.mark.parametrize("dataset", data.DATASETS)
def test_classifier_accuracy_on_held_out_data(dataset):
    images, labels = data.load_dataset(dataset, "test")
    classifier = zoo.load_classifier(dataset)
    assert metrics.class_accuracy(classifier, images, labels) > 0.9
    assert metrics.features(classifier, images[:5]).shape == (5, classifier.config.feature_dim)


def test_unknown_dataset_raises():
    with pytest.raises(ValueError, match="digits"):
        zoo.load_classifier("cifar")


def test_frechet_distance_of_shifted_gaussians():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2000, 4))
    assert metrics.frechet_distance(feats, feats) == pytest.approx(0, abs=1e-8)
    # Same covariance, mean shifted by 2 in one axis -> distance is the squared shift.
    shifted = feats + np.array([2.0, 0, 0, 0])
    assert metrics.frechet_distance(torch.from_numpy(feats), shifted) == pytest.approx(4.0, rel=1e-6)
    scaled = feats * 3  # covariance 9 I vs I -> 4 * (sqrt(9) - 1)^2 = 16
    assert metrics.frechet_distance(feats, scaled) == pytest.approx(16.0, rel=0.05)


def test_real_images_are_held_out_and_in_range():
    for dataset in data.DATASETS:
        test, train = zoo.real_images(dataset), zoo.real_images(dataset, "train")
        assert 0 <= test.min() and test.max() <= 1 and test.shape[-2:] == (16, 16)
        overlap = (test.flatten(1)[:, None] == train.flatten(1)[None, :200]).all(-1).any()
        assert not overlap


def test_shapes_are_deterministic_and_captioned():
    a, labels = data.render_shapes(24, seed=5)
    b, _ = data.render_shapes(24, seed=5)
    assert torch.equal(a, b)
    assert sorted(labels.tolist()) == sorted(list(range(12)) * 2)
    assert data.caption(0) == "a red circle"
    assert all(data.caption_to_label(data.caption(i)) == i for i in range(12))


def test_moving_shapes_move_as_captioned_and_stay_in_frame():
    videos, labels = data.render_moving_shapes(96, seed=5)
    again, _ = data.render_moving_shapes(96, seed=5)
    assert torch.equal(videos, again) and videos.shape == (96, data.VIDEO_FRAMES, 3, 16, 16)
    assert sorted(labels.tolist()) == sorted(list(range(48)) * 2)
    assert data.caption(6, "moving-shapes") == "a red square moving up"
    assert all(data.caption_to_label(data.caption(i, "moving-shapes"), "moving-shapes") == i for i in range(48))
    # the shape's centre of mass moves one way at a steady 2-2.5 px per frame, and no frame cuts it off
    weight = videos.mean(2) - 0.08
    coords = torch.arange(16.0)
    x = (weight * coords).sum((2, 3)) / weight.sum((2, 3))
    y = (weight * coords[:, None]).sum((2, 3)) / weight.sum((2, 3))
    steps = torch.stack([x.diff(dim=1), y.diff(dim=1)], dim=-1)  # (videos, frames - 1, 2)
    expected = torch.tensor(list(data.DIRECTIONS.values()), dtype=torch.float32)[labels % 4]
    along = (steps * expected[:, None]).sum(-1)
    across = (steps * expected.flip(-1)[:, None]).sum(-1)
    # drawn at 4x and box-filtered, a centroid can be off by up to 1/8 px: a step by 1/4, the spread of steps by 1/2
    assert along.min() > 2 - 0.25 and along.max() < 2.5 + 0.25 and across.abs().max() < 0.1
    assert (along.max(1).values - along.min(1).values).max() < 0.5
    mass = weight.sum((2, 3))  # a shape cut off by the frame's edge would lose some
    assert ((mass.max(1).values - mass.min(1).values) / mass.mean(1)).max() < 0.1  # rasterising: up to 7%
