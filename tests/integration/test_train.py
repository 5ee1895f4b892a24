"""The real entry point on CPU ranks: launchers, exact resume, signals, kills mid-save, corrupt checkpoints,
config changes on resume, and rank disagreement."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from launch import REPO, free_port, launch
from runs import MID_CYCLE, TINY, assert_identical, final_state, ok, small_tmpfs, start_train, train

from dsgan.errors import (
    EXIT_CHECKPOINT,
    EXIT_CHECKPOINT_WRITE,
    EXIT_COLLECTIVE,
    EXIT_CONFIG,
    EXIT_NONFINITE,
    EXIT_PREEMPTED,
    EXIT_RANK_MISMATCH,
    EXIT_RUN_DIR_BUSY,
)


def test_deepspeed_launcher_runs_to_the_end(tmp_path):
    """`deepspeed --num_gpus 2 dsgan/train.py` on a machine without GPUs: 2 CPU ranks; `--local_rank` accepted."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            "deepspeed",
            "--num_gpus",
            "2",
            "--master_port",
            str(free_port()),
            "dsgan/train.py",
            "--config",
            TINY,
            "--run-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (tmp_path / "checkpoints" / "step-00000024" / "manifest.json").is_file()
    assert "done: 24 iterations" in proc.stdout + proc.stderr
    assert list((tmp_path / "samples").glob("*.png"))


