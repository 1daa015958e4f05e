"""The ``stepcache`` command: argument parsing and input checks; every command calls the library.

One error boundary: what the user got wrong (an unknown name or option, a value out of
range, a path that cannot be written, a device this machine lacks, a config that cannot
run here) is a ``UsageError``, found before any model runs and reported as one line with
exit status 2. Anything else is a bug and keeps its traceback. Ctrl-C says which of the
command's files were written before it.

Config fields are set one way everywhere: ``--set FIELD=VALUE`` (generate, tune, stepcost),
``--grid FIELD=V1,V2`` (bench), or a JSON/YAML config file (``--config``).
"""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from .errors import UsageError, check_device, check_plotting, check_writable


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are UsageErrors (one line), with abbreviations off: an option is spelt out."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise _ParseError(self.prog, message)


class _ParseError(UsageError):
    """An argparse mistake, with the (sub)command it was made in."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}
# the files each command may write (argument names): on Ctrl-C the command says which of them it wrote
OUTPUTS: dict[str, tuple[str, ...]] = {}


def command(name: str, help_text: str, configure: Callable[[argparse.ArgumentParser], None] = lambda p: None,
            outputs: tuple[str, ...] = ()):
    """Register ``run(args) -> int`` as subcommand ``name``."""

    def register(run: Callable) -> Callable:
        COMMANDS[name] = (help_text, configure, run)
        OUTPUTS[name] = outputs
        return run

    return register


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


# -- options several commands share -------------------------------------------------------------


def _model_options(parser: argparse.ArgumentParser, default_model: str | None, repeats_help: str | None) -> None:
    parser.add_argument("--model", default=default_model,
                        help="zoo:NAME, arch:NAME (random weights, speed only) or a local from_pretrained folder "
                             "(`stepcache models` lists them)")
    parser.add_argument("--steps", type=count(1), default=None, help="sampling steps (default: 25, arch: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise, the same for every run")
    if repeats_help:
        parser.add_argument("--repeats", type=count(1), default=3, help=repeats_help)
    parser.add_argument("--batch", type=count(1), default=None, help="images per run (zoo default: 8, arch: 1)")
    parser.add_argument("--prompt", default=None, help="prompt for a local text-to-image pipeline")
    _machine_options(parser)


def _machine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps (default cpu)")
    parser.add_argument("--threads", type=count(1), default=None, help="torch CPU threads (default: torch's choice)")


def _executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", default="serial", metavar="serial|ray",
                        help="where the independent cells run: here, one after another (default), or as Ray tasks "
                             "(extra 'ray'; their wall times are marked not comparable)")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="with --executor ray: a running cluster (default: ray.init() starts a local one)")


def _config_options(parser: argparse.ArgumentParser, method_help: str) -> None:
    parser.add_argument("--method", default=None, help=method_help)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="settings",
                        help="a config field, repeatable (`stepcache methods` lists each method's fields), "
                             "e.g. --set threshold=0.2")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="a JSON or YAML config file ({\"method\": ..., FIELD: VALUE}; `stepcache tune` writes "
                             "one); --set changes its fields")
    parser.add_argument("--preset", default=None, metavar="NAME",
                        help="a published setting (`stepcache methods` lists them under each method); "
                             "--set changes its fields")


def _prepare_machine(args) -> None:
    check_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _config_request(args) -> tuple[type, dict]:
    """The config class and the field values (text or typed) the user asked for: --config, then --method/--set."""
    from .bench.configs import config_class, make_config, parse_settings
    from .config_files import read_config_record

    if args.config and args.preset:
        raise UsageError("give --config FILE or --preset NAME, not both")
    record = dict(read_config_record(args.config)) if args.config else {}
    source = args.config
    if args.preset:
        record, source = _preset_record(args.preset), f"preset {args.preset}"
    method = record.pop("method", None)
    if args.method and method and args.method != method:
        raise UsageError(f"{source} is a {method} config and --method says {args.method}: give one of them")
    method = args.method or method
    if method is None:
        raise UsageError("give --method NAME or --config FILE (`stepcache methods` lists the methods)")
    cls = config_class(method)
    fields = {**record, **parse_settings(args.settings)}
    make_config(cls, fields)  # bad values fail here, before anything loads
    return cls, fields


def _preset_record(name: str) -> dict:
    """A preset's config as a config-file record: its method and every field."""
    from . import presets
    from .config_files import as_record

    try:
        return as_record(presets.get(name))
    except ValueError as error:  # an unknown name, listing the presets
        raise UsageError(str(error)) from None


