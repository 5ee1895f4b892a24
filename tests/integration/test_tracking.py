"""wandb (offline) and the local JSONL log, read back from the files a real 2-rank run leaves."""

from __future__ import annotations

import json

from launch import REPO, launch
from runs import TINY, ok, train
from wandb_files import read_run

from dsgan.config import Wandb
from dsgan.tracking import Tracker

OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
EXPECTED_KEYS = {
    "d_loss",
    "d_loss_real",
    "d_loss_fake",
    "g_loss",
    "d_real_mean",
    "d_fake_mean",
    "g_lr",
    "d_lr",
    "images_per_second",
    "seconds_per_iter",
    "g_skipped_steps",
    "d_skipped_steps",
    "kimg",
    "g_grad_norm",
    "d_grad_norm",
    "ema_momentum",
    "max_rss_gib",
}


def test_offline_run_resumes_the_same_wandb_run(tmp_path):
    ok(
        train(
            tmp_path,
            2,
            "run.total_iters=8",
            "run.log_every_iters=4",
            "tracking.wandb.mode=offline",
            env=OFFLINE,
        )
    )
    runs = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs  # rank 0 only
    run_id, config, history = read_run(runs[0])
    assert run_id == (tmp_path / "wandb_run_id").read_text()
    assert config["generator"]["deepspeed"]["train_micro_batch_size_per_gpu"] == 8
    assert config["discriminator"]["deepspeed"]["optimizer"]["type"] == "Adam"
    scalars = [h for h in history if "d_loss" in h]
    assert [h["iteration"] for h in scalars] == [4, 8]
    assert set(scalars[-1]) >= EXPECTED_KEYS
    assert any("samples/_type" in h for h in history)  # the final sample grid, as an image
    local = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in local] == [4, 8] and set(local[-1]) >= EXPECTED_KEYS

    ok(
        train(
            tmp_path,
            2,
            "run.total_iters=16",
            "run.log_every_iters=4",
            "tracking.wandb.mode=offline",
            env=OFFLINE,
        )
    )
    runs = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2 and {r.name for r in runs} == {f"run-{run_id}.wandb"}  # same run id, appended on sync
    _, _, history = read_run(runs[1])
    assert [h["iteration"] for h in history if "d_loss" in h] == [12, 16]


def test_wandb_failure_never_stops_training(tmp_path, caplog):
    (tmp_path / "wandb").write_text("not a directory")  # wandb cannot create its run directory
    tracker = Tracker(Wandb(mode="offline"), tmp_path, {"a": 1}, is_main=True)
    assert tracker.wandb_run_id is None
    assert "wandb disabled for this run" in caplog.text
    tracker.log({"d_loss": 1.0}, 3)
    tracker.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["d_loss"] == 1.0


def test_no_extra_collectives_on_steps_that_do_not_log(tmp_path):
    """dsgan's own collectives: one agreement per D update, plus one reduction per logging step, nothing else
    per iteration. Two runs that differ only in length differ by exactly one agreement per extra iteration."""
    counts = []
    for iters in (8, 24):
        out = tmp_path / f"counts{iters}.json"
        args = [
            str(REPO / "tests" / "integration" / "collective_worker.py"),
            str(out),
            "--",
            "--config",
            TINY,
            "--run-dir",
            str(tmp_path / f"r{iters}"),
            "--set",
            f"run.total_iters={iters}",
            "--set",
            "run.log_every_iters=1000",
            "--set",
            "run.sample_every_iters=null",
            "--set",
            "checkpoint.every_iters=null",
            "--set",
            "tracking.wandb.mode=offline",
        ]
        ok(launch(args, world_size=2, env=OFFLINE))
        counts.append(json.loads(out.read_text()))
    extra = {k: counts[1].get(k, 0) - counts[0].get(k, 0) for k in counts[1].keys() | counts[0].keys()}
    assert {k: v for k, v in extra.items() if v} == {"distributed.all_gather": 16}, (counts, extra)
    assert counts[0]["steps.all_reduce"] == 1  # the single (final) logging step: IntervalStats.reduce
