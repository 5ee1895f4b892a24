"""tests/launch.py itself: the launcher every integration test goes through."""

from __future__ import annotations

import subprocess

import pytest
from launch import launch

# Rank 1 writes 2 MiB (more than a pipe holds) and exits; rank 0 exits only after rank 1 has. Read one rank after
# the other, rank 1 blocks on its full pipe while the launcher waits on rank 0: a deadlock.
CHATTY = """
import os, sys, time
rank, flag = os.environ["RANK"], sys.argv[1]
if rank == "1":
    sys.stdout.write("x" * (2 << 20))
    sys.stdout.flush()
    open(flag, "w").close()
else:
    while not os.path.exists(flag):
        time.sleep(0.01)
print("rank", rank, "done")
"""


def test_a_chatty_rank_does_not_block_the_others(tmp_path):
    results = launch(["-c", CHATTY, str(tmp_path / "flag")], world_size=2, timeout=10)
    assert [r.returncode for r in results] == [0, 0]
    assert results[0].stdout == "rank 0 done\n"
    assert len(results[1].stdout) == (2 << 20) + len("rank 1 done\n")


def test_timeout_kills_every_rank(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        launch(["-c", "import time; time.sleep(60)"], world_size=2, timeout=0.5)
