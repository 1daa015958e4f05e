"""The benchmark suite behind BENCHMARKS.md: ``python -m stepcache.bench.suite`` (or ``stepcache bench --suite``).

For every zoo model with shipped weights: every method that applies to its family over
its default grid, the uncached run and the fewer-steps baseline, with fidelity and
distribution scores. For every ``arch:`` model (real sizes, random weights): the same
configs, speed only. Writes one results JSON and plot per model to ``results_dir`` and
the tables to BENCHMARKS.md. ``--quick`` is a smoke test (few steps and samples, arch
models shrunk), not a benchmark: its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import zoo
from ..adapters import adapter_for
from ..api import find_denoiser
from ..methods import METHODS
from .arch import ARCHS, arch_sampler
from .configs import grid_configs
from .records import check_writable, run_info
from .report import benchmarks_markdown
from .runner import run
from .targets import load_sampler


@dataclass(frozen=True)
class SuiteSettings:
    """How much work the suite does per model."""

    zoo_steps: int = 25
    arch_steps: int = 20
    repeats: int = 5
    samples: int = 500  # per seed set, for accuracy and Fréchet distance
    arch_overrides: tuple = ()  # (name, {config overrides}) to shrink arch models in --quick


FULL = SuiteSettings()
QUICK = SuiteSettings(zoo_steps=8, arch_steps=6, repeats=1, samples=24, arch_overrides=(
    ("dit-xl-2", {"num_layers": 6}), ("pixart-alpha", {"num_layers": 6}),
    ("sd15-unet", {"block_out_channels": (32, 32, 32, 32), "attention_head_dim": 2}),
))


def applicable_configs(sampler) -> list:
    """Default-grid configs of every registered method that works on the sampler's model family."""
    family = adapter_for(find_denoiser(sampler.target)[0]).family
    return [
        config
        for name in sorted(METHODS)
        if family in METHODS[name].families
        for config in grid_configs(name, model_defaults=sampler.config_defaults.get(name))
    ]


def run_suite(out: Path, results_dir: Path, settings: SuiteSettings = FULL, command: str = "") -> Path:
    """Run every model, write per-model JSON/PNG to ``results_dir`` and the tables to ``out``."""
    check_writable(out)
    results_dir.mkdir(parents=True, exist_ok=True)
    sections, skipped = [], []
    for name, _ in zoo.list_models():
        if not zoo.registry.get(name).path.is_dir():
            skipped.append(f"zoo:{name} (weights not shipped yet)")
            continue
        sampler = load_sampler(f"zoo:{name}", num_steps=settings.zoo_steps, distribution_samples=settings.samples)
        sections.append(_bench(sampler, results_dir, settings))
    arch_overrides = dict(settings.arch_overrides)
    for name in ARCHS:
        sampler = arch_sampler(name, num_steps=settings.arch_steps, **arch_overrides.get(name, {}))
        sections.append(_bench(sampler, results_dir, settings))
        del sampler  # real-size models are GBs: free one before building the next
    info = run_info(torch.device("cpu"))
    out.write_text(benchmarks_markdown(sections, info, command, skipped, quick=settings is QUICK))
    return out


def _bench(sampler, results_dir: Path, settings: SuiteSettings):
    stem = sampler.name.replace(":", "-")
    records = run(sampler, applicable_configs(sampler), out=results_dir / f"{stem}.json",
                  plot=results_dir / f"{stem}.png", repeats=settings.repeats)
    return {"model": sampler.name, "records": records, "plot": f"{results_dir.name}/{stem}.png"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepcache.bench.suite", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--results-dir", default="bench-results")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny settings, meaningless numbers")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m stepcache.bench.suite" + (" --quick" if args.quick else "")
    try:
        path = run_suite(Path(args.out), Path(args.results_dir), QUICK if args.quick else FULL, command)
    except (ValueError, OSError) as error:
        print(f"stepcache bench suite: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
