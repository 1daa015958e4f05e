"""Compiled and cached against compiled and uncached: does caching still pay under torch.compile?

Two copies of one zoo model, each compiled with ``model.compile(backend=...)``: A uncached,
B with a stepcache config. The first call of each compiles (its wall time is reported),
then calls alternate A, B for ``repeats`` pairs; the speedup is the median of the per-pair
ratios (a shared machine drifts, the pair does not). B's images are compared with A's
(PSNR) and with the same config run eagerly (max |difference|: inductor's kernels round
differently from eager ones).

    python -m stepcache.bench.compiled --model zoo:dit-digits --method fora --set interval=2
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import time

import torch

from .. import api
from ..methods import METHODS
from .fidelity import psnr
from .samplers import zoo_config_defaults, zoo_sampler
from .targets import ZOO_PREFIX


def _timed(sample, steps: int) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    images = sample(steps, 0)
    return time.perf_counter() - start, images


def compare(model: str, config, steps: int = 25, repeats: int = 5, backend: str = "inductor") -> dict:
    """The record described in the module docstring, for ``config`` on zoo model ``model`` (zoo:NAME)."""
    name = model.removeprefix(ZOO_PREFIX)
    uncached, cached = zoo_sampler(name, num_steps=steps), zoo_sampler(name, num_steps=steps)
    handle = api.apply(cached.target, config)
    eager_cached = cached.sample(steps, 0)
    for sampler in (uncached, cached):
        api.find_denoiser(sampler.target)[0].compile(backend=backend)
    compile_a, _ = _timed(uncached.sample, steps)
    compile_b, _ = _timed(cached.sample, steps)
    ratios, times_a, times_b = [], [], []
    for _ in range(repeats):
        time_a, images_a = _timed(uncached.sample, steps)
        time_b, images_b = _timed(cached.sample, steps)
        times_a.append(time_a)
        times_b.append(time_b)
        ratios.append(time_a / time_b)
    stats = handle.stats()
    handle.remove()
    return {
        "model": model, "config": repr(config), "steps": steps, "backend": backend, "repeats": repeats,
        "setup": cached.setup, "torch_threads": torch.get_num_threads(),
        "first_call_s": {"uncached": compile_a, "cached": compile_b},
        "median_s": {"uncached": statistics.median(times_a), "cached": statistics.median(times_b)},
        "speedup": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
        "cached_steps": stats["cached_steps"],
        "psnr_vs_compiled_uncached": psnr(images_b, images_a),
        "max_abs_diff_vs_eager_cached": (images_b - eager_cached).abs().max().item(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:dit-digits", help="a zoo model, zoo:NAME")
    parser.add_argument("--method", default="fora", choices=sorted(METHODS))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a config field (a Python literal), e.g. interval=2; repeatable")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--out", help="also write the record as JSON here")
    args = parser.parse_args(argv)
    if not args.model.startswith(ZOO_PREFIX):
        parser.error("--model must be a zoo model (zoo:NAME): images are compared with the uncached ones")
    values = {}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            values[field] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            values[field] = value
    config_class = METHODS[args.method]
    defaults = zoo_config_defaults(args.model.removeprefix(ZOO_PREFIX)).get(args.method, {})
    record = compare(args.model, config_class(**{**defaults, **values}), args.steps, args.repeats, args.backend)
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as file:
            file.write(text + "\n")


if __name__ == "__main__":
    main()