@pytest.mark.parametrize("world,stage", [(1, 0), (2, 0), (2, 2)])
def test_resume_mid_cycle_is_bit_exact(tmp_path, world, stage):
    sets = [
        *MID_CYCLE,
        f"generator.deepspeed.zero_optimization.stage={stage}",
        f"discriminator.deepspeed.zero_optimization.stage={stage}",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    ok(train(straight, world, *sets, "run.total_iters=16"))
    ok(train(split, world, *sets, "run.total_iters=10"))  # 10 = 2.5 cycles: stops mid-cycle
    out = ok(train(split, world, *sets, "run.total_iters=16"))  # same command, longer: resumes
    assert "resumed from" in out and "step-00000010" in out
    assert_identical(final_state(straight), final_state(split))


def test_sigusr1_on_one_rank_saves_and_resumes_exactly(tmp_path):
    sets = [*MID_CYCLE, "run.total_iters=400", "checkpoint.every_iters=null", "run.log_every_iters=2"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    ok(train(straight, 2, *sets))
    procs = start_train(split, 2, sets)
    _wait_for(lambda: (split / "metrics.jsonl").is_file() and len((split / "metrics.jsonl").read_text()) > 0)
    procs[1].send_signal(signal.SIGUSR1)  # any rank: the ranks agree at the next D update
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [EXIT_PREEMPTED] * 2, [p.stdout.read()[-3000:] for p in procs]
    saved = (split / "checkpoints" / "latest").read_text()
    assert saved != "step-00000400"
    ok(train(split, 2, *sets))
    assert_identical(final_state(straight), final_state(split))


def test_signal_during_start_up_checkpoints_at_the_first_update(tmp_path):
    """The handlers are up before the engines are built: a preemption notice during start-up is kept, and the run
    stops with a checkpoint after its first update instead of dying of the signal."""
    procs = start_train(tmp_path, 2, ["run.total_iters=400"])
    for line in procs[0].stdout:
        if "rank(s) on cpu" in line:  # process group up; models and engines not built yet
            break
    procs[0].send_signal(signal.SIGUSR1)
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [EXIT_PREEMPTED] * 2, [p.stdout.read()[-3000:] for p in procs]
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step-00000001"


def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    procs = start_train(tmp_path, 1, ["run.total_iters=24", "checkpoint.every_iters=8"], fault="slow-checkpoint=5")
    ckpts = tmp_path / "checkpoints"
    _wait_for(lambda: (ckpts / "step-00000016.tmp").is_dir(), timeout=120)  # step 8 done, step 16 in flight
    for p in procs:
        p.kill()
        p.wait()
    assert (ckpts / "latest").read_text() == "step-00000008"
    from dsgan.checkpoint import find_resumable

    assert find_resumable(tmp_path) == ckpts / "step-00000008"
    out = ok(train(tmp_path, 1, "run.total_iters=24", "checkpoint.every_iters=8"))
    assert "resumed from" in out and "step-00000008" in out


def test_corrupt_checkpoint_is_skipped_with_warning(tmp_path):
    ok(train(tmp_path, 1, "run.total_iters=16", "checkpoint.every_iters=8", "checkpoint.keep_last=2"))
    newest = tmp_path / "checkpoints" / "step-00000016"
    victim = next(p for p in sorted(newest.rglob("*.pt")) if p.stat().st_size > 1000)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncated
    # Asking for the corrupt one explicitly is an error, not a silent fallback.
    res = launch(["-m", "dsgan.train", "--config", TINY, "--run-dir", str(tmp_path), "--resume", str(newest)], 1)
    assert "truncated" in ok(res, EXIT_CHECKPOINT)
    out = ok(train(tmp_path, 1, "run.total_iters=24", "checkpoint.every_iters=8"))
    assert "skipping checkpoint" in out and "truncated" in out
    assert "resumed from" in out and "step-00000008" in out
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step-00000016", "step-00000016.corrupt", "step-00000024"]


def test_every_checkpoint_corrupt_is_refused_not_restarted(tmp_path):
    ok(train(tmp_path, 1, "run.total_iters=8", "checkpoint.every_iters=4"))
    for manifest in (tmp_path / "checkpoints").glob("step-*/manifest.json"):
        manifest.write_text('{"files": []}')
    before = (tmp_path / "metrics.jsonl").read_text()
    out = ok(train(tmp_path, 1, "run.total_iters=16", "checkpoint.every_iters=4"), EXIT_CHECKPOINT)
    assert "no checkpoint verifies" in out and "Traceback" not in out
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000004", "step-00000008"]
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_incompatible_config_change_is_refused_and_lr_change_applied(tmp_path):
    ok(train(tmp_path, 1, "run.total_iters=8"))
    out = ok(
        train(
            tmp_path,
            1,
            "run.total_iters=16",
            "generator.model.base_channels=16",
            "generator.deepspeed.bf16.enabled=true",
        ),
        EXIT_CONFIG,
    )
    assert "generator.model" in out and "generator.deepspeed.bf16.enabled" in out
    ok(train(tmp_path, 1, "run.total_iters=16", "generator.deepspeed.optimizer.params.lr=0.0005"))
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["g_lr"] == pytest.approx(5e-4)


def test_world_size_change_on_resume(tmp_path):
    """ZeRO-0 holds whole weights and optimizer states: 1 rank -> 2 continues (the data position is kept in images).
    ZeRO >= 1 partitions them per rank: a different world size is refused, naming both."""
    zero0, zero1 = tmp_path / "zero0", tmp_path / "zero1"
    ok(train(zero0, 1, "run.total_iters=8"))
    out = ok(train(zero0, 2, "run.total_iters=16"))
    assert "resumed from" in out and "step-00000008" in out and "done: 16 iterations" in out
    trainer = torch.load(zero0 / "checkpoints" / "step-00000016" / "trainer.pt", weights_only=True)
    assert trainer["images_consumed"] == 8 * 8 + 8 * 16  # 8 iterations of 8 images, then 8 of 2 x 8
    last = json.loads((zero0 / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["iteration"] == 16 and last["kimg"] == pytest.approx((8 * 8 + 8 * 16) / 1000)  # images, not iters
    stages = ("generator.deepspeed.zero_optimization.stage=1", "discriminator.deepspeed.zero_optimization.stage=1")
    ok(train(zero1, 2, "run.total_iters=8", *stages))
    out = ok(train(zero1, 1, "run.total_iters=16", *stages), EXIT_CONFIG)
    assert "world size: checkpoint has 2, now 1" in out and "Traceback" not in out


def test_rank_disagreement_is_an_error_not_a_hang(tmp_path):
    """Rank 1 skips one D micro-step inside an accumulation window; the next agreement names both ranks."""
    start = time.monotonic()
    # the first micro-step of D update 2 = iteration 4 (2 micro-batches per D update)
    res = train(tmp_path, 2, *MID_CYCLE, "run.total_iters=16", fault="skip-d-microstep=1:2", timeout=120)
    assert time.monotonic() - start < 60
    for r in res:
        assert r.returncode == EXIT_RANK_MISMATCH, r.stdout[-3000:]
    out = res[0].stdout
    assert "ranks disagree" in out
    assert "rank 0: iteration=5, d_micro_steps=5" in out and "rank 1: iteration=5, d_micro_steps=4" in out


def test_second_job_on_a_run_dir_is_refused_and_a_killed_one_does_not_block(tmp_path):
    first = start_train(tmp_path, 1, ["run.total_iters=100000", "checkpoint.every_iters=null", "run.log_every_iters=2"])
    _wait_for(lambda: (tmp_path / "metrics.jsonl").is_file() and len((tmp_path / "metrics.jsonl").read_text()) > 0)
    out = ok(train(tmp_path, 2, "run.total_iters=8"), EXIT_RUN_DIR_BUSY)
    assert f"is in use by another dsgan job (host {socket.gethostname()}, pid {first[0].pid}" in out
    assert "Traceback" not in out and first[0].poll() is None  # the first job trains on
    first[0].kill()
    first[0].wait()
    assert "done: 8 iterations" in ok(train(tmp_path, 1, "run.total_iters=8"))


def test_disk_full_during_a_checkpoint_keeps_the_earlier_ones(tmp_path):
    """A run dir on a 700 KiB tmpfs: checkpoints of ~300 KiB at 4 and 8 fit, the one at 12 does not. Exit 8 with one
    line naming what was kept; no partial step-12 left; step 8 resumes."""
    with small_tmpfs(tmp_path / "small", "700k") as run_dir:
        sets = [
            "run.total_iters=16",
            "checkpoint.every_iters=4",
            "checkpoint.keep_last=3",
            "run.sample_every_iters=null",
        ]
        out = ok(train(run_dir, 1, *sets), EXIT_CHECKPOINT_WRITE)
        assert "could not write checkpoint step-00000012" in out and "latest: step-00000008" in out, out
        assert "Traceback" not in out
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
            "latest",
            "step-00000004",
            "step-00000008",
        ]
        from dsgan.checkpoint import verify

        assert verify(run_dir / "checkpoints" / "step-00000008") is None


def test_master_port_in_use_is_a_start_up_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        env = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        args = ["-m", "dsgan.train", "--config", TINY, "--run-dir", str(tmp_path), "--set", "run.total_iters=4"]
        proc = subprocess.run(
            [sys.executable, *args],
            cwd=REPO,
            env={**env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_CONFIG, out
    assert f"127.0.0.1:{port} is already in use" in out and "Traceback" not in out


def test_rerun_of_finished_run_does_nothing(tmp_path):
    ok(train(tmp_path, 1, "run.total_iters=8"))
    out = ok(train(tmp_path, 1, "run.total_iters=8"))
    assert "already complete" in out


def test_periodic_eval_of_a_zero3_generator_with_uneven_shards(tmp_path):
    """Without EMA the evaluated G is ZeRO-3's partitioned module, whose every forward is collective; 101 samples
    in batches of 50 give rank 0 three batches (51 samples) and rank 1 two, unless the ranks keep in step."""
    out = ok(
        train(
            tmp_path,
            2,
            "generator.deepspeed.zero_optimization.stage=3",
            "discriminator.deepspeed.zero_optimization.stage=3",
            "ema=null",
            "run.total_iters=8",
            "run.collective_timeout_seconds=60",
            "eval.every_iters=4",
            "eval.num_samples=101",
            "eval.batch_size=50",
            timeout=240,
        )
    )
    assert "eval at iteration 4" in out and "eval at iteration 8" in out


def test_killed_rank_ends_the_others_with_a_clear_error(tmp_path):
    sets = ["run.total_iters=100000", "run.log_every_iters=2", "run.collective_timeout_seconds=30"]
    procs = start_train(tmp_path, 2, sets)
    _wait_for(lambda: (tmp_path / "metrics.jsonl").is_file() and len((tmp_path / "metrics.jsonl").read_text()) > 0)
    t0 = time.monotonic()
    procs[1].kill()
    code = procs[0].wait(timeout=120)
    out = procs[0].stdout.read()
    assert code == EXIT_COLLECTIVE, out[-3000:]
    assert "a collective failed on rank 0" in out and "rerun the same command" in out and "Traceback" not in out
    assert time.monotonic() - t0 < 40
    procs[1].wait()


def test_bad_data_fails_before_engines(tmp_path):
    res = train(tmp_path, 1, "data.type=image_folder", f"data.root={tmp_path / 'missing'}")
    out = ok(res, EXIT_CONFIG)
    assert "missing" in out and "Traceback" not in out


def test_unwritable_run_dir_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("")
    out = ok(train(tmp_path / "file" / "run", 2), EXIT_CONFIG)
    assert f"run.dir={tmp_path / 'file' / 'run'}: cannot create or write to it" in out and "Traceback" not in out


def _wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def test_nonfinite_loss_stops_with_last_checkpoint_intact(tmp_path):
    """A penalty weight that overflows fp32 makes D's loss inf: exit 3, nothing saved after the last good one."""
    ok(train(tmp_path, 2, "run.total_iters=8", "checkpoint.every_iters=4"))
    out = ok(
        train(tmp_path, 2, "run.total_iters=16", "checkpoint.every_iters=4", "loss.r1_weight=1e39"), EXIT_NONFINITE
    )
    assert "non-finite loss" in out and "Traceback" not in out
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step-00000008"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000004", "step-00000008"]


@pytest.mark.parametrize("d_steps,g_steps,acc_d,acc_g", [(1, 1, 8, 8), (2, 3, 2, 4)])
def test_engine_counters_follow_the_mmagic_schedule(tmp_path, d_steps, g_steps, acc_d, acc_g):
    """The engines' own update counters (DeepSpeed global_steps) after K iterations equal the MMagic rule; the
    per-update agreement also compares them with the schedule at every D update on the way."""
    from dsgan.schedule import Schedule

    iters = 16
    ok(
        train(
            tmp_path,
            2,
            f"schedule.discriminator_steps={d_steps}",
            f"schedule.generator_steps={g_steps}",
            f"discriminator.deepspeed.gradient_accumulation_steps={acc_d}",
            f"generator.deepspeed.gradient_accumulation_steps={acc_g}",
            f"run.total_iters={iters}",
            f"run.log_every_iters={acc_d}",
            "checkpoint.every_iters=null",
            "run.sample_every_iters=null",
        )
    )
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    s = Schedule(d_steps, g_steps, acc_d, acc_g)
    assert (records[-1]["d_updates"], records[-1]["g_updates"]) == (s.d_updates(iters), s.g_updates(iters))
    # g_loss is logged for the intervals that had a G step, and left out (not NaN) of the others.
    with_g = [s.g_micro_steps(r["iteration"]) > s.g_micro_steps(r["iteration"] - acc_d) for r in records]
    assert [("g_loss" in r) for r in records] == with_g
    assert d_steps == 1 or not all(with_g)
    # Gradient norms (measured only ahead of a log line at fp32 ZeRO-0) are those of each network's last update.
    assert all(r["d_grad_norm"] > 0 for r in records)
    assert [("g_grad_norm" in r) for r in records] == [s.g_updates(r["iteration"]) > 0 for r in records]
