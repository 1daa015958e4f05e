"""What one cached step, and the hooks alone, cost in wall time: ``stepcache stepcost``.

MACs count matmuls, convolutions and attention. Work a method keeps running on a cached
step but that has almost no MACs (FORA keeps every block's norms, adaLN modulation, gates
and residual additions; their tensors are read and written, not multiplied) costs wall
time the MAC count does not see, and then a config's wall speedup falls short of its MAC
speedup. This tool measures that directly: on a real-size ``arch:`` model with a config
whose step 1 is cached (interval 2), it times full step 0 and cached step 1 of many
runs, alternately, and reports the cached step's time as a fraction of the full
one next to its MAC fraction.

With ``--overhead`` and a config whose caching is off (FORA ``interval=1``, TeaCache
``threshold=0``, ...) it measures the hooks themselves instead: a step of the hooked model
against a call of the bare model, in many alternating pairs. Whole-run timings on a shared
machine drift by more than the few percent this is about; adjacent single calls drift less.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from ..api import apply
from .arch import ARCH_PREFIX, ARCHS, build
from ..errors import UsageError
from .configs import field_names, make_config
from .macs import macs_of

class NotCaching(ValueError):
    """The config's schedule does not give the steps the measurement needs."""


TIMESTEPS = (torch.tensor([900, 900]), torch.tensor([800, 800]))  # steps 0 and 1, one value per CFG branch


def cached_step_cost(model: torch.nn.Module, call, config, latent_size: int, repeats: int = 5) -> dict:
    """Median wall time and MACs of a cached denoiser call (step 1) over those of a full one (step 0).

    ``call(x, t)`` runs ``model`` once on a batched-CFG pair of ``latent_size``² latents;
    ValueError if ``config`` does not cache step 1.
    """
    latent = _latent(model, latent_size)
    handle = apply(model, config)
    try:
        full_times, cached_times, macs = [], [], []
        with torch.no_grad():
            for i in range(repeats + 1):  # the first run is a warm-up
                handle.start_run(3)  # interval 2 needs a run of at least 3 steps; the first two are timed
                times = []
                for t in TIMESTEPS:
                    start = time.perf_counter()
                    if i == 0:
                        macs.append(macs_of(lambda: call(latent, t))[1])
                    else:
                        call(latent, t)
                    times.append(time.perf_counter() - start)
                if handle.stats()["cached_step_indices"] != [1]:
                    raise NotCaching(f"{config} does not cache step 1 after a full step 0; use interval 2")
                if i:
                    full_times.append(times[0])
                    cached_times.append(times[1])
    finally:
        handle.remove()
    return {
        "full_s": statistics.median(full_times),
        "cached_s": statistics.median(cached_times),
        "wall_fraction": statistics.median(c / f for c, f in zip(cached_times, full_times)),
        "mac_fraction": macs[1] / macs[0],
    }


def hook_overhead(model: torch.nn.Module, call, config, latent_size: int, repeats: int = 20) -> dict:
    """Median wall time of a hooked denoiser step over a bare call, for a ``config`` that caches nothing.

    Each pair times a bare ``call`` and, with ``config`` applied, step 1 of a fresh run (step 0
    runs untimed first, so the hooks are in their steady state), in alternating order so that
    drift within a pair cancels; the config is removed between the two. ValueError if the
    config cached a step: then this is not hook overhead.
    """
    latent, ratios = _latent(model, latent_size), []

    def bare() -> float:
        start = time.perf_counter()
        call(latent, TIMESTEPS[1])
        return time.perf_counter() - start

    def hooked() -> float:
        handle = apply(model, config)
        try:
            handle.start_run(3)
            call(latent, TIMESTEPS[0])
            start = time.perf_counter()
            call(latent, TIMESTEPS[1])
            seconds = time.perf_counter() - start
            cached = handle.stats()["cached_step_indices"]
        finally:
            handle.remove()
        if cached:
            raise NotCaching(f"{config} cached steps {cached}: turn its caching off (interval=1, threshold=0)")
        return seconds

    with torch.no_grad():
        for i in range(repeats + 1):  # the first pair is a warm-up
            if i % 2:
                hooked_s, bare_s = hooked(), bare()
            else:
                bare_s, hooked_s = bare(), hooked()
            if i:
                ratios.append(hooked_s / bare_s)
    low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {"overhead": statistics.median(ratios) - 1, "quartiles": (low - 1, high - 1), "pairs": len(ratios)}


def _latent(model: torch.nn.Module, latent_size: int) -> torch.Tensor:
    """A batched-CFG pair of latents."""
    shape = (2, model.config.in_channels, latent_size, latent_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def measure_line(model_name: str, cls, fields: dict, latent_size: int, repeats: int | None, overhead: bool) -> str:
    """Run the measurement for ``stepcache stepcost`` and say what it found in one line."""
    name = model_name.removeprefix(ARCH_PREFIX)
    if not model_name.startswith(ARCH_PREFIX) or name not in ARCHS:
        raise UsageError(f"unknown model {model_name}; stepcost takes {', '.join(ARCH_PREFIX + n for n in ARCHS)}")
    repeats = repeats if repeats is not None else 20 if overhead else 5
    names = field_names(cls)
    defaults = {"interval": 1 if overhead else 2} if "interval" in names else {}
    defaults |= {"cfg": "batched"} if "cfg" in names else {}  # the arch call runs batched CFG
    config = make_config(cls, {**defaults, **fields})
    model = build(name)
    call = ARCHS[name][2](model, 1)
    measure = hook_overhead if overhead else cached_step_cost
    try:
        result = measure(model, call, config, latent_size, repeats)
    except NotCaching as reason:  # the config's schedule, not a failure: say which setting to use
        raise UsageError(str(reason)) from None
    setup = f"{model_name} {config} at {latent_size}x{latent_size} latents, {torch.get_num_threads()} thread(s)"
    if overhead:
        low, high = result["quartiles"]
        return (f"{setup}: hooked step / bare call - 1 = {100 * result['overhead']:+.2f}% (median of {result['pairs']} "
                f"pairs; quartiles {100 * low:+.2f}% to {100 * high:+.2f}%)")
    return (f"{setup}: full step {result['full_s']:.3f} s, cached step {result['cached_s']:.3f} s = "
            f"{100 * result['wall_fraction']:.1f}% of the wall time for {100 * result['mac_fraction']:.2f}% of the "
            "MACs")


def main(argv: list[str] | None = None) -> int:
    """``python -m stepcache.bench.stepcost ...`` is ``stepcache stepcost ...``."""
    from ..cli import main as cli_main

    return cli_main(["stepcost", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
