"""BENCHMARKS.md from bench records: one table per model and the best config at about 2x per model."""

from __future__ import annotations

import os

TWO_X = (1.7, 2.5)  # MAC speedups that count as "about 2x"
MB = 2**20


def benchmarks_markdown(sections: list[dict], info: dict, command: str, skipped: list[str], quick: bool,
                        notes: str = "") -> str:
    """The whole file: machine and date, ``notes`` on how the runs were made, then a table per model."""
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` on {info['date']}: {info['device_name']} ({os.cpu_count()} cores), "
        f"{info['platform']}; torch {info['torch']}, diffusers {info['diffusers']}, stepcache "
        f"{info['stepcache']}. Each section says when and with how many torch threads it was measured.",
        "",
    ]
    if quick:
        lines += ["**Smoke test (--quick): tiny settings, the numbers below mean nothing.**", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += [
        "Every row is measured in one process against the uncached run with the same sampler, steps and "
        "seeds. Speedups: MACs counted with FlopCounterMode; wall time from timed runs after a warm-up "
        "(the config's own min-max in brackets), each section saying how they were paired with uncached "
        "runs. Fidelity against the uncached images: PSNR (dB), SSIM, and the "
        "feature distance (LPIPS-style, in the zoo classifier's activations; 0 = identical). Zoo models "
        "also get classifier accuracy and the offline Fréchet distance to real test images, as mean ± spread "
        "over two seed sets. `fewer steps` rows are the uncached sampler run with fewer steps at the MACs "
        "of the configs they match: a method is only worth using where it beats them.",
        "",
    ]
    for section in sections:
        lines += _section(section)
    if skipped:
        lines += ["## Not measured", "", *[f"- {s}" for s in skipped], ""]
    return "\n".join(lines)


def _section(section: dict) -> list[str]:
    records = section["records"]
    quality = records[0]["fidelity"] is not None
    lines = [f"## {section['model']}", ""]
    if "run" in section:
        run = section["run"]
        setup = f" Each run: {run['setup']}." if run.get("setup") else ""
        lines += [f"Measured {run['date']} with {run['cpu_threads']} torch thread(s) on {run['device_name']}.{setup} "
                  f"{_wall_method(records)}", ""]
    lines += [f"![speed and quality]({section['plot']})", ""]
    if quality:
        lines += [best_at_two_x(records), ""]
        head = ["config", "steps full/cached", "MAC speedup", "wall speedup", "PSNR", "SSIM", "feat. dist."]
        if records[0]["distribution"] is not None:
            n = records[0]["distribution"]["samples"]
            head += [f"accuracy ({n}/set)", f"Fréchet ({n}/set)"]
    else:
        head = ["config", "steps full/cached", "MAC speedup", "wall speedup", "wall / MAC speedup"]
    head += ["cache MB", "peak mem MB"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(_row(r, quality)) + " |" for r in records]
    return lines + [""]


def _wall_method(records: list[dict]) -> str:
    paired = [r for r in records if r.get("reference_wall_s")]
    if paired:
        return (f"Wall speedup: median over {len(paired[0]['wall_s']['runs'])} timed runs of (uncached run timed "
                f"just before / this run).")
    return "Wall speedup: median time of the uncached runs (timed once, first) / median time of this config's runs."


def _row(record: dict, quality: bool) -> list[str]:
    wall = record["wall_s"]
    label = record["label"] if record["kind"] != "fewer_steps" else f"fewer steps: {record['steps']}"
    cells = [
        label.replace("|", "/"),
        f"{record['full_steps']}/{record['cached_steps']}",
        f"{record['speedup_macs']:.2f}x",
        f"{record['speedup_wall']:.2f}x [{wall['min']:.3g}-{wall['max']:.3g} s]",
    ]
    if quality:
        fid = record["fidelity"]
        psnr = fid["psnr"]
        cells += ["inf" if psnr is None or psnr == float("inf") else f"{psnr:.2f}", f"{fid['ssim']:.4f}",
                  "-" if fid["feature_distance"] is None else f"{fid['feature_distance']:.4f}"]
        if record["distribution"] is not None:
            d = record["distribution"]
            cells += [f"{d['accuracy']:.3f} ± {d['accuracy_spread']:.3f}", f"{d['frechet']:.2f} ± {d['frechet_spread']:.2f}"]
    else:
        cells.append(f"{record['wall_over_mac_speedup']:.0%}")
    memory = record["peak_memory_bytes"]
    cells += [f"{record['cache_bytes'] / MB:.2f}", "-" if memory is None else f"{memory / MB:.1f}"]
    return cells


def best_at_two_x(records: list[dict]) -> str:
    """Which cached config has the best PSNR at a MAC speedup of about 2x, against fewer steps there."""
    near = [r for r in records if r["kind"] == "cached" and TWO_X[0] <= r["speedup_macs"] <= TWO_X[1]]
    if not near:
        return f"Best at ~2x: no config reached a MAC speedup in [{TWO_X[0]}, {TWO_X[1]}]."
    best = max(near, key=lambda r: _psnr(r))
    text = (f"Best at ~2x: **{best['label']}** ({best['speedup_macs']:.2f}x MACs, {best['speedup_wall']:.2f}x wall, "
            f"PSNR {_psnr(best):.2f} dB)")
    baseline = [r for r in records if r["kind"] == "fewer_steps" and best["label"] in r.get("matches", [])]
    if baseline:
        verdict = "beats" if _psnr(best) > _psnr(baseline[0]) else "does not beat"
        text += f"; it {verdict} sampling {baseline[0]['steps']} steps (PSNR {_psnr(baseline[0]):.2f} dB)"
    return text + "."


def _psnr(record: dict) -> float:
    psnr = record["fidelity"]["psnr"]
    return float("inf") if psnr is None else psnr
