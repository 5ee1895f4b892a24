"""`dsgan eval --watch` beside a real 2-rank training job that checkpoints and prunes while it runs, and
`dsgan report` on the files that job leaves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from launch import REPO
from PIL import Image
from runs import ok, start_train
from wandb_files import read_run

from dsgan.checkpoint import complete_steps
from dsgan.cli import main
from dsgan.report import curves
from dsgan.tracking import EVAL_METRICS_FILE, METRICS_FILE, read_records

TRAIN_SETS = [
    "run.total_iters=24",
    "run.log_every_iters=4",
    "run.sample_every_iters=8",
    "checkpoint.every_iters=4",
    "checkpoint.keep_last=2",
    "eval.every_iters=0",  # no evaluation in the job: the watcher's
    "tracking.wandb.mode=offline",
]
WATCH = ["-m", "dsgan.cli", "eval", "--poll-seconds", "0.2", "--num-samples", "64", "--watch"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}


class Watcher:
    """The watcher process, its output collected by a thread (a full pipe would block it)."""

    def __init__(self, run_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *WATCH, str(run_dir)], env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.output = ""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output += line

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc.poll() is None and time.monotonic() < deadline, f"no {text!r} in:\n{self.output}"
            time.sleep(0.1)

    def finish(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout)
        self.thread.join(10)
        return code


def plant_corrupt_copy(root: Path, name: str) -> None:
    """A complete-looking checkpoint whose trainer state does not match its manifest, published at once (copied
    under another name, then renamed) from whichever real checkpoint the trainer has not pruned yet."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for _, source in sorted(complete_steps(root)):
            copy = root / "copy-in-progress"
            shutil.rmtree(copy, ignore_errors=True)
            try:
                shutil.copytree(source, copy)
            except (OSError, shutil.Error):  # pruned while copied
                continue
            data = bytearray((copy / "trainer.pt").read_bytes())
            data[len(data) // 2] ^= 0xFF
            (copy / "trainer.pt").write_bytes(bytes(data))
            os.replace(copy, root / name)
            return
        time.sleep(0.05)
    raise AssertionError("the job wrote no checkpoint")


def test_watch_evaluates_a_running_jobs_checkpoints_and_report_draws_it(tmp_path):
    run_dir, root = tmp_path / "run", tmp_path / "run" / "checkpoints"
    # A save in progress, as the trainer leaves it: never to be read.
    (root / "step-00000099.tmp").mkdir(parents=True)
    (root / "step-00000099.tmp" / "trainer.pt").write_bytes(b"half a file")
    watcher = Watcher(run_dir)
    watcher.wait_for("waiting for new checkpoints")
    job = start_train(run_dir, 2, TRAIN_SETS)
    plant_corrupt_copy(root, "step-00000097")  # newest by name: the trainer keeps it (keep_last) and never reads it
    outputs = [p.communicate(timeout=300)[0] for p in job]
    ok([subprocess.CompletedProcess(p.args, p.returncode, out) for p, out in zip(job, outputs, strict=True)])
    assert watcher.finish() == 0, watcher.output
    out = watcher.output

    records = read_records(run_dir / EVAL_METRICS_FILE)
    evaluated = {r["checkpoint"]: r for r in records if "eval/fd8" in r}
    assert "step-00000024" in evaluated and set(evaluated) <= {f"step-{i:08d}" for i in range(4, 25, 4)}
    assert all(r["total_iters"] == 24 and r["kimg"] == r["iteration"] * 16 / 1000 for r in evaluated.values())
    # Read while the job ran: once it ends, only step-24, the planted copy and `best` are left (keep_last 2).
    assert len(evaluated) >= 2, out
    assert "step-00000097: cannot be read (trainer.pt checksum mismatch (corrupt))" in out, out
    assert "eval/fd8" not in json.dumps([r for r in records if r["checkpoint"] == "step-00000097"])
    assert "step-00000099" not in out and "Traceback" not in out
    best = min(evaluated, key=lambda name: evaluated[name]["eval/fd8"])
    if (root / best).is_dir():
        assert (root / "best").read_text() == best
    else:  # pruned between its evaluation and its marking
        assert f"{best}, the best so far, was pruned by the trainer" in out
    assert not any(k.startswith("eval/") for r in read_records(run_dir / METRICS_FILE) for k in r)

    # The trainer's wandb run, continued by the watcher (offline: its own file, with the run's id).
    run_id = (run_dir / "wandb_run_id").read_text()
    logged = {}
    for path in (run_dir / "wandb").glob(f"offline-run-*/run-{run_id}.wandb"):
        _, _, history = read_run(path)
        logged |= {h["iteration"]: h["eval/fd8"] for h in history if "eval/fd8" in h}
    assert logged == {r["iteration"]: r["eval/fd8"] for r in evaluated.values()}

    # The report of this run: its numbers, and every panel drawn; the same with a line still being written.
    training = [r for r in read_records(run_dir / METRICS_FILE) if "d_loss" in r]
    xs, ys = curves(run_dir).series["d_loss"]
    np.testing.assert_allclose(ys, [r["d_loss"] for r in training])
    np.testing.assert_allclose(xs, [r["kimg"] for r in training])
    with (run_dir / METRICS_FILE).open("a") as f:
        f.write('{"iteration": 28, "kimg": 0.4, "d_lo')
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report.png")]) == 0
    with Image.open(tmp_path / "report.png") as image:
        assert image.size == (1600, 900)
        pixels = np.asarray(image.convert("L"))
    for rows, cols in (((100, 420), (150, 530)), ((100, 420), (600, 980)), ((480, 830), (150, 530))):
        assert (pixels[slice(*rows), slice(*cols)] < 200).mean() > 0.01, (rows, cols)
    assert (pixels[480:830, 600:980] < 200).mean() > 0.01  # the evaluation curve
    assert pixels[150:750, 1050:1500].std() > 20  # the sample grid at iteration 24
