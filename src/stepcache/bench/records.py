"""The results file: run information plus one record per measured config, rewritten atomically.

The file is replaced (write to a temporary file, then ``os.replace``) after every record,
so an interrupted benchmark leaves a valid JSON with every finished record and never a
half-written one.

Layout (``SCHEMA_VERSION`` 1): ``{"schema_version": 1, "run": {...}, "records": [...]}``. ``run`` says
where and how (versions, threads, date, the sampler's setup); each record has ``kind``
("uncached", "cached", "fewer_steps", "peer", and "not_run"/"peer_not_run" with a ``reason``),
``label``, ``config`` (every field), the step counts, MACs and speedups, wall times, fidelity and,
for zoo models, distribution scores (docs/results.md lists every key). A change to that layout
raises the version.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

SCHEMA_VERSION = 1
NOT_RUN_KINDS = ("not_run", "peer_not_run")  # records of configs that did not run, with the reason


def run_info(device: torch.device) -> dict:
    """Versions, device and date, so a result can be traced to what produced it."""
    import diffusers
    import transformers

    from .. import __version__

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "stepcache": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": _device_name(device),
        "cpu_threads": torch.get_num_threads(),
    }
    return info


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


class ResultsFile:
    """``add(record)`` appends a record and rewrites the whole file atomically."""

    def __init__(self, path: str | os.PathLike, info: dict) -> None:
        self.path = Path(path)
        self.info = info
        self.records: list[dict] = []

    def add(self, record: dict) -> None:
        self.records.append(public(record))
        write_json_atomic(self.path, {"schema_version": SCHEMA_VERSION, "run": self.info, "records": self.records})


def public(record: dict) -> dict:
    """The record without in-memory extras (keys starting with "_", e.g. the images)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` so readers see the old file or the new one, never a part."""
    text = json.dumps(_finite(payload), indent=2, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)  # created at the first write: a failed start leaves no folder
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a results file is for everyone who may read the folder
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _finite(value: Any) -> Any:
    """JSON has no infinity: non-finite floats (the PSNR of identical images) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
