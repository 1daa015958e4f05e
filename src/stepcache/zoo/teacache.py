"""TeaCache coefficients shipped with the transformer zoo models, and the inputs they are fitted on.

Each transformer zoo model ships ``teacache.json`` next to its weights, written by
``stepcache calibrate --model zoo:NAME --out src/stepcache/zoo/models/NAME/teacache.json``:

>>> from stepcache.zoo.teacache import teacache_coefficients
>>> config = stepcache.TeaCacheConfig(threshold=0.2, coefficients=teacache_coefficients("dit-digits"))
"""

from pathlib import Path

from . import data, registry

COEFFICIENTS_FILE = "teacache.json"


def teacache_coefficients(name: str) -> Path:
    """Path of zoo model ``name``'s calibrated TeaCache coefficients (for ``TeaCacheConfig(coefficients=...)``)."""
    path = registry.get(name).path / COEFFICIENTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"zoo model {name!r} ships no TeaCache coefficients ({path} is missing); TeaCache covers the "
            f"transformer models; write them with `stepcache calibrate --model zoo:{name} --out {path}`"
        )
    return path


def calibration_inputs(name: str) -> list:
    """One pipeline input per class of the model's dataset: class labels, or their captions."""
    spec = registry.get(name)
    labels = range(data.num_classes(spec.dataset))
    return [data.caption(label, spec.dataset) for label in labels] if spec.captioned else list(labels)
