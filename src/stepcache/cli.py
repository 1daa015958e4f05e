"""The ``stepcache`` command: argument parsing only; every command calls the library.

User mistakes (unknown names, out-of-range values, unwritable paths) end with one line
on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}
FIELD_COMMANDS: set[str] = set()  # commands that take a method's parameters as --FIELD VALUE


def command(name: str, help_text: str, configure: Callable[[argparse.ArgumentParser], None] = lambda p: None,
            method_fields: bool = False):
    """Register ``run(args) -> int`` as subcommand ``name``.

    With ``method_fields`` the options argparse does not know are handed to ``run`` as
    ``args.fields`` ({"threshold": "0.2", ...}), to be matched to a config's fields.
    """

    def register(run: Callable) -> Callable:
        COMMANDS[name] = (help_text, configure, run)
        if method_fields:
            FIELD_COMMANDS.add(name)
        return run

    return register


def parse_fields(extra: list[str]) -> dict[str, str]:
    """``["--threshold", "0.2", "--interval=3"]`` -> {"threshold": "0.2", "interval": "3"}."""
    fields, items = {}, list(extra)
    while items:
        item = items.pop(0)
        if not item.startswith("--") or len(item) < 3:
            raise ValueError(f"unexpected argument {item!r}; method parameters are given as --FIELD VALUE")
        name, sep, value = item[2:].partition("=")
        if not sep:
            if not items or items[0].startswith("--"):
                raise ValueError(f"--{name} needs a value")
            value = items.pop(0)
        fields[name.replace("-", "_")] = value
    return fields


def _model_options(parser: argparse.ArgumentParser, default_model: str | None) -> None:
    parser.add_argument("--model", default=default_model,
                        help="zoo:NAME, arch:NAME (random weights, speed only) or a local from_pretrained folder")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: 25, arch: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise, the same for every run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per config, after one warm-up")
    parser.add_argument("--prompt", default=None, help="prompt for a local text-to-image pipeline")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _configure_generate(parser: argparse.ArgumentParser) -> None:
    _model_options(parser, "zoo:dit-digits")
    parser.add_argument("--method", required=True, help="caching method (see `stepcache methods`)")
    parser.add_argument("--batch", type=int, default=None, help="images per run (zoo default: 8)")
    parser.add_argument("--out", default="out/generate.png", help="image grid PNG; the summary goes to <out>.json")
    parser.epilog = "method parameters: --FIELD VALUE for each field of the method's config, e.g. --threshold 0.2"


@command("generate", "generate images with a cache; print its speedup and fidelity against no cache",
         _configure_generate, method_fields=True)
def _generate(args) -> int:
    from .bench import configs
    from .bench.generate import generate, summary_line
    from .bench.records import check_writable
    from .bench.targets import load_sampler

    if args.model.startswith("arch:"):
        raise ValueError("arch: models have random weights and no meaningful images; use `stepcache bench`")
    cls = configs.config_class(args.method)
    cls(**configs.coerce_fields(cls, args.fields))  # bad parameters fail before anything loads
    out = check_writable(args.out)
    check_writable(out.with_suffix(".json"))
    _check_counts(args)
    call_kwargs = {"prompt": args.prompt} if args.prompt else None
    sampler = load_sampler(args.model, num_steps=args.steps, batch=args.batch, call_kwargs=call_kwargs,
                           device=args.device)
    model_defaults = sampler.config_defaults.get(args.method, {})
    config = cls(**configs.coerce_fields(cls, {**model_defaults, **args.fields}))
    print(summary_line(generate(sampler, config, out, repeats=args.repeats, seed=args.seed)))
    return 0


def _configure_bench(parser: argparse.ArgumentParser) -> None:
    _model_options(parser, None)
    parser.add_argument("--method", action="append", default=None,
                        help="method to sweep (repeatable; default: every method for the model's family)")
    parser.add_argument("--grid", action="append", default=[],
                        help="FIELD=V1,V2 or METHOD.FIELD=V1,V2: replaces that field's default grid values")
    parser.add_argument("--batch", type=int, default=None, help="images per run (zoo default: 8, arch: 1)")
    parser.add_argument("--samples", type=int, default=0,
                        help="zoo models: samples per seed set for accuracy and Fréchet distance (0: skip)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the fewer-steps baseline")
    parser.add_argument("--peers", nargs="?", const="all", default=None, metavar="PEER,...",
                        help="also measure other libraries' caches (diffusers' own, cache-dit, the DeepCache package) "
                             "over their grids in stepcache.bench.peers.PEER_GRIDS: all, or the named ones")
    parser.add_argument("--out", default="out/bench.json", help="results JSON (rewritten after every config)")
    parser.add_argument("--plot", default="out/bench.png", help="speed/quality plot PNG")
    parser.add_argument("--suite", action="store_true",
                        help="run the whole suite and write BENCHMARKS.md (same as python -m stepcache.bench.suite)")
    parser.add_argument("--quick", action="store_true", help="with --suite: smoke-test settings")


@command("bench", "measure speed (wall time, MACs) and quality of caching configs against no cache", _configure_bench)
def _bench(args) -> int:
    from .bench import configs
    from .bench.records import check_writable
    from .bench.runner import run
    from .bench.targets import load_sampler

    if args.suite:
        from .bench import suite

        return suite.main(["--quick"] * args.quick + (["--threads", str(args.threads)] if args.threads else [])
                          + (["--peers"] if args.peers else []))
    if args.model is None:
        raise ValueError("--model is required (zoo:NAME, arch:NAME or a local pipeline folder), or give --suite")
    _check_counts(args)
    methods = args.method or []
    if methods:
        _grid_configs(methods, args.grid, {})  # fail on bad names and values before loading the model
    peer_configs = _peer_configs(args.peers)
    out, plot = check_writable(args.out), check_writable(args.plot)
    call_kwargs = {"prompt": args.prompt} if args.prompt else None
    sampler = load_sampler(args.model, num_steps=args.steps, batch=args.batch, call_kwargs=call_kwargs,
                           distribution_samples=args.samples, device=args.device)
    adapter = _adapter(sampler)
    family = adapter.family
    if not methods:
        methods = sorted(name for name, cls in configs.METHODS.items() if cls.fits(adapter.offers))
    explicit = _grid_configs(methods, args.grid, sampler.config_defaults)
    unfit = sorted({c.method for c in explicit if not c.needs() <= adapter.offers})
    if unfit:
        raise ValueError(f"{', '.join(unfit)} cannot run on {args.model} ({family} model)")
    try:
        run(sampler, explicit, out=out, plot=plot, repeats=args.repeats, seed=args.seed,
            fewer_steps_baseline=not args.no_baseline, peers=peer_configs)
    except KeyboardInterrupt:
        print(f"stepcache bench: interrupted; the finished records are in {out}", file=sys.stderr)
        return 130
    print(f"wrote {out} and {plot}")
    return 0


def _peer_configs(names: str | None) -> list:
    if names is None:
        return []
    from .bench.peers import peer_configs

    return peer_configs(None if names == "all" else names.split(","))


def _grid_configs(methods: list[str], grid_items: list[str], model_defaults: dict) -> list:
    from .bench import configs

    for method in methods:
        configs.config_class(method)
    grid = configs.parse_grid(grid_items, methods)
    return [c for m in methods for c in configs.grid_configs(m, grid[m], model_defaults.get(m))]


def _adapter(sampler):
    from .adapters import adapter_for
    from .api import find_denoiser

    return adapter_for(find_denoiser(sampler.target)[0])


def _check_counts(args) -> None:
    for name in ("steps", "repeats", "batch", "samples", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < (0 if name == "samples" else 1):
            raise ValueError(f"--{name} must be >= {0 if name == 'samples' else 1}, got {value}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


@command("methods", "list the caching methods and the model families each works on")
def _methods(args) -> int:
    from .methods import METHODS
    from .support import families_for

    for name, config in sorted(METHODS.items()):
        doc = (config.__doc__ or "").strip().splitlines()[0]
        print(f"{name:10s} {', '.join(families_for(config)):28s} {doc}")
    return 0


@command("models", "list the supported model families and the shipped zoo models")
def _models(args) -> int:
    from . import zoo
    from .adapters import ADAPTERS

    print("families:")
    for adapter in ADAPTERS:
        print(f"  {adapter.family:8s} {adapter.description}")
    print("zoo (use as --model zoo:NAME):")
    for name, description in zoo.list_models():
        print(f"  {name:14s} {description}")
    return 0


def _calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="zoo:NAME, a shipped transformer zoo model")
    parser.add_argument("--out", required=True, help="JSON file to write the coefficients to")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps per generation (default 25)")
    parser.add_argument("--seeds", type=int, default=3, help="generations, with seeds 0..N-1 (default 3)")
    parser.add_argument("--degree", type=int, default=4, help="degree of the fitted polynomial (default 4)")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="CFG scale of the generations (default 3)")


@command("calibrate", "fit TeaCache's rescaling coefficients for a model and save them as JSON", _calibrate_arguments)
def _calibrate(args) -> int:
    from .bench.targets import ZOO_PREFIX, load_pipeline
    from .calibration import calibrate
    from .zoo.teacache import calibration_inputs

    if not args.model.startswith(ZOO_PREFIX):
        raise ValueError(
            "the calibrate command takes zoo:NAME models (their inputs are known); "
            "for another pipeline call stepcache.calibrate(pipe, ...) from Python"
        )
    inputs = calibration_inputs(args.model[len(ZOO_PREFIX):])
    pipe = load_pipeline(args.model)
    result = calibrate(
        pipe, inputs, num_inference_steps=args.steps, guidance_scale=args.guidance_scale, output_type="pt",
        seeds=range(args.seeds), degree=args.degree,
    )
    result.save(args.out)
    print(
        f"{result.model_class}: degree {result.degree} fit on {result.num_samples} steps, "
        f"relative fit error {result.fit_error:.3f}; coefficients written to {args.out}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepcache", description="Training-free caching for diffusers models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, configure, run) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        configure(child)
        child.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in FIELD_COMMANDS:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command in FIELD_COMMANDS:
            args.fields = parse_fields(extra)
        return args.run(args)
    except (ValueError, TypeError, OSError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"stepcache {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
