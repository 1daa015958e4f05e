"""Speed and quality measurement: MACs, wall time, fidelity, and the harness that runs them.

``stepcache.bench.run(pipe_or_sampler, configs, ...)`` is the harness; see ``runner``.
"""


def run(*args, **kwargs):
    """``stepcache.bench.runner.run``, imported on first use so that ``bench.macs`` stays light."""
    from .runner import run as run_bench

    return run_bench(*args, **kwargs)
