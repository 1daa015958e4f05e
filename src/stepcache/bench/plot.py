"""The speed/quality plot: one marker per config (peers hollow), the fewer-steps baseline as a line.

A config above the baseline line gives better quality than simply sampling less at the
same speedup. Panels: fidelity (PSNR against the uncached run) over MAC and wall-time
speedup, plus the Fréchet distance (lower is better) when distribution scores exist.
Speed-only records (no quality) get one panel: wall-time over MAC speedup, against y = x.

Only measured values are drawn. Images identical to the uncached ones have infinite PSNR:
they get no point on a PSNR panel but are named under the figure. Wall-time speedups carry
error bars from the lowest to the highest ratio of their timed pairs, Fréchet distances from
the lowest to the highest seed set. The fewer-steps line joins its runs in order of steps.
"""

from __future__ import annotations

import math
from pathlib import Path

from .records import NOT_RUN_KINDS

MARKERS = "os^DvP*X"


def pareto_plot(records: list[dict], path: str | Path, title: str = "") -> None:
    """Write the PNG for ``records`` (as returned by ``bench.run``) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in records if r["kind"] not in NOT_RUN_KINDS]
    quality = records[0]["fidelity"] is not None
    panels = _panels(records) if quality else [("speedup_macs", "MAC speedup", "speedup_wall", "wall-time speedup")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (x_key, x_label, y_key, y_label) in zip(axes[0], panels):
        _panel(ax, records, x_key, y_key)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
    if not quality:
        top = max(r["speedup_macs"] for r in records)
        axes[0][0].plot([1, top], [1, top], "k:", label="wall = MAC speedup")
        axes[0][0].plot([1, top], [0.9, 0.9 * top], color="grey", ls="--", label="90% of MAC speedup")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    identical = [r["label"] for r in records if r["kind"] != "uncached" and quality and _psnr(r) == math.inf]
    if identical:
        fig.text(0.01, -0.02, "identical to uncached (infinite PSNR, not drawn): " + "; ".join(identical),
                 fontsize=7, va="top", wrap=True)
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _panels(records: list[dict]) -> list[tuple[str, str, str, str]]:
    panels = [("speedup_macs", "MAC speedup", "psnr", "PSNR vs uncached (dB, higher is better)")]
    if all(r["speedup_wall"] is not None for r in records):
        panels.append(("speedup_wall", "wall-time speedup", "psnr", "PSNR vs uncached (dB, higher is better)"))
    if records[0]["distribution"] is not None:
        panels.append(("speedup_macs", "MAC speedup", "frechet", "Fréchet distance (lower is better)"))
    return panels


def _psnr(record: dict) -> float:
    psnr = record["fidelity"]["psnr"]
    return math.inf if psnr is None else psnr


def _value(record: dict, key: str) -> float:
    if key == "psnr":
        return _psnr(record)
    if key == "frechet":
        return record["distribution"]["frechet"]
    return record[key]


def _range(record: dict, key: str) -> tuple[float, float] | None:
    """The recorded spread of ``key``: the lowest and highest value it was the middle of, or None."""
    if key == "speedup_wall" and record.get("reference_wall_s"):
        ratios = [r / t for r, t in zip(record["reference_wall_s"]["runs"], record["wall_s"]["runs"])]
        return min(ratios), max(ratios)
    if key == "frechet":
        values = [s["frechet"] for s in record["distribution"]["per_seed_set"]]
        return min(values), max(values)
    return None


def _errors(records: list[dict], key: str):
    """Matplotlib's (2, n) error lengths below and above each value, or None when nothing has a spread."""
    spreads = [_range(r, key) for r in records]
    if not any(spreads):
        return None
    return [[_value(r, key) - s[0] if s else 0 for r, s in zip(records, spreads)],
            [s[1] - _value(r, key) if s else 0 for r, s in zip(records, spreads)]]


def _drawn(records: list[dict], x_key: str, y_key: str) -> list[dict]:
    """The records with a finite value on both axes (the uncached run's own PSNR is infinite)."""
    return [r for r in records if math.isfinite(_value(r, x_key)) and math.isfinite(_value(r, y_key))]


def _panel(ax, records: list[dict], x_key: str, y_key: str) -> None:
    # the uncached run joins the line where its value is finite (Fréchet, wall time); ordered by steps, since
    # the wall-time speedups of nearby step counts can swap places in noise
    line = sorted(_drawn([r for r in records if r["kind"] in ("uncached", "fewer_steps")], x_key, y_key),
                  key=lambda r: -r["steps"])
    if line:
        ax.errorbar([_value(r, x_key) for r in line], [_value(r, y_key) for r in line],
                    xerr=_errors(line, x_key), yerr=_errors(line, y_key), fmt="k-o", ms=3, lw=1, elinewidth=0.6,
                    capsize=2, label="fewer steps (uncached)")
    cached = [r for r in records if r["kind"] in ("cached", "peer")]
    methods = sorted({_method(r) for r in cached})
    for index, record in enumerate(cached):
        if not _drawn([record], x_key, y_key):
            continue
        # one marker shape per method, so configs stay apart when colours repeat; peers hollow
        marker = MARKERS[methods.index(_method(record)) % len(MARKERS)]
        colour = f"C{index % 10}"
        ax.errorbar(_value(record, x_key), _value(record, y_key), xerr=_errors([record], x_key),
                    yerr=_errors([record], y_key), fmt=marker, ms=6, color=colour, elinewidth=0.6, capsize=2,
                    mfc="none" if record["kind"] == "peer" else colour, label=record["label"])


def _method(record: dict) -> str:
    return record["config"]["peer"] if record["kind"] == "peer" else record["config"]["method"]
