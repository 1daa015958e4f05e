"""The error type for what a user got wrong, and the checks of their input that raise it.

``UsageError`` is what the ``stepcache`` command reports as one line (exit status 2):
an unknown name, a value out of range, a path that cannot be written, a device this
machine does not have. It is a ValueError, so Python callers that catch ValueError keep
working. Every other exception is a bug and keeps its traceback.

This module imports nothing heavy: the command validates its input before loading a model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class UsageError(ValueError):
    """The user's input cannot work: the message says what to change."""


def check_writable(path: str | os.PathLike) -> Path:
    """Fail now, before any work, if ``path`` cannot be written; create nothing.

    Missing folders are created only when the file is written, so a start that fails
    later leaves no empty folders behind.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a folder")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: {folder} is a file, not a folder")
    # a real probe file: os.access says yes to root even on read-only file systems
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.probe"):
            pass
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"cannot write {path}: permission denied")
    return path


def check_device(name: str) -> str:
    """``name`` is a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {name!r}: this torch build or machine has no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {name!r}: MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"device {name!r} is not supported; use cpu, cuda, cuda:N or mps")
    return name


def check_plotting() -> None:
    """Plots need matplotlib (the ``bench`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("plots need matplotlib: pip install 'stepcache[bench]', or pass --no-plot") from None