def _load_sampler(args, distribution_samples: int = 0):
    from .bench.targets import load_sampler

    call_kwargs = {"prompt": args.prompt} if args.prompt else None
    return load_sampler(args.model, num_steps=args.steps, batch=args.batch, call_kwargs=call_kwargs,
                        distribution_samples=distribution_samples, device=args.device)


def _fitting_config(sampler, cls, fields: dict):
    """The config with the model's calibrated defaults under the user's fields; UsageError if it cannot run here."""
    from .bench.configs import describe, make_config
    from .bench.runner import cannot_run

    config = make_config(cls, {**sampler.config_defaults.get(cls.method, {}), **fields})
    reason = cannot_run(sampler, config, sampler.num_steps)
    if reason:
        raise UsageError(f"{describe(config)} cannot run on {sampler.name} with {sampler.num_steps} steps: {reason}")
    return config


# -- generate -----------------------------------------------------------------------------------


def _configure_generate(parser: argparse.ArgumentParser) -> None:
    _model_options(parser, "zoo:dit-digits", repeats_help=None)
    _config_options(parser, "caching method (`stepcache methods` lists them)")
    parser.add_argument("--pairs", type=count(1), default=1,
                        help="timed (uncached, cached) run pairs for the wall speedup (default 1; more: less noise)")
    parser.add_argument("--out", default="out/generate.png", help="image grid PNG; the summary goes to <out>.json")


@command("generate", "generate images with a cache; print its speedup and fidelity against no cache",
         _configure_generate, outputs=("out", "summary"))
def _generate(args) -> int:
    from .bench.generate import generate, summary_line

    if args.model.startswith("arch:"):
        raise UsageError("arch: models have random weights and no meaningful images; use `stepcache bench`")
    cls, fields = _config_request(args)
    out = check_writable(args.out)
    args.summary = check_writable(out.with_suffix(".json"))
    _prepare_machine(args)
    sampler = _load_sampler(args)
    config = _fitting_config(sampler, cls, fields)
    print(summary_line(generate(sampler, config, out, pairs=args.pairs, seed=args.seed)))
    return 0


# -- bench --------------------------------------------------------------------------------------


def _configure_bench(parser: argparse.ArgumentParser) -> None:
    _model_options(parser, None, repeats_help="timed (uncached, cached) run pairs per config, after one warm-up")
    parser.add_argument("--method", action="append", default=None,
                        help="method to sweep (repeatable; default: every method that runs on the model)")
    parser.add_argument("--grid", action="append", default=[], metavar="[METHOD.]FIELD=V1,V2",
                        help="replaces that field's values in the method's default grids (repeatable)")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="also measure the config in this JSON/YAML file (repeatable); with only --config "
                             "given, no grid is swept")
    parser.add_argument("--samples", type=count(0), default=0,
                        help="zoo models: samples per seed set for accuracy and Fréchet distance (0: skip)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the fewer-steps baseline")
    parser.add_argument("--peers", nargs="?", const="all", default=None, metavar="PEER,...",
                        help="also measure other libraries' caches (diffusers' own, cache-dit, the DeepCache package) "
                             "over their grids in stepcache.bench.peers.PEER_GRIDS: all, or the named ones")
    parser.add_argument("--out", default="out/bench.json", help="results JSON (rewritten after every config)")
    parser.add_argument("--plot", default="out/bench.png", help="speed/quality plot PNG (needs matplotlib)")
    parser.add_argument("--no-plot", action="store_true", help="draw no plot")
    parser.add_argument("--suite", action="store_true",
                        help="run the whole suite and write BENCHMARKS.md (same as python -m stepcache.bench.suite)")
    parser.add_argument("--quick", action="store_true", help="with --suite: smoke-test settings")
    _executor_options(parser)


