"""Sweeps on Ray: the same records as the serial run but for the wall times, which are marked not comparable."""

import pytest
import torch

import stepcache
import tiny
from stepcache import cli
from stepcache.bench import executor, runner, targets
from stepcache.zoo import evaluate, registry
from stepcache.errors import UsageError

STEPS = 4
# timings, and what is measured from the process around a cell rather than from the cell: CPU RSS polled
# every few ms (varies between two serial runs too) and the clock time a record was finished
NOT_REPRODUCIBLE = {"wall_s", "reference_wall_s", "speedup_wall", "wall_over_mac_speedup", "finished_at",
                    "peak_memory_bytes", "wall_comparable"}


def _bench(run_on):
    pipe = tiny.dit_pipeline()
    configs = [stepcache.FORAConfig(interval=2), stepcache.TeaCacheConfig(threshold=0.3, coefficients=(1.0, 0.0))]
    return runner.run(pipe, configs, call_kwargs={"class_labels": [1, 2]}, num_steps=STEPS, repeats=1,
                      progress=False, executor=run_on)


@pytest.fixture(scope="module")
def on_ray():
    pytest.importorskip("ray", reason="ray is the optional extra 'ray'")
    local = executor.make("ray")  # a local cluster: ray.init()
    yield local
    local.close()


def test_ray_cells_give_the_serial_records_and_flag_their_wall_times(on_ray):
    serial = _bench(None)
    parallel = _bench(on_ray)
    assert [r["label"] for r in parallel] == [r["label"] for r in serial]
    assert [r["kind"] for r in serial] == ["uncached", "cached", "cached", "fewer_steps"]
    for ours, theirs in zip(parallel, serial):
        assert ours["wall_comparable"] is False and "wall_comparable" not in theirs
        assert ours["wall_s"]["runs"]  # timed all the same
        assert torch.equal(ours.pop("_images"), theirs.pop("_images"))
        assert {k: v for k, v in ours.items() if k not in NOT_REPRODUCIBLE} == \
            {k: v for k, v in theirs.items() if k not in NOT_REPRODUCIBLE}


def test_calibration_seeds_on_ray_give_the_serial_fit(on_ray):
    pipe = tiny.flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(**tiny.flux_call_kwargs(), num_inference_steps=6, output_type="latent", seeds=(0, 1, 2), degree=2)
    assert stepcache.calibrate(pipe, executor=on_ray, **kwargs) == stepcache.calibrate(pipe, **kwargs)


def test_calibrate_command_on_ray_writes_the_serial_coefficients(on_ray, tmp_path, monkeypatch):
    untrained = evaluate.untrained_pipeline(registry.get("dit-digits"))
    untrained.transformer.eval()  # as loaded pipelines are: training mode drops class labels at random
    untrained.set_progress_bar_config(disable=True)
    monkeypatch.setattr(targets, "load_pipeline", lambda spec, **kwargs: untrained)  # no weights needed
    argv = ["calibrate", "--model", "zoo:dit-digits", "--steps", "4", "--seeds", "2", "--degree", "2"]
    assert cli.main(argv + ["--out", str(tmp_path / "serial.json")]) == 0
    assert cli.main(argv + ["--out", str(tmp_path / "ray.json"), "--executor", "ray"]) == 0
    assert (tmp_path / "ray.json").read_text() == (tmp_path / "serial.json").read_text()


def test_executor_usage_errors_come_before_any_work(tmp_path, capsys):
    argv = ["calibrate", "--model", "zoo:dit-digits", "--out", str(tmp_path / "c.json")]
    assert cli.main(argv + ["--executor", "dask"]) == 2
    assert "unknown executor 'dask'" in capsys.readouterr().err
    assert cli.main(argv + ["--ray-address", "ray://head:10001"]) == 2
    assert "--ray-address is for --executor ray" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_an_unknown_executor_or_an_address_for_the_serial_one_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown executor 'dask'"):
        executor.make("dask")
    with pytest.raises(UsageError, match="--ray-address is for --executor ray"):
        executor.make("serial", address="ray://head:10001")
