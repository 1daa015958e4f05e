import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stepcache.bench import plot  # noqa: E402


def record(kind, steps, macs_x, ratios, psnr, label=None, method=None):
    """A bench record with wall-time pairs whose (uncached / this) ratios are ``ratios``."""
    return {"kind": kind, "label": label or f"{kind} {steps}", "steps": steps, "speedup_macs": macs_x,
            "speedup_wall": sorted(ratios)[len(ratios) // 2],
            "wall_s": {"runs": [1.0] * len(ratios)}, "reference_wall_s": {"runs": list(ratios)},
            "fidelity": {"psnr": psnr}, "distribution": None,
            "config": None if method is None else {"method": method}}


RECORDS = [
    {**record("uncached", 10, 1.0, [1.0], None), "reference_wall_s": None},
    record("cached", 10, 2.0, [1.7, 1.9, 2.1], 35.0, "fora interval=2", "fora"),
    record("cached", 10, 1.0, [0.9, 1.0, 1.1], None, "fora interval=1", "fora"),  # identical images
    # wall speedups of nearby step counts swap places in noise: the line must still follow the steps
    record("fewer_steps", 5, 2.0, [2.3, 2.4, 2.5], 25.0),
    record("fewer_steps", 4, 2.5, [2.1, 2.2, 2.3], 23.0),
    record("fewer_steps", 3, 3.3, [3.0, 3.2, 3.4], 21.0),
]


def draw(x_key):
    fig, ax = plt.subplots()
    plot._panel(ax, RECORDS, x_key, "psnr")
    return fig, ax


def test_no_point_for_infinite_psnr_and_the_fewer_steps_line_follows_steps():
    fig, ax = draw("speedup_wall")
    line = ax.containers[0]
    assert list(line.lines[0].get_ydata()) == [25.0, 23.0, 21.0]  # 5, 4, 3 steps, not sorted by speedup
    assert list(line.lines[0].get_xdata()) == [2.4, 2.2, 3.2]
    ys = [y for c in ax.containers for y in c.lines[0].get_ydata()]
    assert all(math.isfinite(y) for y in ys) and 35.0 in ys and len(ax.containers) == 2  # fora interval=1 not drawn
    plt.close(fig)


def test_wall_speedups_have_error_bars_from_their_pairs():
    fig, ax = draw("speedup_wall")
    cached = ax.containers[1]
    (bars,) = cached.lines[2]  # the horizontal error bar
    assert [tuple(p) for p in bars.get_segments()[0]] == [(1.7, 35.0), (2.1, 35.0)]
    plt.close(fig)
    fig, ax = draw("speedup_macs")
    assert not ax.containers[1].lines[2]  # MACs are exact: no bars
    plt.close(fig)


def test_the_figure_names_configs_identical_to_uncached(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot.pareto_plot(RECORDS, tmp_path / "p.png", title="t")
    assert (tmp_path / "p.png").stat().st_size > 0
    notes = [t.get_text() for t in figures[0].texts]
    assert "identical to uncached (infinite PSNR, not drawn): fora interval=1" in notes
    plt.close(figures[0])


def test_records_without_timing_get_no_wall_panel():
    untimed = [{**r, "speedup_wall": None} for r in RECORDS]
    assert [p[0] for p in plot._panels(untimed)] == ["speedup_macs"]
