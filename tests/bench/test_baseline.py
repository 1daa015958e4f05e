import pytest

from stepcache.bench.baseline import baseline_steps, matching_steps


def test_matching_steps_follow_the_mac_ratio():
    assert matching_steps(20, 0.5) == 10
    assert matching_steps(25, 0.36) == 9
    assert matching_steps(25, 1 / 3) == 8


def test_matching_steps_stay_within_one_and_the_run():
    assert matching_steps(10, 0.01) == 1
    assert matching_steps(10, 1.3) == 10


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        matching_steps(0, 0.5)
    with pytest.raises(ValueError):
        matching_steps(10, 0.0)


def test_baseline_steps_are_distinct_descending_and_exclude_the_full_run():
    assert baseline_steps(20, [0.5, 0.52, 0.3, 1.0]) == [10, 6]
