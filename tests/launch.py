"""Start N real processes with the torchrun/srun environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], world_size: int, env: dict[str, str] | None = None, cwd: Path = REPO) -> list:
    """Start `python *args` once per rank (stdout and stderr merged into a pipe); returns the Popen objects."""
    port = str(free_port())
    procs = []
    for rank in range(world_size):
        penv = {
            **os.environ,
            **(env or {}),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, *args], cwd=cwd, env=penv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        )
    return procs


def launch(
    args: list[str], world_size: int, timeout: float = 300, env: dict[str, str] | None = None, cwd: Path = REPO
) -> list[subprocess.CompletedProcess]:
    """Run `python *args` once per rank and wait for all; returns the per-rank results (stdout+stderr merged)."""
    procs = start(args, world_size, env, cwd)
    results = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, None))
    return results
