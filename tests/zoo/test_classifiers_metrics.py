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
