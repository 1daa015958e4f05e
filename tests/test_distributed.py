"""Several ranks, one image: adaptive methods decide as one process would; static methods issue no collectives.

The multi-process scenarios run in one launch of two gloo processes on CPU (``_rank_main``), a
tiny FLUX sharded by diffusers' own context parallelism (Ulysses degree 2); each test below
checks one scenario's outcome on every rank. A hang is a failure: gloo's collectives time out
and the launch has a deadline. On CPU, diffusers places rank r on device r % device_count, so
the children report one "device" per rank, and token counts must split evenly over 2 ranks
(16 image tokens, 6 text tokens).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import socket
import sys
import time
import traceback

import pytest
import torch
import torch.distributed as dist

import stepcache
import tiny
from stepcache.core import distributed

WORLD = 2
STEPS = 10
GLOO_TIMEOUT_S = 45  # a collective a rank waits in longer than this raises there
DEADLINE_S = 300  # the whole launch; normally about 20 s
LINEAR = (1.0, 0.0)

# thresholds whose accumulated distances stay well away from them (checked: _margin), so rounding
# cannot flip a decision; on this model they skip [6], [1, 3, 5, 7] and [1, 2, 4, 5, 6, 8]
TEACACHE_THRESHOLDS = (0.05, 0.1, 0.2)


def _adaptive_configs() -> dict:
    configs = {f"teacache-{t}": stepcache.TeaCacheConfig(threshold=t, coefficients=LINEAR)
               for t in TEACACHE_THRESHOLDS}
    configs["adacache"] = stepcache.AdaCacheConfig(codebook=((0.2, 3), (0.4, 2)))
    configs["adacache-reference"] = stepcache.AdaCacheConfig(codebook=((0.2, 3), (0.4, 2)), convention="reference")
    return configs


def _static_configs() -> dict:
    return {"fora": stepcache.FORAConfig(interval=3), "delta-dit": stepcache.DeltaDiTConfig(interval=2, num_blocks=1)}


def _pipeline():
    pipe = tiny.flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _call_kwargs(seed: int = 0, steps: int = STEPS) -> dict:
    g = torch.Generator().manual_seed(seed + 7)
    return dict(prompt_embeds=tiny._text(1, seed, tokens=6), pooled_prompt_embeds=torch.randn(1, tiny.TEXT_DIM, generator=g),
                height=16, width=16, num_inference_steps=steps, output_type="pt")


def _generate(pipe, seed: int = 0, steps: int = STEPS) -> torch.Tensor:
    return pipe(**_call_kwargs(seed, steps), generator=torch.Generator().manual_seed(seed)).images


def _cached_run(pipe, config, seed: int = 0, steps: int = STEPS) -> tuple[torch.Tensor, dict]:
    with stepcache.cached(pipe, config) as handle:
        images = _generate(pipe, seed, steps)
        return images, handle.stats()


def _schedule(stats: dict) -> dict:
    """What a run decided: the same on every rank and in one process."""
    return {key: stats[key] for key in ("cached_step_indices", "reuse_lengths") if key in stats}


def _statistics(stats: dict) -> list[float]:
    return stats.get("accumulated_distance") or stats["rates"]


def _margin(config, stats: dict) -> float:
    """How close a statistic came to a threshold it is compared with, relative to that threshold."""
    if "accumulated_distance" in stats:
        pairs = [(value, config.threshold) for value in stats["accumulated_distance"]]
    else:
        pairs = [(rate, threshold) for rate in stats["rates"] for threshold, _ in config.codebook]
    return min(abs(value - threshold) / threshold for value, threshold in pairs)


class _AllReduces:
    """Counts torch.distributed.all_reduce calls (and the groups they name) while installed."""

    def __init__(self) -> None:
        self.groups: list = []
        self._original = dist.all_reduce

        @functools.wraps(self._original)
        def counting(tensor, *args, **kwargs):
            self.groups.append(kwargs.get("group", args[1] if len(args) > 1 else None))
            return self._original(tensor, *args, **kwargs)

        dist.all_reduce = counting

    def take(self) -> list:
        groups, self.groups = self.groups, []
        return groups


@contextlib.contextmanager
def _scenario(results: dict, name: str):
    """Record ``name`` as "ok" or with its traceback, then line the ranks up for the next scenario."""
    try:
        yield
        results[name] = "ok"
    except Exception:  # recorded for the parent to report, on every rank
        results[name] = traceback.format_exc()
    dist.barrier()


def _rank_main(rank: int, init_method: str, out_dir: str) -> None:
    # one thread per rank whatever STEPCACHE_TEST_THREADS says: two ranks of two threads on a 2-core machine
    # spend minutes in gloo's waits; each rank's single-process reference runs with the same one thread
    torch.set_num_threads(1)
    torch.accelerator.device_count = lambda: WORLD  # diffusers' CP mesh: one CPU "device" per rank
    results: dict[str, str] = {}
    adaptive, static = _adaptive_configs(), _static_configs()
    pipe = _pipeline()

    # single-process results, before torch.distributed exists; each rank's own inputs for the unsharded case
    reference = {name: _cached_run(pipe, config) for name, config in {**adaptive, **static}.items()}
    own_seed, own_steps = 10 + rank, 6 + 2 * rank
    own = {name: _cached_run(pipe, config, own_seed, own_steps) for name, config in adaptive.items()}
    calibration = stepcache.calibrate(pipe, **_call_kwargs(), seeds=(0,), degree=1)

    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=GLOO_TIMEOUT_S))
    all_reduces = _AllReduces()
    try:
        with _scenario(results, "not-sharded"):
            for name, config in adaptive.items():
                images, stats = _cached_run(pipe, config, own_seed, own_steps)
                assert torch.equal(images, own[name][0]), name
                assert _schedule(stats) == _schedule(own[name][1]), name
                assert all_reduces.take() == [], name

        with _scenario(results, "group-argument"):
            # another engine's group: here every rank holds the whole image, and a ratio of sums added over
            # the ranks is the one process's ratio
            world = dist.group.WORLD
            for name in ("teacache-0.1", "adacache"):
                with stepcache.cached(pipe, adaptive[name], group=world) as handle:
                    images = _generate(pipe)
                    assert _schedule(handle.stats()) == _schedule(reference[name][1]), name
                tiny.assert_within_rounding(images, reference[name][0], tiny.ONE_CALL_EPS)
                groups = all_reduces.take()
                assert groups and all(group is world for group in groups), name
            try:
                stepcache.apply(pipe, adaptive["adacache"], group="world")
                raise AssertionError("group='world' was taken")
            except TypeError as error:
                assert "ProcessGroup" in str(error)

        from diffusers import ContextParallelConfig

        sharded = _pipeline()
        sharded.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=WORLD))
        cp_group = sharded.transformer._parallel_config.context_parallel_config._flattened_mesh.get_group()
        uncached = _generate(sharded)

        with _scenario(results, "cp-adaptive"):
            for name, config in adaptive.items():
                assert _margin(config, reference[name][1]) > 1e-3, (name, "rounding could flip a decision: "
                                                                     "pick other thresholds")
                images, stats = _cached_run(sharded, config)
                expected_images, expected = reference[name]
                assert _schedule(stats) == _schedule(expected), (name, _schedule(stats), _schedule(expected))
                assert stats["cached_steps"] > 0, name
                torch.testing.assert_close(_statistics(stats), _statistics(expected), rtol=1e-5, atol=0)
                tiny.assert_within_rounding(images, expected_images, tiny.TINY_RUN_EPS)
                groups = all_reduces.take()
                assert groups and all(group is cp_group for group in groups), name
                if name.startswith("teacache"):  # one per step from the second on: each step's decision
                    assert len(groups) == STEPS - 1, (name, len(groups))
                assert torch.equal(_generate(sharded), uncached), name  # remove() left CP, uncached

        with _scenario(results, "cp-calibrate"):
            fitted = stepcache.calibrate(sharded, **_call_kwargs(), seeds=(0,), degree=1)
            torch.testing.assert_close(fitted.coefficients, calibration.coefficients, rtol=1e-5, atol=1e-6)
            groups = all_reduces.take()
            assert len(groups) == STEPS - 1 and all(group is cp_group for group in groups), len(groups)

        with _scenario(results, "cp-static"):
            for name, config in static.items():
                images, stats = _cached_run(sharded, config)
                assert all_reduces.take() == [], name
                assert _schedule(stats) == _schedule(reference[name][1]), name
                tiny.assert_within_rounding(images, reference[name][0], tiny.TINY_RUN_EPS)
                assert torch.equal(_generate(sharded), uncached), name

        with _scenario(results, "sharded-after-apply"):
            late = _pipeline()
            handle = stepcache.apply(late, adaptive["teacache-0.1"])
            late.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=WORLD))
            try:
                _generate(late)
                raise AssertionError("a run after enable_parallelism followed apply was not refused")
            except RuntimeError as error:
                assert "enable_parallelism first, then apply" in str(error), error
            handle.remove()
            assert torch.equal(_generate(late), uncached)
            images, stats = _cached_run(late, adaptive["teacache-0.1"])
            assert _schedule(stats) == _schedule(reference["teacache-0.1"][1])
            assert torch.equal(_generate(late), uncached)
        all_reduces.take()

        with _scenario(results, "mismatch"):
            sharding = distributed.resolve(sharded.transformer)
            try:
                sharding.sum(torch.ones(2, dtype=torch.float64), step=3 + rank)
                raise AssertionError("ranks at different steps were not told")
            except stepcache.ShardMismatchError as error:
                assert "different steps" in str(error)
    finally:
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as file:
            json.dump(results, file)
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Every scenario's outcome on each rank ("ok" or a traceback)."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available in this torch build")
    import torch.multiprocessing as mp

    out_dir = tmp_path_factory.mktemp("ranks")
    context = mp.start_processes(_rank_main, args=(f"tcp://127.0.0.1:{_free_port()}", str(out_dir)),
                                 nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} ranks did not finish in {DEADLINE_S} s: a hang")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in range(WORLD)]


def _assert_ok(ranks: list[dict], scenario: str) -> None:
    for rank, results in enumerate(ranks):
        assert results.get(scenario) == "ok", f"rank {rank}, {scenario}:\n{results.get(scenario, 'not run')}"


def test_adaptive_methods_take_the_single_process_decisions_on_every_cp_rank(ranks):
    # TeaCache at three thresholds and AdaCache (both conventions): schedule, statistics and images as in one
    # process; every all-reduce on the CP group, one per TeaCache decision; remove() leaves the uncached CP model
    _assert_ok(ranks, "cp-adaptive")


def test_teacache_calibration_under_cp_fits_the_single_process_coefficients(ranks):
    _assert_ok(ranks, "cp-calibrate")


def test_static_methods_under_cp_issue_no_collectives(ranks):
    _assert_ok(ranks, "cp-static")


def test_torch_distributed_without_sharding_decides_per_rank_without_collectives(ranks):
    # each rank its own seed and step count: its single-process result bit for bit, no all-reduce
    _assert_ok(ranks, "not-sharded")


def test_enable_parallelism_after_apply_is_refused_at_the_next_run_and_remove_still_works(ranks):
    _assert_ok(ranks, "sharded-after-apply")


def test_ranks_reducing_at_different_steps_raise_on_every_rank(ranks):
    _assert_ok(ranks, "mismatch")


def test_sharding_stepcache_cannot_read_refuses_adaptive_methods_and_runs_static_ones():
    from diffusers.models._modeling_parallel import ParallelConfig, TensorParallelConfig

    pipe = _pipeline()
    reference = _generate(pipe, steps=3)
    # what enable_parallelism records for tensor parallelism (which diffusers runs on GPUs only)
    pipe.transformer._parallel_config = ParallelConfig(tensor_parallel_config=TensorParallelConfig(tp_degree=2))
    for config in (stepcache.TeaCacheConfig(coefficients=LINEAR), stepcache.AdaCacheConfig()):
        with pytest.raises(stepcache.UnreadableShardingError, match="tensor parallelism.*group="):
            stepcache.apply(pipe, config)
    with stepcache.cached(pipe, stepcache.FORAConfig(interval=1)):
        assert torch.equal(_generate(pipe, steps=3), reference)
    # group=None: the user says every rank holds whole activations
    with stepcache.cached(pipe, stepcache.TeaCacheConfig(threshold=0.0, coefficients=LINEAR), group=None):
        assert torch.equal(_generate(pipe, steps=3), reference)


def test_another_engines_group_is_taken_and_checked(ranks):
    _assert_ok(ranks, "group-argument")


@pytest.mark.skipif(dist.is_available() and dist.is_initialized(), reason="needs torch.distributed uninitialised")
def test_a_group_without_torch_distributed_is_refused():
    with pytest.raises(RuntimeError, match="torch.distributed is not initialised"):
        stepcache.apply(tiny.flux(), stepcache.FORAConfig(interval=2), group=object())
