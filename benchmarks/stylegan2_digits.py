"""The small CPU StyleGAN2 (configs/stylegan2_digits16.yaml): its FD8 curve and the FD8 reached in the time budget.

    python benchmarks/stylegan2_digits.py [--minutes 15] [--set key=value ...]

Trains the config through the real entry point (one process, fp32) in a temporary run dir, stops it with SIGUSR1 at
the budget if it has not finished (it checkpoints and exits 75, as under SLURM), and prints every evaluation of the
EMA generator (FD8 on 2,000 samples; lower is better) with the wall-clock minutes since start-up. Target: FD8 <= 60
within 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "stylegan2_digits16.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--set", action="append", default=[], help="config override, as `dsgan train --set`")
    p.add_argument("--run-dir", type=Path, default=None, help="keep the run here (default: a temporary dir)")
    args = p.parse_args()

    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="stylegan2_digits_"))
    cmd = [sys.executable, "-m", "dsgan.train", "--config", str(CONFIG), "--run-dir", str(run_dir)]
    for s in args.set:
        cmd += ["--set", s]
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"})
    try:
        code = proc.wait(timeout=args.minutes * 60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # finish the current update, checkpoint, exit 75
        code = proc.wait()
    elapsed = (time.time() - start) / 60

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/fd8" in r]
    print(f"\n{CONFIG.name}: exit {code}, {records[-1]['iteration']} iterations in {elapsed:.1f} min ({run_dir})")
    print("| iteration | minutes | FD8 |\n|---:|---:|---:|")
    for r in evals:
        print(f"| {r['iteration']} | {(r['time'] - start) / 60:.1f} | {r['eval/fd8']:.1f} |")
    if evals:
        best = min(r["eval/fd8"] for r in evals)
        print(f"best FD8 {best:.1f} (target <= 60 within 15 minutes): {'met' if best <= 60 else 'NOT met'}")


if __name__ == "__main__":
    main()
