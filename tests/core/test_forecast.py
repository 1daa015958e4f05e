"""Forecast: order 0 is plain reuse; order k reproduces any polynomial of degree k in the step, at uneven gaps."""

import pytest
import torch

from stepcache.core.forecast import Forecast


def _poly(coefficients, step):
    return sum(c * step**i for i, c in enumerate(coefficients))


def test_order_0_returns_the_stored_tensor_itself():
    forecast = Forecast(0)
    value = torch.randn(3)
    forecast.put("k", 2, torch.zeros(3))
    forecast.put("k", 4, value)
    assert forecast.get("k", 7) is value
    assert len(forecast.tensors()[0]) == 1  # keeps one tensor per key


@pytest.mark.parametrize("order", [1, 2, 3])
def test_order_k_is_exact_for_degree_k_polynomials_at_uneven_gaps(order):
    base = torch.randn(order + 1, 4, dtype=torch.float64)  # per-element polynomial coefficients
    forecast = Forecast(order)
    for step in (0, 1, 3, 4, 8, 9):  # gaps as an adaptive method leaves them
        forecast.put("k", step, _poly(base, step))
    for step in (10, 11, 13):
        torch.testing.assert_close(forecast.get("k", step), _poly(base, step), rtol=1e-10, atol=1e-10)
    assert len(forecast.tensors()[0]) == order + 1
    # one order lower is not exact: the test can fail
    lower = Forecast(order - 1)
    for step in (0, 1, 3, 4, 8, 9):
        lower.put("k", step, _poly(base, step))
    assert not torch.allclose(lower.get("k", 11), _poly(base, 11))


def test_first_values_use_what_is_there_and_tuples_with_none_are_forecast_alike():
    forecast = Forecast(2)
    forecast.put("k", 0, (torch.tensor([1.0]), None))
    assert torch.equal(forecast.get("k", 1)[0], torch.tensor([1.0]))  # one node: reuse
    forecast.put("k", 2, (torch.tensor([3.0]), None))
    predicted = forecast.get("k", 3)
    assert torch.equal(predicted[0], torch.tensor([4.0])) and predicted[1] is None  # the line through 1 and 3


def test_half_precision_differences_are_taken_in_float32():
    forecast = Forecast(1)
    forecast.put("k", 0, torch.tensor([1000.0], dtype=torch.float16))
    forecast.put("k", 1, torch.tensor([1000.5], dtype=torch.float16))
    predicted = forecast.get("k", 2)
    assert predicted.dtype == torch.float16 and predicted.item() == 1001.0


def test_nodes_must_move_forward():
    forecast = Forecast(1)
    forecast.put(5, 3, torch.tensor([2.0]))
    with pytest.raises(ValueError, match="must come after"):
        forecast.put(5, 3, torch.tensor([2.0]))
    forecast.put(5, 4, torch.tensor([3.0]))
    assert torch.equal(forecast.get(5, 6), torch.tensor([5.0]))
    assert torch.equal(forecast.latest(5), torch.tensor([3.0])) and forecast.latest(6) is None
    assert 5 in forecast and 6 not in forecast
