"""The zoo's shipped TeaCache coefficients: found by model name, valid for the model's class."""

import pytest

from stepcache import TeaCacheConfig
from stepcache.methods.teacache import Calibration
from stepcache.zoo import registry
from stepcache.zoo.teacache import calibration_inputs, teacache_coefficients


def test_transformer_zoo_models_ship_coefficients_for_their_class():
    shipped = [m for m in registry.MODELS.values() if (m.path / "teacache.json").is_file()]
    assert shipped, "no zoo model ships TeaCache coefficients"
    for model in shipped:
        path = teacache_coefficients(model.name)
        assert Calibration.load(path).model_class == model.denoiser_cls.__name__
        assert TeaCacheConfig(coefficients=path).coefficients == str(path)  # recorded as text, like a CLI value


def test_models_without_coefficients_say_how_to_make_them():
    with pytest.raises(FileNotFoundError, match="stepcache calibrate --model zoo:unet-shapes"):
        teacache_coefficients("unet-shapes")
    with pytest.raises(ValueError, match="unknown zoo model"):
        teacache_coefficients("nope")


def test_calibration_inputs_cover_every_class():
    assert calibration_inputs("dit-digits") == list(range(10))
    captions = calibration_inputs("pixart-shapes")
    assert all(isinstance(c, str) for c in captions) and len(set(captions)) == len(captions) > 1
