"""Start N real processes with the torchrun/srun environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    args: list[str], world_size: int, env: dict[str, str] | None = None, cwd: Path = REPO, stdin_pipe: bool = False
) -> list:
    """Start `python *args` once per rank (stdout and stderr merged into a pipe; with `stdin_pipe`, stdin a pipe
    too, for workers that take commands); returns the Popen objects."""
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
                [sys.executable, *args],
                cwd=cwd,
                env=penv,
                text=True,
                stdin=subprocess.PIPE if stdin_pipe else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def launch(
    args: list[str], world_size: int, timeout: float = 300, env: dict[str, str] | None = None, cwd: Path = REPO
) -> list[subprocess.CompletedProcess]:
    """Run `python *args` once per rank and wait for all; returns the per-rank results (stdout+stderr merged).

    Every rank's pipe is drained at once, by a thread each: read one after another, a rank that fills its pipe
    blocks while we wait on another, which may be waiting on it. On `timeout` all ranks are killed."""
    procs = start(args, world_size, env, cwd)
    outputs: list[str] = [""] * world_size

    def drain(rank: int) -> None:
        outputs[rank] = procs[rank].stdout.read()

    threads = [threading.Thread(target=drain, args=(rank,), daemon=True) for rank in range(world_size)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        raise subprocess.TimeoutExpired(procs[0].args, timeout)
    return [subprocess.CompletedProcess(p.args, p.wait(), out, None) for p, out in zip(procs, outputs, strict=True)]
