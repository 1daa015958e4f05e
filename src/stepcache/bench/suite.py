"""The benchmark suite behind BENCHMARKS.md: ``python -m stepcache.bench.suite`` (or ``stepcache bench --suite``).

For every zoo model with shipped weights: every method that applies to its family over
its default grid, the uncached run and the fewer-steps baseline, with fidelity and
distribution scores. For every ``arch:`` model (real sizes, random weights): the same
configs, speed only. Writes one results JSON and plot per model to ``results_dir`` and
then BENCHMARKS.md from every results JSON found there, so the models can be run in
separate invocations (``--models``) and the file still shows all of them. ``--quick`` is
a smoke test (few steps and samples, arch models shrunk), not a benchmark: its numbers
mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import zoo
from ..adapters import adapter_for
from ..api import find_denoiser
from ..methods import METHODS
from .arch import ARCHS, arch_sampler
from .configs import DEFAULT_GRIDS, grid_configs
from ..errors import check_writable
from .records import run_info
from .report import benchmarks_markdown
from .runner import run
from .targets import load_sampler


@dataclass(frozen=True)
class SuiteSettings:
    """How much work the suite does per model."""

    zoo_steps: int = 25
    arch_steps: int = 6  # the fewest that fit every grid's interval (N = 5 needs T >= 6)
    # 32x32 latents = 256x256 px, DiT-XL/2's own resolution. Smaller latents make the per-sample
    # matmuls (adaLN modulation, timestep MLPs: few MACs, many weights) weight-bound, and then
    # wall time stops following MACs (bench-results/NOTES.md); --arch-latent 8 is a quick look.
    arch_latent: int = 32
    repeats: int = 3
    arch_repeats: int = 2  # each timed run paired with an uncached one: 4 real-size runs per config
    samples: int = 100  # per seed set, for accuracy and Fréchet distance
    arch_overrides: tuple = ()  # (name, {config overrides}) to shrink arch models in --quick
    smoke_test: bool = False  # --quick: numbers that mean nothing, and BENCHMARKS.md says so
    peers: bool = False  # --peers: also every peer's grid (bench.peers.PEER_GRIDS)


# Per-model grids where the default grid does not fit or the issues ask for specific points:
# DeepCache over interval x branch and Δ-DiT over the number of cached blocks at real sizes;
# the zoo's 6-block DiT and PixArt cannot cache 4+ of 6 blocks sensibly; TeaCache thresholds
# for models with calibrated coefficients follow what skips 20-70% of their steps. At real
# sizes each method also gets its no-cache setting (interval 1, threshold 0, gate at the
# end), which measures what the hooks alone cost.
_NO_CACHE_FIRST = {"fora": {"interval": [1, 2, 3, 5]}, "teacache": {"threshold": [0.0, 0.1, 0.2, 0.4]},
                   "tgate": {"gate_step": [1.0, 0.7, 0.5, 0.3]},
                   # random weights change too much between steps for AdaCache ever to reuse (it
                   # computes every step there): one codebook shows what its hooks cost
                   "adacache": {"codebook": DEFAULT_GRIDS["adacache"][0]["codebook"][1:2]}}
SUITE_GRIDS: dict[str, dict[str, dict[str, list]]] = {
    "arch:sd15-unet": {"deepcache": {"interval": [1, 2, 3, 5], "branch": [0, 1, 2]},
                       "tgate": _NO_CACHE_FIRST["tgate"]},
    "arch:dit-xl-2": {"delta_dit": {"interval": [2], "num_blocks": [4, 8, 12]}, **_NO_CACHE_FIRST},
    "arch:pixart-alpha": {"delta_dit": {"interval": [2], "num_blocks": [4, 8, 12]}, **_NO_CACHE_FIRST},
    "zoo:dit-digits": {"delta_dit": {"interval": [2], "num_blocks": [1, 2, 3]},
                       "teacache": {"threshold": [0.05, 0.1, 0.2]}},
    "zoo:pixart-shapes": {"delta_dit": {"interval": [2], "num_blocks": [1, 2, 3]},
                          "teacache": {"threshold": [0.05, 0.1, 0.2]}},
    "zoo:unet-shapes": {"deepcache": {"interval": [2, 3, 5], "branch": [0, 1]}},
}

FULL = SuiteSettings()
QUICK = SuiteSettings(
    zoo_steps=8, arch_steps=6, arch_latent=8, repeats=1, arch_repeats=1, samples=24, smoke_test=True,
    arch_overrides=(
        ("dit-xl-2", {"num_layers": 6}), ("pixart-alpha", {"num_layers": 6}),
        ("sd15-unet", {"block_out_channels": (32, 32, 32, 32), "attention_head_dim": 2}),
    ),
)


def applicable_configs(sampler) -> list:
    """Default-grid configs of every registered method that works on the sampler's model family."""
    offered = adapter_for(find_denoiser(sampler.target)[0]).offers
    return [
        config
        for name in sorted(METHODS)
        if METHODS[name].fits(offered)
        for config in grid_configs(name, SUITE_GRIDS.get(sampler.name, {}).get(name),
                                   model_defaults=sampler.config_defaults.get(name))
    ]


