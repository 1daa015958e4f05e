"""Forecast a reused feature from the values it had at the last full steps.

Every method that reuses a tensor (FORA's sublayer outputs, Δ-DiT's offsets, TeaCache's
and AdaCache's residuals, DeepCache's deep features) keeps it in a ``Forecast``. Order 0
is plain reuse: the value stored at the last full step comes back as it is (the very same
tensor). Order k keeps the values of the last k+1 full steps as Newton divided
differences over their step indices and returns the polynomial through them, evaluated
at the current step: order 1 extrapolates the line through the last two full steps,
order 2 the parabola through the last three. The step gaps are the real ones, so
adaptive methods that refresh at uneven intervals extrapolate correctly, and a feature
that changes polynomially in the step index is predicted exactly.

TaylorSeer (and diffusers' TaylorSeerCache) divides every difference by the latest gap and
evaluates a Taylor series, which is the same for order 1 and, for order 2, differs from
the interpolating parabola unless the gaps are equal (docs/methods.md says more).

Values may be tensors or tuples of tensors (and None, passed through): a joint attention
returns (image, text) and both are forecast. Keys are anything hashable; methods use
(CFG branch, module index) or (range, branch).
"""

from __future__ import annotations

from typing import Any, Hashable, Iterable

import torch


class Forecast:
    """Per key: the last full steps' nodes and divided differences; ``get`` predicts at a step."""

    def __init__(self, order: int = 0) -> None:
        if order < 0:
            raise ValueError(f"forecast order must be >= 0, got {order}")
        self.order = order
        # key -> (steps of the nodes, newest first; divided differences f[x0], f[x0,x1], ..)
        self._entries: dict[Hashable, tuple[tuple[int, ...], tuple[Any, ...]]] = {}

    def put(self, key: Hashable, step: int, value: Any) -> None:
        """Record ``value``, computed at full step ``step`` (later than the key's last one)."""
        old = self._entries.get(key)
        if old is None or self.order == 0:
            self._entries[key] = ((step,), (value,))
            return
        steps, diffs = old
        if step <= steps[0]:
            raise ValueError(f"a forecast node at step {step} must come after the last one ({steps[0]})")
        new = [value]
        for i in range(min(self.order, len(diffs))):
            new.append(_map2(lambda a, b, gap=step - steps[i]: (_wide(a) - _wide(b)) / gap, new[i], diffs[i]))
        self._entries[key] = ((step,) + steps[: self.order], tuple(new))

    def get(self, key: Hashable, step: int) -> Any:
        """The value predicted at ``step`` (for order 0: the stored value itself)."""
        steps, diffs = self._entries[key]
        if len(diffs) == 1:
            return diffs[0]
        # Newton form, nested: f0 + (s-x0)(f01 + (s-x1)(f012 + ...))
        value = diffs[-1]
        for i in range(len(diffs) - 2, -1, -1):
            value = _map2(lambda d, v, factor=step - steps[i]: d + v * factor, diffs[i], value)
        return _map2(lambda v, first: v.to(first.dtype), value, diffs[0])

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def latest(self, key: Hashable) -> Any:
        """The value stored at the key's last full step, or None."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1][0]

    def pop(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def keys(self) -> Iterable[Hashable]:
        return self._entries.keys()

    def tensors(self) -> list[Any]:
        """Everything held, for ``cache_bytes``: order k holds up to k+1 tensors per key."""
        return [diffs for _, diffs in self._entries.values()]


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Differences of half-precision features are taken in float32: they are small and would lose digits."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _map2(fn, a: Any, b: Any) -> Any:
    """``fn`` over two values of the same structure (tensors, tuples of tensors, None)."""
    if isinstance(a, torch.Tensor):
        return fn(a, b)
    if a is None or b is None:
        return None
    if isinstance(a, (tuple, list)):
        return type(a)(_map2(fn, x, y) for x, y in zip(a, b))
    raise TypeError(f"cannot forecast a {type(a).__name__}")
