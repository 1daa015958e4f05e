import pytest

import stepcache
import tiny
from stepcache import FORAConfig, TeaCacheConfig
from stepcache.config_files import load_config, save_config
from stepcache.errors import UsageError


@pytest.mark.parametrize("name", ["cfg.json", "cfg.yaml"])
def test_a_saved_config_loads_back_equal(tmp_path, name):
    config = stepcache.AdaCacheConfig(codebook=((0.02, 3), (0.04, 2)), order=1, warmup=2)
    assert load_config(save_config(config, tmp_path / name)) == config


def test_apply_takes_a_config_file_and_caches_as_the_config_does(tmp_path):
    (tmp_path / "cfg.yaml").write_text("method: fora\ninterval: 2\n")
    pipe = tiny.dit_pipeline()
    handle = stepcache.apply(pipe, tmp_path / "cfg.yaml")
    try:
        pipe(class_labels=[1], num_inference_steps=4, output_type="pt")
        assert handle.config == FORAConfig(interval=2) and handle.stats()["cached_step_indices"] == [1, 3]
    finally:
        handle.remove()


@pytest.mark.parametrize("text, message", [
    ('{"method": "nosuch"}', "unknown method 'nosuch'"),
    ('{"interval": 2}', 'a mapping with a "method" key'),
    ('{"method": "fora", "intervall": 2}', "fora has no parameter 'intervall'"),
    ('{"method": "fora", "interval": 0}', "FORAConfig.interval must be"),
    ('{"method": "fora", ', "is not valid JSON"),
])
def test_a_bad_config_file_is_a_usage_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "cfg.json"
    path.write_text(text)
    with pytest.raises(UsageError, match="cfg.json") as error:
        load_config(path)
    assert message in str(error.value)


def test_a_missing_config_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read config file"):
        load_config(tmp_path / "none.json")


def test_tuple_fields_read_from_lists():
    from stepcache.config_files import config_from_record

    assert config_from_record({"method": "teacache", "coefficients": [1.0, 0.0]}) == TeaCacheConfig(
        coefficients=(1.0, 0.0))
