"""Faults through the real entry point, one CPU process each: a --resume that names no checkpoint, ranks missing at
the rendezvous, Ctrl-C before the signal handlers and twice while training, a disk that fills up between
checkpoints. (The catalogue of bad inputs is tests/unit/test_bad_input.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from launch import REPO, free_port, launch, start
from runs import TINY, small_tmpfs

from dsgan.errors import EXIT_CHECKPOINT, EXIT_CHECKPOINT_WRITE, EXIT_COLLECTIVE, EXIT_INTERRUPTED


def test_resume_that_names_no_checkpoint_fails_before_start_up(tmp_path):
    (tmp_path / "empty").mkdir()
    args = ["-m", "dsgan.train", "--config", TINY, "--run-dir", str(tmp_path / "run"), "--resume"]
    (out,) = launch([*args, str(tmp_path / "empty")], world_size=1, timeout=120)
    assert out.returncode == EXIT_CHECKPOINT, out.stdout
    assert f"error: --resume {tmp_path / 'empty'}: not a checkpoint directory (no manifest.json)" in out.stdout
    assert "Traceback" not in out.stdout and "rank(s) on" not in out.stdout  # no process group, no engines


def test_missing_ranks_are_named_at_the_rendezvous(tmp_path):
    env = {
        **os.environ,
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "2",  # the second rank is never started
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    args = ["--config", TINY, "--run-dir", str(tmp_path / "run"), "--set", "run.collective_timeout_seconds=3"]
    out = subprocess.run(
        [sys.executable, "-m", "dsgan.train", *args], env=env, capture_output=True, text=True, timeout=120
    )
    text = out.stdout + out.stderr
    assert out.returncode == EXIT_COLLECTIVE, text
    assert "waiting for 2 ranks at 127.0.0.1" in text
    assert "only some of the 2 ranks (WORLD_SIZE) joined within run.collective_timeout_seconds=3" in text
    assert "1/2 clients joined" in text and "Traceback" not in text


def test_ctrl_c_before_the_signal_handlers_is_one_line(tmp_path):
    """SIGINT while `dsgan train` still imports torch and DeepSpeed, before its own handlers exist."""
    code = (
        "import os, signal, sys, threading\n"
        "from dsgan.cli import main\n"
        "threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
        f"sys.exit(main(['train', '--config', {TINY!r}, '--run-dir', {str(tmp_path / 'run')!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == EXIT_INTERRUPTED, out.stdout + out.stderr
    assert "interrupted (Ctrl-C)" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


def test_second_ctrl_c_stops_at_once_with_one_line(tmp_path):
    """The first SIGINT asks for a checkpoint at the next D update; the second stops at once. D updates are 1024
    iterations (seconds) apart here, so the second arrives long before the first could be honoured."""
    sets = [
        "run.total_iters=10240",
        "discriminator.deepspeed.gradient_accumulation_steps=1024",
        "checkpoint.every_iters=10240",
        "run.log_every_iters=256",
    ]
    args = ["-m", "dsgan.train", "--config", TINY, "--run-dir", str(tmp_path / "run")]
    (proc,) = start([*args, *(a for s in sets for a in ("--set", s))], world_size=1)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("schedule:"):
            break
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)  # the first one's handler has run
    proc.send_signal(signal.SIGINT)
    text = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == EXIT_INTERRUPTED, text
    assert "stopped at once by a second Ctrl-C, without a checkpoint; the last complete one is intact" in text
    assert "Traceback" not in text and not (tmp_path / "run" / "checkpoints").exists()


def test_disk_full_while_writing_a_sample_grid_is_one_line(tmp_path):
    """A run dir on a 300 KiB tmpfs, no checkpoints, a sample grid every iteration: a grid is the write that fails.
    Was an OSError traceback (exit 1); now exit 8, one line, and no temporary file left."""
    with small_tmpfs(tmp_path / "small", "300k") as run_dir:
        sets = ["run.total_iters=3000", "checkpoint.every_iters=null", "run.sample_every_iters=1"]
        args = ["-m", "dsgan.train", "--config", TINY, "--run-dir", str(run_dir)]
        (out,) = launch([*args, *(a for s in sets for a in ("--set", s))], world_size=1, timeout=300)
        assert out.returncode == EXIT_CHECKPOINT_WRITE, out.stdout[-3000:]
        assert "error: No space left on device: no file was left half-written" in out.stdout
        assert "Traceback" not in out.stdout
        assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
