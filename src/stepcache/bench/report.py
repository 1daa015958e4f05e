"""BENCHMARKS.md from bench records: one table per model and the best config at about 2x per model.

Sections with peer rows (``bench --peers``) also get PSNR at fixed MAC speedups along each
method's Pareto front (stepcache's best config, each peer, fewer steps) and the list of peers
that did not run, with the reason.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

from .records import NOT_RUN_KINDS

TWO_X = (1.7, 2.5)  # MAC speedups that count as "about 2x"
MB = 2**20
COMPARE_AT = (1.5, 2.0, 2.5, 3.0)  # MAC speedups of the peer comparison
FRONT_SLACK = 0.02  # a front reaching within 2% of a target speedup counts as reaching it (its end value)


# the quality levels of the "what to use" table: PSNR (dB) against the uncached images
QUALITY_LEVELS = (40.0, 35.0, 30.0)


def benchmarks_markdown(sections: list[dict], info: dict, command: str, skipped: list[str], quick: bool,
                        notes: str = "") -> str:
    """The whole file: what to use per model, then machine and date, a pointer to ``notes`` (how the runs
    were made), then a table per model."""
    lines = ["# Benchmarks", ""]
    if quick:
        lines += ["**Smoke test (--quick): tiny settings, the numbers below mean nothing.**", ""]
    lines += what_to_use(sections)
    lines += [
        "## How these were measured",
        "",
        f"Written by `{command}` on {info['date']}: {info['device_name']} ({os.cpu_count()} cores), "
        f"{info['platform']}; torch {info['torch']}, diffusers {info['diffusers']}, stepcache "
        f"{info['stepcache']}. Each section says when and with how many torch threads it was measured."
        + (f" How the runs were made (commands, machine load) and what was learnt from them: {notes}." if notes
           else ""),
        "",
        "Every row is measured in one process against the uncached run with the same sampler, steps and "
        "seeds. Speedups: MACs counted with FlopCounterMode; wall time from timed runs after a warm-up "
        "(the config's own min-max in brackets), each section saying how they were paired with uncached "
        "runs. Fidelity against the uncached images: PSNR (dB), SSIM, and the "
        "feature distance (LPIPS-style, in the zoo classifier's activations; 0 = identical). Zoo models "
        "also get classifier accuracy and the offline Fréchet distance to real test images, as mean ± spread "
        "over two seed sets. `fewer steps` rows are the uncached sampler run with fewer steps at the MACs "
        "of the configs they match: a method is only worth using where it beats them. Cache MB: the most "
        "the caches held at a step boundary. Peak process memory is in the results JSON only: on CPU it is "
        "the resident set's growth during one run, which the allocator's reuse makes unreadable per config.",
        "",
    ]
    for section in sections:
        lines += _section(section)
    if skipped:
        lines += ["## Not measured", "", *[f"- {s}" for s in skipped], ""]
    return "\n".join(lines)


def what_to_use(sections: list[dict]) -> list[str]:
    """One table per kind of model: for each quality level, the fastest config that reaches it and beats
    sampling fewer steps at its MAC speedup (as ``stepcache tune`` picks); for speed-only models, each
    method's fastest config in wall time."""
    from .tune import Target, _fastest_qualifying

    lines = ["## What to use", "",
             "The fastest config (in MACs) that keeps each PSNR level against the uncached images and beats "
             "sampling fewer steps at its speed, picked from the measured rows below as `stepcache tune --target "
             "psnr>=X` picks; on your own pipeline, run that. – : no measured config qualifies.", ""]
    quality = [s for s in sections if _ran(s) and _ran(s)[0]["fidelity"] is not None]
    if quality:
        head = ["model", "PSNR at least", "use", "MAC speedup", "PSNR", "fewer steps there (PSNR)",
                "accuracy", "Fréchet"]
        lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for section in quality:
            records = section["records"]
            for level in QUALITY_LEVELS:
                best = _fastest_qualifying(Target("psnr", ">=", level), records)
                if best is None:
                    lines.append(f"| {section['model']} | {level:g} dB | – | | | | | |")
                    continue
                baseline = _baseline(best, records)
                d = best["distribution"]
                lines.append("| " + " | ".join([
                    section["model"], f"{level:g} dB", f"`{best['label']}`", f"{best['speedup_macs']:.2f}x",
                    f"{_psnr(best):.1f}", f"{baseline['steps']} steps ({_psnr(baseline):.1f})",
                    "-" if d is None else f"{d['accuracy']:.3f} ± {d['accuracy_spread']:.3f}",
                    "-" if d is None else f"{d['frechet']:.1f} ± {d['frechet_spread']:.1f}"]) + " |")
        lines.append("")
    speed = [s for s in sections if _ran(s) and _ran(s)[0]["fidelity"] is None]
    if speed:
        lines += ["Real sizes, random weights (speed only): each method's config with the highest wall-time "
                  "speedup among those that reused work, and how much of its MAC speedup that is (AdaCache "
                  "never reuses on random weights).", "",
                  "| model | method | config | MAC speedup | wall speedup | wall / MAC |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for section in speed:
            cached = [r for r in _ran(section) if r["kind"] == "cached" and r["cached_steps"]]
            for method in sorted({r["config"]["method"] for r in cached}):
                best = max((r for r in cached if r["config"]["method"] == method), key=lambda r: r["speedup_wall"])
                lines.append(f"| {section['model']} | {method} | `{best['label']}` | {best['speedup_macs']:.2f}x | "
                             f"{best['speedup_wall']:.2f}x | {best['wall_over_mac_speedup']:.0%} |")
        lines.append("")
    return lines


def _baseline(record: dict, records: list[dict]) -> dict | None:
    """The fewer-steps run at ``record``'s MACs (None where that is the full run: no speedup to beat)."""
    return next((r for r in records if r["kind"] == "fewer_steps" and record["label"] in r.get("matches", [])), None)


def _ran(section: dict) -> list[dict]:
    return [r for r in section["records"] if r["kind"] not in NOT_RUN_KINDS]


def _section(section: dict) -> list[str]:
    records = _ran(section)
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
    head += ["cache MB"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(_row(r, quality)) + " |" for r in records]
    return lines + [""] + _peers(section["records"], quality)


def _peers(records: list[dict], quality: bool) -> list[str]:
    """The peers part of a section: versions, the comparison at fixed speedups, and the peers that did not run."""
    peer_records = [r for r in records if r["kind"] in ("peer", "peer_not_run")]
    if not peer_records:
        return []
    versions = sorted({f"{r['config']['package']} {r['config']['version']}" for r in peer_records})
    lines = [f"Peers ({', '.join(versions)}) ran on the same pipeline, sampler and seeds; their full steps are "
             f"the steps that ran the uncached step's MACs, the rest ran less.", ""]
    if quality and any(r["kind"] == "peer" for r in records):
        lines += [f"PSNR (dB) at fixed MAC speedups, interpolated linearly along each method's own Pareto front "
                  f"(its configs that no faster config beats): – where its fastest config is more than "
                  f"{FRONT_SLACK:.0%} slower, ≥ where its slowest is faster (that config's PSNR). In brackets, "
                  f"the stepcache methods the value comes from. Accuracy and Fréchet distance of every config "
                  f"are in the table above.", ""]
        head = ["method", *(f"at {x:g}x" for x in COMPARE_AT)]
        lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for name, cells in peer_comparison(records):
            lines.append("| " + " | ".join([name, *cells]) + " |")
        lines.append("")
    not_run = defaultdict(list)
    for r in records:
        if r["kind"] == "peer_not_run":
            not_run[(r["config"]["peer"], r["reason"])].append(r)
    if not_run:
        lines += ["Peers not run here:", ""]
        lines += [f"- {peer} ({len(group)} setting{'s' * (len(group) > 1)}): {reason}"
                  for (peer, reason), group in not_run.items()]
        lines.append("")
    return lines


def peer_comparison(records: list[dict], at: tuple[float, ...] = COMPARE_AT) -> list[tuple[str, list[str]]]:
    """(method, one cell per speedup in ``at``) for stepcache's best config, each peer and fewer steps: the PSNR
    on the method's front ("≥" where only faster configs exist), with the stepcache methods it comes from."""
    families: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["kind"] == "cached":
            families["stepcache best"].append(r)
        elif r["kind"] == "peer":
            families[r["config"]["peer"].replace(".", " ", 1)].append(r)
    families["fewer steps"] = [r for r in records if r["kind"] == "fewer_steps"]
    rows = []
    for name, group in families.items():
        cells = []
        for target in at:
            value = front_value([(r["speedup_macs"], _psnr(r), r) for r in group], target)
            if value is None:
                cells.append("–")
                continue
            psnr, sources, lower_bound = value
            cell = ("≥" if lower_bound else "") + f"{psnr:.1f}"
            if name == "stepcache best":
                cell += f" ({'/'.join(sorted({r['config']['method'] for r in sources}))})"
            cells.append(cell)
        rows.append((name, cells))
    return rows


def front_value(points: list[tuple[float, float, dict]], target: float) -> tuple[float, list[dict], bool] | None:
    """PSNR at speedup ``target`` on the upper Pareto front of (speedup, PSNR, record) points: (PSNR, the records
    it comes from, whether it is only a lower bound). Below the front's slowest point that point's PSNR is a lower
    bound (a faster config reaches it); beyond the fastest (plus FRONT_SLACK) there is no value: None."""
    front, best = [], float("-inf")
    finite = [p for p in points if math.isfinite(p[1])]  # identical images (inf dB) cannot be interpolated
    for point in sorted(finite, key=lambda p: (-p[0], -p[1])):  # fastest first: keep what beats everything faster
        if point[1] > best:
            front.append(point)
            best = point[1]
    front.reverse()
    if not front or target > front[-1][0] * (1 + FRONT_SLACK):
        return None
    if target < front[0][0] * (1 - FRONT_SLACK):
        return front[0][1], [front[0][2]], True
    if target <= front[0][0]:
        return front[0][1], [front[0][2]], False
    if target >= front[-1][0]:
        return front[-1][1], [front[-1][2]], False
    for (x0, y0, r0), (x1, y1, r1) in zip(front, front[1:]):
        if x0 <= target <= x1:
            return y0 + (y1 - y0) * (target - x0) / (x1 - x0), [r0, r1], False
    return None


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
    cells.append(f"{record['cache_bytes'] / MB:.2f}")
    return cells


def best_at_two_x(records: list[dict]) -> str:
    """Which cached config has the best PSNR at a MAC speedup of about 2x, against fewer steps there."""
    near = [r for r in records if r["kind"] == "cached" and TWO_X[0] <= r["speedup_macs"] <= TWO_X[1]]
    if not near:
        return f"Best at ~2x: no config reached a MAC speedup in [{TWO_X[0]}, {TWO_X[1]}]."
    best = max(near, key=lambda r: _psnr(r))
    text = f"Best at ~2x: **{best['label']}** ({best['speedup_macs']:.2f}x MACs, PSNR {_psnr(best):.2f} dB)"
    baseline = _baseline(best, records)
    if baseline is not None:
        verdict = "beats" if _psnr(best) > _psnr(baseline) else "does not beat"
        text += f"; it {verdict} sampling {baseline['steps']} steps (PSNR {_psnr(baseline):.2f} dB)"
    return text + "."


def _psnr(record: dict) -> float:
    psnr = record["fidelity"]["psnr"]
    return float("inf") if psnr is None else psnr


def terminal_table(records: list[dict]) -> str:
    """The records as a plain-text table for the terminal: one row per config, fewer-steps rows last.

    Each cached or peer row says how its PSNR compares with the fewer-steps run at its MACs
    (the baseline it must beat); configs that did not run follow, with the reason.
    """
    ran = [r for r in records if r["kind"] not in NOT_RUN_KINDS]
    quality = bool(ran) and ran[0]["fidelity"] is not None
    distribution = bool(ran) and ran[0].get("distribution") is not None
    head = ["config", "full/cached", "MAC x", "wall x"]
    if quality:
        head += ["PSNR", "SSIM", "feat. dist.", *(["accuracy", "Fréchet"] if distribution else []), "vs fewer steps"]
    else:
        head += ["wall/MAC"]
    rows = [head]
    for r in ran:
        label = f"fewer steps: {r['steps']}" if r["kind"] == "fewer_steps" else r["label"]
        row = [label, f"{r['full_steps']}/{r['cached_steps']}", f"{r['speedup_macs']:.2f}",
               "-" if r["speedup_wall"] is None else f"{r['speedup_wall']:.2f}"]
        if quality:
            fid = r["fidelity"]
            row += [_psnr_text(fid["psnr"]), f"{fid['ssim']:.4f}",
                    "-" if fid["feature_distance"] is None else f"{fid['feature_distance']:.4f}"]
            if distribution:
                d = r["distribution"]
                row += [f"{d['accuracy']:.3f}", f"{d['frechet']:.1f}"]
            row.append(_against_fewer_steps(r, records))
        else:
            row.append("-" if r["wall_over_mac_speedup"] is None else f"{r['wall_over_mac_speedup']:.0%}")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"not run: {r['label']}: {r['reason']}" for r in records if r["kind"] in NOT_RUN_KINDS]
    return "\n".join(lines)


def _psnr_text(psnr: float | None) -> str:
    return "inf" if psnr is None or psnr == float("inf") else f"{psnr:.2f}"


def _against_fewer_steps(record: dict, records: list[dict]) -> str:
    """"+2.1 dB vs 12 steps" for a config whose fewer-steps baseline ran; "" otherwise."""
    if record["kind"] not in ("cached", "peer"):
        return ""
    baseline = _baseline(record, records)
    if baseline is None:
        return ""
    diff = _psnr(record) - _psnr(baseline)
    return f"{diff:+.1f} dB vs {baseline['steps']} steps" if math.isfinite(diff) else f"vs {baseline['steps']} steps"
