"""The speed/quality plot: one marker per config (peers hollow), the fewer-steps baseline as a line.

A config above the baseline line gives better quality than simply sampling less at the
same speedup. Panels: fidelity (PSNR against the uncached run) over MAC and wall-time
speedup, plus the Fréchet distance (lower is better) when distribution scores exist.
Speed-only records (no quality) get one panel: wall-time over MAC speedup, against y = x.
"""

from __future__ import annotations

from pathlib import Path

from .records import NOT_RUN_KINDS

PSNR_CAP = 60.0
MARKERS = "os^DvP*X"  # identical images have infinite PSNR; drawn at this height


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
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _panels(records: list[dict]) -> list[tuple[str, str, str, str]]:
    panels = [
        ("speedup_macs", "MAC speedup", "psnr", "PSNR vs uncached (dB, higher is better)"),
        ("speedup_wall", "wall-time speedup", "psnr", "PSNR vs uncached (dB, higher is better)"),
    ]
    if records[0]["distribution"] is not None:
        panels.append(("speedup_macs", "MAC speedup", "frechet", "Fréchet distance (lower is better)"))
    return panels


def _value(record: dict, key: str) -> float:
    if key == "psnr":
        psnr = record["fidelity"]["psnr"]
        return PSNR_CAP if psnr is None or psnr > PSNR_CAP else psnr
    if key == "frechet":
        return record["distribution"]["frechet"]
    return record[key]


def _panel(ax, records: list[dict], x_key: str, y_key: str) -> None:
    line = sorted((r for r in records if r["kind"] in ("uncached", "fewer_steps")), key=lambda r: r[x_key])
    ax.plot([_value(r, x_key) for r in line], [_value(r, y_key) for r in line], "k-o", ms=3,
            label="fewer steps (uncached)")
    cached = [r for r in records if r["kind"] in ("cached", "peer")]
    methods = sorted({_method(r) for r in cached})
    for index, record in enumerate(cached):
        # one marker shape per method, so configs stay apart when colours repeat; peers hollow
        marker = MARKERS[methods.index(_method(record)) % len(MARKERS)]
        style = {"facecolors": "none", "edgecolors": f"C{index % 10}"} if record["kind"] == "peer" else {
            "color": f"C{index % 10}"}
        ax.scatter(_value(record, x_key), _value(record, y_key), s=36, marker=marker, label=record["label"], **style)


def _method(record: dict) -> str:
    return record["config"]["peer"] if record["kind"] == "peer" else record["config"]["method"]