@command("bench", "measure speed (wall time, MACs) and quality of caching configs against no cache",
         _configure_bench, outputs=("out", "plot"))
def _bench(args) -> int:
    from .bench import configs, executor
    from .bench.report import terminal_table
    from .bench.runner import cannot_run, does_not_apply, run
    from .config_files import read_config_record

    if args.suite:
        from .bench import suite

        if args.executor != "serial":
            raise UsageError("--executor is for one model's sweep, not --suite")
        return suite.main(["--quick"] * args.quick + (["--threads", str(args.threads)] if args.threads else [])
                          + (["--peers"] if args.peers else []))
    if args.model is None:
        raise UsageError("--model is required (zoo:NAME, arch:NAME or a local pipeline folder), or give --suite")
    executor.check(args.executor, args.ray_address)
    if args.no_plot:
        args.plot = None
    elif args.plot:
        check_plotting()
    methods = args.method or []
    for method in methods:
        configs.config_class(method)
    grid = configs.parse_grid(args.grid, methods) if methods else {}
    if args.grid and not methods:
        raise UsageError("--grid needs --method: name the methods whose grids it changes")
    files = [read_config_record(path) for path in args.config]
    file_classes = [configs.config_class(record["method"]) for record in files]
    for cls, record in zip(file_classes, files):
        configs.make_config(cls, _fields(record))
    _grid_configs(methods, grid, {})  # bad names and values fail before the model loads
    peer_configs = _peer_configs(args.peers)
    args.out = check_writable(args.out)
    if args.plot:
        args.plot = check_writable(args.plot)
    _prepare_machine(args)
    sampler = _load_sampler(args, distribution_samples=args.samples)
    if not methods and not files:
        methods = [name for name in sorted(configs.METHODS) if not does_not_apply(sampler, name)]
        grid = {m: {} for m in methods}
    unfit = {m: reason for m in methods if (reason := does_not_apply(sampler, m))}
    if unfit:
        raise UsageError(f"{', '.join(unfit)} cannot run on {args.model}: {next(iter(unfit.values()))}")
    explicit = _grid_configs(methods, grid, sampler.config_defaults)
    explicit += [configs.make_config(cls, {**sampler.config_defaults.get(cls.method, {}),
                                           **_fields(record)})
                 for cls, record in zip(file_classes, files)]
    if explicit and all(cannot_run(sampler, c, sampler.num_steps) for c in explicit) and not peer_configs:
        reason = cannot_run(sampler, explicit[0], sampler.num_steps)
        raise UsageError(f"no config can run on {sampler.name} with {sampler.num_steps} steps; "
                         f"{configs.describe(explicit[0])}: {reason}")
    run_on = executor.make(args.executor, args.ray_address)
    try:
        records = run(sampler, explicit, out=args.out, plot=args.plot, repeats=args.repeats, seed=args.seed,
                      fewer_steps_baseline=not args.no_baseline, peers=peer_configs, executor=run_on)
    finally:
        run_on.close()
    print(terminal_table(records))
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def _fields(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "method"}


def _peer_configs(names: str | None) -> list:
    if names is None:
        return []
    from .bench.peers import peer_configs

    try:
        return peer_configs(None if names == "all" else names.split(","))
    except ValueError as error:  # an unknown peer name: the only input peer_configs checks
        raise UsageError(str(error)) from None


def _grid_configs(methods: list[str], grid: dict, model_defaults: dict) -> list:
    from .bench import configs

    return [c for m in methods for c in configs.grid_configs(m, grid.get(m), model_defaults.get(m))]


