"""The ``stepcache`` command: argument parsing only; every command calls the library.

User mistakes (unknown names, out-of-range values, unwritable paths) end with one line
on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, help_text: str, configure: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register ``run(args) -> int`` as subcommand ``name``."""

    def register(run: Callable) -> Callable:
        COMMANDS[name] = (help_text, configure, run)
        return run

    return register


@command("methods", "list the caching methods and the model families each works on")
def _methods(args) -> int:
    from .methods import METHODS

    for name, config in sorted(METHODS.items()):
        doc = (config.__doc__ or "").strip().splitlines()[0]
        print(f"{name:10s} {', '.join(config.families):28s} {doc}")
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
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"stepcache {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