def suite_models() -> list[str]:
    """Every model the suite covers, in BENCHMARKS.md order."""
    return [f"zoo:{name}" for name, _ in zoo.list_models()] + [f"arch:{name}" for name in ARCHS]


def run_suite(out: Path, results_dir: Path, settings: SuiteSettings = FULL, command: str = "",
              models: list[str] | None = None) -> Path:
    """Run ``models`` (None: all; [] renders only), one JSON/PNG each in ``results_dir``, then write ``out``
    from every result there."""
    check_writable(out)
    known = suite_models()
    unknown = [m for m in models or [] if m not in known]
    if unknown:
        raise ValueError(f"unknown suite model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    arch_overrides = dict(settings.arch_overrides)
    for name in known if models is None else models:
        if name.startswith("zoo:"):
            if not zoo.registry.get(name[4:]).path.is_dir():
                continue  # listed under "Not measured" below
            sampler = load_sampler(name, num_steps=settings.zoo_steps, distribution_samples=settings.samples)
        else:
            sampler = arch_sampler(name[5:], num_steps=settings.arch_steps, latent_size=settings.arch_latent,
                                   **arch_overrides.get(name[5:], {}))
        _bench(sampler, results_dir, settings.repeats if name.startswith("zoo:") else settings.arch_repeats,
               settings.peers)
        del sampler  # real-size models are GBs: free one before building the next
    sections, skipped = [], []
    for name in known:
        path = results_dir / f"{_stem(name)}.json"
        if path.is_file():
            results = json.loads(path.read_text())
            sections.append({"model": name, "records": results["records"], "run": results["run"],
                             "plot": f"{results_dir.name}/{_stem(name)}.png"})
        else:
            skipped.append(name)
    info = run_info(torch.device("cpu"))
    # results_dir/NOTES.md: how the runs were made (commands, machine load), linked from the file
    notes_file = results_dir / "NOTES.md"
    notes = f"[{results_dir.name}/NOTES.md]({results_dir.name}/NOTES.md)" if notes_file.is_file() else ""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(benchmarks_markdown(sections, info, command, skipped, quick=settings.smoke_test, notes=notes))
    return out


def _stem(model: str) -> str:
    return model.replace(":", "-")


def _bench(sampler, results_dir: Path, repeats: int, peers: bool = False):
    from .peers import peer_configs

    stem = _stem(sampler.name)
    run(sampler, applicable_configs(sampler), out=results_dir / f"{stem}.json", plot=results_dir / f"{stem}.png",
        repeats=repeats, peers=peer_configs() if peers else ())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepcache.bench.suite", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--results-dir", default="bench-results")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny settings, meaningless numbers")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--models", default=None,
                        help="comma-separated subset, e.g. zoo:dit-digits,arch:dit-xl-2 (default: all)")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing: rewrite --out from the results already in --results-dir")
    parser.add_argument("--samples", type=int, default=None,
                        help="zoo samples per seed set for accuracy/Fréchet (0: fidelity only)")
    parser.add_argument("--arch-latent", type=int, default=None,
                        help=f"latent size of the arch: models (default {FULL.arch_latent})")
    parser.add_argument("--peers", action="store_true",
                        help="also measure other libraries' caches (stepcache.bench.peers) on each model")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"zoo models: timed runs per config, each paired with an uncached one (default "
                             f"{FULL.repeats})")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m stepcache.bench.suite" + (" --quick" if args.quick else "") + (
        " --render-only" if args.render_only else "")
    try:
        models = [] if args.render_only else args.models.split(",") if args.models else None
        settings = QUICK if args.quick else FULL
        if args.samples is not None:
            settings = dataclasses.replace(settings, samples=args.samples)
            command += f" --samples {args.samples}"
        if args.arch_latent is not None:
            if args.arch_latent < 1:
                raise ValueError(f"--arch-latent must be >= 1, got {args.arch_latent}")
            settings = dataclasses.replace(settings, arch_latent=args.arch_latent)
            command += f" --arch-latent {args.arch_latent}"
        if args.peers:
            settings = dataclasses.replace(settings, peers=True)
            command += " --peers"
        if args.repeats is not None:
            if args.repeats < 1:
                raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
            settings = dataclasses.replace(settings, repeats=args.repeats)
            command += f" --repeats {args.repeats}"
        path = run_suite(Path(args.out), Path(args.results_dir), settings, command, models)
    except (ValueError, OSError) as error:
        print(f"stepcache bench suite: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
