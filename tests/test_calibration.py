"""TeaCache calibration: the fit, the JSON file TeaCacheConfig reads, and the calibrate command."""

import json

import numpy as np
import pytest
import torch

import stepcache
import tiny
from stepcache import cli
from stepcache.bench import targets
from stepcache.calibration import DistanceRecording, fit_coefficients
from stepcache.methods.teacache import Calibration, TeaCacheConfig
from stepcache.zoo import evaluate, registry


def test_fit_recovers_a_known_polynomial():
    known = [3.0, -2.0, 0.5, 0.01]
    x = np.linspace(0.0, 0.6, 40)
    coefficients, fit_error = fit_coefficients(x, np.polyval(known, x), degree=3)
    np.testing.assert_allclose(coefficients, known, rtol=1e-6, atol=1e-8)
    assert fit_error < 1e-8
    noisy = np.polyval(known, x) * (1 + 0.1 * np.random.default_rng(0).standard_normal(len(x)))
    assert 0.01 < fit_coefficients(x, noisy, degree=3)[1] < 0.2


def test_fit_rejects_too_few_pairs_and_bad_degrees():
    with pytest.raises(ValueError, match="needs more than 4"):
        fit_coefficients([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], degree=4)
    with pytest.raises(ValueError, match="equally long"):
        fit_coefficients([0.1, 0.2], [0.1], degree=1)
    with pytest.raises(ValueError, match=r"calibrate.degree must be an integer in \[1, 8\]"):
        stepcache.calibrate(tiny.dit_pipeline(), degree=0)


def test_json_round_trip_into_the_config(tmp_path):
    calibration = Calibration("DiTTransformer2DModel", (2.0, -1.0, 0.5), 0.04, 27)
    path = tmp_path / "coeffs.json"
    calibration.save(path)
    assert Calibration.load(path) == calibration
    assert json.loads(path.read_text())["degree"] == 2
    pipe = tiny.dit_pipeline()
    with stepcache.cached(pipe, TeaCacheConfig(threshold=0.1, coefficients=path)) as handle:
        assert handle.method.polynomial == (2.0, -1.0, 0.5)
    with pytest.raises(ValueError, match="coefficients for DiTTransformer2DModel, not for PixArtTransformer2DModel"):
        stepcache.apply(tiny.pixart_pipeline(), TeaCacheConfig(coefficients=str(path)))


def test_files_that_are_not_calibrations_are_rejected(tmp_path):
    cases = {
        "not json": "{",
        "another file": json.dumps({"coefficients": [1.0, 0.0]}),
        "bad shape": json.dumps({"method": "teacache", "model_class": "X", "coefficients": [[1.0]],
                                 "fit_error": 0.1, "num_samples": 3}),
        "bad degree": json.dumps({"method": "teacache", "model_class": "X", "coefficients": [1.0, 0.0],
                                  "degree": 3, "fit_error": 0.1, "num_samples": 3}),
    }
    for name, text in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        with pytest.raises(ValueError, match=str(path)):
            TeaCacheConfig(coefficients=path)
    with pytest.raises(FileNotFoundError):
        TeaCacheConfig(coefficients=tmp_path / "missing.json")


def test_recorded_input_distance_is_the_signal_teacache_decides_on():
    pipe = tiny.sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    steps = 5

    def run():
        return pipe(**tiny.sd3_call_kwargs(), num_inference_steps=steps, output_type="latent",
                    generator=torch.Generator().manual_seed(0)).images

    with stepcache.cached(pipe, DistanceRecording()) as handle:
        run()
        inputs, outputs = handle.method.input_distances, handle.method.output_distances
    with stepcache.cached(pipe, TeaCacheConfig(threshold=0.0, coefficients=[1.0, 0.0])) as handle:
        run()
        trace = handle.stats()["accumulated_distance"]
    assert len(inputs) == len(outputs) == steps - 1  # batched CFG: one pair per step after the first
    assert inputs == pytest.approx(trace[1:], rel=1e-6)
    assert all(y > 0 for y in outputs)


def test_calibrate_counts_a_sample_per_step_and_branch():
    pipe = evaluate.untrained_pipeline(registry.get("dit-digits"))
    pipe.set_progress_bar_config(disable=True)
    result = stepcache.calibrate(pipe, [1], num_inference_steps=4, cfg_mode="split", output_type="pt",
                                 seeds=(0, 1), degree=2)
    assert result.model_class == "DiTTransformer2DModel"
    assert result.num_samples == 2 * 3 * 2  # seeds x step pairs x CFG branches
    assert len(result.coefficients) == 3 and result.fit_error >= 0


def test_calibrate_command_writes_coefficients_for_a_zoo_model(tmp_path, monkeypatch, capsys):
    untrained = evaluate.untrained_pipeline(registry.get("dit-digits"))
    untrained.set_progress_bar_config(disable=True)
    monkeypatch.setattr(targets, "load_pipeline", lambda spec, **kwargs: untrained)  # no weights needed
    out = tmp_path / "coeffs.json"
    argv = ["calibrate", "--model", "zoo:dit-digits", "--out", str(out), "--steps", "4", "--seeds", "1",
            "--degree", "2"]
    assert cli.main(argv) == 0
    assert "DiTTransformer2DModel" in capsys.readouterr().out
    saved = Calibration.load(out)
    assert saved.num_samples == 3 and saved.degree == 2
    stepcache.apply(untrained, TeaCacheConfig(coefficients=out)).remove()  # fitted for this model class


def test_calibrate_command_rejects_models_it_has_no_inputs_for(tmp_path, capsys):
    assert cli.main(["calibrate", "--model", str(tmp_path), "--out", str(tmp_path / "c.json")]) == 2
    assert "stepcache.calibrate(pipe" in capsys.readouterr().err