# -- tune ---------------------------------------------------------------------------------------


def _configure_tune(parser: argparse.ArgumentParser) -> None:
    _model_options(parser, None, repeats_help=None)
    parser.add_argument("--target", default=None, metavar="METRIC>=VALUE",
                        help="quality to keep (required): psnr>=DB, ssim>=S, feature_distance<=D against the uncached "
                             "images; accuracy>=A or frechet<=F with --samples (zoo models)")
    parser.add_argument("--method", action="append", default=None,
                        help="search only this method (repeatable; default: every method that runs on the model)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="settings",
                        help="fix a field in every candidate that has it, e.g. --set cooldown=2 (repeatable)")
    parser.add_argument("--samples", type=count(0), default=0,
                        help="zoo models: samples per seed set for accuracy/Fréchet targets (0: none)")
    parser.add_argument("--refine", type=count(0), default=2,
                        help="bisection rounds around the best grid point (default 2)")
    parser.add_argument("--pairs", type=count(0), default=0,
                        help="also time the chosen config in N (uncached, cached) run pairs (default 0: MACs only)")
    parser.add_argument("--out", default="out/tuned.json",
                        help="the chosen config (JSON, or YAML for .yaml), for apply(pipe, FILE) or --config FILE")


@command("tune", "find the fastest config that meets a quality target and beats sampling fewer steps",
         _configure_tune, outputs=("out",))
def _tune(args) -> int:
    from .bench import configs
    from .bench.tune import Target, evidence_table, tune
    from .config_files import save_config

    _require(args, "model", "target")
    if args.model.startswith("arch:"):
        raise UsageError("arch: models have random weights: there is no quality to tune against; use zoo: or a "
                         "local pipeline")
    goal = Target.parse(args.target)
    for method in args.method or []:
        configs.config_class(method)
    fixed = configs.parse_settings(args.settings)
    for name in fixed:
        if not any(name in configs.field_names(cls) for cls in configs.METHODS.values()):
            raise UsageError(f"--set {name}: no method has a field {name!r} (`stepcache methods` lists them)")
    args.out = check_writable(args.out)
    _prepare_machine(args)
    sampler = _load_sampler(args, distribution_samples=args.samples)
    typed = {name: _typed_field(name, text) for name, text in fixed.items()}
    result = tune(sampler, goal, methods=args.method, fixed=typed, refine=args.refine, pairs=args.pairs,
                  seed=args.seed)
    print(f"Pareto front on {sampler.name}, {sampler.num_steps} steps (MAC speedup against {goal.metric}):")
    print(evidence_table(result))
    if result.config is None:
        print(f"no config meets {goal} and beats sampling fewer steps at its speed; nothing written")
        fewer = result.fewer_steps
        if fewer is not None:
            print(f"sampling fewer steps does: {fewer['steps']} steps ({fewer['speedup_macs']:.2f}x MACs) reach "
                  f"{goal.metric} {goal.score(fewer):.4g}; run the pipeline with num_inference_steps={fewer['steps']}")
        return 1
    save_config(result.config, args.out)
    record = result.record
    wall = f", {result.timed['speedup_wall']:.2f}x wall" if result.timed else ""
    print(f"chosen: {record['label']}: {record['speedup_macs']:.2f}x MACs{wall}, {goal.metric} "
          f"{goal.score(record):.4g} (target {goal}); fewer steps at that speed ({result.baseline['steps']} steps): "
          f"{goal.score(result.baseline):.4g}")
    print(f"wrote {args.out}: stepcache.apply(pipe, {str(args.out)!r}) or --config {args.out}")
    return 0


def _typed_field(name: str, text: str):
    """A --set value typed by the first method that has the field (fields shared by methods share a type)."""
    import typing

    from .bench import configs

    cls = next(cls for cls in configs.METHODS.values() if name in configs.field_names(cls))
    return configs.coerce(text, typing.get_type_hints(cls)[name], f"--set {name}")


