"""The one way dsgan writes a file that someone may read while it is written, or after a crash: checkpoint files and
markers, PNG grids, cached reference statistics, the rewritten metrics log."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` to a temporary name beside `path`, fsync it, rename it over `path`, fsync the folder: a reader
    (wandb, a browser, another rank) or a crash sees the old file or the new one, never half of one, and a rename
    that returned survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
