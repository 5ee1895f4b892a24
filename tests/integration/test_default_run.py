"""The README's first command (shortened), and the commands a user runs on its result."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from launch import REPO, free_port
from PIL import Image

from dsgan.errors import EXIT_CONFIG

SHORT = [
    "--set",
    "run.total_iters=120",
    "--set",
    "run.log_every_iters=40",
    "--set",
    "run.sample_every_iters=60",
    "--set",
    "checkpoint.every_iters=60",
    "--set",
    "eval.every_iters=60",
]


def run(args: list[str], cwd, timeout: float = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def train_default(cwd, *extra: str) -> str:
    """`deepspeed dsgan/train.py` from a fresh directory: the embedded digits run, no config file."""
    return run(["deepspeed", "--master_port", str(free_port()), str(REPO / "dsgan" / "train.py"), *extra], cwd)


def cli_error(args: list[str], capsys) -> str:
    """Run `dsgan ARGS` in this process; it must end with exit 2 and no traceback. Returns its stderr."""
    from dsgan.cli import main as cli_main

    try:
        code = cli_main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG, (args, err)
    assert "Traceback" not in err
    return err


def test_default_run_shortened(tmp_path, capsys):
    out = train_default(tmp_path, *SHORT)
    run_dir = tmp_path / "runs" / "digits"
    assert "it 40/120" in out and "img/s" in out and "ETA" in out  # progress lines
    assert re.search(r"eval at iteration 60 .*fd8 \d", out)
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == ["iter_00000060.png", "iter_00000120.png"]
    grid = Image.open(run_dir / "samples" / "iter_00000120.png")
    assert grid.size == (10 * 18 + 2, 10 * 18 + 2)  # one row per class, 10 per row, 16 px + 2 px padding
    assert (run_dir / "checkpoints" / "latest").read_text() == "step-00000120"
    assert (run_dir / "checkpoints" / "best").is_file()

    dsgan = [sys.executable, "-m", "dsgan.cli"]
    out = run(
        [
            *dsgan,
            "sample",
            "--run",
            str(run_dir),
            "--num",
            "30",
            "--classes",
            "1,7",
            "--out",
            str(tmp_path / "g.png"),
            "--out-dir",
            str(tmp_path / "pngs"),
        ],
        tmp_path,
    )
    assert "wrote" in out and Image.open(tmp_path / "g.png").size == (15 * 18 + 2, 2 * 18 + 2)
    names = sorted(p.name for p in (tmp_path / "pngs").iterdir())
    assert len(names) == 30 and names[0] == "000000_c1.png" and names[1] == "000001_c7.png"
    bad = subprocess.run(
        [*dsgan, "sample", "--run", str(run_dir), "--classes", "1,x", "--out", str(tmp_path / "bad.png")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == EXIT_CONFIG and "--classes 1,x" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr
    src = ["--run", str(run_dir)]
    grid = ["--out", str(tmp_path / "x.png")]
    assert "argument --num: 0: must be at least 1" in cli_error(["sample", *src, "--num", "0", *grid], capsys)
    assert "argument --batch-size: -2" in cli_error(["sample", *src, "--batch-size", "-2", *grid], capsys)
    assert "argument --truncation: nan" in cli_error(["sample", *src, "--truncation", "nan", *grid], capsys)
    assert "writes nothing without --out" in cli_error(["sample", *src], capsys)
    (tmp_path / "file").write_text("")
    unwritable = ["--out", str(tmp_path / "file" / "g.png")]
    assert f"--out {tmp_path / 'file' / 'g.png'}: cannot write there" in cli_error(
        ["sample", *src, *unwritable], capsys
    )
    assert "argument --num-samples: 0" in cli_error(["eval", *src, "--num-samples", "0"], capsys)
    err = cli_error(["eval", *src, "--features", "inception"], capsys)
    assert "eval: features='inception' needs inception_weights" in err
    out = run([*dsgan, "eval", "--run", str(run_dir), "--digits"], tmp_path)
    assert "iteration 120: digits check: FD8" in out and "classifier accuracy" in out
    out = run([*dsgan, "eval", "--run", str(run_dir), "--num-samples", "500", "--metrics", "fid,kid,pr,dc"], tmp_path)
    assert re.search(r"iteration 120, 500 samples, .*: fd8 \d.*, kid .*, precision .*, coverage \d", out), out
    protocol = json.loads(out.split("protocol: ")[1].splitlines()[0])
    assert protocol["num_samples"] == 500 and protocol["ema"] is True and protocol["reference_images"] == 1797
    # Training logged each evaluation with its protocol (the config's: 2000 samples, FD8 alone).
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/fd8" in r]
    assert [r["iteration"] for r in evals] == [60, 120]
    assert all(r["eval/protocol"]["num_samples"] == 2000 and r["eval/protocol"]["metrics"] == ["fid"] for r in evals)

    # Rerunning the same command resumes; the finished run says so.
    assert "already complete" in train_default(tmp_path, *SHORT)


@pytest.mark.slow
def test_full_default_run_learns(tmp_path):
    """The README's first command as is, then its quality: EMA accuracy >= 90% over classes and FD8 <= 150."""
    train_default(tmp_path)
    out = run(
        [sys.executable, "-m", "dsgan.cli", "eval", "--run", str(tmp_path / "runs" / "digits"), "--digits"], tmp_path
    )
    fd8 = float(re.search(r"FD8 ([\d.]+)", out).group(1))
    accuracy = float(re.search(r"classifier accuracy ([\d.]+)", out).group(1))
    assert accuracy >= 0.90 and fd8 <= 150, out
