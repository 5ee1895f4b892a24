"""The real entry point on configs/tiny_cpu.yaml, as the integration tests run it, and the check of its results."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from launch import REPO, launch, start

TINY = str(REPO / "configs" / "tiny_cpu.yaml")
STYLEGAN2_TINY = str(REPO / "tests" / "fixtures" / "stylegan2_tiny.yaml")
FAULT_WORKER = Path(__file__).with_name("fault_worker.py")


def _train_args(run_dir: Path, sets: tuple[str, ...] | list[str], fault: str | None, config: str = TINY) -> list[str]:
    entry = [str(FAULT_WORKER), fault] if fault else ["-m", "dsgan.train"]
    args = [*entry, "--config", config, "--run-dir", str(run_dir)]
    for s in sets:
        args += ["--set", s]
    return args


def train(
    run_dir: Path,
    world: int,
    *sets: str,
    fault: str | None = None,
    env: dict | None = None,
    timeout: float = 300,
    config: str = TINY,
) -> list:
    """`python -m dsgan.train --config config` on `world` ranks; with `fault`, through fault_worker.py (see there)."""
    return launch(_train_args(run_dir, sets, fault, config), world_size=world, timeout=timeout, env=env)


def start_train(run_dir: Path, world: int, sets: list[str], fault: str | None = None) -> list[subprocess.Popen]:
    """`train` without waiting, for the tests that signal or kill ranks mid-run."""
    return start(_train_args(run_dir, sets, fault), world)


def ok(results: list, code: int = 0) -> str:
    for r in results:
        assert r.returncode == code, f"exit {r.returncode}, expected {code}:\n{r.stdout[-5000:]}"
    return results[0].stdout


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """`folder` as a tmpfs of `size` (e.g. "700k"), a disk that fills up; skips the test where mounting is not
    allowed."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
