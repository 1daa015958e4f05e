import torch

from stepcache.bench.records import run_info
from stepcache.bench.report import benchmarks_markdown, terminal_table


def rec(kind, label, macs_x, psnr, steps=10, method=None, matches=(), cached_steps=0, wall=None):
    return {"kind": kind, "label": label, "steps": steps, "full_steps": steps - cached_steps,
            "cached_steps": cached_steps, "speedup_macs": macs_x, "speedup_wall": wall or macs_x,
            "wall_over_mac_speedup": (wall or macs_x) / macs_x, "wall_s": {"min": 0.1, "max": 0.2},
            "reference_wall_s": None, "fidelity": {"psnr": psnr, "ssim": 0.9, "feature_distance": None},
            "distribution": None, "cache_bytes": 0, "peak_memory_bytes": 0,
            "config": None if method is None else {"method": method}, "matches": list(matches)}


RECORDS = [
    rec("uncached", "uncached 10 steps", 1.0, None),
    rec("cached", "fora interval=2", 1.9, 41.0, method="fora", cached_steps=5),
    rec("cached", "fora interval=3", 2.5, 36.0, method="fora", cached_steps=6),
    rec("cached", "teacache threshold=0.4", 3.3, 31.0, method="teacache", cached_steps=7),
    rec("fewer_steps", "uncached 5 steps", 2.0, 25.0, steps=5, matches=["fora interval=2"]),
    rec("fewer_steps", "uncached 4 steps", 2.5, 37.0, steps=4, matches=["fora interval=3"]),  # beats fora 3
    rec("fewer_steps", "uncached 3 steps", 3.3, 21.0, steps=3, matches=["teacache threshold=0.4"]),
    {"kind": "not_run", "label": "fora interval=12", "config": {"method": "fora"}, "reason": "does not fit"},
]


def test_benchmarks_open_with_what_to_use_per_quality_level():
    text = benchmarks_markdown([{"model": "zoo:m", "records": RECORDS, "plot": "p.png"}],
                               run_info(torch.device("cpu")), "cmd", [], quick=False, notes="[NOTES](NOTES.md)")
    lines = text.splitlines()
    assert lines[2] == "## What to use"
    rows = [line for line in lines if line.startswith("| zoo:m |")]
    # 35 dB: fora interval=3 reaches it faster, but 4 steps do better at its speed; 40 dB: fora interval=2
    assert rows[0].startswith("| zoo:m | 40 dB | `fora interval=2` | 1.90x | 41.0 | 5 steps (25.0) |")
    assert rows[1].startswith("| zoo:m | 35 dB | `fora interval=2` |")
    assert rows[2].startswith("| zoo:m | 30 dB | `teacache threshold=0.4` | 3.30x |")
    assert text.index("## What to use") < text.index("[NOTES](NOTES.md)") < text.index("## zoo:m")
    assert "peak mem" not in text and "x wall" not in text  # untrusted columns are gone


def test_terminal_table_compares_each_config_with_fewer_steps():
    table = terminal_table(RECORDS).splitlines()
    row = next(line for line in table if line.startswith("fora interval=3"))
    assert row.endswith("-1.0 dB vs 4 steps")
    assert table[-1] == "not run: fora interval=12: does not fit"