# -- the other measurements ---------------------------------------------------------------------


def _calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="zoo:NAME, a shipped transformer zoo model (required)")
    parser.add_argument("--out", default=None, help="JSON file to write the coefficients to (required)")
    parser.add_argument("--steps", type=count(2), default=25, help="denoising steps per generation (default 25)")
    parser.add_argument("--seeds", type=count(1), default=3, help="generations, with seeds 0..N-1 (default 3)")
    parser.add_argument("--degree", type=count(1), default=4, help="degree of the fitted polynomial (default 4)")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="CFG scale of the generations (default 3)")
    _machine_options(parser)
    _executor_options(parser)


@command("calibrate", "fit TeaCache's rescaling coefficients for a model and save them as JSON", _calibrate_arguments,
         outputs=("out",))
def _calibrate(args) -> int:
    from .bench import executor
    from .bench.runner import does_not_apply
    from .bench.targets import ZOO_PREFIX, load_pipeline
    from .calibration import calibrate
    from .zoo.teacache import calibration_inputs

    _require(args, "model", "out")
    executor.check(args.executor, args.ray_address)
    if not args.model.startswith(ZOO_PREFIX):
        raise UsageError(
            "the calibrate command takes zoo:NAME models (their inputs are known); "
            "for another pipeline call stepcache.calibrate(pipe, ...) from Python"
        )
    check_writable(args.out)
    _prepare_machine(args)
    pipe = load_pipeline(args.model, device=args.device)
    reason = does_not_apply(pipe, "teacache")
    if reason:
        raise UsageError(f"calibrate fits TeaCache's coefficients, and TeaCache does not run on {args.model}: {reason}")
    run_on = executor.make(args.executor, args.ray_address)
    try:
        result = calibrate(
            pipe, calibration_inputs(args.model[len(ZOO_PREFIX):]), num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale, output_type="pt", seeds=range(args.seeds), degree=args.degree,
            executor=run_on,
        )
    finally:
        run_on.close()
    result.save(args.out)
    print(
        f"{result.model_class}: degree {result.degree} fit on {result.num_samples} steps, "
        f"relative fit error {result.fit_error:.3f}; coefficients written to {args.out}"
    )
    return 0


def _stepcost_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="arch:dit-xl-2", help="an arch: model (`stepcache models` lists them)")
    _config_options(parser, "caching method (default fora)")
    parser.add_argument("--latent", type=count(1), default=32, help="latent size (default 32: 256 px)")
    parser.add_argument("--repeats", type=count(1), default=None,
                        help="timed runs (default 5) or, with --overhead, pairs (20)")
    parser.add_argument("--overhead", action="store_true",
                        help="time the hooks of a config that caches nothing (e.g. --set interval=1) against the "
                             "bare model")
    parser.add_argument("--threads", type=count(1), default=None, help="torch CPU threads (default: torch's choice)")


@command("stepcost", "wall time of a cached step against a full one, or of the hooks alone (arch: models)",
         _stepcost_arguments)
def _stepcost(args) -> int:
    from .bench import stepcost

    if args.method is None and args.config is None and args.preset is None:
        args.method = "fora"
    cls, fields = _config_request(args)
    args.device = "cpu"
    _prepare_machine(args)
    print(stepcost.measure_line(args.model, cls, fields, args.latent, args.repeats, args.overhead))
    return 0


# -- what there is ------------------------------------------------------------------------------


def _methods_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=None, help="one method (default: all)")


@command("methods", "list the caching methods: the models each runs on, and each field's default, range and meaning",
         _methods_arguments)
def _methods(args) -> int:
    import textwrap

    from . import presets
    from .bench.configs import config_class
    from .config_files import field_docs
    from .methods import METHODS
    from .support import families_for

    names = [config_class(args.name).method] if args.name else sorted(METHODS)
    for name in names:
        cls = METHODS[name]
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name} ({cls.__name__}): {doc}")
        print(f"  runs on: {', '.join(families_for(cls))} models")
        for f in field_docs(cls):
            print(f"  {f.name} (default {f.default!r}): {f.allowed}")
            if f.meaning:
                print(textwrap.fill(f.meaning, width=100, initial_indent="      ", subsequent_indent="      "))
        published = [(preset_name, p) for preset_name, p in presets.PRESETS.items() if p.config.method == name]
        if published:
            print("  presets (--preset NAME; the reference convention, published for the steps given):")
            for preset_name, p in published:
                print(f"    {preset_name}: {p.steps} steps, {p.source}")
        print()
    print("Set a field with --set FIELD=VALUE (generate, tune, stepcost) or sweep it with --grid FIELD=V1,V2 (bench);\n"
          "tuples are written with / between items and : inside pairs, e.g. --set codebook=0.03:4/0.05:3.")
    return 0


@command("models", "list the model families, the shipped zoo models and the real-size arch: models")
def _models(args) -> int:
    from . import zoo
    from .adapters import ADAPTERS
    from .bench.arch import ARCHS, describe_arch

    sections = [
        ("families:", [(a.family, a.description) for a in ADAPTERS]),
        ("zoo (trained tiny models, quality and speed; use as --model zoo:NAME):", zoo.list_models()),
        ("arch (published sizes with random weights, speed only; use as --model arch:NAME):",
         [(name, describe_arch(name)) for name in ARCHS]),
    ]
    width = max(len(name) for _, rows in sections for name, _ in rows)  # one name column for all three lists
    for title, rows in sections:
        print(title)
        for name, description in rows:
            print(f"  {name:{width}s}  {description}")
    return 0


# -- the boundary -------------------------------------------------------------------------------


def _require(args, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is None]
    if missing:
        raise UsageError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = _Parser(prog="stepcache", description="Training-free caching for diffusers models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    children = {}
    for name, (help_text, configure, run) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        configure(child)
        child.set_defaults(run=run)
        children[name] = child
    return parser, children


def _unknown_options(extra: list[str], parser: argparse.ArgumentParser) -> str:
    """The message for arguments the command does not take: a near miss named, a config field pointed to --set."""
    from .methods import METHODS

    first = extra[0]
    name = first.split("=", 1)[0]
    field = name.lstrip("-").replace("-", "_")
    if name.startswith("--") and any(field in getattr(cls, "__dataclass_fields__", {}) for cls in METHODS.values()):
        value = first.split("=", 1)[1] if "=" in first else (extra[1] if len(extra) > 1 else "VALUE")
        return f"unknown option {name}: config fields are set with --set {field}={value}"
    known = [o for action in parser._actions for o in action.option_strings]
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"unknown option {name} (did you mean {close[0]}?)"
    return f"unrecognized arguments: {' '.join(extra)}"


def main(argv: Sequence[str] | None = None) -> int:
    started = time.time()
    name = "stepcache"
    args = None
    try:
        parser, children = build_parser()
        args, extra = parser.parse_known_args(argv)
        name = f"stepcache {args.command}"
        if extra:
            raise UsageError(_unknown_options(extra, children[args.command]))
        return args.run(args)
    except UsageError as error:
        print(f"{getattr(error, 'prog', name)}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; {_kept(args, started)}", file=sys.stderr)
        return 130


def _kept(args, started: float) -> str:
    """What the interrupted command left on disk: its output files written since it started."""
    if args is None:
        return "nothing was written"
    paths = [Path(path) for name in OUTPUTS.get(args.command, ()) if (path := getattr(args, name, None))]
    written = [str(path) for path in paths if path.is_file() and path.stat().st_mtime >= started]
    if not written:
        return "nothing was written"
    return f"kept {', '.join(written)} (written before the interrupt: the records finished so far)"


if __name__ == "__main__":
    sys.exit(main())
